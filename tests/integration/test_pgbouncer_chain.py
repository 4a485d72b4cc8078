# Clients → tokengate → PgBouncer (Debian's, transaction pooling) → PostgreSQL 15: the chain of deployment.md.
#
# Two chains against the session cluster, one per upstream login mode:
#   trust     tokengate (upstream.auth = trust) → PgBouncer on a private Unix socket, auth_type = trust →
#             PostgreSQL over its socket (trust). tokengate checks passwords itself with its auth_query, which
#             runs through PgBouncer on a control connection.
#   password  tokengate (upstream.auth = password, userlist) → PgBouncer on TCP, auth_type = scram-sha-256 with
#             PgBouncer's own auth_query (a SECURITY DEFINER function, as PgBouncer documents) → PostgreSQL over
#             TCP with SCRAM (PgBouncer passes the client's SCRAM keys on).
# Skipped when pgbouncer is not installed (./dev installs it).
from __future__ import annotations

import os
import pwd
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest

import pgwire

from conftest import (ROLES, LogFile, PgCluster, Target, TokengateProcess, _cleanup_tmp, _cleanups, create_token,
                      free_port, mask, session_extra_args, tail, tokengate_binary, write_userlist)

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
pytestmark = pytest.mark.skipif(not os.path.exists(PGBOUNCER), reason="pgbouncer is not installed")

# PgBouncer's auth_user and the function its auth_query calls, as PgBouncer's documentation sets them up: the
# function reads pg_authid for PgBouncer without giving its role the right to read the table.
AUTH_USER = "pgbouncer_auth"
AUTH_FUNCTION_SQL = f"""
CREATE SCHEMA pgbouncer;
CREATE FUNCTION pgbouncer.get_auth(p_usename text) RETURNS TABLE (usename name, passwd text)
  LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog AS $$
    SELECT rolname, rolpassword FROM pg_catalog.pg_authid WHERE rolname = p_usename AND rolcanlogin
  $$;
REVOKE ALL ON FUNCTION pgbouncer.get_auth(text) FROM PUBLIC;
GRANT USAGE ON SCHEMA pgbouncer TO {AUTH_USER};
GRANT EXECUTE ON FUNCTION pgbouncer.get_auth(text) TO {AUTH_USER};
"""


class PgBouncer(LogFile):
    """pgbouncer (transaction pooling) in a temp dir, run as the postgres OS user (it refuses root)."""

    def __init__(self, settings: dict[str, str], auth_users: dict[str, str]) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="tg-pgb-"))
        self.socket_dir = self.tmp / "sock"
        self.socket_dir.mkdir()
        self.port = free_port()
        self.log_path = self.tmp / "pgbouncer.log"
        self.ini = self.tmp / "pgbouncer.ini"
        write_userlist(self.tmp / "userlist.txt", auth_users)
        lines = ["[databases]", settings.pop("databases"), "[pgbouncer]",
                 f"listen_port = {self.port}", f"unix_socket_dir = {self.socket_dir}",
                 f"auth_file = {self.tmp / 'userlist.txt'}", f"logfile = {self.log_path}",
                 f"pidfile = {self.tmp / 'pgbouncer.pid'}", "pool_mode = transaction",
                 "max_client_conn = 200", "default_pool_size = 5", "server_reset_query =",
                 "ignore_startup_parameters = extra_float_digits"]
        lines += [f"{k} = {v}" for k, v in settings.items()]
        self.ini.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            for p in [self.tmp, self.socket_dir, *self.tmp.iterdir()]:
                os.chown(p, pw.pw_uid, pw.pw_gid)

    def start(self) -> None:
        argv = [PGBOUNCER, str(self.ini)]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--"] + argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited (rc={self.proc.returncode}):\n{tail(self.log_path)}")
            if (self.socket_dir / f".s.PGSQL.{self.port}").exists():
                return
            time.sleep(0.05)
        raise RuntimeError(f"pgbouncer did not start:\n{tail(self.log_path)}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # runuser passes SIGTERM on
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        _cleanup_tmp(self.tmp)

    def log_tail(self) -> str:
        return tail(self.log_path)


class Chain:
    """One tokengate → PgBouncer → PostgreSQL chain."""

    def __init__(self, pg: PgCluster, pgb: PgBouncer, tg: TokengateProcess) -> None:
        self.pg, self.pgb, self.tg = pg, pgb, tg
        self.target = Target("chain", tg.host, tg.port)
        self.mode = ""

    def report(self) -> str:
        return f"tokengate log:\n{self.tg.log_tail()}\npgbouncer log:\n{self.pgb.log_tail()}"


def _start_chain(pg: PgCluster, pgb: PgBouncer, upstream: tuple[str, int], args: list[str]) -> Chain:
    _cleanups.append(pgb.stop)
    pgb.start()
    binary = tokengate_binary()
    tg = TokengateProcess(binary, upstream, [*args, "--max-failed-logins", "100000", *session_extra_args(binary)])
    _cleanups.append(tg.stop)
    tg.start()
    return Chain(pg, pgb, tg)


@pytest.fixture(scope="module")
def auth_user_password(pg: PgCluster) -> str:
    password = f"pgb-{uuid.uuid4().hex}"
    with pg.admin_conn() as c:
        c.execute(f"CREATE ROLE {AUTH_USER} LOGIN PASSWORD '{password}'")
        c.execute(AUTH_FUNCTION_SQL)
    yield password
    with pg.admin_conn() as c:
        c.execute("DROP SCHEMA pgbouncer CASCADE")
        c.execute(f"DROP ROLE {AUTH_USER}")


@pytest.fixture(scope="module")
def trust_chain(pg: PgCluster, auth_user_password: str) -> Chain:
    """tokengate (trust) → PgBouncer (trust, private Unix socket only) → PostgreSQL (socket, trust)."""
    pgb = PgBouncer(
        {"databases": f"* = host={pg.socket_dir} port={pg.port}",
         "listen_addr": "", "unix_socket_mode": "0700", "auth_type": "trust",
         "auth_user": AUTH_USER, "auth_query": "SELECT usename, passwd FROM pgbouncer.get_auth($1)"},
        {AUTH_USER: auth_user_password})
    chain = _start_chain(pg, pgb, (str(pgb.socket_dir), pgb.port), ["--upstream-auth", "trust"])
    yield chain
    chain.tg.stop()
    pgb.stop()


@pytest.fixture(scope="module")
def password_chain(pg: PgCluster, auth_user_password: str) -> Chain:
    """tokengate (password, userlist) → PgBouncer (TCP, scram-sha-256, auth_query) → PostgreSQL (TCP, SCRAM)."""
    pgb = PgBouncer(
        {"databases": f"* = host={pg.host} port={pg.port}",
         "listen_addr": "127.0.0.1", "auth_type": "scram-sha-256",
         "auth_user": AUTH_USER, "auth_query": "SELECT usename, passwd FROM pgbouncer.get_auth($1)"},
        {AUTH_USER: auth_user_password})
    userlist_dir = Path(tempfile.mkdtemp(prefix="tg-userlist-"))
    _cleanups.append(lambda: _cleanup_tmp(userlist_dir))
    userlist = write_userlist(userlist_dir / "userlist.txt", {"admin": ROLES["admin"], "analyst": ROLES["analyst"]})
    chain = _start_chain(pg, pgb, ("127.0.0.1", pgb.port),
                         ["--upstream-auth", "password", "--userlist", str(userlist), "--control-user", "admin"])
    yield chain
    chain.tg.stop()
    pgb.stop()


@pytest.fixture(params=["trust", "password"])
def chain(request: pytest.FixtureRequest) -> Chain:
    c = request.getfixturevalue(f"{request.param}_chain")
    c.mode = request.param
    yield c
    assert c.tg.alive(), f"tokengate exited\n{c.report()}"


# ---------------------------------------------------------------- logins


def wire_login(chain: Chain, user: str, password: str, **extra: str) -> pgwire.LoginResult:
    with chain.target.wire() as w:
        return pgwire.login(w, user, password, extra=extra or None)


def test_password_login(chain: Chain) -> None:
    with chain.target.connect(user="analyst") as conn:
        assert conn.execute("SELECT current_user, session_user").fetchone() == ("analyst", "analyst")
    bad = wire_login(chain, "analyst", "wrong")
    assert bad.error is not None, chain.report()
    if chain.mode == "trust":
        # tokengate checked the password with its auth_query, which ran through PgBouncer.
        assert (bad.error.sqlstate, bad.error.message) == ("28P01", 'password authentication failed for user "analyst"')
    else:
        # PgBouncer checked it, and a client gets PgBouncer's own refusal, as if it had connected to PgBouncer:
        # FATAL 08P01 "SASL authentication failed" (not PostgreSQL's 28P01).
        with Target("pgbouncer", "127.0.0.1", chain.pgb.port).wire() as w:
            direct = pgwire.login(w, "analyst", "wrong")
        assert bad.error.visible() == direct.error.visible(), f"{bad.error} vs {direct.error}"


def test_control_connections_go_through_pgbouncer(chain: Chain) -> None:
    """Role look-ups (and, in trust mode, the password verifier) are read on control connections, which reach
    the upstream the sessions reach: PgBouncer. They use the extended protocol with the unnamed statement in
    one Parse…Sync batch, which transaction pooling keeps on one server connection even before PgBouncer 1.21
    (named prepared statements would break)."""
    with chain.target.connect(user="analyst") as conn:  # trust: auth_query; both: the token statement's look-up
        rows = conn.execute("SHOW API TOKENS").fetchall()
    assert isinstance(rows, list)
    log = chain.pgb.log_since(0)
    control_user = "postgres" if chain.mode == "trust" else "admin"
    assert f"login attempt: db=postgres user={control_user}" in log, log


def test_concurrent_password_logins_share_the_control_connections(chain: Chain) -> None:
    """More concurrent logins than PgBouncer has server connections per pool: control queries interleave
    with sessions on PgBouncer's servers without a statement of one landing in another's transaction."""
    errors: list[str] = []

    def login() -> None:
        try:
            with chain.target.connect(user="analyst") as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        except Exception as e:  # noqa: BLE001 - collected for the assertion
            errors.append(repr(e))

    threads = [threading.Thread(target=login) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, f"{errors}\n{chain.report()}"


def test_token_login_and_statements(chain: Chain) -> None:
    name = f"pgb_{uuid.uuid4().hex[:8]}"
    # Extended protocol (psycopg) for CREATE, simple protocol (psql) for SHOW: both answered by tokengate.
    _, token, _ = create_token(chain.target, user="analyst", name=name, duration="1h")
    shown = chain.target.psql("-XAtq", "-c", "SHOW API TOKENS", user="analyst")
    assert shown.rc == 0 and name in shown.stdout, shown
    with chain.target.connect(user="analyst", password=token) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("analyst",)
    ok = wire_login(chain, "analyst", token)
    assert ok.ok, f"token login {mask(token)}: {ok.error}\n{chain.report()}"
    with chain.target.connect(user="analyst") as conn:
        conn.execute(f"DROP API TOKEN {name}")
    refused = wire_login(chain, "analyst", token)
    assert refused.error is not None and refused.error.sqlstate == "28P01", refused.error


def test_cancel_through_both(chain: Chain) -> None:
    """The client cancels with the key tokengate gave it; tokengate forwards a CancelRequest with the key
    PgBouncer gave tokengate; PgBouncer cancels on the server connection the client's transaction holds."""
    with chain.target.connect(user="analyst") as conn:
        backend_pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        # PgBouncer's BackendKeyData is its own random key, not a backend's process ID: what the client sees as
        # its "PID" is PgBouncer's, and matches no backend in pg_stat_activity.
        assert conn.info.backend_pid != backend_pid
        threading.Timer(0.5, conn.cancel).start()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(30)")
        assert time.monotonic() - started < 10
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_startup_parameters_pgbouncer_refuses(chain: Chain) -> None:
    """PgBouncer 1.18 takes only a few startup parameters; tokengate passes its refusal on as it came (a
    client could not have connected to PgBouncer with them either). extra_float_digits (pgjdbc) is in
    ignore_startup_parameters, as deployment.md says to set it."""
    refused = wire_login(chain, "analyst", "analyst", options="-c search_path=public")
    assert refused.error is not None and refused.error.sqlstate == "08P01", refused.error
    assert "unsupported startup parameter" in (refused.error.message or ""), refused.error
    ok = wire_login(chain, "analyst", "analyst", extra_float_digits="3", application_name="pgb-test")
    assert ok.ok, f"{ok.error}\n{chain.report()}"


# ---------------------------------------------------------------- revocation


def test_revocation_ends_sessions_and_their_transactions(chain: Chain, pg: PgCluster) -> None:
    """DROP API TOKEN ends the token's sessions: tokengate cancels through PgBouncer and closes its connection to
    PgBouncer; PgBouncer then drops the server connection of a transaction left open, so nothing the session
    did commits. An idle session holds no server connection in transaction mode: only its PgBouncer client
    connection ends. DROP answers once they are gone, without waiting for a backend that is not there."""
    table = f"pgb_{uuid.uuid4().hex[:8]}"
    with pg.admin_conn() as c:
        c.execute(f"CREATE TABLE {table} (x int)")
        c.execute(f"GRANT ALL ON {table} TO analyst")
    name = f"pgb_{uuid.uuid4().hex[:8]}"
    _, token, _ = create_token(chain.target, user="analyst", name=name, duration="1h")
    log_mark = chain.tg.log_mark()
    busy = chain.target.connect(user="analyst", password=token, autocommit=False)
    idle = chain.target.connect(user="analyst", password=token)
    try:
        busy.execute(f"INSERT INTO {table} VALUES (1)")  # a transaction left open on a server connection
        assert idle.execute("SELECT 1").fetchone() == (1,)
        started = time.monotonic()
        with chain.target.connect(user="analyst") as admin:
            admin.execute(f"DROP API TOKEN {name}")
        took = time.monotonic() - started
        for conn in (busy, idle):
            with pytest.raises(psycopg.OperationalError) as e:
                conn.execute("SELECT 1")
            assert "API token revoked" in str(e.value), f"{e.value}\n{chain.report()}"
    finally:
        busy.close()
        idle.close()
        with pg.admin_conn() as c:
            count = c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            c.execute(f"DROP TABLE {table}")
    assert count == 0, "the revoked session's open transaction committed"
    assert took < 5, f"DROP API TOKEN took {took:.1f} s\n{chain.report()}"
    log = chain.tg.log_since(log_mark)
    # The key tokengate holds is PgBouncer's, not a backend's: it must never pg_terminate_backend() it.
    assert "terminate upstream backend" not in log and "did not exit" not in log, log


def test_revocation_cancels_a_running_statement(chain: Chain, pg: PgCluster) -> None:
    """A statement running when its token is revoked is cancelled, so it cannot commit afterwards. PgBouncer
    forgets a client's cancel key once that client's connection is closed, and drops the server connection
    without stopping the backend: the cancel must reach PgBouncer before tokengate closes its side."""
    table = f"pgb_{uuid.uuid4().hex[:8]}"
    with pg.admin_conn() as c:
        c.execute(f"CREATE TABLE {table} (x int)")
        c.execute(f"GRANT ALL ON {table} TO analyst")
    name = f"pgb_{uuid.uuid4().hex[:8]}"
    _, token, _ = create_token(chain.target, user="analyst", name=name, duration="1h")
    outcome: list[BaseException | None] = []
    busy = chain.target.connect(user="analyst", password=token)  # autocommit: the INSERT commits when it ends

    def run() -> None:
        try:
            busy.execute(f"INSERT INTO {table} SELECT 1 FROM pg_sleep(4)")
            outcome.append(None)
        except BaseException as e:  # noqa: BLE001 - inspected below
            outcome.append(e)

    try:
        t = threading.Thread(target=run)
        t.start()
        time.sleep(1)
        with chain.target.connect(user="analyst") as admin:
            admin.execute(f"DROP API TOKEN {name}")
        t.join(15)
        time.sleep(4.5)  # past the end of the sleep, had the statement gone on
    finally:
        busy.close()
        with pg.admin_conn() as c:
            count = c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            c.execute(f"DROP TABLE {table}")
    assert outcome and isinstance(outcome[0], psycopg.OperationalError), outcome
    assert count == 0, f"the revoked session's INSERT committed after DROP API TOKEN\n{chain.report()}"


# ---------------------------------------------------------------- the terminate fallback


class KeyRewritingForwarder:
    """A Unix-socket forwarder in front of PostgreSQL standing in for a pooler whose BackendKeyData carries a
    "PID" of its own: for connections whose startup packet has application_name == `marker`, it replaces the
    process ID in BackendKeyData with `fake_pid`, and keeps the upstream open when tokengate half-closes (a
    pooler slow to notice). Every other connection (the control connections) passes through untouched."""

    def __init__(self, pg: PgCluster, marker: str, fake_pid: int) -> None:
        self.pg, self.marker, self.fake_pid = pg, marker, fake_pid
        self.dir = Path(tempfile.mkdtemp(prefix="tg-fwd-"))
        self.port = free_port()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.dir / f".s.PGSQL.{self.port}"))
        self.listener.listen(16)
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    @staticmethod
    def _read_exact(sock: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sockets += [client, upstream]
        try:
            upstream.connect(str(self.pg.socket_dir / f".s.PGSQL.{self.pg.port}"))
            head = self._read_exact(client, 4)
            startup = head + self._read_exact(client, struct.unpack("!i", head)[0] - 4)
            marked = f"application_name\0{self.marker}\0".encode() in startup
            upstream.sendall(startup)
            threading.Thread(target=self._pump, args=(client, upstream, not marked), daemon=True).start()
            while marked:  # server to client: rewrite BackendKeyData, then pass the rest on as is
                tag = self._read_exact(upstream, 1)
                length = self._read_exact(upstream, 4)
                body = self._read_exact(upstream, struct.unpack("!i", length)[0] - 4)
                if tag == b"K":
                    body = struct.pack("!i", self.fake_pid) + body[4:]
                client.sendall(tag + length + body)
                if tag in (b"K", b"E"):
                    break
            self._pump(upstream, client, True)
        except (OSError, EOFError):
            pass

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, pass_eof: bool) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            if pass_eof:
                dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes a pump blocked in recv(); close() alone would not
            except OSError:
                pass
            s.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def test_terminate_fallback_spares_other_roles_backends(pg: PgCluster, spawn_tokengate) -> None:
    """An ended session whose upstream does not close within a second after the cancel gets
    pg_terminate_backend() over a control connection. Behind a pooler the key's "PID" is the pooler's own
    (PgBouncer's is random) and may be the PID of any backend: tokengate terminates it only if that backend
    is of the session's role. Here the pooler-like forwarder hands out the PID of another role's backend."""
    name = f"fwd_{uuid.uuid4().hex[:8]}"
    with pg.admin_conn() as bystander:
        bystander_pid = bystander.execute("SELECT pg_backend_pid()").fetchone()[0]
        fwd = KeyRewritingForwarder(pg, name, bystander_pid)
        try:
            tg = spawn_tokengate((str(fwd.dir), fwd.port), ["--max-failed-logins", "100000",
                                                            *session_extra_args(tokengate_binary())])
            target = Target("forwarded", tg.host, tg.port)
            _, token, _ = create_token(target, user="analyst", name=name, duration="1h")
            mark = tg.log_mark()
            with target.wire() as victim:
                login = pgwire.login(victim, "analyst", token, extra={"application_name": name})
                assert login.ok and login.backend_key[0] == bystander_pid, login
                with target.connect(user="analyst") as admin:
                    admin.execute(f"DROP API TOKEN {name}")
                _, closed = victim.read_until_closed(timeout=15)
                assert closed
            assert bystander.execute("SELECT 1").fetchone() == (1,), "the bystander's backend was terminated"
            log = tg.log_since(mark)
            assert "API token revoked" in log, log
        finally:
            fwd.close()

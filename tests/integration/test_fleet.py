# A fleet on loopback: one PostgreSQL, three tokengate instances sharing the registry (store.backend = postgres),
# and Debian's HAProxy in front of them as a TCP round-robin load balancer.
#
# Each test gets its own database for the registry (upstream.control_database), so fleets do not share tokens.
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest

import pgwire

from conftest import ROLES, PgCluster, Target, TokengateProcess, create_token, mask, remember_secret, sql_literal

HAPROXY = shutil.which("haproxy", path="/usr/sbin:/usr/bin")
# The promise: a revocation anywhere ends the token's sessions everywhere within this.
REVOCATION_DEADLINE = 2.0


def write_kek(directory: Path, name: str = "kek") -> Path:
    path = directory / name
    # Remembered: the session's log scan fails if a KEK ever reaches a log.
    path.write_text(remember_secret(os.urandom(32).hex()) + "\n")
    path.chmod(0o600)
    return path


class Haproxy:
    """haproxy -db in TCP mode, round robin over `servers`, with fast health checks and redispatch."""

    def __init__(self, servers: list[tuple[str, int]]) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="tg-haproxy-"))
        self.port = _free_port()
        self.host = "127.0.0.1"
        lines = [
            "global",
            "  maxconn 2000",
            "defaults",
            "  mode tcp",
            "  timeout connect 2s",
            "  timeout client 120s",
            "  timeout server 120s",
            "  retries 3",
            "  option redispatch",
            "frontend fleet",
            f"  bind {self.host}:{self.port}",
            "  default_backend tokengates",
            "backend tokengates",
            "  balance roundrobin",
        ]
        for i, (h, p) in enumerate(servers, 1):
            lines.append(f"  server tg{i} {h}:{p} check inter 300ms fall 1 rise 2")
        self.cfg = self.tmp / "haproxy.cfg"
        self.cfg.write_text("\n".join(lines) + "\n")
        self.log = self.tmp / "haproxy.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([HAPROXY, "-db", "-f", str(self.cfg)], stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"haproxy exited: {self.log.read_text()}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("haproxy did not listen")

    def target(self) -> Target:
        return Target("haproxy", self.host, self.port)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


class TcpRelay:
    """A TCP forwarder in front of PostgreSQL for the registry connections only: cut() drops every connection and
    refuses new ones (the registry is unreachable while the upstream is not); resume() accepts again."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = _free_port()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.resume()

    def resume(self) -> None:
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        self._listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            if self._listener is not ls:
                client.close()
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        if self._listener is not None:
            ls, self._listener = self._listener, None
            try:
                ls.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone would not
            except OSError:
                pass
            ls.close()
        with self._lock:
            for s in self._conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self._conns.clear()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def fleet_db(pg: PgCluster):
    """A fresh database for one fleet's registry (and its control connections)."""
    name = "tg_fleet_" + uuid.uuid4().hex[:8]
    with pg.admin_conn() as c:
        c.execute(f"CREATE DATABASE {name}")
    yield name
    with pg.admin_conn() as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def kek_dir():
    d = Path(tempfile.mkdtemp(prefix="tg-kek-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def fleet_args(db: str, kek: Path, *extra: str) -> list[str]:
    # debug: the cancel test reads "forwarded a cancel request" from the logs.
    return ["--store-backend", "postgres", "--control-database", db, "--kek-file", str(kek),
            "--max-failed-logins", "100000", "--log-level", "debug", *extra]


def start_fleet(spawn, pg: PgCluster, db: str, kek: Path, n: int = 3, extra: list[str] | None = None
                ) -> list[TokengateProcess]:
    """n instances against the session cluster (Unix socket, trust), the registry in `db` by default."""
    procs = [spawn((str(pg.socket_dir), pg.port), fleet_args(db, kek, *(extra or [])), start=False) for _ in range(n)]
    for p in procs:
        p.launch()
    for p in procs:
        p.wait_ready()
    return procs


def login(target: Target, user: str, password: str, **kw) -> psycopg.Connection:
    return psycopg.connect(target.conninfo(user=user, password=password, **kw), autocommit=True)


def backend_of(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


@pytest.fixture
def balanced_fleet(spawn_tokengate, pg, fleet_db, kek_dir):
    if HAPROXY is None:
        pytest.fail("haproxy is not installed (./dev installs it)")
    kek = write_kek(kek_dir)
    procs = start_fleet(spawn_tokengate, pg, fleet_db, kek)
    lb = Haproxy([(p.host, p.port) for p in procs])
    yield procs, lb
    lb.stop()


def test_a_token_created_anywhere_logs_in_everywhere(balanced_fleet, pg, fleet_db):
    procs, lb = balanced_fleet
    # Through the balancer and through each instance directly.
    paths = [lb.target()] + [p.target() for p in procs]
    tokens = [create_token(t, user="analyst", name=f"anywhere_{i}") for i, t in enumerate(paths)]
    # The command line on the registry: a key rotation reaches every instance, then a token it creates.
    cli = [str(procs[0].binary), "--store-dsn", f"host={pg.socket_dir} port={pg.port} user=postgres dbname={fleet_db}",
           "--kek-file", str(procs[0].extra_args[procs[0].extra_args.index("--kek-file") + 1])]
    rotated = subprocess.run([cli[0], "keys", "rotate", *cli[1:]], capture_output=True, text=True, timeout=30)
    assert rotated.returncode == 0, rotated.stderr
    made = subprocess.run([cli[0], "tokens", "create", "from_cli", "--user", "analyst", *cli[1:]],
                          capture_output=True, text=True, timeout=30)
    assert made.returncode == 0, made.stderr
    tokens.append(("from_cli", remember_secret(made.stdout.strip()), None))
    for name, token, _ in tokens:
        for t in paths:
            with login(t, "analyst", token) as c:
                assert c.execute("SELECT current_user").fetchone()[0] == "analyst", f"{name} via {t.port}"
    # The registry holds hashes, never tokens, and the signing keys only wrapped.
    with pg.admin_conn(fleet_db) as c:
        dump = str(c.execute("SELECT t::text FROM tokengate.tokens t").fetchall())
        dump += str(c.execute("SELECT k::text FROM tokengate.signing_keys k").fetchall())
        n = c.execute("SELECT count(*) FROM tokengate.instances").fetchone()[0]
    for _, token, _ in tokens:
        assert token not in dump and token.split(".")[2] not in dump, "a token value is in the registry"
    assert n == 3
    # last_used_at arrives in the registry in batches (every few seconds), from whichever instance was used.
    deadline = time.monotonic() + 15
    while True:
        with login(procs[1].target(), "analyst", "analyst") as c:
            used = {r[0]: r[4] for r in c.execute("SHOW API TOKENS").fetchall()}
        if all(used.get(name) is not None for name, _, _ in tokens):
            break
        assert time.monotonic() < deadline, f"last_used_at not recorded: {used}"
        time.sleep(0.5)


def test_show_tokengate_instances_for_administrators(balanced_fleet, spawn_tokengate, pg):
    procs, lb = balanced_fleet
    with login(lb.target(), "admin", "admin") as c:
        cur = c.execute("SHOW TOKENGATE INSTANCES")
        cols = [d.name for d in cur.description]
        rows = cur.fetchall()
    assert cols == ["instance_id", "address", "version", "sessions", "last_heartbeat", "feed_position", "started_at"]
    assert sorted(r[0] for r in rows) == [1, 2, 3]
    assert sorted(r[1] for r in rows) == sorted(f"{p.host}:{p.port}" for p in procs)
    assert all(r[3] >= 0 and r[5] >= 1 for r in rows), rows
    # Not an administrator: refused, as the other administrator-only statements are.
    with login(lb.target(), "analyst", "analyst") as c:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SHOW TOKENGATE INSTANCES")
        # `SHOW tokengate.x` is still a setting, answered by PostgreSQL.
        with pytest.raises(psycopg.errors.UndefinedObject):
            c.execute("SHOW tokengate.x")
    # A single instance on LMDB has no fleet: no rows.
    single = spawn_tokengate((str(pg.socket_dir), pg.port))
    with login(single.target(), "admin", "admin") as c:
        assert c.execute("SHOW TOKENGATE INSTANCES").fetchall() == []


def test_a_drop_through_the_balancer_ends_sessions_on_other_instances(balanced_fleet):
    procs, lb = balanced_fleet
    name, token, _ = create_token(procs[0].target(), user="analyst", name="dropped_everywhere")
    sessions = [login(p.target(), "analyst", token) for p in procs]
    for c in sessions:
        c.execute("SELECT 1")
    start = time.monotonic()
    with login(lb.target(), "analyst", "analyst") as c:
        c.execute(f"DROP API TOKEN {name}")
    ended = [None] * len(sessions)
    while time.monotonic() - start < 5 and None in ended:
        for i, c in enumerate(sessions):
            if ended[i] is None:
                try:
                    c.execute("SELECT 1")
                except psycopg.Error as e:
                    ended[i] = (time.monotonic() - start, e.sqlstate, str(e))
        time.sleep(0.05)
    for i, e in enumerate(ended):
        assert e is not None, f"the session on instance {i + 1} is still alive 5 s after DROP API TOKEN"
        assert e[0] <= REVOCATION_DEADLINE, f"instance {i + 1} ended the session after {e[0]:.2f} s"
        assert e[1] in ("57P01", None), e
    # And nobody logs in with it again, anywhere.
    for t in [lb.target()] + [p.target() for p in procs]:
        with pytest.raises(psycopg.OperationalError):
            login(t, "analyst", token)


def test_cancel_through_the_balancer_reaches_the_right_backend(balanced_fleet):
    procs, lb = balanced_fleet
    # Round robin sends the cancel connection to another instance than the session's: it must be forwarded.
    for attempt in range(3):
        with login(lb.target(), "analyst", "analyst") as c:
            pid = backend_of(c)
            timer = threading.Timer(0.5, c.cancel)
            timer.start()
            t0 = time.monotonic()
            with pytest.raises(psycopg.errors.QueryCanceled):
                c.execute("SELECT pg_sleep(20)")
            assert time.monotonic() - t0 < 5, f"attempt {attempt}: the cancel took too long"
            timer.join()
            # The session lives on, on the same backend.
            assert backend_of(c) == pid
    # At least one cancel landed on an instance that did not hold the session and was sent on.
    forwarded = sum(p.log_since(0).count("forwarded a cancel request to instance") for p in procs)
    assert forwarded >= 1, "no cancel request was forwarded between instances"


def test_cancel_reaches_an_instance_that_started_after_the_last_heartbeat(spawn_tokengate, pg, fleet_db, kek_dir):
    """Instances learn each other's cancel address from the heartbeat table once a second. A cancel that lands
    on an instance before it has seen the session's instance there must still be forwarded: the instance asks
    the registry. Here A's heartbeat is held up by a row lock, so A cannot have learnt of B by itself."""
    kek = write_kek(kek_dir)
    [a] = start_fleet(spawn_tokengate, pg, fleet_db, kek, n=1)
    with pg.admin_conn(fleet_db) as hold:
        hold.execute("BEGIN")
        hold.execute("SELECT 1 FROM tokengate.instances FOR UPDATE")  # A's heartbeat UPDATE now waits
        [b] = start_fleet(spawn_tokengate, pg, fleet_db, kek, n=1)
        with b.target().wire() as w:
            r = pgwire.login(w, "analyst", "analyst")
            assert r.ok, r.error
            w.send(pgwire.query_message("SELECT pg_sleep(20)"))
            time.sleep(0.3)
            t0 = time.monotonic()
            with a.target().wire() as c:
                c.send(pgwire.cancel_request(*r.backend_key))
                c.read_raw_until_closed(5)
            msgs = w.read_until_ready()
            assert [m.error().sqlstate for m in msgs if m.tag == b"E"] == ["57014"], msgs
            assert time.monotonic() - t0 < 5
        hold.execute("ROLLBACK")
    assert "forwarded a cancel request to instance" in a.log_since(0)


def test_psql_ctrl_c_through_the_balancer(balanced_fleet):
    procs, lb = balanced_fleet
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGPASSWORD=ROLES["analyst"], LC_ALL="C.UTF-8")
    p = subprocess.Popen(["psql", "-X", "-h", lb.host, "-p", str(lb.port), "-U", "analyst", "-d", "postgres",
                          "-c", "SELECT pg_sleep(20)"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    time.sleep(1.0)
    p.send_signal(2)  # SIGINT: psql sends a CancelRequest through the balancer
    out, err = p.communicate(timeout=10)
    assert b"canceling statement due to user request" in err, err


def test_sigkill_leaves_the_others_serving(balanced_fleet):
    procs, lb = balanced_fleet
    name, token, _ = create_token(lb.target(), user="analyst", name="survivor")
    victim = procs[2]
    victim.proc.kill()
    victim.proc.wait()
    # Clients reconnecting through HAProxy get in, with passwords and tokens.
    for i in range(9):
        with login(lb.target(), "analyst", token if i % 2 else "analyst") as c:
            assert c.execute("SELECT 1").fetchone()[0] == 1
    # And the survivors still share revocations.
    with login(procs[0].target(), "analyst", token) as held:
        with login(procs[1].target(), "analyst", "analyst") as c:
            c.execute(f"DROP API TOKEN {name}")
        deadline = time.monotonic() + REVOCATION_DEADLINE
        with pytest.raises(psycopg.Error):
            while time.monotonic() < deadline + 1:
                held.execute("SELECT 1")
                time.sleep(0.05)


def test_two_instances_creating_one_name_concurrently(balanced_fleet):
    procs, lb = balanced_fleet
    for round_ in range(5):
        name = f"raced_{round_}"
        conns = [login(p.target(), "analyst", "analyst") for p in procs[:2]]
        barrier = threading.Barrier(2)
        results: list = [None, None]

        def run(i: int) -> None:
            barrier.wait()
            try:
                results[i] = ("ok", conns[i].execute(f"CREATE API TOKEN {name}").fetchone())
            except psycopg.Error as e:
                results[i] = ("error", e.sqlstate, str(e))

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for c in conns:
            c.close()
        for r in results:
            if r[0] == "ok":
                remember_secret(r[1][1])
        oks = [r for r in results if r[0] == "ok"]
        errors = [r for r in results if r[0] == "error"]
        assert len(oks) == 1 and len(errors) == 1, [(r[0], r[1] if r[0] == "error" else mask(r[1][1])) for r in results]
        assert errors[0][1] == "42710", errors[0]
        assert f'API token "{name}" already exists' in errors[0][2]


def test_registry_outage_follows_max_staleness(spawn_tokengate, pg, fleet_db, kek_dir):
    kek = write_kek(kek_dir)
    relay = TcpRelay((pg.host, pg.port))
    dsn = f"host=127.0.0.1 port={relay.port} user=admin password={ROLES['admin']} dbname={fleet_db}"
    remember_secret(ROLES["admin"])
    try:
        [tg] = start_fleet(spawn_tokengate, pg, fleet_db, kek, n=1,
                           extra=["--store-dsn", dsn, "--max-staleness", "3"])
        name, token, _ = create_token(tg.target(), user="analyst", name="outlives_outage")
        relay.cut()
        cut_at = time.monotonic()
        # Within max_staleness a known token still logs in; token statements fail with a clear SQLSTATE.
        with login(tg.target(), "analyst", token) as c:
            assert c.execute("SELECT current_user").fetchone()[0] == "analyst"
        with login(tg.target(), "analyst", "analyst") as c:
            with pytest.raises(psycopg.Error) as info:
                c.execute("CREATE API TOKEN during_outage")
            assert info.value.sqlstate == "58030", info.value
            assert "registry" in str(info.value)
        assert time.monotonic() - cut_at < 3, "the checks above took longer than max_staleness"
        # After it, token logins fail closed with a clear error; passwords still work.
        time.sleep(max(0.0, cut_at + 3.5 - time.monotonic()))
        with pytest.raises(psycopg.OperationalError) as info:
            login(tg.target(), "analyst", token)
        assert "API token logins are unavailable" in str(info.value), str(info.value)
        with login(tg.target(), "analyst", "analyst") as c:
            c.execute("SELECT 1")
        # The feed comes back: so do token logins.
        relay.resume()
        deadline = time.monotonic() + 10
        while True:
            try:
                with login(tg.target(), "analyst", token) as c:
                    c.execute("SELECT 1")
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        relay.cut()


def test_store_migrate_to_postgres(spawn_tokengate, pg, fleet_db, kek_dir):
    kek = write_kek(kek_dir)
    lmdb_tg = spawn_tokengate((str(pg.socket_dir), pg.port), ["--max-failed-logins", "100000"])
    active = [create_token(lmdb_tg.target(), user="analyst", name=f"kept_{i}") for i in range(3)]
    revoked = [create_token(lmdb_tg.target(), user="analyst", name=f"gone_{i}") for i in range(2)]
    with login(lmdb_tg.target(), "admin", "admin") as c:
        for name, _, _ in revoked:
            c.execute(f"DROP API TOKEN {name} FOR USER analyst")
        c.execute("ALTER ROLE analyst SET API TOKEN MAX DURATION '90d'")
    data_dir = lmdb_tg.data_dir
    lmdb_tg.stop_keep_data = True
    lmdb_tg.proc.terminate()
    lmdb_tg.proc.wait(10)

    dsn = f"host={pg.socket_dir} port={pg.port} user=postgres dbname={fleet_db}"
    cli = [str(lmdb_tg.binary), "store", "migrate", "--to", "postgres", "--data-dir", str(data_dir),
           "--store-dsn", dsn, "--kek-file", str(kek)]
    out = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "copied 5 token(s) (2 revoked), 1 policy(ies)" in out.stdout, out.stdout
    # Running it again changes nothing.
    again = subprocess.run(cli, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "5 token(s) were there already" in again.stdout, again.stdout + again.stderr

    [tg] = start_fleet(spawn_tokengate, pg, fleet_db, kek, n=1)
    for name, token, _ in active:
        with login(tg.target(), "analyst", token) as c:
            assert c.execute("SELECT current_user").fetchone()[0] == "analyst", name
    for name, token, _ in revoked:
        with pytest.raises(psycopg.OperationalError):
            login(tg.target(), "analyst", token)
    with login(tg.target(), "analyst", "analyst") as c:
        rows = c.execute("SHOW ALL API TOKENS").fetchall()
        status = {r[0]: r[5] for r in rows}
        assert {n: status.get(n) for n, _, _ in active + revoked} == {
            **{n: "active" for n, _, _ in active}, **{n: "revoked" for n, _, _ in revoked}}
        pol = c.execute("SHOW API TOKEN POLICIES FOR USER analyst").fetchall()
        assert pol[0][0] == "analyst" and pol[0][2] == "90 days", pol


def test_a_revocation_missed_during_an_outage_is_caught_up(spawn_tokengate, pg, fleet_db, kek_dir):
    """The cut-off instance misses the NOTIFY; on reconnection it reads the feed from its position, refuses the
    token and ends the session it held."""
    kek = write_kek(kek_dir)
    relay = TcpRelay((pg.host, pg.port))
    dsn = f"host=127.0.0.1 port={relay.port} user=admin password={ROLES['admin']} dbname={fleet_db}"
    try:
        [direct_tg] = start_fleet(spawn_tokengate, pg, fleet_db, kek, n=1)
        [cut_tg] = start_fleet(spawn_tokengate, pg, fleet_db, kek, n=1, extra=["--store-dsn", dsn])
        name, token, _ = create_token(direct_tg.target(), user="analyst", name="missed")
        held = login(cut_tg.target(), "analyst", token)
        held.execute("SELECT 1")
        relay.cut()
        with login(direct_tg.target(), "analyst", "analyst") as c:
            c.execute(f"DROP API TOKEN {name}")
        time.sleep(1.5)
        held.execute("SELECT 1")  # cut off: it has not heard (max_staleness allows this for a while)
        relay.resume()
        resumed = time.monotonic()
        with pytest.raises(psycopg.Error):
            while time.monotonic() - resumed < 8:
                held.execute("SELECT 1")
                time.sleep(0.05)
        assert time.monotonic() - resumed < 6, "the session outlived the reconnection by too long"
        with pytest.raises(psycopg.OperationalError):
            login(cut_tg.target(), "analyst", token)
    finally:
        relay.cut()

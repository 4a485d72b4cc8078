# Integration-test fixtures: a throwaway PostgreSQL 15 cluster, the tokengate binary in front of it, and twin helpers.
#
# Run with Debian's interpreter:  /usr/bin/python3 -m pytest tests/integration -q
#   -k direct                      only the direct-to-PostgreSQL variants (no binary needed)
#   TOKENGATE_BIN=/path            use another binary than build/tokengate
#   TOKENGATE_REQUIRE=1            a missing or broken binary is an error, not a skip (./dev test sets it)
#   TOKENGATE_EXTRA_ARGS="..."     extra flags appended to `tokengate serve ...`
#   TG_KEEP_TMP=1                  keep the cluster and logs after the session (paths are printed)
#   TG_UPSTREAM_AUTH=password      run the session tokengate in password mode (TCP upstream, userlist) instead of trust
#
# Fixtures:
#   pg         session: PgCluster (host/port, socket_dir, log_path, admin_conn(), log_mark()/log_since(),
#              logged_statements(mark): what the upstream received since mark)
#   tokengate  session: TokengateProcess (host/port, http_port, data_dir, log_path, audit_path, log_tail(), rss_kib()); skipped or
#              failed when unusable. Upstream login mode `trust`: it reaches PostgreSQL over the Unix
#              socket, which the cluster trusts; tokengate must check ordinary passwords itself.
#   tokengate_pw  session: a second tokengate in `password` mode (upstream over TCP, scram/md5/password as for
#              direct clients; token sessions use the owner's password from a userlist file); proxy_pw its Target
#   http_api   an http_client.HttpApi for the session tokengate's HTTP gateway (requests)
#   spawn_tokengate  extra instances for one test: spawn(upstream=(host, port), extra_args=[...], start=True)
#   direct     Target for PostgreSQL itself;  proxy  Target through tokengate
#   target     parametrized over ["direct", "proxy"]: one test body, two runs (ids end in [direct]/[proxy])
#   twin       parametrized like target; twin.run(fn) runs fn(target) and, for proxy, also fn(direct)
#              and asserts both answers are identical (the twin requirement), returning the answer
# A Target has .conninfo(), .connect() (psycopg 3), .psql(...), .wire() (raw pgwire.WireConnection).
# Tokens:
#   create_token(target, user=..., name=..., for_user=..., duration=..., comment=...) -> (name, token, expires_at)
#              via CREATE API TOKEN through tokengate; mint_token: the same bound to `proxy`
#   cli_revoke(tg, name, user)   `tokengate tokens revoke NAME --user U --data-dir <tg.data_dir>`
#   remember_secret(value) / SECRETS   every token and password a test used, for the "never logged" test
#   fresh_role(attrs, password)  a throwaway upstream role for one test -> (name, password)
#   mask(secret)               what may appear in an assertion message instead of a token
#   @pytest.mark.run_last      moves a test to the end of the session (the log scan)
# See README.md in this folder for the roles and the test files.
from __future__ import annotations

import atexit
import dataclasses
import difflib
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import psycopg
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pgwire  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PSQL = shutil.which("psql", path="/usr/bin") or str(PG_BIN / "psql")

# Fixed test roles (user -> password). Only these passwords ever appear in test output.
ROLES = {
    "admin": "admin",
    "analyst": "analyst",
    "md5user": "md5user",
    "plainuser": "plainuser",
    "nologin_role": "nologin_role",
}

TOKENGATE_START_TIMEOUT = 10.0  # seconds until the listen port must accept connections
TOKENGATE_STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL


def require_tokengate() -> bool:
    return os.environ.get("TOKENGATE_REQUIRE", "") not in ("", "0")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 40) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        return f"(cannot read {path}: {e})"
    text = data[-64 * 1024 :].decode("utf-8", "replace")
    if not text.strip():
        return f"({path} is empty)"
    out = [ln if len(ln) <= 400 else ln[:400] + f"… ({len(ln)} chars)" for ln in text.splitlines()[-lines:]]
    return "\n".join(out)


def _cleanup_tmp(path: Path) -> None:
    if os.environ.get("TG_KEEP_TMP"):
        print(f"[integration] kept {path}", file=sys.stderr)
        return
    shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- PostgreSQL


class LogFile:
    """log_mark()/log_since() over a process's log file (self.log_path): what was written between two points."""

    log_path: Path

    def log_mark(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_since(self, mark: int) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(mark)
            return f.read().decode("utf-8", "replace")


class PgCluster(LogFile):
    """A PostgreSQL 15 cluster in a temp dir, listening on 127.0.0.1:<port> and a Unix socket in the same dir."""

    HBA = "\n".join(
        [
            "# written by tests/integration/conftest.py",
            "local all postgres trust",  # the harness itself
            "local all all trust",  # tokengate's upstream login in trust mode: only it uses the socket
            "local replication all trust",  # the same for physical replication connections (replication=true)
            "host all md5user 127.0.0.1/32 md5",  # md5user has an MD5 verifier: upstream asks MD5
            "host all plainuser 127.0.0.1/32 password",  # upstream asks cleartext
            "host all all 127.0.0.1/32 scram-sha-256",
            "host replication all 127.0.0.1/32 scram-sha-256",  # direct twins of replication connections
            "",
        ]
    )

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="tg-pg-"))
        self.datadir = self.tmp / "data"
        self.socket_dir = self.tmp
        self.log_path = self.tmp / "postgresql.log"
        self.host = "127.0.0.1"
        self.port = 0
        self.as_root = os.geteuid() == 0
        self.started = False
        self._stopped = False
        if self.as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.tmp, pw.pw_uid, pw.pw_gid)

    def _run(self, args: list[str], **kw: Any) -> subprocess.CompletedProcess:
        if self.as_root:
            args = ["runuser", "-u", "postgres", "--"] + args
        p = subprocess.run(args, cwd=self.tmp, capture_output=True, text=True, **kw)
        if p.returncode != 0:
            raise RuntimeError(
                f"{shlex.join(args)} failed (rc={p.returncode})\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}\n"
                f"server log tail:\n{tail(self.log_path)}"
            )
        return p

    def start(self) -> None:
        self._run(
            [str(PG_BIN / "initdb"), "-D", str(self.datadir), "-U", "postgres", "--auth=trust",
             "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]
        )
        (self.datadir / "pg_hba.conf").write_text(self.HBA)
        last_error: Exception | None = None
        for _attempt in range(3):  # the free port may be taken between probe and bind
            self.port = free_port()
            conf = {
                "port": str(self.port),
                "listen_addresses": "'127.0.0.1'",
                "unix_socket_directories": f"'{self.socket_dir}'",
                "password_encryption": "'scram-sha-256'",
                "log_statement": "'all'",
                "log_connections": "on",
                "log_line_prefix": "'%m [%p] %q%u@%d %a: '",
                "logging_collector": "off",  # stderr goes to pg_ctl -l <log_path>
                "fsync": "off",
                "synchronous_commit": "off",
                "full_page_writes": "off",
                "max_connections": "200",
                "lc_messages": "'C'",
            }
            with open(self.datadir / "postgresql.auto.conf", "w") as f:
                f.write("# written by tests/integration/conftest.py\n")
                for k, v in conf.items():
                    f.write(f"{k} = {v}\n")
            try:
                self._run(
                    [str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.log_path),
                     "-w", "-t", "30", "start"]
                )
                self.started = True
                break
            except RuntimeError as e:
                last_error = e
        if not self.started:
            raise RuntimeError(f"PostgreSQL did not start: {last_error}")
        self._create_roles()

    def _create_roles(self) -> None:
        with self.admin_conn() as c:
            c.execute("CREATE ROLE admin LOGIN SUPERUSER PASSWORD 'admin'")
            c.execute("CREATE ROLE analyst LOGIN PASSWORD 'analyst'")
            c.execute("CREATE ROLE service_accounts NOLOGIN")
            c.execute("GRANT service_accounts TO analyst")
            c.execute("SET password_encryption = 'md5'")
            c.execute("CREATE ROLE md5user LOGIN PASSWORD 'md5user'")
            c.execute("RESET password_encryption")
            c.execute("CREATE ROLE plainuser LOGIN PASSWORD 'plainuser'")
            c.execute("CREATE ROLE nologin_role NOLOGIN PASSWORD 'nologin_role'")
            verifier = c.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'md5user'").fetchone()[0]
            assert verifier.startswith("md5"), "md5user should have an MD5 verifier"

    def admin_conn(self, dbname: str = "postgres") -> psycopg.Connection:
        """Superuser connection over the Unix socket (trust); for the harness, never through tokengate."""
        return psycopg.connect(
            host=str(self.socket_dir), port=self.port, user="postgres", dbname=dbname, autocommit=True,
            connect_timeout=10,
        )

    def logged_statements(self, mark: int) -> list[str]:
        """Statements the upstream received since `mark` (log_statement=all), in order: simple Query strings
        ("statement: …") and extended-protocol executions ("execute <name>: …"). For proving that a statement
        never reached PostgreSQL; multi-line statements come back whole."""
        entries: list[str] = []
        for line in self.log_since(mark).split("\n"):
            if line.startswith("\t") and entries:  # PostgreSQL indents continuation lines with a tab
                entries[-1] += "\n" + line[1:]
            else:
                entries.append(line)
        out = []
        for e in entries:
            # tokengate's own catalog look-ups (application_name tokengate-control) are not client statements.
            if " tokengate-control: " in e:
                continue
            m = re.search(r" LOG:  (?:statement|execute [^:]*): (.*)", e, re.S)
            if m:
                out.append(m.group(1))
        return out

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.started:
            try:
                self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop"])
            except Exception as e:  # noqa: BLE001 - cleanup must go on
                print(f"[integration] pg_ctl stop failed: {e}", file=sys.stderr)
        _cleanup_tmp(self.tmp)


# ---------------------------------------------------------------- tokengate


class TokengateUnavailable(Exception):
    pass


class TokengateProcess(LogFile):
    """build/tokengate serve in front of the cluster; stderr to <tmp>/tokengate.log."""

    def __init__(self, binary: Path, upstream: tuple[str, int], extra_args: list[str] | None = None) -> None:
        self.binary = binary
        self.upstream = upstream
        self.extra_args = extra_args or []
        self.tmp = Path(tempfile.mkdtemp(prefix="tg-proxy-"))
        self.data_dir = self.tmp / "tg-data"
        self.log_path = self.tmp / "tokengate.log"
        self.audit_path = self.data_dir / "audit.log"  # the default audit_log (issue 5)
        self.host = "127.0.0.1"
        self.port = free_port()
        # The HTTP gateway's port: every instance gets its own (the default 8432 would collide); None when
        # the binary has no gateway or the test passes its own --http-listen.
        self.http_port: int | None = None
        if "--http-listen" not in self.extra_args and binary_has_flag(binary, "--http-listen"):
            self.http_port = free_port()
        self.proc: subprocess.Popen | None = None
        self._stopped = False
        _ALL_TOKENGATES.append(self)

    @property
    def argv(self) -> list[str]:
        argv = [
            str(self.binary), "serve",
            "--listen", f"{self.host}:{self.port}",
            "--upstream", f"{self.upstream[0]}:{self.upstream[1]}",
            "--data-dir", str(self.data_dir),
        ]
        if self.http_port is not None:
            argv += ["--http-listen", f"{self.host}:{self.http_port}"]
        argv += shlex.split(os.environ.get("TOKENGATE_EXTRA_ARGS", ""))
        return argv + self.extra_args

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        """Start the process without waiting for it to listen."""
        log = open(self.log_path, "wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.tmp, env=env,
            start_new_session=True,
        )
        log.close()

    def wait_ready(self) -> None:
        """Wait until the listen port accepts connections; TokengateUnavailable if it exits or times out."""
        assert self.proc is not None
        deadline = time.monotonic() + TOKENGATE_START_TIMEOUT
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                raise TokengateUnavailable(
                    f"{shlex.join(self.argv)} exited with rc={rc} before accepting connections; "
                    f"log tail:\n{self.log_tail()}"
                )
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise TokengateUnavailable(
            f"{shlex.join(self.argv)} did not accept connections on {self.host}:{self.port} "
            f"within {TOKENGATE_START_TIMEOUT:.0f} s; log tail:\n{self.log_tail()}"
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def target(self) -> "Target":
        return Target("proxy", self.host, self.port)

    def rss_kib(self) -> int:
        """Resident set size of the process, from /proc."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS in /proc status")

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(TOKENGATE_STOP_GRACE)
            except subprocess.TimeoutExpired:
                print("[integration] tokengate ignored SIGTERM for 5 s; sending SIGKILL", file=sys.stderr)
                self.proc.kill()
                self.proc.wait()
        _archive_logs(self)
        _cleanup_tmp(self.tmp)

    def log_texts(self) -> list[tuple[str, str]]:
        """(label, text) of this instance's log and audit log, from its files or, once stopped, the archive."""
        out = []
        for label, path in (("log", self.log_path), ("audit log", self.audit_path)):
            archived = _LOG_ARCHIVE.get((id(self), label))
            if archived is not None:
                out.append((f"{label} of tokengate :{self.port}", archived))
                continue
            try:
                out.append((f"{label} of tokengate :{self.port}", path.read_bytes().decode("utf-8", "replace")))
            except OSError:
                pass
        return out


# Every tokengate started in this session, and the logs of those already stopped (their temp dirs are gone):
# the "no token or password is ever logged" test reads them all at the end.
_ALL_TOKENGATES: list[TokengateProcess] = []
_LOG_ARCHIVE: dict[tuple[int, str], str] = {}


def _archive_logs(tg: TokengateProcess) -> None:
    for label, path in (("log", tg.log_path), ("audit log", tg.audit_path)):
        try:
            _LOG_ARCHIVE[(id(tg), label)] = path.read_bytes().decode("utf-8", "replace")
        except OSError:
            pass


def all_tokengate_logs() -> list[tuple[str, str]]:
    """(label, text) of every log and audit log written by any tokengate of this session."""
    out = []
    for tg in _ALL_TOKENGATES:
        out += tg.log_texts()
    return out


# ---------------------------------------------------------------- secrets

# Every token value and non-trivial password a test used (the fixed ROLES passwords equal the role names, which
# legitimately appear in logs, so they are not listed). Session-wide; read by the run_last log scan.
SECRETS: list[str] = []


def remember_secret(value: str) -> str:
    if value and value not in SECRETS:
        SECRETS.append(value)
    return value


def mask(secret: str | None) -> str:
    """A token or password as it may appear in an assertion message: a prefix and the length, never the whole."""
    if secret is None:
        return "None"
    return f"{secret[:8]}…({len(secret)} chars)"


def fresh_password(prefix: str = "pw") -> str:
    """A random password, remembered for the log scan."""
    return remember_secret(f"{prefix}-{uuid.uuid4().hex}")


# ---------------------------------------------------------------- targets


@dataclasses.dataclass
class PsqlResult:
    args: list[str]
    rc: int
    stdout: str
    stderr: str

    def check(self) -> "PsqlResult":
        assert self.rc == 0, f"psql failed (rc={self.rc}): {shlex.join(self.args)}\nstderr:\n{self.stderr[-4000:]}"
        return self

    def __repr__(self) -> str:
        out = self.stdout if len(self.stdout) < 2000 else self.stdout[:2000] + f"… ({len(self.stdout)} chars)"
        return f"PsqlResult(rc={self.rc}, stdout={out!r}, stderr={self.stderr[-2000:]!r})"


def clean_env(**extra: str) -> dict[str, str]:
    """Environment for client programs: no inherited PG* settings, C messages, fixed passwords only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update({"LC_ALL": "C.UTF-8", "LC_MESSAGES": "C", "PGCONNECT_TIMEOUT": "10"})
    env.update(extra)
    return env


@dataclasses.dataclass
class Target:
    """Where a client connects: PostgreSQL directly ("direct") or tokengate ("proxy")."""

    name: str
    host: str
    port: int

    def conninfo(self, user: str = "admin", password: str | None = None, dbname: str = "postgres", **kw: Any) -> str:
        if password is None:
            password = ROLES.get(user, "")
        return psycopg.conninfo.make_conninfo(
            host=self.host, port=self.port, user=user, password=password, dbname=dbname, connect_timeout=10, **kw
        )

    def connect(self, user: str = "admin", password: str | None = None, dbname: str = "postgres",
                autocommit: bool = True, **kw: Any) -> psycopg.Connection:
        return psycopg.connect(self.conninfo(user, password, dbname, **kw), autocommit=autocommit)

    def psql(self, *args: str, user: str = "admin", password: str | None = None, dbname: str = "postgres",
             input: str | None = None, timeout: float = 120, env: dict[str, str] | None = None,
             cwd: str | Path | None = None) -> PsqlResult:
        """Run psql -X -v ON_ERROR_STOP=1 against this target; never raises on a non-zero rc."""
        if password is None:
            password = ROLES.get(user, "")
        argv = [PSQL, "-X", "-v", "ON_ERROR_STOP=1", "-h", self.host, "-p", str(self.port), "-U", user,
                "-d", dbname, *args]
        p = subprocess.run(
            argv, input=input, capture_output=True, text=True, timeout=timeout, cwd=cwd,
            env=clean_env(PGPASSWORD=password, **(env or {})),
        )
        return PsqlResult(argv, p.returncode, p.stdout, p.stderr)

    def wire(self, timeout: float = 10.0) -> pgwire.WireConnection:
        return pgwire.WireConnection(self.host, self.port, timeout=timeout)

    def normalize(self, text: str) -> str:
        """Replace this target's port with a placeholder so that texts of both targets compare."""
        return text.replace(str(self.port), "<port>")


def assert_twin_equal(got: Any, want: Any, what: str = "answer") -> None:
    """Proxy answer must equal the direct one; on mismatch show a unified diff of the two."""
    if got == want:
        return
    g = got if isinstance(got, str) else repr(got)
    w = want if isinstance(want, str) else repr(want)
    if len(g) > 200 or len(w) > 200 or "\n" in g or "\n" in w:
        gl = g.splitlines(keepends=True) if "\n" in g else [g[i:i + 100] + "\n" for i in range(0, len(g), 100)]
        wl = w.splitlines(keepends=True) if "\n" in w else [w[i:i + 100] + "\n" for i in range(0, len(w), 100)]
        diff = "".join(list(difflib.unified_diff(wl, gl, "direct", "proxy", n=2))[:80])
        raise AssertionError(f"{what} through tokengate differs from direct PostgreSQL:\n{diff}")
    raise AssertionError(f"{what} through tokengate differs from direct PostgreSQL:\n  direct: {w}\n  proxy:  {g}")


class Twin:
    """One test body, run against `target`; for the proxy, the direct answer is computed too and must match."""

    def __init__(self, target: Target, direct: Target) -> None:
        self.target = target
        self.direct = direct

    @property
    def is_proxy(self) -> bool:
        return self.target.name == "proxy"

    def run(self, fn: Callable[[Target], Any], what: str = "answer") -> Any:
        got = fn(self.target)
        if self.is_proxy:
            want = fn(self.direct)
            assert_twin_equal(got, want, what)
        return got


# ---------------------------------------------------------------- tokens


def sql_literal(text: str) -> str:
    """A standard SQL string constant (standard_conforming_strings is on)."""
    return "'" + text.replace("'", "''") + "'"


def create_token(target: Target, user: str = "analyst", password: str | None = None, name: str | None = None,
                 for_user: str | None = None, duration: str | None = None, comment: str | None = None,
                 ) -> tuple[str, str, Any]:
    """CREATE API TOKEN through tokengate as `user`; returns (name, token, expires_at) and remembers
    the token for the log scan."""
    sql = "CREATE API TOKEN"
    if name is not None:
        sql += f" {name}"
    if for_user is not None:
        sql += f" FOR USER {for_user}"
    if duration is not None:
        sql += f" MAX DURATION {sql_literal(duration)}"
    if comment is not None:
        sql += f" COMMENT {sql_literal(comment)}"
    with target.connect(user=user, password=password) as conn:
        cur = conn.execute(sql)
        rows = cur.fetchall()
        cols = [d.name for d in cur.description] if cur.description else None
    assert cols == ["name", "token", "expires_at"], f"{sql}: columns {cols}"
    assert len(rows) == 1, f"{sql}: {len(rows)} rows"
    tname, token, expires_at = rows[0]
    remember_secret(token)
    return tname, token, expires_at


def tokengate_cli(tg: TokengateProcess, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    """`tokengate <args> --data-dir <tg.data_dir>`, e.g. tokengate_cli(tg, "tokens", "list")."""
    argv = [str(tg.binary), *args, "--data-dir", str(tg.data_dir)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=clean_env())


def cli_revoke(tg: TokengateProcess, name: str, user: str) -> subprocess.CompletedProcess:
    """`tokengate tokens revoke NAME --user U --data-dir <data dir>`: another process revoking in the shared store."""
    return tokengate_cli(tg, "tokens", "revoke", name, "--user", user)


# ---------------------------------------------------------------- fixtures


class _Session:
    """The session's processes, for teardown checks and failure reports (fixtures may be requested lazily)."""

    pg: PgCluster | None = None
    tokengate: TokengateProcess | None = None
    others: list[TokengateProcess] = []  # further session-scoped instances (tokengate_pw)
    death_reported = False


_cleanups: list[Callable[[], None]] = []


def _run_cleanups() -> None:
    while _cleanups:
        fn = _cleanups.pop()
        try:
            fn()
        except Exception as e:  # noqa: BLE001
            print(f"[integration] cleanup failed: {e}", file=sys.stderr)


atexit.register(_run_cleanups)  # also when pytest is interrupted before fixture teardown


def _sigterm_as_interrupt(signum, frame):  # noqa: ARG001
    # CI timeouts and `kill` send SIGTERM, whose default action skips finally blocks and atexit and would leave
    # the cluster and tokengate running; turn it into an interrupt so that pytest tears the fixtures down.
    raise KeyboardInterrupt(f"signal {signum}")


if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)


@pytest.fixture(scope="session")
def pg() -> PgCluster:
    cluster = PgCluster()
    _cleanups.append(cluster.stop)
    _Session.pg = cluster
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def tokengate_binary() -> Path:
    """The binary under test; skips the calling test when it is missing (fails under TOKENGATE_REQUIRE=1)."""
    binary = Path(os.environ.get("TOKENGATE_BIN", REPO / "build" / "tokengate"))
    if not binary.exists():
        msg = f"tokengate binary {binary} does not exist (build it, or set TOKENGATE_BIN)"
        if require_tokengate():
            pytest.fail(msg + "; TOKENGATE_REQUIRE=1 makes this an error", pytrace=False)
        pytest.skip(msg)
    return binary


_HELP_CACHE: dict[Path, str] = {}


def binary_has_flag(binary: Path, flag: str) -> bool:
    """Whether `tokengate --help` lists `flag` (for a harness that works with the binary of every stage)."""
    if binary not in _HELP_CACHE:
        p = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=30)
        _HELP_CACHE[binary] = p.stdout + p.stderr
    return re.search(re.escape(flag) + r"\b", _HELP_CACHE[binary]) is not None


def session_extra_args(binary: Path) -> list[str]:
    """Flags every session-wide instance gets. The client tests create tokens from sessions that logged in with
    a token, which tokengate refuses by default (token_sessions.manage_credentials = false): the session
    instances allow it, and test_token_admins.py checks the default on instances of its own."""
    if binary_has_flag(binary, "--token-sessions-manage-credentials"):
        return ["--token-sessions-manage-credentials", "true"]
    return []


def _start_session_tokengate(proc: TokengateProcess) -> None:
    error = None
    try:
        proc.start()
    except TokengateUnavailable as e:
        error = str(e)
    if error is not None:
        # A binary that exists but cannot serve is a bug of the relay, not an unbuilt tree: fail, never skip.
        pytest.fail(error, pytrace=False)


@pytest.fixture(scope="session")
def tokengate(pg: PgCluster) -> TokengateProcess:
    binary = tokengate_binary()
    if os.environ.get("TG_UPSTREAM_AUTH") == "password":
        proc = _password_mode_process(binary, pg)  # the whole suite in the other login mode
    elif binary_has_flag(binary, "--upstream-auth"):
        # Upstream login mode `trust`, the default: the cluster trusts its Unix socket
        # (`local all all trust`), so tokengate itself must verify ordinary passwords.
        # Throttling (issue 5) is tested on instances of its own; the suite's many deliberate failures from
        # 127.0.0.1 must not slow every later test down.
        proc = TokengateProcess(binary, (str(pg.socket_dir), pg.port),
                                ["--upstream-auth", "trust", "--max-failed-logins", "100000",
                                 *session_extra_args(binary)])
    else:
        # A binary from before the login modes (the relay stage) only passes passwords on: give it TCP, where
        # the cluster checks them, so that its tests keep their meaning.
        proc = TokengateProcess(binary, (pg.host, pg.port))
    _cleanups.append(proc.stop)
    try:
        _start_session_tokengate(proc)
        _Session.tokengate = proc
        yield proc
    finally:
        proc.stop()
        _Session.tokengate = None


def write_userlist(path: Path, users: dict[str, str]) -> Path:
    """A PgBouncer auth_file: one `"user" "password"` line per role (double quotes doubled inside)."""
    q = lambda v: '"' + v.replace('"', '""') + '"'  # noqa: E731
    path.write_text("".join(f"{q(u)} {q(pw)}\n" for u, pw in users.items()))
    path.chmod(0o600)
    return path


@pytest.fixture(scope="session")
def tokengate_pw(pg: PgCluster) -> TokengateProcess:
    """tokengate in `password` mode: the upstream (TCP, scram/md5/password) checks every password;
    token sessions and the control connections (--control-user admin) use passwords from the userlist."""
    proc = _password_mode_process(tokengate_binary(), pg)
    _cleanups.append(proc.stop)
    try:
        _start_session_tokengate(proc)
        _Session.others.append(proc)
        yield proc
    finally:
        proc.stop()


def _password_mode_process(binary: Path, pg: PgCluster) -> TokengateProcess:
    userlist_dir = Path(tempfile.mkdtemp(prefix="tg-userlist-"))
    _cleanups.append(lambda: _cleanup_tmp(userlist_dir))
    userlist = write_userlist(userlist_dir / "userlist.txt",
                              {u: pw for u, pw in ROLES.items() if u != "nologin_role"})
    return TokengateProcess(binary, (pg.host, pg.port),
                            ["--upstream-auth", "password", "--userlist", str(userlist), "--control-user", "admin",
                             "--max-failed-logins", "100000", *session_extra_args(binary),
                             # md5user's and plainuser's logins make the cluster ask for MD5 and cleartext
                             # passwords, which tokengate answers only when told to expect them.
                             *(["--upstream-require-auth", "scram-sha-256,md5,password"]
                               if binary_has_flag(binary, "--upstream-require-auth") else [])])


@pytest.fixture
def spawn_tokengate():
    """Start extra tokengate instances for one test (own port and data dir): spawn(upstream=(host, port), extra_args=[...]).

    Returns the TokengateProcess, already accepting connections; every instance is stopped after the test.
    Pass start=False to get it unstarted (e.g. to test start-up failures yourself)."""
    procs: list[TokengateProcess] = []

    def spawn(upstream: tuple[str, int], extra_args: list[str] | None = None, start: bool = True) -> TokengateProcess:
        proc = TokengateProcess(tokengate_binary(), upstream, extra_args)
        procs.append(proc)
        _cleanups.append(proc.stop)
        if start:
            proc.start()
        return proc

    yield spawn
    for p in procs:
        p.stop()


@pytest.fixture
def fresh_role(pg: PgCluster):
    """Throwaway upstream roles for one test: fresh_role(attrs="LOGIN", password=None) -> (name, password).
    The password is random (and remembered for the log scan) unless given; every role is dropped afterwards."""
    made: list[str] = []

    def make(attrs: str = "LOGIN", password: str | None = None, prefix: str = "tg_role") -> tuple[str, str]:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        password = password if password is not None else fresh_password(name)
        with pg.admin_conn() as c:
            c.execute(f"CREATE ROLE {name} {attrs} PASSWORD {sql_literal(password)}")
        made.append(name)
        return name, password

    yield make
    with pg.admin_conn() as c:
        for name in made:
            c.execute(f"DROP ROLE IF EXISTS {name}")


@pytest.fixture
def mint_token(proxy: Target):
    """create_token bound to the session tokengate: mint_token(user="analyst", duration="1h", ...)."""

    def mint(user: str = "analyst", **kw: Any) -> tuple[str, str, Any]:
        return create_token(proxy, user=user, **kw)

    return mint


@pytest.fixture(scope="session")
def direct(pg: PgCluster) -> Target:
    return Target("direct", pg.host, pg.port)


@pytest.fixture
def proxy(tokengate: TokengateProcess) -> Target:
    if not tokengate.alive():
        pytest.fail(f"tokengate is no longer running (rc={tokengate.proc.returncode}); log tail:\n"
                    f"{tokengate.log_tail()}", pytrace=False)
    return Target("proxy", tokengate.host, tokengate.port)


@pytest.fixture
def http_api(tokengate: TokengateProcess):
    """An http_client.HttpApi for the session tokengate's HTTP gateway (http://127.0.0.1:<tokengate.http_port>)."""
    import http_client  # noqa: PLC0415 - needs python3-requests, only for the HTTP tests

    if tokengate.http_port is None:
        pytest.fail("this tokengate binary has no --http-listen", pytrace=False)
    return http_client.HttpApi(f"http://{tokengate.host}:{tokengate.http_port}")


@pytest.fixture
def proxy_pw(tokengate_pw: TokengateProcess) -> Target:
    if not tokengate_pw.alive():
        pytest.fail(f"tokengate (password mode) is no longer running (rc={tokengate_pw.proc.returncode}); "
                    f"log tail:\n{tokengate_pw.log_tail()}", pytrace=False)
    return Target("proxy_pw", tokengate_pw.host, tokengate_pw.port)


@pytest.fixture(params=["direct", "proxy"])
def target(request: pytest.FixtureRequest) -> Target:
    return request.getfixturevalue(request.param)


@pytest.fixture
def twin(target: Target, direct: Target) -> Twin:
    return Twin(target, direct)


@pytest.fixture(autouse=True)
def _tokengate_survives():
    """A test that crashes tokengate fails (in teardown), with the log tail; later tests then fail fast."""
    yield
    for tg in [_Session.tokengate, *_Session.others]:
        if tg is not None and not tg.alive() and not tg._stopped and not _Session.death_reported:
            _Session.death_reported = True
            pytest.fail(f"tokengate :{tg.port} exited (rc={tg.proc.returncode}) during this test; log tail:\n"
                        f"{tg.log_tail()}", pytrace=False)


def _uses_proxy(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    if callspec is not None and callspec.params.get("target") == "proxy":
        return True
    return bool({"proxy", "tokengate", "mint_token"} & set(getattr(item, "fixturenames", ())))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "run_last: run after every other test of the session (log scans)")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.get_closest_marker("run_last") is not None)  # stable: order kept otherwise


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if not report.failed or report.when == "setup" and _Session.pg is None:
        return
    if _Session.tokengate is not None and _uses_proxy(item):
        report.sections.append(("tokengate log tail", _Session.tokengate.log_tail()))
    if "tokengate_pw" in getattr(item, "fixturenames", ()) or "proxy_pw" in getattr(item, "fixturenames", ()):
        for tg in _Session.others:
            report.sections.append((f"tokengate :{tg.port} (password mode) log tail", tg.log_tail()))
    if _Session.pg is not None:
        report.sections.append(("postgresql log tail", tail(_Session.pg.log_path, 15)))

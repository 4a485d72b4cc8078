# Operating tokengate (issue 14): GET /metrics parsed by a real Prometheus parser with counters that move,
# SHOW TOKENGATE SESSIONS | STATUS | CONFIG for administrators only (simple and extended protocol, anywhere in a
# Query), the SIGTERM drain with /readyz, SHOW [ALL] API TOKENS, the revocation log line, and psql's pager.
from __future__ import annotations

import os
import pty
import select
import signal
import struct
import subprocess
import termios
import fcntl
import time
import uuid
from pathlib import Path

import psycopg
import psycopg2
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

import pgwire
from conftest import PSQL, PgCluster, Target, TokengateProcess, clean_env, create_token, mask, remember_secret


def uniq(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def scrape(tg: TokengateProcess, **kw) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics, parsed by prometheus_client: {(sample name, sorted labels): value}."""
    r = requests.get(f"http://{tg.host}:{tg.http_port}/metrics", timeout=10, **kw)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers
    out = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: dict, name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def token_login(t: Target, user: str, token: str) -> pgwire.WireConnection:
    c = t.wire(timeout=20)
    r = pgwire.login(c, user, token)
    if not r.ok:
        c.close()
        raise AssertionError(f"token login of {user} with {mask(token)} failed: {r.error}")
    return c


# ---------------------------------------------------------------- metrics


def test_metrics_parse_and_counters_move_with_logins(tokengate: TokengateProcess, proxy: Target, mint_token):
    before = scrape(tokengate)
    name, token, _ = mint_token(user="analyst", name=uniq("metrics"), duration="1h")
    c = token_login(proxy, "analyst", token)
    try:
        c.simple_query("SELECT 1")
    finally:
        c.close()
    bad = proxy.wire(timeout=20)
    try:
        assert not pgwire.login(bad, "analyst", token[:-4] + "AAAA").ok
    finally:
        bad.close()
    with proxy.connect(user="analyst") as conn:
        conn.execute("SELECT 1").fetchall()
    after = scrape(tokengate)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("tokengate_logins_total", method="token", outcome="ok") >= 1
    assert moved("tokengate_logins_total", method="token", outcome="denied") >= 1
    assert moved("tokengate_logins_total", method="password", outcome="ok") >= 2  # mint_token's, and ours
    assert moved("tokengate_token_operations_total", operation="create", outcome="ok") >= 1
    assert moved("tokengate_client_connections_total", listener="wire") >= 4
    assert moved("tokengate_relayed_bytes_total", **{"from": "client"}) > 0
    assert moved("tokengate_relayed_bytes_total", **{"from": "upstream"}) > 0
    assert moved("tokengate_query_duration_seconds_count") >= 2
    assert moved("tokengate_login_duration_seconds_count", method="token") >= 1
    assert moved("tokengate_upstream_connections_total") >= 3
    assert value(after, "tokengate_build_info", version=next(
        dict(k[1])["version"] for k in after if k[0] == "tokengate_build_info"),
        commit=next(dict(k[1])["commit"] for k in after if k[0] == "tokengate_build_info")) == 1
    assert value(after, "tokengate_draining") == 0
    # Histogram buckets are cumulative and end in +Inf == count.
    assert value(after, "tokengate_query_duration_seconds_bucket", le="+Inf") == \
        value(after, "tokengate_query_duration_seconds_count")


def test_metrics_count_tokens_expiring_soon(spawn_tokengate, pg: PgCluster):
    tg = spawn_tokengate(upstream=(str(pg.socket_dir), pg.port), extra_args=["--max-failed-logins", "100000"])
    t = tg.target()
    create_token(t, user="analyst", name=uniq("soon"), duration="2d")
    create_token(t, user="analyst", name=uniq("late"), duration="30d")
    dropped, _, _ = create_token(t, user="analyst", name=uniq("gone"), duration="1d")
    with t.connect(user="analyst") as c:
        c.execute(f"DROP API TOKEN {dropped}")
    m = scrape(tg)  # the first scrape counts the store
    assert value(m, "tokengate_tokens_expiring_soon") == 1
    assert value(m, "tokengate_tokens", state="active") == 2
    assert value(m, "tokengate_tokens", state="revoked") == 1
    assert value(m, "tokengate_sessions_ended_total", reason="revoked") == 0


def test_metrics_require_auth_wants_an_administrators_token(spawn_tokengate, pg: PgCluster):
    tg = spawn_tokengate(upstream=(str(pg.socket_dir), pg.port),
                         extra_args=["--metrics-require-auth", "true", "--max-failed-logins", "100000"])
    t = tg.target()
    url = f"http://{tg.host}:{tg.http_port}/metrics"
    assert requests.get(url, timeout=10).status_code == 401
    _, user_token, _ = create_token(t, user="analyst", duration="1h")
    r = requests.get(url, headers={"Authorization": f"Bearer {user_token}"}, timeout=10)
    assert r.status_code == 403 and r.json()["code"] == "42501", r.text
    _, admin_token, _ = create_token(t, user="admin", duration="1h")
    m = scrape(tg, headers={"Authorization": f"Bearer {admin_token}"})
    assert value(m, "tokengate_logins_total", method="token", outcome="ok") >= 2


# ---------------------------------------------------------------- SHOW TOKENGATE


@pytest.mark.parametrize("view", ["SESSIONS", "STATUS", "CONFIG"])
def test_show_tokengate_views_refused_to_non_administrators(proxy: Target, view: str):
    with proxy.connect(user="analyst") as c:  # psycopg 3: extended protocol
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
            c.execute(f"SHOW TOKENGATE {view}")
        assert str(e.value).startswith(f"permission denied to show tokengate {view.lower()}")
    p = proxy.psql("-c", f"SHOW TOKENGATE {view}", user="analyst")  # simple protocol
    assert p.rc != 0 and f"permission denied to show tokengate {view.lower()}" in p.stderr, p


def test_show_tokengate_sessions_for_administrators(proxy: Target, mint_token):
    name, token, _ = mint_token(user="analyst", name=uniq("sess"), duration="1h")
    idle = token_login(proxy, "analyst", token)
    idle.simple_query("SELECT 1")  # bytes relayed both ways (the login's are not counted)
    in_tx = psycopg2.connect(proxy.conninfo(user="analyst", application_name="tg_ops_tx"))
    try:
        in_tx.cursor().execute("SELECT 1")  # psycopg2 opens a transaction block: idle in transaction
        with proxy.connect(user="admin", application_name="tg_ops_admin") as a:
            cur = a.execute("SHOW TOKENGATE SESSIONS")  # extended protocol
            cols = [d.name for d in cur.description]
            rows = [dict(zip(cols, r)) for r in cur.fetchall()]
            me = [r for r in rows if r["application_name"] == "tg_ops_admin"]
            assert len(me) == 1, rows
            assert me[0]["user"] == "admin" and me[0]["login_method"] == "password" and me[0]["state"] == "active"
            assert me[0]["token_name"] is None and me[0]["tls"] == "off" and me[0]["client_addr"] == "127.0.0.1"
            assert me[0]["backend_pid"] == a.info.backend_pid
            tok = [r for r in rows if r["token_name"] == name]
            assert len(tok) == 1 and tok[0]["login_method"] == "token" and tok[0]["state"] == "idle", rows
            assert tok[0]["bytes_in"] > 0 and tok[0]["bytes_out"] > 0
            tx = [r for r in rows if r["application_name"] == "tg_ops_tx"]
            assert len(tx) == 1 and tx[0]["state"] == "idle in transaction", rows
        assert cols == ["backend_pid", "client_addr", "user", "database", "application_name", "login_method",
                        "token_name", "tls", "started_at", "state", "bytes_in", "bytes_out"]
        # Simple protocol, not the first statement of the Query.
        p = proxy.psql("-At", "-c", "SELECT 1 AS one; SHOW TOKENGATE SESSIONS; SELECT 2 AS two").check()
        lines = p.stdout.splitlines()
        assert lines[0] == "1" and lines[-1] == "2", p
        assert any(f"|{name}|" in line for line in lines), p
    finally:
        idle.close()
        in_tx.close()


def test_show_tokengate_status_and_config(proxy: Target):
    with psycopg2.connect(proxy.conninfo(user="admin")) as c:  # simple protocol
        cur = c.cursor()
        cur.execute("SHOW TOKENGATE STATUS")
        status = dict(cur.fetchall())
        cur.execute("SHOW TOKENGATE CONFIG")
        assert [d.name for d in cur.description] == ["setting", "value", "source"]
        config = {r[0]: (r[1], r[2]) for r in cur.fetchall()}
        c.rollback()
    assert status["version"] and status["state"] == "running" and int(status["sessions"]) >= 1
    assert "tokens_active" in status and status["store_backend"] == "lmdb"
    assert config["admin_role"] == ("tokengate_admin", "default")
    assert config["max_failed_logins"] == ("100000", "flag")  # the test fixture sets it
    assert config["metrics.require_auth"] == ("false", "default")


# ---------------------------------------------------------------- drain


def test_sigterm_drain(spawn_tokengate, pg: PgCluster):
    """SIGTERM: an idle session ends at once, a busy one when it becomes idle, an open transaction at the
    timeout (its row never committed); /readyz says draining meanwhile, /healthz stays ok."""
    table = uniq("tg_drain")
    with pg.admin_conn() as a:
        a.execute(f"CREATE TABLE {table} (v int)")
        a.execute(f"GRANT ALL ON {table} TO analyst")
    tg = spawn_tokengate(upstream=(str(pg.socket_dir), pg.port),
                         extra_args=["--max-failed-logins", "100000", "--shutdown-timeout", "4"])
    t = tg.target()
    base = f"http://{tg.host}:{tg.http_port}"
    assert requests.get(f"{base}/readyz", timeout=10).json() == {"status": "ready"}

    def session() -> pgwire.WireConnection:
        c = t.wire(timeout=20)
        r = pgwire.login(c, "analyst", "analyst")
        assert r.ok, r.error
        return c

    idle, busy, tx = session(), session(), session()
    try:
        tx.simple_query(f"BEGIN; INSERT INTO {table} VALUES (1)")
        busy.send(pgwire.query_message("SELECT pg_sleep(1.5)"))
        time.sleep(0.3)
        t0 = time.monotonic()
        tg.proc.send_signal(signal.SIGTERM)

        msgs, closed = idle.read_until_closed(5)
        assert closed and time.monotonic() - t0 < 2, f"the idle session was not ended at once: {msgs}"
        errs = [m.error() for m in msgs if m.tag == b"E"]
        assert [(e.severity, e.sqlstate, e.message) for e in errs] == \
            [("FATAL", "57P01", "terminating connection due to administrator command")], msgs

        r = requests.get(f"{base}/readyz", timeout=10)
        assert r.status_code == 503 and r.json() == {"status": "draining"}
        assert requests.get(f"{base}/healthz", timeout=10).status_code == 200
        assert requests.get(f"{base}/api/tokens", timeout=10).status_code == 503
        assert value(scrape(tg), "tokengate_draining") == 1

        # The busy session gets its answer, then ends as it reaches ReadyForQuery 'I'.
        msgs, closed = busy.read_until_closed(5)
        tags = [m.tag for m in msgs]
        assert b"C" in tags and b"Z" in tags and closed, msgs
        assert msgs[-1].tag == b"E" and msgs[-1].error().sqlstate == "57P01", msgs
        assert time.monotonic() - t0 < 3.5, "the busy session was held until the timeout"

        # The open transaction lasts until shutdown_timeout, then ends uncommitted.
        msgs, closed = tx.read_until_closed(15)
        elapsed = time.monotonic() - t0
        assert closed and elapsed >= 3.5, f"the transaction was ended after {elapsed:.1f} s: {msgs}"
        assert any(m.tag == b"E" and m.error().sqlstate == "57P01" for m in msgs), msgs
        tg.proc.wait(20)
        with pg.admin_conn() as a:
            assert a.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, "the open transaction committed"
    finally:
        for c in (idle, busy, tx):
            c.close()
        with pg.admin_conn() as a:
            a.execute(f"DROP TABLE IF EXISTS {table}")


# ---------------------------------------------------------------- SHOW [ALL] API TOKENS, revocation log


def test_show_api_tokens_active_only_and_show_all(proxy: Target, mint_token):
    keep, _, _ = mint_token(user="analyst", name=uniq("keep"), duration="1h")
    gone, _, _ = mint_token(user="analyst", name=uniq("gone"), duration="1h")
    with proxy.connect(user="analyst") as c:
        c.execute(f"DROP API TOKEN {gone}")
        active = {r[0]: r[5] for r in c.execute("SHOW API TOKENS").fetchall()}
        every = {r[0]: r[5] for r in c.execute("SHOW ALL API TOKENS").fetchall()}
    assert active.get(keep) == "active" and gone not in active
    assert every.get(keep) == "active" and every.get(gone) == "revoked"
    assert set(active.values()) == {"active"}


def test_sql_revocation_logs_ended_sessions(tokengate: TokengateProcess, proxy: Target, mint_token):
    name, token, _ = mint_token(user="analyst", name=uniq("logged"), duration="1h")
    victim = token_login(proxy, "analyst", token)
    try:
        mark = tokengate.log_mark()
        with proxy.connect(user="analyst") as c:
            c.execute(f"DROP API TOKEN {name}")
        victim.read_until_closed(15)
        deadline = time.monotonic() + 5
        while "ended 1 session(s) of revoked tokens" not in tokengate.log_since(mark) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "ended 1 session(s) of revoked tokens" in tokengate.log_since(mark), tokengate.log_since(mark)
    finally:
        victim.close()


# ---------------------------------------------------------------- psql's pager


def psql_in_a_terminal(t: Target, *args: str, columns: int = 120, lines: int = 40) -> tuple[str, bool]:
    """Runs psql on a pseudo-terminal of the given size with PAGER set to a script that records being
    started; returns (what the terminal showed, whether the pager ran)."""
    marker = Path(os.environ.get("TMPDIR", "/tmp")) / f"tg-pager-{uuid.uuid4().hex}"
    pager = marker.with_suffix(".sh")
    pager.write_text(f"#!/bin/sh\ntouch {marker}\ncat >/dev/null\n")
    pager.chmod(0o755)
    pid, fd = pty.fork()
    if pid == 0:  # the child: psql on the terminal
        env = clean_env(PGPASSWORD="analyst", PAGER=str(pager), TERM="xterm")
        os.execve(PSQL, [PSQL, "-X", "-h", t.host, "-p", str(t.port), "-U", "analyst", "-d", "postgres", *args], env)
    try:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
        out = b""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            r, _, _ = select.select([fd], [], [], 0.5)
            if not r:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    pid = 0
                    break
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        return out.decode(errors="replace"), marker.exists()
    finally:
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except OSError:
                pass
        os.close(fd)
        for p in (marker, pager):
            p.unlink(missing_ok=True)


def test_psql_pager_and_the_ways_around_it(proxy: Target):
    """What docs/sql.md says: by default the ~280-character row goes to the pager (and is gone after q);
    \\x, \\pset pager off and -XAtq print it on the terminal."""
    def create() -> str:
        return f"CREATE API TOKEN {uniq('pager')} MAX DURATION '1h'"

    shown, paged = psql_in_a_terminal(proxy, "-c", create())
    assert paged, f"psql did not use the pager for the token row: {shown[:200]!r}"
    for args in (["-x", "-c", create()], ["-P", "pager=off", "-c", create()], ["-Atq", "-c", create()]):
        shown, paged = psql_in_a_terminal(proxy, *args)
        assert not paged, f"psql {' '.join(args[:-1])} used the pager"
        token = next((w for w in shown.replace("|", " ").split() if w.startswith("eyJ")), None)
        if token:
            remember_secret(token)
        assert token and len(token) > 200, f"psql {' '.join(args[:-1])} did not show the token: {shown[:300]!r}"
    with proxy.connect(user="analyst") as c:
        for row in c.execute("SHOW API TOKENS").fetchall():
            if row[0].startswith("pager_"):
                n = row[0]
                c.execute(f"DROP API TOKEN {n}")


# ---------------------------------------------------------------- pgjdbc, autocommit off


@pytest.mark.parametrize("threshold", [5, 1, 0])
def test_pgjdbc_notice_for_the_first_statement_of_a_transaction(proxy: Target, mint_token, threshold: int):
    """pgjdbc with autocommit off sends BEGIN in the same pipeline as the first statement of a transaction: the
    "not transactional" NOTICE must reach the statement's warnings there too (and not in autocommit)."""
    import jdbc

    name, _, _ = mint_token(user="analyst", name=uniq("jdbc_notice"), duration="1h")
    rc, f, stderr = jdbc.run("tx_notices", proxy.host, proxy.port, "analyst", "analyst", name,
                             params=f"prepareThreshold={threshold}")
    assert rc == 0 and f.get("done") == ["true"], f"TokenJdbc failed (rc={rc}): {f}\n{stderr}"
    notice = "25001 API TOKEN statements are not transactional"
    for label in ("first_update", "first_prepared_0", "first_prepared_1", "first_prepared_2", "first_execute",
                  "second_update"):
        assert f.get(f"{label}_notice") == [notice], f"{label}: {f}"
    assert f.get("autocommit_update_notices") == ["0"], f

# Ending a session ends its upstream work too (issue 9): a revoked token session's running statement never commits,
# its locks are gone when DROP API TOKEN answers, a revocation from the command line and a SIGTERM past
# shutdown_timeout end backends as well. Tokens appear in messages only through mask().
from __future__ import annotations

import signal
import time
import uuid

import pgwire
from conftest import PgCluster, Target, cli_revoke, create_token, mask


def uniq(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def token_session(t: Target, user: str, token: str) -> tuple[pgwire.WireConnection, pgwire.LoginResult]:
    c = t.wire(timeout=20)
    r = pgwire.login(c, user, token)
    if not r.ok:
        c.close()
        raise AssertionError(f"token login of {user} with {mask(token)} failed: {r.error}")
    return c, r


def backend_alive(pg: PgCluster, pid: int) -> bool:
    with pg.admin_conn() as a:
        return a.execute("select count(*) from pg_stat_activity where pid = %s", (pid,)).fetchone()[0] > 0


def scratch_table(pg: PgCluster) -> str:
    table = uniq("tg_end")
    with pg.admin_conn() as a:
        a.execute(f"CREATE TABLE {table} (v int)")
        a.execute(f"GRANT ALL ON {table} TO analyst")
    return table


def assert_ended(victim: pgwire.WireConnection, what: str) -> None:
    msgs, closed = victim.read_until_closed(15)
    errs = [m.error() for m in msgs if m.tag == b"E"]
    assert any(e.sqlstate == "57P01" and e.severity == "FATAL" for e in errs), f"{what}: {msgs}"
    assert closed, f"{what}: the connection stayed open"


def test_revoked_session_statement_never_commits(proxy: Target, pg: PgCluster, mint_token):
    """The token is dropped while its session sleeps in a Query whose next statement inserts: the insert must
    never happen, and the backend is gone by the time DROP API TOKEN answers."""
    table = scratch_table(pg)
    name, token, _ = mint_token(user="analyst", name=uniq("victim"), duration="1h")
    victim, r = token_session(proxy, "analyst", token)
    pid = r.backend_key[0]
    try:
        victim.send(pgwire.query_message(f"SELECT pg_sleep(4); INSERT INTO {table} VALUES (42)"))
        time.sleep(0.5)
        assert backend_alive(pg, pid), "BackendKeyData does not carry the backend's process ID"
        with proxy.connect(user="analyst") as owner:
            owner.execute(f"DROP API TOKEN {name}")
        assert not backend_alive(pg, pid), "DROP API TOKEN answered while the revoked session's backend still ran"
        assert_ended(victim, "the revoked session")
        time.sleep(4.5)  # past the moment the INSERT would have run
        with pg.admin_conn() as a:
            rows = a.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        assert rows == 0, "a statement of the revoked session committed after the revocation"
    finally:
        victim.close()
        with pg.admin_conn() as a:
            a.execute(f"DROP TABLE {table}")


def test_revoked_session_releases_its_lock(proxy: Target, pg: PgCluster, mint_token):
    """The session holds an ACCESS EXCLUSIVE lock and is busy (closing its connection alone would not be
    noticed until the statement ends): when DROP API TOKEN answers, the lock is free."""
    table = scratch_table(pg)
    name, token, _ = mint_token(user="analyst", name=uniq("locker"), duration="1h")
    victim, r = token_session(proxy, "analyst", token)
    try:
        assert pgwire.data_rows_text(victim.simple_query("BEGIN")) == []
        msgs = victim.simple_query(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        assert not [m for m in msgs if m.tag == b"E"], msgs
        victim.send(pgwire.query_message("SELECT pg_sleep(20)"))
        time.sleep(0.3)
        with proxy.connect(user="analyst") as owner:
            owner.execute(f"DROP API TOKEN {name}")
        # At once, without waiting: the lock is gone.
        with pg.admin_conn() as a:
            with a.transaction():
                a.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE NOWAIT")
        assert_ended(victim, "the session holding the lock")
    finally:
        victim.close()
        with pg.admin_conn() as a:
            a.execute(f"DROP TABLE {table}")


def test_revoked_session_whose_client_stopped_reading_ends(proxy: Target, pg: PgCluster, mint_token):
    """The session streams a large result to a client that reads nothing: the FATAL cannot be delivered, yet the
    revocation must end the session and its backend promptly, not when the client reads again (never)."""
    name, token, _ = mint_token(user="analyst", name=uniq("stalled"), duration="1h")
    victim, r = token_session(proxy, "analyst", token)
    pid = r.backend_key[0]
    try:
        victim.send(pgwire.query_message("SELECT repeat('x', 1000) FROM generate_series(1, 10000000)"))
        time.sleep(1.5)  # the socket buffers fill up; the client never reads
        assert backend_alive(pg, pid)
        started = time.monotonic()
        with proxy.connect(user="analyst") as owner:
            owner.execute(f"DROP API TOKEN {name}")
        took = time.monotonic() - started
        deadline = time.monotonic() + 5
        while backend_alive(pg, pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not backend_alive(pg, pid), "the revoked session's backend still runs"
        assert took < 3, f"DROP API TOKEN took {took:.1f} s: it waited for a client that does not read"
    finally:
        victim.close()


def test_drop_of_own_token_ends_own_session_after_answering(proxy: Target, mint_token):
    name, token, _ = mint_token(user="analyst", name=uniq("self"), duration="1h")
    c, _ = token_session(proxy, "analyst", token)
    try:
        c.send(pgwire.query_message(f"DROP API TOKEN {name}"))
        msgs, closed = c.read_until_closed(15)
        tags = [m.body.rstrip(b"\0").decode() for m in msgs if m.tag == b"C"]
        assert tags == ["DROP API TOKEN"], msgs
        assert any(m.tag == b"E" and m.error().sqlstate == "57P01" for m in msgs), msgs
        assert closed
    finally:
        c.close()


def test_revocation_from_the_command_line_ends_the_backend(tokengate, pg: PgCluster, proxy: Target):
    name, token, _ = create_token(proxy, user="analyst", name=uniq("cli_end"), duration="1h")
    victim, r = token_session(proxy, "analyst", token)
    pid = r.backend_key[0]
    try:
        victim.send(pgwire.query_message("SELECT pg_sleep(30)"))
        time.sleep(0.3)
        assert backend_alive(pg, pid), "BackendKeyData does not carry the backend's process ID"
        res = cli_revoke(tokengate, name, "analyst")
        assert res.returncode == 0, res.stderr
        assert_ended(victim, "a session revoked by another process")
        deadline = time.monotonic() + 5
        while backend_alive(pg, pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not backend_alive(pg, pid), "the backend of a session revoked from the command line runs on"
    finally:
        victim.close()


def test_sigterm_past_the_timeout_ends_backends(spawn_tokengate, pg: PgCluster):
    tg = spawn_tokengate(upstream=(str(pg.socket_dir), pg.port),
                         extra_args=["--upstream-auth", "trust", "--max-failed-logins", "100000",
                                     "--shutdown-timeout", "1"])
    c = tg.target().wire(timeout=20)
    r = pgwire.login(c, "analyst", "analyst")
    assert r.ok, r.error
    pid = r.backend_key[0]
    try:
        c.send(pgwire.query_message("SELECT pg_sleep(60)"))
        time.sleep(0.3)
        assert backend_alive(pg, pid), "BackendKeyData does not carry the backend's process ID"
        tg.proc.send_signal(signal.SIGTERM)
        msgs, closed = c.read_until_closed(15)
        errs = [m.error() for m in msgs if m.tag == b"E"]
        assert any(e.sqlstate == "57P01" and "administrator command" in (e.message or "") for e in errs), msgs
        assert closed
        tg.proc.wait(15)
        assert not backend_alive(pg, pid), "a backend outlived tokengate's shutdown"
    finally:
        c.close()


def test_revocation_over_http_answers_once_the_backend_is_gone(proxy: Target, pg: PgCluster, http_api, mint_token):
    """DELETE /api/tokens/{name} and DROP API TOKEN over POST /sql revoke too: they answer, as DROP API TOKEN on the
    wire does, only once the sessions they ended are gone upstream, so nothing those sent commits afterwards."""
    for how in ("DELETE /api/tokens", "POST /sql"):
        table = scratch_table(pg)
        name, token, _ = mint_token(user="analyst", name=uniq("victim"), duration="1h")
        victim, r = token_session(proxy, "analyst", token)
        pid = r.backend_key[0]
        try:
            victim.send(pgwire.query_message(f"SELECT pg_sleep(4); INSERT INTO {table} VALUES (42)"))
            time.sleep(0.5)
            assert backend_alive(pg, pid), how
            if how == "DELETE /api/tokens":
                answer = http_api.call("DELETE", f"/api/tokens/{name}", token=create_token(proxy, "analyst")[1])
                assert answer.status_code == 204, answer.text
            else:
                answer = http_api.call("POST", "/sql", json={"query": f"DROP API TOKEN {name}"},
                                       headers={"Neon-Connection-String": "postgresql://analyst:analyst@x/postgres"})
                assert answer.status_code == 200, answer.text
            assert not backend_alive(pg, pid), f"{how} answered while the revoked session's backend still ran"
            assert_ended(victim, f"the session revoked by {how}")
            time.sleep(4)
            with pg.admin_conn() as a:
                assert a.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, how
        finally:
            victim.close()
            with pg.admin_conn() as a:
                a.execute(f"DROP TABLE {table}")

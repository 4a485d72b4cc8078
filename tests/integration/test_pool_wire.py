# Wire sessions on pooled upstream connections (pool.wire_sessions, docs/deployment.md): a session that ends idle
# gives its backend back, reset with DISCARD ALL, and the next login of the same role, database and startup
# settings gets it; nothing a session set survives into the next; a session that ends in a transaction, in COPY,
# after a cancel, or ended by a revocation never gives its backend back; different keys never share; pool limits
# hold. With the setting off (the session instance), every login gets a backend of its own.
# The last test checks, directly against PostgreSQL 15, each claim docs/deployment.md makes about DISCARD ALL.
from __future__ import annotations

import socket
import time
import uuid

import psycopg
import pytest

import pgwire
from conftest import (ROLES, PgCluster, Target, TokengateProcess, _cleanups, create_token, mask, session_extra_args,
                      tokengate_binary)


def uniq(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def start_pooled(pg: PgCluster, *extra: str) -> TokengateProcess:
    binary = tokengate_binary()
    proc = TokengateProcess(binary, (str(pg.socket_dir), pg.port),
                            ["--upstream-auth", "trust", "--max-failed-logins", "100000", "--pool-wire-sessions", "on",
                             *session_extra_args(binary), *extra])
    _cleanups.append(proc.stop)
    proc.start()
    return proc


@pytest.fixture(scope="module")
def pooled_tg(pg: PgCluster):
    proc = start_pooled(pg)
    yield proc
    proc.stop()


@pytest.fixture
def pooled(pooled_tg: TokengateProcess) -> Target:
    assert pooled_tg.alive(), f"tokengate with pool.wire_sessions died; log tail:\n{pooled_tg.log_tail()}"
    return pooled_tg.target()


def login(t: Target, user: str, secret: str, database: str = "postgres",
          extra: dict[str, str] | None = None) -> tuple[pgwire.WireConnection, pgwire.LoginResult]:
    c = t.wire()
    r = pgwire.login(c, user, secret, database=database, extra=extra)
    if not r.ok:
        c.close()
        raise AssertionError(f"login of {user} with {mask(secret)} failed: {r.error}")
    return c, r


def scalar(c: pgwire.WireConnection, sql: str) -> str | None:
    msgs = c.simple_query(sql)
    errors = [m.error() for m in msgs if m.tag == b"E"]
    assert not errors, f"{sql}: {errors[0]}"
    rows = pgwire.data_rows_text(msgs)
    assert len(rows) == 1, f"{sql}: {rows}"
    return rows[0][0]


def run(c: pgwire.WireConnection, sql: str) -> list[pgwire.Message]:
    msgs = c.simple_query(sql)
    errors = [m.error() for m in msgs if m.tag == b"E"]
    assert not errors, f"{sql}: {errors[0]}"
    return msgs


def terminate(c: pgwire.WireConnection) -> None:
    c.send(pgwire.terminate_message())
    c.close()


def backend(pg: PgCluster, pid: int) -> tuple | None:
    """(state, query, backend_start) of backend `pid`, or None once it has exited."""
    with pg.admin_conn() as a:
        return a.execute("select state, query, backend_start from pg_stat_activity where pid = %s", (pid,)).fetchone()


def wait_returned(pg: PgCluster, pid: int, timeout: float = 10.0) -> None:
    """Until the pool has reset backend `pid` (its last statement DISCARD ALL, idle)."""
    deadline = time.monotonic() + timeout
    row = None
    while time.monotonic() < deadline:
        row = backend(pg, pid)
        if row is not None and row[0] == "idle" and row[1] == "DISCARD ALL":
            return
        time.sleep(0.05)
    raise AssertionError(f"backend {pid} was not reset for the pool within {timeout} s: {row}")


def wait_gone(pg: PgCluster, pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if backend(pg, pid) is None:
            return
        time.sleep(0.05)
    raise AssertionError(f"backend {pid} still runs {timeout} s later: {backend(pg, pid)}")


@pytest.fixture(scope="module")
def analyst_token(pooled_tg: TokengateProcess) -> str:
    return create_token(pooled_tg.target(), user="analyst", name=uniq("pool"), duration="1h")[1]


def test_two_sequential_token_logins_reuse_one_backend(pooled: Target, pg: PgCluster, analyst_token: str):
    c1, r1 = login(pooled, "analyst", analyst_token)
    pid = int(scalar(c1, "select pg_backend_pid()"))
    assert r1.backend_key[0] == pid, f"BackendKeyData names {r1.backend_key[0]}, the backend is {pid}"
    started = backend(pg, pid)[2]
    terminate(c1)
    wait_returned(pg, pid)

    c2, r2 = login(pooled, "analyst", analyst_token)
    try:
        assert int(scalar(c2, "select pg_backend_pid()")) == pid, "the second login did not reuse the backend"
        assert r2.backend_key[0] == pid, f"BackendKeyData names {r2.backend_key[0]}, the backend is {pid}"
        assert r2.backend_key[1] != r1.backend_key[1], "a reused backend must come with a new cancel secret"
        assert backend(pg, pid)[2] == started
        # The login shows the backend's settings as a fresh login does: same names, same values.
        assert r2.parameters == r1.parameters, (r1.parameters, r2.parameters)
        for name in ("client_encoding", "server_version", "session_authorization", "standard_conforming_strings",
                     "TimeZone", "DateStyle", "application_name", "is_superuser", "integer_datetimes"):
            assert name in r2.parameters, f"no ParameterStatus {name} at a pooled login: {r2.parameters}"
        assert r2.parameters["session_authorization"] == "analyst"
        assert scalar(c2, "select current_user") == "analyst"
    finally:
        terminate(c2)


def test_session_state_does_not_leak_into_the_next_session(pooled: Target, pg: PgCluster, analyst_token: str):
    c1, r1 = login(pooled, "analyst", analyst_token, extra={"application_name": "leakcheck"})
    pid = int(scalar(c1, "select pg_backend_pid()"))
    run(c1, "create temp table pool_leak (x int)")
    run(c1, "prepare pool_leak_stmt as select 1")
    run(c1, "set work_mem = '7MB'")
    run(c1, "set application_name = 'changed_by_session_one'")
    run(c1, "set DateStyle = 'German'")
    run(c1, "select pg_advisory_lock(4242)")
    run(c1, "listen pool_leak_channel")
    run(c1, "begin; declare pool_leak_cursor cursor with hold for select 1; commit")
    assert scalar(c1, "select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()") == "1"
    terminate(c1)
    wait_returned(pg, pid)

    c2, r2 = login(pooled, "analyst", analyst_token, extra={"application_name": "leakcheck"})
    try:
        assert int(scalar(c2, "select pg_backend_pid()")) == pid, "the second login did not reuse the backend"
        # Its login shows the settings as reset, not as session one left them.
        assert r2.parameters["application_name"] == "leakcheck", r2.parameters
        assert r2.parameters["DateStyle"] == r1.parameters["DateStyle"], r2.parameters
        assert r2.parameters == r1.parameters
        assert scalar(c2, "select to_regclass('pg_temp.pool_leak')") is None
        assert scalar(c2, "select count(*) from pg_prepared_statements") == "0"
        assert scalar(c2, "select count(*) from pg_cursors") == "0"
        assert scalar(c2, "show work_mem") == "4MB"
        assert scalar(c2, "show application_name") == "leakcheck"
        assert scalar(c2, "select count(*) from pg_listening_channels()") == "0"
        assert scalar(c2, "select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()") \
            == "0"
        # A notification on session one's channel does not reach session two.
        with pg.admin_conn() as a:
            a.execute("notify pool_leak_channel, 'hello'")
        msgs = c2.simple_query("select 1")
        assert not [m for m in msgs if m.tag == b"A"], f"session two got session one's notification: {msgs}"
    finally:
        terminate(c2)


@pytest.mark.parametrize("how", ["open transaction", "failed transaction", "copy in", "no terminate, in transaction"])
def test_a_session_that_ends_busy_does_not_return_its_backend(pooled: Target, pg: PgCluster, analyst_token: str,
                                                             how: str):
    c1, _ = login(pooled, "analyst", analyst_token)
    pid = int(scalar(c1, "select pg_backend_pid()"))
    if how == "open transaction":
        run(c1, "begin; create temp table pool_busy (x int)")
    elif how == "failed transaction":
        c1.simple_query("begin; select 1/0")
    elif how == "copy in":
        run(c1, "create temp table pool_copy (x int)")
        c1.send(pgwire.query_message("copy pool_copy from stdin"))
        m = c1.read_message()
        assert m.tag == b"G", pgwire.describe(m)
        c1.send(pgwire.copy_data_message(b"1\n"))
    else:
        run(c1, "begin")
    if how == "no terminate, in transaction":
        c1.close()
    else:
        terminate(c1)
    wait_gone(pg, pid)
    c2, _ = login(pooled, "analyst", analyst_token)
    try:
        assert int(scalar(c2, "select pg_backend_pid()")) != pid
    finally:
        terminate(c2)


def test_a_client_that_closes_without_terminate_while_idle_returns_its_backend(pooled: Target, pg: PgCluster,
                                                                              analyst_token: str):
    c1, _ = login(pooled, "analyst", analyst_token)
    pid = int(scalar(c1, "select pg_backend_pid()"))
    c1.close()
    wait_returned(pg, pid)
    c2, _ = login(pooled, "analyst", analyst_token)
    try:
        assert int(scalar(c2, "select pg_backend_pid()")) == pid
    finally:
        terminate(c2)


def test_a_revoked_sessions_backend_is_terminated_never_pooled(pooled: Target, pg: PgCluster):
    name, token, _ = create_token(pooled, user="analyst", name=uniq("revoked"), duration="1h")
    c1, _ = login(pooled, "analyst", token)
    pid = int(scalar(c1, "select pg_backend_pid()"))
    with pooled.connect(user="analyst") as owner:
        owner.execute(f"DROP API TOKEN {name}")
    msgs, closed = c1.read_until_closed(timeout=10)
    errs = [m.error() for m in msgs if m.tag == b"E"]
    assert errs and errs[0].sqlstate == "57P01", msgs
    assert closed
    wait_gone(pg, pid)
    _, other, _ = create_token(pooled, user="analyst", name=uniq("after"), duration="1h")
    c2, _ = login(pooled, "analyst", other)
    try:
        assert int(scalar(c2, "select pg_backend_pid()")) != pid
    finally:
        terminate(c2)


def test_different_roles_databases_and_settings_never_share(pooled: Target, pg: PgCluster, analyst_token: str):
    admin_token = create_token(pooled, user="admin", name=uniq("admin"), duration="1h")[1]
    c1, _ = login(pooled, "analyst", analyst_token)
    pid = int(scalar(c1, "select pg_backend_pid()"))
    terminate(c1)
    wait_returned(pg, pid)
    for user, token, database, extra in [("admin", admin_token, "postgres", None),
                                         ("analyst", analyst_token, "template1", None),
                                         ("analyst", analyst_token, "postgres", {"application_name": "other"}),
                                         ("analyst", analyst_token, "postgres", {"options": "-c work_mem=5MB"})]:
        c, _ = login(pooled, user, token, database=database, extra=extra)
        try:
            got = int(scalar(c, "select pg_backend_pid()"))
            assert got != pid, f"{user}/{database}/{extra} got the pooled backend of analyst/postgres"
            assert scalar(c, "select current_user") == user
        finally:
            terminate(c)
    # The pooled one still waits for its own key.
    c, _ = login(pooled, "analyst", analyst_token)
    try:
        assert int(scalar(c, "select pg_backend_pid()")) == pid
    finally:
        terminate(c)


def cancel(t: Target, key: tuple[int, int]) -> None:
    with socket.create_connection((t.host, t.port), timeout=5) as s:
        s.sendall(pgwire.cancel_request(*key))
        s.settimeout(5)
        try:
            s.recv(1)
        except OSError:
            pass


def test_cancel_reaches_the_right_backend_and_a_cancelled_backend_is_not_reused(pooled: Target, pg: PgCluster,
                                                                             analyst_token: str):
    c1, r1 = login(pooled, "analyst", analyst_token)
    pid = int(scalar(c1, "select pg_backend_pid()"))
    terminate(c1)
    wait_returned(pg, pid)

    # A reused backend: its cancel key works.
    c2, r2 = login(pooled, "analyst", analyst_token)
    assert r2.backend_key[0] == pid
    c2.send(pgwire.query_message("select pg_sleep(30)"))
    time.sleep(0.3)
    # Session one's key names the same backend, but is dead: nothing is cancelled.
    cancel(pooled, r1.backend_key)
    time.sleep(0.3)
    assert backend(pg, pid)[0] == "active", "a cancel with an ended session's key reached the reused backend"
    cancel(pooled, r2.backend_key)
    msgs = c2.read_until_ready()
    errs = [m.error() for m in msgs if m.tag == b"E"]
    assert errs and errs[0].sqlstate == "57014", msgs
    terminate(c2)
    # A cancel may still be on its way when a session ends: that backend is not lent again.
    wait_gone(pg, pid)


def test_pool_limits_hold_for_wire_sessions(pg: PgCluster):
    tg = start_pooled(pg, "--pool-max-connections-per-key", "1", "--pool-wait-timeout", "1")
    try:
        t = tg.target()
        token = create_token(t, user="analyst", name=uniq("limit"), duration="1h")[1]
        c1, _ = login(t, "analyst", token)
        c2 = t.wire()
        began = time.monotonic()
        r = pgwire.login(c2, "analyst", token)
        waited = time.monotonic() - began
        c2.close()
        assert r.error is not None and r.error.sqlstate == "53300", r
        assert r.error.severity == "FATAL"
        assert waited >= 0.9, f"refused after {waited:.2f} s, before pool.wait_timeout"
        # Another role is another key.
        admin_token = create_token(t, user="admin", name=uniq("limit"), duration="1h")[1]
        c3, _ = login(t, "admin", admin_token)
        terminate(c3)
        pid = int(scalar(c1, "select pg_backend_pid()"))
        terminate(c1)
        wait_returned(pg, pid)
        c4, _ = login(t, "analyst", token)
        try:
            assert int(scalar(c4, "select pg_backend_pid()")) == pid
        finally:
            terminate(c4)
    finally:
        tg.stop()


def test_password_logins_are_pooled_in_trust_mode(pooled: Target, pg: PgCluster):
    """tokengate checked the password itself: the backend may be reused; a wrong password still fails."""
    c1, _ = login(pooled, "analyst", ROLES["analyst"])
    pid = int(scalar(c1, "select pg_backend_pid()"))
    terminate(c1)
    wait_returned(pg, pid)
    bad = pooled.wire()
    r = pgwire.login(bad, "analyst", "wrong password")
    bad.close()
    assert r.error is not None and r.error.sqlstate == "28P01", r
    c2, _ = login(pooled, "analyst", ROLES["analyst"])
    try:
        assert int(scalar(c2, "select pg_backend_pid()")) == pid
    finally:
        terminate(c2)


def test_with_the_setting_off_every_login_gets_its_own_backend(proxy: Target, pg: PgCluster):
    token = create_token(proxy, user="analyst", name=uniq("nopool"), duration="1h")[1]
    c1, _ = login(proxy, "analyst", token)
    pid = int(scalar(c1, "select pg_backend_pid()"))
    terminate(c1)
    wait_gone(pg, pid)
    c2, _ = login(proxy, "analyst", token)
    try:
        assert int(scalar(c2, "select pg_backend_pid()")) != pid
    finally:
        terminate(c2)


def test_what_discard_all_clears_and_keeps_in_postgresql_15(pg: PgCluster):
    """Each claim of docs/deployment.md ("Reusing upstream connections"), checked on the server itself."""
    with pg.admin_conn() as fresh:
        fresh_placeholder = fresh.execute("select current_setting('tg_app.x', true)").fetchone()[0]
        fresh_temp_schema = fresh.execute("select pg_my_temp_schema()").fetchone()[0]
    assert fresh_placeholder is None and fresh_temp_schema == 0

    with pg.admin_conn() as c:
        pid, started = c.execute("select pg_backend_pid(), backend_start from pg_stat_activity "
                                 "where pid = pg_backend_pid()").fetchone()
        c.execute("create temp table t (x int)")
        c.execute("create temp sequence s")
        c.execute("select nextval('s')")
        c.execute("prepare p as select 1")
        c.execute("begin")
        c.execute("declare cur cursor with hold for select 1")
        c.execute("commit")
        c.execute("set work_mem = '7MB'")
        c.execute("load 'auto_explain'")  # needs a superuser: before the role changes
        c.execute("set role analyst")
        c.execute("set session authorization analyst")
        c.execute("set tg_app.x = '1'")
        c.execute("select pg_advisory_lock(7)")
        c.execute("listen ch")
        c.execute("discard all")
        # Cleared.
        assert c.execute("select to_regclass('pg_temp.t')").fetchone()[0] is None
        assert c.execute("select count(*) from pg_prepared_statements").fetchone()[0] == 0
        assert c.execute("select count(*) from pg_cursors").fetchone()[0] == 0
        assert c.execute("show work_mem").fetchone()[0] == "4MB"
        assert c.execute("select current_user, session_user").fetchone() == ("postgres", "postgres")
        assert c.execute("select count(*) from pg_listening_channels()").fetchone()[0] == 0
        assert c.execute("select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()"
                         ).fetchone()[0] == 0
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
            c.execute("select lastval()")
        # Kept: what a client could notice.
        assert c.execute("select pg_backend_pid()").fetchone()[0] == pid
        assert c.execute("select backend_start from pg_stat_activity where pid = pg_backend_pid()"
                         ).fetchone()[0] == started
        # A placeholder variable, once set, stays defined: empty, where a new backend has none at all.
        assert c.execute("select current_setting('tg_app.x', true)").fetchone()[0] == ""
        # The backend's temporary schema stays assigned (empty).
        assert c.execute("select pg_my_temp_schema()").fetchone()[0] != 0
        # A library loaded with LOAD stays loaded: its settings stay defined.
        assert c.execute("select count(*) from pg_settings where name = 'auto_explain.log_min_duration'"
                         ).fetchone()[0] == 1


def test_sigterm_ends_pooled_sessions_with_their_backends_and_closes_idle_ones(pg: PgCluster):
    import signal
    tg = start_pooled(pg, "--shutdown-timeout", "1")
    try:
        t = tg.target()
        token = create_token(t, user="analyst", name=uniq("shutdown"), duration="1h")[1]
        # One backend idle in the pool, one serving a session that runs a statement.
        idle_c, _ = login(t, "analyst", token)
        idle_pid = int(scalar(idle_c, "select pg_backend_pid()"))
        busy, _ = login(t, "analyst", token)
        busy_pid = int(scalar(busy, "select pg_backend_pid()"))
        terminate(idle_c)
        wait_returned(pg, idle_pid)
        busy.send(pgwire.query_message("select pg_sleep(60)"))
        time.sleep(0.3)
        tg.proc.send_signal(signal.SIGTERM)
        msgs, closed = busy.read_until_closed(15)
        errs = [m.error() for m in msgs if m.tag == b"E"]
        assert any(e.sqlstate == "57P01" for e in errs), msgs
        assert closed
        tg.proc.wait(15)
        wait_gone(pg, busy_pid)
        wait_gone(pg, idle_pid)
    finally:
        tg.stop()


def test_an_upstream_refusal_reaches_the_client_as_postgresql_sent_it(pooled: Target, direct: Target,
                                                                     analyst_token: str):
    got = pooled.wire()
    r = pgwire.login(got, "analyst", analyst_token, database="no_such_database_here")
    got.close()
    want = direct.wire()
    w = pgwire.login(want, "analyst", "analyst", database="no_such_database_here")
    want.close()
    assert r.error is not None and w.error is not None, (r, w)
    assert (r.error.severity, r.error.sqlstate, r.error.message) == (w.error.severity, w.error.sqlstate,
                                                                     w.error.message)

# Session life cycle through the relay: disconnects both ways, asynchronous ParameterStatus/Notice, transaction status, keys.
from __future__ import annotations

import socket
import struct
import threading
import time
import uuid

import psycopg
import pytest

import pgwire
from conftest import PgCluster, Target, Twin


def upstream_sessions(pg: PgCluster, app: str) -> int:
    with pg.admin_conn() as c:
        return c.execute("select count(*) from pg_stat_activity where application_name = %s", (app,)).fetchone()[0]


def wait_for_sessions(pg: PgCluster, app: str, want: int, timeout: float = 3.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        n = upstream_sessions(pg, app)
        if n == want or time.monotonic() > deadline:
            return n
        time.sleep(0.05)


@pytest.mark.parametrize("how", ["terminate", "close", "reset"])
def test_client_disconnect_ends_upstream_session(target: Target, pg: PgCluster, how: str):
    app = f"tg-disc-{uuid.uuid4().hex[:8]}"
    w = target.wire()
    r = pgwire.login(w, "analyst", "analyst", extra={"application_name": app})
    assert r.ok, r.error
    assert wait_for_sessions(pg, app, 1) == 1
    if how == "terminate":
        w.send(pgwire.terminate_message())
    elif how == "reset":
        w.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
    w.close()
    left = wait_for_sessions(pg, app, 0)
    assert left == 0, f"upstream session still there 3 s after the client's {how}"


def test_client_disconnect_mid_query_ends_upstream_session(target: Target, pg: PgCluster):
    app = f"tg-midq-{uuid.uuid4().hex[:8]}"
    w = target.wire()
    assert pgwire.login(w, "analyst", "analyst", extra={"application_name": app}).ok
    w.send(pgwire.query_message("select pg_sleep(0.5); select g from generate_series(1, 3000000) g"))
    time.sleep(0.1)
    w.close()
    # PostgreSQL notices the dead client when it next writes; the relay must close its upstream side.
    assert wait_for_sessions(pg, app, 0, timeout=10) == 0, "upstream session outlived its client"


def test_upstream_termination_reaches_client(twin: Twin, pg: PgCluster):
    """pg_terminate_backend: the FATAL ErrorResponse is passed on, then the client connection is closed."""

    def run(t: Target):
        app = f"tg-term-{uuid.uuid4().hex[:8]}"
        with t.wire() as w:
            assert pgwire.login(w, "analyst", "analyst", extra={"application_name": app}).ok
            assert wait_for_sessions(pg, app, 1) == 1
            with pg.admin_conn() as c:
                c.execute("select pg_terminate_backend(pid) from pg_stat_activity where application_name = %s",
                          (app,))
            msgs, closed = w.read_until_closed(timeout=5)
            assert closed, f"client connection still open 5 s after the upstream closed; got {msgs}"
            return [(m.name, m.error().visible() if m.tag in (b"E", b"N") else m.body) for m in msgs]

    msgs = twin.run(run, "messages after pg_terminate_backend")
    assert msgs and msgs[-1][0] == "ErrorResponse" and msgs[-1][1]["sqlstate"] == "57P01", msgs


def test_parameter_status_after_set(twin: Twin):
    def run(t: Target):
        with t.connect() as conn:
            conn.execute("set application_name = 'changed by set'")
            conn.execute("set timezone = 'Asia/Tokyo'")
            conn.execute("set datestyle = 'German'")
            info = conn.info
            return (info.parameter_status("application_name"), info.parameter_status("TimeZone"),
                    info.parameter_status("DateStyle"), conn.execute("select date '2026-07-20'").fetchone())

    assert twin.run(run)[:3] == ("changed by set", "Asia/Tokyo", "German, DMY")


def test_notices_relayed(twin: Twin):
    def run(t: Target):
        notices = []
        with t.connect() as conn:
            conn.add_notice_handler(lambda d: notices.append((d.severity_nonlocalized, d.sqlstate, d.message_primary)))
            conn.execute("create temp table if not exists nt(a int)")
            conn.execute("create temp table if not exists nt(a int)")
            conn.execute("do $$ begin raise notice 'n1'; raise warning 'w1'; raise info 'i1'; end $$")
            conn.execute("set client_min_messages = debug1")
            conn.execute("do $$ begin raise debug 'd1'; end $$")
        return notices

    notices = twin.run(run, "notices")
    assert ("NOTICE", "42P07", 'relation "nt" already exists, skipping') in notices
    assert [n[2] for n in notices if n[2] in ("n1", "w1", "i1", "d1")] == ["n1", "w1", "i1", "d1"]


def test_transaction_status(twin: Twin):
    def run(t: Target):
        seen = []
        with t.connect(autocommit=False) as conn:
            seen.append(conn.info.transaction_status.name)
            conn.execute("select 1")
            seen.append(conn.info.transaction_status.name)
            try:
                conn.execute("select 1/0")
            except psycopg.errors.DivisionByZero:
                pass
            seen.append(conn.info.transaction_status.name)
            conn.rollback()
            seen.append(conn.info.transaction_status.name)
        return seen

    assert twin.run(run) == ["IDLE", "INTRANS", "INERROR", "IDLE"]


def test_client_encoding(twin: Twin):
    def run(t: Target):
        with t.connect(client_encoding="LATIN1") as conn:
            cur = conn.execute("select 'café ü', convert_to('café', 'UTF8')")
            return cur.fetchone(), conn.info.encoding

    (text, utf8_bytes), enc = twin.run(run)
    assert text == "café ü" and utf8_bytes == "café".encode() and enc == "iso8859-1"


def test_backend_keys_are_distinct(target: Target):
    keys = set()
    for _ in range(10):
        with target.wire() as w:
            r = pgwire.login(w, "analyst", "analyst")
            assert r.ok and r.backend_key is not None, r.messages
            keys.add(r.backend_key)
            w.send(pgwire.terminate_message())
    assert len(keys) == 10


def test_proxy_ignores_upstream_keys(proxy: Target, direct: Target):
    """tokengate forwards only keys it issued: a real upstream key sent to tokengate cancels nothing."""
    with direct.wire() as w:
        r = pgwire.login(w, "analyst", "analyst")
        assert r.ok and r.backend_key, r.messages
        w.send(pgwire.query_message("select pg_sleep(1), 'finished'"))
        time.sleep(0.2)
        with proxy.wire() as c:
            c.send(pgwire.cancel_request(*r.backend_key))
            c.read_raw_until_closed(3)
        msgs = w.read_until_ready()
    errors = [m for m in msgs if m.tag == b"E"]
    assert not errors, f"an upstream key sent to tokengate cancelled a direct session: {errors}"
    assert pgwire.data_rows_text(msgs) == [("", "finished")]


def test_concurrent_sessions_are_isolated(target: Target):
    """Several threads, each with its own session state, interleaving queries."""
    errors: list[str] = []

    def worker(i: int):
        try:
            with target.connect(user="analyst", autocommit=False) as conn:
                conn.execute("create temp table iso(v int)")
                conn.execute(f"set application_name = 'worker {i}'")
                for j in range(50):
                    conn.execute("insert into iso values (%s)", (i * 1000 + j,))
                total = conn.execute("select sum(v), current_setting('application_name') from iso").fetchone()
                if total != (sum(i * 1000 + j for j in range(50)), f"worker {i}"):
                    errors.append(f"worker {i}: {total}")
                conn.rollback()
        except Exception as e:  # noqa: BLE001 - collected and reported below
            errors.append(f"worker {i}: {e!r}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors


def _logged_in(t: Target) -> pgwire.WireConnection:
    w = t.wire()
    r = pgwire.login(w, "analyst", "analyst")
    assert r.ok, r.error
    return w


def test_unknown_message_type_after_login(twin: Twin):
    def run(t: Target):
        with _logged_in(t) as w:
            w.send(b"z" + struct.pack("!i", 4))
            msgs, closed = w.read_until_closed(5)
            return [(m.name, m.error().visible()) for m in msgs], closed

    msgs, closed = twin.run(run)
    assert closed and msgs[0][1]["sqlstate"] == "08P01", msgs


@pytest.mark.parametrize("length", [0x7FFFFFFF, 2], ids=["2GiB", "under-4"])
def test_impossible_message_length_after_login(target: Target, length: int):
    """PostgreSQL closes silently; tokengate may say 08P01 first. Either way: closed, nothing allocated."""
    rss_before = _tg_rss(target)
    with _logged_in(target) as w:
        w.send(b"Q" + struct.pack("!i", length) + b"select 1")
        msgs, closed = w.read_until_closed(5)
    assert closed, f"connection still open after a Query of length {length}: {msgs}"
    assert all(m.tag == b"E" and m.error().sqlstate == "08P01" for m in msgs), msgs
    if rss_before is not None:
        grown = (_tg_rss(target) - rss_before) / 1024
        assert grown < 64, f"tokengate grew by {grown:.0f} MiB on a bogus length"
    with target.connect() as conn:
        assert conn.execute("select 'ok'").fetchone() == ("ok",)


def _tg_rss(target: Target) -> int | None:
    from conftest import _Session

    tg = _Session.tokengate
    return tg.rss_kib() if target.name == "proxy" and tg is not None else None


def test_copy_messages_outside_copy_are_ignored(twin: Twin):
    """PostgreSQL ignores CopyData/CopyDone/CopyFail outside COPY (protocol docs); so must the relay."""

    def run(t: Target):
        with _logged_in(t) as w:
            w.send(pgwire.copy_data_message(b"stray") + pgwire.copy_done_message())
            return pgwire.data_rows_text(w.simple_query("select 'after stray copy messages'"))

    assert twin.run(run) == [("after stray copy messages",)]


def test_client_half_close_after_query(target: Target):
    """`printf 'Q…' | nc` style: the client sends a Query and shuts down its write side. PostgreSQL answers
    and then closes. tokengate may instead close at once (issue 2: a disconnect closes the other side;
    PgBouncer does the same), but then without half a message, and the upstream session must end."""
    with _logged_in(target) as w:
        w.send(pgwire.query_message("select 'answered'"))
        w.shutdown_write()
        data, closed = w.read_raw_until_closed(5)
    assert closed, "connection still open 5 s after the client's half-close"
    msgs = pgwire.parse_messages(data)  # raises on a torn message
    if target.name == "direct":
        assert pgwire.data_rows_text(msgs) == [("answered",)], msgs
    else:
        assert not msgs or msgs[-1].tag == b"Z", f"answer cut short: {msgs}"


# ---------------------------------------------------------------- the backend's real process ID (issue 10)


def test_backend_key_carries_the_real_pid(twin: Twin):
    def run(t: Target):
        with t.wire() as w:
            r = pgwire.login(w, "analyst", "analyst")
            assert r.ok, r.error
            (pid,) = pgwire.data_rows_text(w.simple_query("select pg_backend_pid()"))[0]
            return int(pid) == r.backend_key[0]

    assert twin.run(run) is True


def test_client_terminates_its_own_backend(twin: Twin):
    """A reconnect test: pg_terminate_backend(the PID from BackendKeyData) from another session ends this one."""

    def run(t: Target):
        with t.wire() as w:
            r = pgwire.login(w, "analyst", "analyst")
            assert r.ok, r.error
            with t.connect(user="admin") as admin:
                assert admin.execute("select pg_terminate_backend(%s, 5000)", (r.backend_key[0],)).fetchone() == (True,)
            msgs, closed = w.read_until_closed(5)
            return [(m.name, m.error().sqlstate) for m in msgs if m.tag == b"E"], closed

    errors, closed = twin.run(run)
    assert errors == [("ErrorResponse", "57P01")] and closed


def test_own_notifications_carry_the_session_pid(twin: Twin):
    """Clients tell their own NOTIFY from others' by the PID in NotificationResponse."""

    def run(t: Target):
        with t.wire() as w:
            r = pgwire.login(w, "analyst", "analyst")
            assert r.ok, r.error
            w.simple_query("LISTEN tg_pid_check")
            msgs = w.simple_query("NOTIFY tg_pid_check, 'mine'")
            notes = [m for m in msgs if m.tag == b"A"]
            assert notes, msgs
            (pid,) = struct.unpack("!i", notes[0].body[:4])
            return pid == r.backend_key[0]

    assert twin.run(run) is True


def test_cancel_needs_tokengates_secret(proxy: Target):
    """The PID is public now; the secret is what protects a cancel: a wrong one, or the key of a session that
    ended, cancels nothing (a late cancel never hits a later user of the backend's PID)."""
    with proxy.wire() as old:
        r_old = pgwire.login(old, "analyst", "analyst")
        assert r_old.ok
        old.send(pgwire.terminate_message())
    with proxy.wire() as w:
        r = pgwire.login(w, "analyst", "analyst")
        assert r.ok, r.error
        pid, secret = r.backend_key
        w.send(pgwire.query_message("select pg_sleep(1), 'finished'"))
        time.sleep(0.2)
        for key in ((pid, secret ^ 1), (pid, r_old.backend_key[1]), r_old.backend_key):
            with proxy.wire() as c:
                c.send(pgwire.cancel_request(*key))
                c.read_raw_until_closed(3)
        msgs = w.read_until_ready()
        assert not [m for m in msgs if m.tag == b"E"], f"a cancel with a wrong key cancelled: {msgs}"
        # The right key still works.
        w.send(pgwire.query_message("select pg_sleep(5)"))
        time.sleep(0.2)
        with proxy.wire() as c:
            c.send(pgwire.cancel_request(pid, secret))
            c.read_raw_until_closed(3)
        msgs = w.read_until_ready()
        assert [m.error().sqlstate for m in msgs if m.tag == b"E"] == ["57014"], msgs


# ---------------------------------------------------------------- the splitter follows the session's settings


@pytest.mark.parametrize("how", ["set", "startup"])
def test_standard_conforming_strings_off_cannot_smuggle(proxy: Target, pg: PgCluster, how: str):
    """With standard_conforming_strings off, 'x\\'; SELECT …' is one string: the relay must split the Query as
    PostgreSQL would, whether the setting came with SET or in the startup packet (the relay learns it from the
    upstream's ParameterStatus), and nothing of it may run."""
    mark = pg.log_mark()
    with proxy.wire() as w:
        extra = {"standard_conforming_strings": "off"} if how == "startup" else None
        r = pgwire.login(w, "analyst", "analyst", extra=extra)
        assert r.ok, r.error
        if how == "set":
            assert not [m for m in w.simple_query("SET standard_conforming_strings = off") if m.tag == b"E"]
        assert r.parameters.get("standard_conforming_strings") == ("off" if how == "startup" else "on")
        msgs = w.simple_query("CREATE API TOKEN t COMMENT 'x\\'; SELECT 'smuggled'; --'")
        errors = [m.error() for m in msgs if m.tag == b"E"]
        assert errors and errors[0].sqlstate == "42601", msgs
        assert not [m for m in msgs if m.tag == b"D"], f"a smuggled statement ran: {msgs}"
    assert not any("smuggled" in s for s in pg.logged_statements(mark)), "the smuggled statement reached PostgreSQL"

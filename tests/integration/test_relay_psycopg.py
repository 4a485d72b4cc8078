# psycopg 3 (extended protocol) through tokengate behaves as against PostgreSQL: params, prepared, pipeline, binary, NOTIFY, cancel.
from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import os
import select
import threading
import time
import uuid

import psycopg
import pytest
from psycopg.types.json import Jsonb

import pgwire
from conftest import Target, Twin

CANCEL_DEADLINE = 2.0  # seconds from conn.cancel() to QueryCanceled (issue 2 acceptance)


def described(cur: psycopg.Cursor) -> list[tuple[str, int]]:
    return [(c.name, c.type_code) for c in cur.description]


def test_parameters(twin: Twin):
    params = (
        42,
        2**40,
        1.5,
        "ünïcødé ✓ 'quoted' \\ back",
        None,
        b"\x00\x01\xffbytes",
        decimal.Decimal("12345.678900"),
        dt.datetime(2026, 7, 20, 9, 0, tzinfo=dt.timezone.utc),
        dt.date(2026, 1, 31),
        [1, 2, None, 4],
        Jsonb({"a": [1, "x"], "b": None}),
        True,
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
    )
    sql = "select " + ", ".join(["%s"] * len(params))

    def run(t: Target):
        with t.connect() as conn:
            cur = conn.execute(sql, params)
            return cur.fetchone(), described(cur)

    row, desc = twin.run(run, "row and RowDescription")
    assert row[0] == 42 and row[3] == params[3] and row[4] is None and row[5] == params[5]
    assert row[7] == params[7] and row[9] == [1, 2, None, 4] and row[10] == {"a": [1, "x"], "b": None}


def test_parameters_in_dml(twin: Twin):
    def run(t: Target):
        with t.connect() as conn:
            conn.execute("create temp table p(id int primary key, name text, at timestamptz)")
            with conn.cursor() as cur:
                cur.executemany("insert into p values (%s, %s, %s)",
                                [(i, f"n{i}", dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)) for i in range(200)])
                cur.execute("update p set name = %(n)s where id < %(lim)s", {"n": "updated", "lim": 10})
                updated = cur.rowcount
                rows = cur.execute("select id, name from p where id % 50 = 0 order by id").fetchall()
            return updated, rows

    updated, rows = twin.run(run)
    assert updated == 10
    assert rows == [(0, "updated"), (50, "n50"), (100, "n100"), (150, "n150")]


def test_prepared_statements(twin: Twin):
    def run(t: Target):
        with t.connect() as conn:
            results = [conn.execute("select %s::int * 2, %s::text", (i, f"v{i}"), prepare=True).fetchone()
                       for i in range(10)]
            # Auto-preparation after prepare_threshold (5) executions of the same query.
            auto = [conn.execute("select %s::int + 1", (i,)).fetchone()[0] for i in range(8)]
            names = conn.execute(
                "select statement from pg_prepared_statements where not from_sql order by statement"
            ).fetchall()
            # SQL-level PREPARE/EXECUTE (simple protocol) too.
            conn.execute("prepare q(int) as select $1 * 10")
            sql_level = conn.execute("execute q(7)").fetchone()[0]
            return results, auto, names, sql_level

    results, auto, names, sql_level = twin.run(run)
    assert results == [(i * 2, f"v{i}") for i in range(10)]
    assert auto == list(range(1, 9))
    assert ("select $1::int * 2, $2::text",) in names, names
    assert sql_level == 70


def test_describe_prepared_statement(twin: Twin):
    """Describe on a statement (no Execute): what pgjdbc's getMetaData() does."""

    def run(t: Target):
        with t.connect() as conn:
            pg = conn.pgconn
            r = pg.prepare(b"tg_describe", b"select $1::int + 1 as x, $2::text as y, now() as z", None)
            assert r.status == psycopg.pq.ExecStatus.COMMAND_OK, r.error_message
            d = pg.describe_prepared(b"tg_describe")
            assert d.status == psycopg.pq.ExecStatus.COMMAND_OK, d.error_message
            params = [d.param_type(i) for i in range(d.nparams)]
            fields = [(d.fname(i), d.ftype(i)) for i in range(d.nfields)]
            e = pg.exec_prepared(b"tg_describe", [b"41", b"y"])
            value = (e.get_value(0, 0), e.get_value(0, 1))
            nodata = pg.describe_prepared(b"nonexistent")
            return params, fields, value, nodata.error_field(psycopg.pq.DiagnosticField.SQLSTATE)

    params, fields, value, missing = twin.run(run)
    assert params == [23, 25]
    assert fields == [(b"x", 23), (b"y", 25), (b"z", 1184)]
    assert value == (b"42", b"y")
    assert missing == b"26000"


def test_pipeline_1000_statements(twin: Twin):
    def run(t: Target):
        with t.connect() as conn:
            conn.execute("create temp table pl(i int, s text)")
            curs = []
            with conn.pipeline():
                for i in range(1000):
                    if i % 3 == 0:
                        curs.append(conn.execute("insert into pl values (%s, %s) returning i", (i, str(i))))
                    else:
                        curs.append(conn.execute("select %s::int * 2, %s::text", (i, f"s{i}")))
            results = [c.fetchall() for c in curs]
            total = conn.execute("select count(*), sum(i) from pl").fetchone()
            return results, total

    results, total = twin.run(run, "pipeline results")
    assert len(results) == 1000
    assert results[1] == [(2, "s1")] and results[999] == [(999,)] and results[998] == [(1996, "s998")]
    assert total == (334, sum(range(0, 1000, 3)))


def test_pipeline_error_skips_to_sync(twin: Twin):
    """After an error in a pipeline, PostgreSQL skips everything up to Sync; the relay must not reorder that."""

    def run(t: Target):
        with t.connect() as conn:
            curs = []
            error = None
            try:
                with conn.pipeline():
                    for i in range(20):
                        curs.append(conn.execute("select 100 / %s::int", (10 - i,)))
            except psycopg.Error as e:
                error = (type(e).__name__, e.sqlstate)
            fetched = []
            for c in curs:
                try:
                    fetched.append(c.fetchall())
                except psycopg.ProgrammingError:
                    fetched.append("no result")
            after = conn.execute("select 'usable'").fetchone()[0]
            # psycopg notices the error while still queueing when results come back fast, so how many
            # statements were queued at all depends on timing; none of them after the error has a result.
            assert fetched[10:] == ["no result"] * (len(fetched) - 10), fetched
            return error, fetched[:10], after

    error, fetched, after = twin.run(run)
    assert error == ("DivisionByZero", "22012")
    assert fetched == [[(100 // (10 - i),)] for i in range(10)]
    assert after == "usable"


def test_binary_results(twin: Twin):
    sql = (
        "select 1::int2, 2::int4, 3000000000::int8, 1.5::float8, 'txt'::text, true, "
        "'2026-07-20 09:00:00+00'::timestamptz, '2026-07-20'::date, '\\x00ff'::bytea, "
        "12.345::numeric, array[1,2,3]::int4[], '{\"k\": 1}'::jsonb, null::int, "
        "'12345678-1234-5678-1234-567812345678'::uuid, interval '1 day 2 hours'"
    )

    def run(t: Target):
        with t.connect() as conn:
            cur = conn.cursor(binary=True)
            cur.execute(sql)
            res = cur.pgresult
            raw = [res.get_value(0, i) for i in range(res.nfields)]
            formats = {res.fformat(i) for i in range(res.nfields)}
            return cur.fetchone(), raw, formats, described(cur)

    row, raw, formats, _ = twin.run(run, "binary row, raw values, formats and RowDescription")
    assert formats == {1}, "every column should come back in binary format"
    # timestamptz binary: int64 microseconds since 2000-01-01 UTC.
    micros = int((dt.datetime(2026, 7, 20, 9, tzinfo=dt.timezone.utc)
                  - dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)).total_seconds()) * 1_000_000
    assert raw[6] == micros.to_bytes(8, "big", signed=True)
    assert row[2] == 3000000000 and row[8] == b"\x00\xff" and row[12] is None


def test_large_bind_parameter(twin: Twin):
    """A Bind of 20 MB must stream through (seen hanging in Odyssey)."""
    blob = os.urandom(20 * 1024 * 1024)

    def run(t: Target):
        with t.connect() as conn:
            return conn.execute("select length(%b), md5(%b)", (blob, blob)).fetchone()

    length, md5 = twin.run(run)
    assert (length, md5) == (len(blob), hashlib.md5(blob).hexdigest())


def test_copy_with_psycopg(twin: Twin):
    def run(t: Target):
        with t.connect() as conn:
            conn.execute("create temp table cp(a int, b text)")
            with conn.cursor() as cur:
                with cur.copy("copy cp from stdin") as copy:
                    for i in range(20000):
                        copy.write_row((i, f"r{i}"))
                out = bytearray()
                with cur.copy("copy (select * from cp order by a) to stdout (format binary)") as copy:
                    for chunk in copy:
                        out += chunk
            return len(out), hashlib.sha256(out).hexdigest()

    size, _ = twin.run(run)
    assert size > 20000 * 10


def test_listen_notify(target: Target):
    received: list[tuple[str, str]] = []
    with target.connect() as listener, target.connect() as notifier:
        listener.add_notify_handler(lambda n: received.append((n.channel, n.payload)))
        listener.execute("listen tg_chan")
        listener.execute('listen "Tg Quoted"')
        notifier.execute("notify tg_chan, 'hello'")
        notifier.execute("select pg_notify('Tg Quoted', %s)", ("x" * 7000,))
        with notifier.transaction():
            notifier.execute("notify tg_chan, 'after commit'")
        # The notifications must arrive on an idle connection by themselves (relayed whenever they come,
        # at any time), not only piggy-backed on the next query.
        ready, _, _ = select.select([listener.fileno()], [], [], 5.0)
        assert ready, "no NotificationResponse reached the idle listener within 5 s"
        deadline = time.monotonic() + 5
        while len(received) < 3 and time.monotonic() < deadline:
            listener.execute("select 1")
            time.sleep(0.05)
    assert received == [("tg_chan", "hello"), ("Tg Quoted", "x" * 7000), ("tg_chan", "after commit")]


def _sleep_and_cancel(conn: psycopg.Connection, delay: float = 0.5) -> tuple[Exception | None, float]:
    """Run pg_sleep(30) on conn, conn.cancel() it from another thread; return (exception, seconds after cancel)."""
    cancelled_at: list[float] = []

    def canceller():
        time.sleep(delay)
        cancelled_at.append(time.monotonic())
        conn.cancel()

    th = threading.Thread(target=canceller)
    th.start()
    error = None
    try:
        conn.execute("select pg_sleep(30)")
    except psycopg.Error as e:
        error = e
    done = time.monotonic()
    th.join()
    return error, done - cancelled_at[0] if cancelled_at else float("inf")


def test_cancel(target: Target):
    # statement_timeout bounds the test if the cancel is lost; its message differs from a user cancel.
    with target.connect(options="-c statement_timeout=10s") as conn:
        error, elapsed = _sleep_and_cancel(conn)
        assert isinstance(error, psycopg.errors.QueryCanceled), f"expected QueryCanceled, got {error!r}"
        assert error.sqlstate == "57014"
        assert "user request" in str(error), f"cancel was lost; statement_timeout fired: {error}"
        assert elapsed < CANCEL_DEADLINE, f"cancel took {elapsed:.2f} s"
        assert conn.execute("select 'still usable'").fetchone() == ("still usable",)
        # A second cancel on the same connection works too (the key stays valid).
        error, elapsed = _sleep_and_cancel(conn, delay=0.2)
        assert isinstance(error, psycopg.errors.QueryCanceled) and elapsed < CANCEL_DEADLINE, repr(error)


def test_cancel_hits_only_its_own_session(target: Target):
    with target.connect() as a, target.connect() as b:
        results: dict[str, object] = {}

        def run_b():
            try:
                results["b"] = b.execute("select pg_sleep(1.5), 'b finished'").fetchone()[1]
            except psycopg.Error as e:
                results["b"] = e

        th = threading.Thread(target=run_b)
        th.start()
        error, elapsed = _sleep_and_cancel(a, delay=0.5)
        th.join()
    assert isinstance(error, psycopg.errors.QueryCanceled), repr(error)
    assert results["b"] == "b finished", f"the other session was hit: {results['b']!r}"


def test_cancel_with_unknown_key_is_ignored(target: Target):
    """A CancelRequest with a key nobody issued must not cancel anything."""
    with target.connect() as conn:
        pid = conn.pgconn.backend_pid  # libpq does not expose the secret; the ones below are made up
        result: dict[str, object] = {}

        def run():
            try:
                result["r"] = conn.execute("select pg_sleep(1), 'finished'").fetchone()[1]
            except psycopg.Error as e:
                result["r"] = e

        th = threading.Thread(target=run)
        th.start()
        time.sleep(0.3)
        for bogus in ((pid, 12345), (pid + 1, 0), (0, 0)):
            with target.wire() as w:
                w.send(pgwire.cancel_request(*bogus))
                _, closed = w.read_until_closed(timeout=3)
                assert closed, "the server should close a CancelRequest connection without answering"
        th.join()
    assert result["r"] == "finished", f"a bogus CancelRequest cancelled the query: {result['r']!r}"


@pytest.mark.parametrize("n", [50])
def test_many_concurrent_connections(target: Target, n: int):
    conns = [target.connect(user="analyst") for _ in range(n)]
    try:
        vals = [c.execute("select %s::int", (i,)).fetchone()[0] for i, c in enumerate(conns)]
    finally:
        for c in conns:
            c.close()
    assert vals == list(range(n))


def test_error_fields_complete(twin: Twin):
    """Every diagnostic field of an upstream error reaches the client (drivers map them to exceptions)."""

    def run(t: Target):
        with t.connect() as conn:
            conn.execute("create temp table ef(id int constraint ef_pk primary key, v int check (v > 0))")
            conn.execute("insert into ef values (1, 1)")
            out = []
            for sql in ("insert into ef values (1, 2)", "insert into ef values (2, -1)",
                        "select nosuch from ef", "select 1 +"):
                try:
                    conn.execute(sql)
                except psycopg.Error as e:
                    d = e.diag
                    out.append((type(e).__name__, d.sqlstate, d.severity, d.message_primary, d.message_detail,
                                d.message_hint, d.statement_position, d.table_name, d.column_name,
                                d.constraint_name, d.source_function))
            return out

    errors = twin.run(run, "diagnostics")
    assert [e[0] for e in errors] == ["UniqueViolation", "CheckViolation", "UndefinedColumn", "SyntaxError"]
    assert errors[0][9] == "ef_pk" and errors[0][7] == "ef"


def test_cancel_during_copy_out(target: Target):
    """A cancel must get through while tokengate is busy streaming a large COPY to the client."""
    with target.connect() as conn:
        got = 0
        cancelled_at = None
        with pytest.raises(psycopg.errors.QueryCanceled):
            with conn.cursor() as cur:
                with cur.copy("copy (select g, repeat('c', 100) from generate_series(1, 5000000) g) to stdout") as cp:
                    for chunk in cp:
                        got += len(chunk)
                        if cancelled_at is None and got > 5_000_000:
                            cancelled_at = time.monotonic()
                            conn.cancel()
                        if cancelled_at and time.monotonic() - cancelled_at > 10:
                            pytest.fail("COPY still streaming 10 s after conn.cancel()")
        assert cancelled_at is not None
        assert conn.execute("select 'after copy cancel'").fetchone() == ("after copy cancel",)

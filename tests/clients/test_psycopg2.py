# psycopg2 (Debian python3-psycopg2, libpq underneath) through tokengate with a freshly issued token: parameters
# and their types, a rolled-back transaction, a server-side (named) cursor over 100k rows, COPY both ways with
# copy_expert, cancel, and the API TOKEN statements (expires_at is a tz-aware datetime).
from __future__ import annotations

import datetime as dt
import decimal
import io
import threading
import time
import uuid

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import pytest

from conftest import mask, remember_secret, wait_for_active_query

UTC = dt.timezone.utc


def connect(proxy, token: str, **kw):
    return psycopg2.connect(host=proxy.host, port=proxy.port, user="analyst", password=token, dbname="postgres",
                            sslmode="disable", connect_timeout=10, **kw)


@pytest.fixture
def conn(proxy, mint_token):
    _, token, _ = mint_token(user="analyst", duration="1h")
    c = connect(proxy, token)
    yield c
    c.close()


def test_parameters_and_types(conn):
    with conn.cursor() as cur:
        cur.execute("select current_user, %s::int + 1, %s, %s::numeric, %s::date, %s::timestamptz, %s, %s",
                    (41, "it's \"quoted\" ünïcode", decimal.Decimal("1.25"), dt.date(2026, 1, 2),
                     dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), None, [1, 2, 3]))
        row = cur.fetchone()
    assert row[0] == "analyst"
    assert row[1] == 42 and isinstance(row[1], int)
    assert row[2] == "it's \"quoted\" ünïcode"
    assert row[3] == decimal.Decimal("1.25")
    assert row[4] == dt.date(2026, 1, 2)
    assert row[5] == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC) and row[5].tzinfo is not None
    assert row[6] is None and row[7] == [1, 2, 3]


def test_transaction_rollback(conn):
    with conn.cursor() as cur:
        cur.execute("create temp table t (id int primary key, v text)")
        conn.commit()
        cur.execute("insert into t values (%s, %s), (%s, %s)", (1, "a", 2, "b"))
        cur.execute("select count(*) from t")
        assert cur.fetchone()[0] == 2
        conn.rollback()
        cur.execute("select count(*) from t")
        assert cur.fetchone()[0] == 0
        # An error aborts the transaction; rollback makes the connection usable again.
        with pytest.raises(psycopg2.errors.UniqueViolation):
            cur.execute("insert into t values (1, 'x'), (1, 'y')")
        assert conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_INERROR
        conn.rollback()
        cur.execute("select 1")
        assert cur.fetchone() == (1,)
    conn.commit()


def test_server_side_cursor_100k(conn):
    with conn.cursor(name=f"big_{uuid.uuid4().hex[:6]}") as cur:
        cur.itersize = 5000
        cur.execute("select g, md5(g::text) from generate_series(1, 100000) g order by g")
        n = total = 0
        last = None
        for g, h in cur:
            n += 1
            total += g
            last = (g, h)
    conn.commit()
    assert n == 100000 and total == 100000 * 100001 // 2
    assert last[0] == 100000 and len(last[1]) == 32


def test_copy_expert(conn):
    with conn.cursor() as cur:
        cur.execute("create temp table c (id int, name text)")
        data = "".join(f"{i}\tname {i}\n" for i in range(1, 20001))
        cur.copy_expert("copy c from stdin", io.StringIO(data))
        assert cur.rowcount == 20000
        cur.execute("select count(*), sum(id) from c")
        assert cur.fetchone() == (20000, 20000 * 20001 // 2)
        out = io.StringIO()
        cur.copy_expert("copy (select id, name from c order by id) to stdout with (format csv)", out)
        lines = out.getvalue().splitlines()
        assert len(lines) == 20000 and lines[0] == "1,name 1" and lines[-1] == "20000,name 20000"
        # A bad row fails the COPY with the upstream's SQLSTATE, and the session goes on.
        with pytest.raises(psycopg2.errors.InvalidTextRepresentation):
            cur.copy_expert("copy c from stdin", io.StringIO("1\tok\nnot a number\tbad\n"))
        conn.rollback()
        cur.execute("select 1")
        assert cur.fetchone() == (1,)
    conn.commit()


def test_cancel(conn, pg):
    def cancel():
        wait_for_active_query(pg, "select pg_sleep(30)")
        conn.cancel()

    canceller = threading.Thread(target=cancel, daemon=True)
    canceller.start()
    t0 = time.monotonic()
    with conn.cursor() as cur:
        with pytest.raises(psycopg2.errors.QueryCanceled):
            cur.execute("select pg_sleep(30)")
    canceller.join(5)
    assert time.monotonic() - t0 < 10
    conn.rollback()
    with conn.cursor() as cur:
        cur.execute("select 'still usable'")
        assert cur.fetchone() == ("still usable",)


def test_token_statements(conn, proxy):
    name = f"pg2_{uuid.uuid4().hex[:8]}"
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE API TOKEN {name} MAX DURATION '2h' COMMENT 'from psycopg2'")
        assert [d.name for d in cur.description] == ["name", "token", "expires_at"]
        assert [d.type_code for d in cur.description] == [25, 25, 1184]
        assert cur.statusmessage == "CREATE API TOKEN"
        (tname, token, expires_at), = cur.fetchall()
        remember_secret(token)
        parts = token.count(".")  # (assertion messages must not show a token)
        assert tname == name and parts == 2, mask(token)
        assert isinstance(expires_at, dt.datetime) and expires_at.utcoffset() == dt.timedelta(0)
        delta = (expires_at - dt.datetime.now(UTC)).total_seconds()
        assert 7000 < delta < 7300, expires_at

        # The new token works with psycopg2 too.
        with connect(proxy, token) as c2, c2.cursor() as cur2:
            cur2.execute("select current_user")
            assert cur2.fetchone() == ("analyst",)
        c2.close()

        cur.execute("ALTER API TOKEN %s SET COMMENT 'changed'" % name)
        assert cur.statusmessage == "ALTER API TOKEN" and cur.description is None

        cur.execute("SHOW API TOKENS")
        cols = [d.name for d in cur.description]
        assert cols == ["name", "user", "created_at", "expires_at", "last_used_at", "status", "comment",
                        "created_by"]
        rows = {r[0]: dict(zip(cols, r)) for r in cur.fetchall()}
        mine = rows[name]
        assert mine["comment"] == "changed" and mine["status"] == "active" and mine["user"] == "analyst"
        assert isinstance(mine["created_at"], dt.datetime) and mine["created_at"].tzinfo is not None
        assert mine["expires_at"] == expires_at

        # Parameters are not allowed in API TOKEN statements (psycopg2 interpolates client-side, so a %s
        # becomes a literal and that is fine); a real error keeps the SQLSTATE.
        with pytest.raises(psycopg2.errors.UndefinedObject):
            cur.execute("DROP API TOKEN no_such_token_x")
        cur.execute(f"DROP API TOKEN {name}")
        assert cur.statusmessage == "DROP API TOKEN"
        cur.execute("SHOW API TOKENS")
        assert {r[0]: r[5] for r in cur.fetchall()}[name] == "revoked"

    # Inside a transaction (psycopg2's default): CREATE API TOKEN is refused, as CREATE DATABASE is; the other
    # statements take effect at once, with NOTICE 25001, and ROLLBACK does not undo them.
    name2 = f"pg2tx_{uuid.uuid4().hex[:8]}"
    with conn.cursor() as cur:
        cur.execute(f"CREATE API TOKEN {name2} MAX DURATION '1h'")
        remember_secret(cur.fetchone()[1])
    conn.autocommit = False
    with conn.cursor() as cur:
        with pytest.raises(psycopg2.errors.ActiveSqlTransaction):
            cur.execute(f"CREATE API TOKEN pg2tx_{uuid.uuid4().hex[:8]} MAX DURATION '1h'")
        conn.rollback()
        cur.execute(f"ALTER API TOKEN {name2} SET COMMENT 'in a transaction'")
        assert any("not transactional" in n for n in conn.notices), conn.notices
        conn.rollback()
        cur.execute("SHOW API TOKENS")
        assert {r[0]: r[6] for r in cur.fetchall()}[name2] == "in a transaction"
        conn.rollback()

    with pytest.raises(psycopg2.OperationalError) as e:
        connect(proxy, token)
    leaked = token in str(e.value)
    assert not leaked, "the error message contains the token"

# psqlODBC (Debian odbc-postgresql, "PostgreSQL Unicode" driver) through pyodbc and unixODBC, with a freshly issued
# token as PWD, with UseServerSidePrepare=1 (Parse/Bind/Describe with named statements) and =0 (parameters inlined
# into simple Queries): parameters and types, a rolled-back transaction, 100k rows, and the API TOKEN statements.
from __future__ import annotations

import datetime as dt
import decimal
import uuid
from pathlib import Path

import pytest

from conftest import mask, remember_secret

import pyodbc  # noqa: E402  (python3-pyodbc; ./dev installs it)

DRIVER = Path("/usr/lib/x86_64-linux-gnu/odbc/psqlodbcw.so")  # "PostgreSQL Unicode"


def connstr(proxy, password: str, server_side_prepare: int) -> str:
    # Braces around PWD: the value is taken literally (a token has no '}').
    return (f"DRIVER={{{DRIVER}}};SERVER={proxy.host};PORT={proxy.port};DATABASE=postgres;UID=analyst;"
            f"PWD={{{password}}};SSLmode=disable;UseServerSidePrepare={server_side_prepare};"
            f"ConnSettings=;BoolsAsChar=0")


@pytest.fixture(params=[1, 0], ids=["UseServerSidePrepare=1", "UseServerSidePrepare=0"])
def odbc(request, proxy, mint_token):
    if not DRIVER.exists():
        pytest.fail(f"{DRIVER} missing (./dev installs odbc-postgresql)", pytrace=False)
    _, token, _ = mint_token(user="analyst", duration="1h")
    conn = pyodbc.connect(connstr(proxy, token, request.param), autocommit=False, timeout=10)
    yield conn, request.param
    conn.close()


def test_parameters_rollback_and_rows(odbc, pg):
    odbc, ssp = odbc
    cur = odbc.cursor()
    mark = pg.log_mark()
    cur.execute("select current_user, cast(? as integer) + 1, cast(? as text), cast(? as numeric(10,2)), "
                "cast(? as date), cast(? as boolean)",
                41, "it's ünïcode", decimal.Decimal("1.25"), dt.date(2026, 1, 2), True)
    row = cur.fetchone()
    assert row[0] == "analyst"
    assert row[1] == 42 and isinstance(row[1], int)
    assert row[2] == "it's ünïcode"
    assert row[3] == decimal.Decimal("1.25")
    assert row[4] == dt.date(2026, 1, 2)
    assert row[5] in (True, 1)
    # The two modes really differ on the wire: bound parameters upstream, or literals inlined by the driver.
    logged = [s for s in pg.logged_statements(mark) if "current_user" in s]
    assert logged, pg.log_since(mark)[-2000:]
    if ssp:
        assert "$1" in logged[-1], logged
    else:
        assert "$1" not in logged[-1] and "41" in logged[-1], logged

    cur.execute("create temp table t (id int primary key, v text)")
    odbc.commit()
    cur.executemany("insert into t values (?, ?)", [(i, f"v{i}") for i in range(1, 11)])
    cur.execute("select count(*) from t")
    assert cur.fetchone()[0] == 10
    odbc.rollback()
    cur.execute("select count(*) from t")
    assert cur.fetchone()[0] == 0
    with pytest.raises(pyodbc.Error) as e:
        cur.execute("insert into t values (1, 'a'), (1, 'b')")
    assert "23505" in str(e.value)
    odbc.rollback()

    cur.execute("select g, md5(cast(g as text)) from generate_series(1, 100000) g order by g")
    n = total = 0
    while True:
        rows = cur.fetchmany(10000)
        if not rows:
            break
        n += len(rows)
        total += sum(r[0] for r in rows)
    assert n == 100000 and total == 100000 * 100001 // 2
    odbc.commit()


def test_token_statements(odbc, proxy):
    odbc, ssp = odbc
    odbc.autocommit = True
    cur = odbc.cursor()
    name = f"odbc{ssp}_{uuid.uuid4().hex[:8]}"
    cur.execute(f"CREATE API TOKEN {name} MAX DURATION '2h' COMMENT 'from ODBC'")
    assert [d[0] for d in cur.description] == ["name", "token", "expires_at"]
    assert cur.description[0][1] is str and cur.description[2][1] is dt.datetime
    rows = cur.fetchall()
    n = len(rows)  # (assertion messages must not show a token: no rows in them)
    assert n == 1
    tname, token, expires_at = rows[0]
    remember_secret(token)
    parts = token.count(".")
    assert tname == name and parts == 2, mask(token)
    assert isinstance(expires_at, dt.datetime)
    # ODBC's SQL_TIMESTAMP has no zone: psqlODBC converts to the session TimeZone (the cluster's default, UTC here).
    delta = (expires_at.replace(tzinfo=dt.timezone.utc) - dt.datetime.now(dt.timezone.utc)).total_seconds()
    assert 7000 < delta < 7300, expires_at

    c2 = pyodbc.connect(connstr(proxy, token, ssp), autocommit=True, timeout=10)
    assert c2.cursor().execute("select current_user").fetchone()[0] == "analyst"
    c2.close()

    cur.execute(f"ALTER API TOKEN {name} SET COMMENT 'changed via ODBC'")
    cur.execute("SHOW API TOKENS")
    cols = [d[0] for d in cur.description]
    assert cols == ["name", "user", "created_at", "expires_at", "last_used_at", "status", "comment", "created_by"]
    show = {r[0]: dict(zip(cols, r)) for r in cur.fetchall()}
    assert show[name]["comment"] == "changed via ODBC" and show[name]["status"] == "active"
    assert isinstance(show[name]["created_at"], dt.datetime)

    with pytest.raises(pyodbc.Error) as e:
        cur.execute("DROP API TOKEN no_such_token_odbc")
    assert "42704" in str(e.value)
    cur.execute(f"DROP API TOKEN {name}")
    cur.execute("SHOW ALL API TOKENS")
    assert {r[0]: r[5] for r in cur.fetchall()}[name] == "revoked"
    with pytest.raises(pyodbc.Error) as e:
        pyodbc.connect(connstr(proxy, token, ssp), timeout=10)
    leaked = token in str(e.value)
    assert not leaked, "the error message contains the token"

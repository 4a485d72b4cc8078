"""The Python client in clients/python (tokengate.Client) against the session tokengate's HTTP gateway:
from_env(), token management, errors with their SQLSTATE, and client.sql() as a DataFrame once the gateway
serves POST /sql."""
from __future__ import annotations

import datetime as dt
import decimal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from conftest import REPO, clean_env, mask, remember_secret

sys.path.insert(0, str(REPO / "clients" / "python"))
import tokengate  # noqa: E402
from tokengate.client import _param, _parse  # noqa: E402


def uniq(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def gateway_url(tokengate) -> str:
    return f"http://{tokengate.host}:{tokengate.http_port}"


@pytest.fixture
def client(gateway_url, mint_token) -> tokengate.Client:
    return tokengate.Client(url=gateway_url, token=mint_token(user="analyst", duration="1h")[1])


@pytest.fixture
def sql_client(client) -> tokengate.Client:
    """The client, when this tokengate serves POST /sql (SQL over HTTP); the test is skipped otherwise."""
    try:
        client.sql("select 1", dataframe=False)
    except tokengate.DatabaseError as e:
        if e.status == 404:
            pytest.skip("this tokengate has no POST /sql endpoint yet")
        raise
    return client


def test_from_env(gateway_url, mint_token, monkeypatch):
    name, token, _ = mint_token(user="analyst", duration="1h")
    monkeypatch.setenv("TOKENGATE_URL", gateway_url)
    monkeypatch.setenv("TOKENGATE_ACCESS_TOKEN", token)
    monkeypatch.delenv("TOKENGATE_DATABASE", raising=False)
    c = tokengate.Client.from_env()
    assert c.user == "analyst" and c.database == "postgres"
    assert c.me()["token_name"] == name
    assert token not in repr(c) and token not in str(c)
    monkeypatch.setenv("TOKENGATE_DATABASE", "analyst_db")
    assert tokengate.Client.from_env().database == "analyst_db"


def test_from_env_names_what_is_missing(monkeypatch, gateway_url):
    monkeypatch.delenv("TOKENGATE_URL", raising=False)
    monkeypatch.delenv("TOKENGATE_ACCESS_TOKEN", raising=False)
    with pytest.raises(tokengate.ConfigurationError, match="TOKENGATE_URL"):
        tokengate.Client.from_env()
    monkeypatch.setenv("TOKENGATE_URL", gateway_url)
    with pytest.raises(tokengate.ConfigurationError, match="TOKENGATE_ACCESS_TOKEN"):
        tokengate.Client.from_env()
    with pytest.raises(tokengate.ConfigurationError, match="url must be"):
        tokengate.Client(url="postgresql://x", token="t")


def test_token_management(client):
    name = uniq("py")
    created = client.create_token(name=name, max_duration="1h", comment="from python")
    remember_secret(created["token"])
    assert created["name"] == name and created["token"].startswith("eyJ")
    rows = {t["name"]: t for t in client.tokens()}
    assert rows[name]["comment"] == "from python" and rows[name]["status"] == "active", rows[name]
    client.set_comment(name, None)
    assert {t["name"]: t for t in client.tokens()}[name]["comment"] is None
    # The new token is a client of its own.
    other = tokengate.Client(url=client.url, token=created["token"])
    assert other.me()["token_name"] == name
    client.revoke_token(name)
    with pytest.raises(tokengate.AuthenticationError) as e:
        other.me()
    assert e.value.sqlstate == "28P01" and e.value.status == 401, e.value


def test_errors_carry_the_sqlstate(client):
    name = uniq("dup")
    remember_secret(client.create_token(name=name, max_duration="1h")["token"])
    with pytest.raises(tokengate.DatabaseError) as e:
        client.create_token(name=name)
    assert e.value.sqlstate == "42710" and e.value.status == 409
    assert f'API token "{name}" already exists' in str(e.value) and "DETAIL:" in str(e.value)
    with pytest.raises(tokengate.DatabaseError) as e:
        client.tokens(user="admin")
    assert e.value.sqlstate == "42501"
    with pytest.raises(tokengate.DatabaseError) as e:
        client.create_token(max_duration="fortnight")
    assert e.value.sqlstate == "22023" and e.value.detail == "Expected a number at position 1."


def test_bad_token_is_an_authentication_error(gateway_url):
    c = tokengate.Client(url=gateway_url, token="eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyIjoiYW5hbHlzdCJ9.c2ln")
    with pytest.raises(tokengate.AuthenticationError) as e:
        c.me()
    assert e.value.sqlstate == "28P01"


def test_unreachable_is_a_transport_error():
    c = tokengate.Client(url="http://127.0.0.1:9", token="eyJ.x.y", timeout=5)
    with pytest.raises(tokengate.TransportError, match="cannot reach tokengate"):
        c.me()


def test_imports_with_debian_python_alone(gateway_url, mint_token):
    """A fresh Debian interpreter with PYTHONPATH=clients/python: from_env() and a call, as docs/python.md says."""
    _, token, _ = mint_token(user="analyst", duration="1h")
    script = "import tokengate; print(tokengate.Client.from_env().me()['user'])"
    p = subprocess.run(["/usr/bin/python3", "-I", "-c", "import sys; sys.path.insert(0, sys.argv[1]); " + script,
                        str(REPO / "clients" / "python")], capture_output=True, text=True, timeout=60,
                       env=clean_env(TOKENGATE_URL=gateway_url, TOKENGATE_ACCESS_TOKEN=token))
    assert p.returncode == 0 and p.stdout.strip() == "analyst", f"rc={p.returncode} {p.stderr[-2000:]} ({mask(token)})"


def test_value_conversions():
    """Text as PostgreSQL prints it → Python values, and parameters → the text PostgreSQL reads."""
    assert _parse("t", 16) is True and _parse("f", 16) is False
    assert _parse("42", 23) == 42 and _parse("-9000000000", 20) == -9000000000
    assert _parse("1.5", 701) == 1.5 and _parse("1.10", 1700) == decimal.Decimal("1.10")
    assert _parse('{"a": [1]}', 3802) == {"a": [1]}
    assert _parse("2026-11-30", 1082) == dt.date(2026, 11, 30)
    assert _parse("2026-11-30 10:00:00.5+00", 1184) == dt.datetime(2026, 11, 30, 10, 0, 0, 500000,
                                                                    tzinfo=dt.timezone.utc)
    assert _parse("2026-11-30 10:00:00+05:30", 1184).utcoffset() == dt.timedelta(hours=5, minutes=30)
    assert _parse("infinity", 1184) == "infinity"
    assert _parse("\\x00ff", 17) == b"\x00\xff"
    assert _parse(None, 23) is None and _parse("x", 25) == "x"
    assert _param(None) is None and _param(True) == "true" and _param(3) == "3"
    assert _param(b"\x01\xff") == "\\x01ff"
    assert _param(dt.date(2026, 1, 2)) == "2026-01-02"
    assert _param([1, None, 'a"b']) == '{"1",NULL,"a\\"b"}'
    assert _param({"k": 1}) == '{"k": 1}'


# ---------------------------------------------------------------- SQL over HTTP (POST /sql)


def test_sql_returns_a_dataframe(sql_client):
    pandas = pytest.importorskip("pandas")
    df = sql_client.sql("select 1 as answer, 'x'::text as t, now() as at")
    assert isinstance(df, pandas.DataFrame)
    assert list(df.columns) == ["answer", "t", "at"]
    assert df["answer"][0] == 1 and df["t"][0] == "x"
    assert isinstance(df["at"][0], (dt.datetime, pandas.Timestamp))


def test_sql_parameters_and_rows(sql_client):
    r = sql_client.sql("select $1::int + 1 as n, $2::text as s, $3::bool as b, $4::int[] as a",
                       [41, "héllo", True, [1, 2]], dataframe=False)
    assert r.columns == ["n", "s", "b", "a"]
    assert r.rows == [[42, "héllo", True, "{1,2}"]]
    assert r.command == "SELECT" and r.row_count == 1


def test_sql_error_carries_the_sqlstate(sql_client):
    with pytest.raises(tokengate.DatabaseError) as e:
        sql_client.sql("select * from no_such_table")
    assert e.value.sqlstate == "42P01" and 'relation "no_such_table" does not exist' in e.value.message
    assert e.value.position == 15

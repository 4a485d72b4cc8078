"""POST /sql in the @neondatabase/serverless protocol: credentials (token or password in the connection string,
Bearer in place of the password; bad, revoked, expired), results (fields as PostgreSQL describes them, raw and typed
values, arrays and objects), batches as one transaction with their options, errors with every field, API TOKEN
statements answered locally, the result-size limit, COPY, and the upstream pool (one backend across requests, reset
between them, limits, a backend that goes away)."""
from __future__ import annotations

import concurrent.futures
import json
import time
import uuid

import pytest

from conftest import cli_revoke, mask, remember_secret
from http_client import describe

DRIVER_HEADERS = {"Neon-Raw-Text-Output": "true", "Neon-Array-Mode": "true"}


def conn_string(tokengate, user: str = "analyst", password: str | None = None, db: str = "postgres",
                params: str = "") -> str:
    auth = user if password is None else f"{user}:{password}"
    return f"postgresql://{auth}@{tokengate.host}:{tokengate.port}/{db}" + (f"?{params}" if params else "")


def sql(api, tokengate, query: str, params: list | None = None, user: str = "analyst", password: str | None = None,
        db: str = "postgres", headers: dict | None = None, token: str | None = None, raw: bool = True,
        conn_params: str = ""):
    """One POST /sql as the driver sends it (raw text, array mode unless `raw` is False)."""
    h = dict(DRIVER_HEADERS if raw else {})
    h["Neon-Connection-String"] = conn_string(tokengate, user, password, db, conn_params)
    h.update(headers or {})
    body: dict = {"query": query}
    if params is not None:
        body["params"] = params
    return api.call("POST", "/sql", token=token, json=body, headers=h)


def batch(api, tokengate, queries: list[tuple[str, list]], password: str, user: str = "analyst",
          headers: dict | None = None):
    h = dict(DRIVER_HEADERS)
    h["Neon-Connection-String"] = conn_string(tokengate, user, password)
    h.update(headers or {})
    return api.call("POST", "/sql", json={"queries": [{"query": q, "params": p} for q, p in queries]}, headers=h)


def ok(r) -> dict:
    assert r.status_code == 200, describe(r)
    assert r.headers["Content-Type"] == "application/json"
    return r.json()


def error(r, status: int, code: str, message: str | None = None) -> dict:
    assert r.status_code == status, describe(r)
    body = r.json()
    assert body["code"] == code, describe(r)
    if message is not None:
        assert body["message"] == message, describe(r)
    return body


@pytest.fixture
def token(mint_token) -> str:
    return mint_token(user="analyst", duration="1h")[1]


SCHEMA = "http_sql"  # where analyst may create tables (PostgreSQL 15 closed public to non-owners)


@pytest.fixture(scope="module", autouse=True)
def analyst_schema(pg):
    with pg.admin_conn() as c:
        c.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA} AUTHORIZATION analyst")
    yield
    with pg.admin_conn() as c:
        c.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


# ---------------------------------------------------------------- credentials


def test_token_as_password(http_api, tokengate, token):
    body = ok(sql(http_api, tokengate, "select current_user as u, $1::int + 1 as n", [41], password=token))
    assert body["rows"] == [["analyst", "42"]]
    assert [f["name"] for f in body["fields"]] == ["u", "n"]
    assert body["command"] == "SELECT" and body["rowCount"] == 1 and body["rowAsArray"] is True


def test_password_in_the_connection_string(http_api, tokengate):
    body = ok(sql(http_api, tokengate, "select current_user", password="analyst"))
    assert body["rows"] == [["analyst"]]


def test_bearer_in_place_of_the_password(http_api, tokengate, token):
    body = ok(sql(http_api, tokengate, "select current_user", token=token))
    assert body["rows"] == [["analyst"]]
    # Without a user in the connection string, the token's owner; the database defaults to the user's name.
    h = dict(DRIVER_HEADERS)
    body = ok(http_api.call("POST", "/sql", token=token, json={"query": "select current_user, current_database()"},
                            headers={**h, "Neon-Connection-String": f"postgresql://{tokengate.host}/postgres"}))
    assert body["rows"] == [["analyst", "postgres"]]


def test_bearer_of_another_user_is_refused(http_api, tokengate, token):
    body = error(sql(http_api, tokengate, "select 1", user="admin", token=token), 401, "28P01",
                 'password authentication failed for user "admin"')
    assert body["severity"] == "FATAL"


def test_wrong_password_and_unknown_user(http_api, tokengate):
    for user, password in (("analyst", "wrong"), ("nobody_here", "x")):
        body = error(sql(http_api, tokengate, "select 1", user=user, password=password), 401, "28P01",
                     f'password authentication failed for user "{user}"')
        assert set(body) == {"message", "code", "severity"}, body


def test_no_credentials(http_api, tokengate):
    error(sql(http_api, tokengate, "select 1"), 401, "28000", "authentication required")


def test_tampered_token(http_api, tokengate, token):
    bad = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    error(sql(http_api, tokengate, "select 1", password=bad), 401, "28P01",
          'password authentication failed for user "analyst"')
    error(sql(http_api, tokengate, "select 1", token=bad), 401, "28P01")


def test_revoked_token_refused_from_the_next_request(http_api, tokengate, mint_token):
    name, tok, _ = mint_token(user="analyst", duration="1h")
    ok(sql(http_api, tokengate, "select 1", password=tok))
    ok(sql(http_api, tokengate, f"DROP API TOKEN {name}", password="analyst"))
    error(sql(http_api, tokengate, "select 1", password=tok), 401, "28P01")
    error(sql(http_api, tokengate, "select 1", token=tok), 401, "28P01")


def test_token_revoked_by_the_command_line(http_api, tokengate, mint_token):
    name, tok, _ = mint_token(user="analyst", duration="1h")
    ok(sql(http_api, tokengate, "select 1", password=tok))
    assert cli_revoke(tokengate, name, "analyst").returncode == 0
    error(sql(http_api, tokengate, "select 1", password=tok), 401, "28P01")


def running_request_revoked(http_api, tokengate, pg, proxy, mint_token, body: dict, in_token: str) -> tuple:
    """Sends `body` with a fresh token (as Bearer or in the connection string), drops the token while it runs, and
    returns (the answer, the request's backend PIDs still alive after DROP API TOKEN answered)."""
    name, tok, _ = mint_token(user="analyst", name=f"http_victim_{uuid.uuid4().hex[:8]}", duration="1h")
    h = dict(DRIVER_HEADERS)
    h["Neon-Connection-String"] = conn_string(tokengate, "analyst", tok if in_token == "connection string" else None)
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        running = ex.submit(http_api.call, "POST", "/sql", token=tok if in_token == "bearer" else None, json=body,
                            headers=h)
        deadline = time.monotonic() + 5
        with pg.admin_conn() as a:
            while True:
                pids = [r[0] for r in a.execute("select pid from pg_stat_activity where query like '%pg_sleep(3)%' "
                                                "and pid <> pg_backend_pid()").fetchall()]
                if pids or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        assert pids, "the request's statement never started"
        with proxy.connect(user="analyst") as owner:
            owner.execute(f"DROP API TOKEN {name}")
        with pg.admin_conn() as a:
            alive = a.execute("select pid from pg_stat_activity where pid = any(%s) and state = 'active'",
                              (pids,)).fetchall()
        return running.result(20), alive


@pytest.mark.parametrize("in_token", ["bearer", "connection string"])
@pytest.mark.parametrize("shape", ["batch", "one statement"])
def test_a_running_request_of_a_revoked_token_never_commits(http_api, tokengate, pg, proxy, mint_token, shape,
                                                            in_token):
    """A request authenticated by a token is a session while it runs: revoking the token ends it upstream too, as a
    wire session's (the batch's second statement, or the rest of a writable statement, must never commit)."""
    table = f"{SCHEMA}.http_revoked_{uuid.uuid4().hex[:8]}"
    ok(sql(http_api, tokengate, f"create table {table} (v int)", password="analyst"))
    if shape == "batch":
        body = {"queries": [{"query": "select pg_sleep(3)", "params": []},
                            {"query": f"insert into {table} values (42)", "params": []}]}
    else:
        body = {"query": f"with s as (select pg_sleep(3)) insert into {table} select 42 from s"}
    r, alive = running_request_revoked(http_api, tokengate, pg, proxy, mint_token, body, in_token)
    assert not alive, "DROP API TOKEN answered while the revoked request's statement still ran upstream"
    body = error(r, 503, "57P01", "API token revoked")
    assert body["severity"] == "FATAL", body
    time.sleep(3.5)  # past the moment the insert would have committed
    assert ok(sql(http_api, tokengate, f"select count(*) from {table}", password="analyst"))["rows"] == [["0"]]
    ok(sql(http_api, tokengate, f"drop table {table}", password="analyst"))


def test_expired_token(http_api, tokengate, mint_token):
    _, tok, _ = mint_token(user="analyst", duration="1s")
    time.sleep(2.1)
    body = error(sql(http_api, tokengate, "select 1", password=tok), 401, "28P01", "API token expired")
    assert body["detail"].startswith("The token expired at "), body


def test_logins_are_audited_without_secrets(http_api, tokengate, token):
    mark = tokengate.audit_path.stat().st_size
    bad = remember_secret(f"pw-{uuid.uuid4().hex}")
    ok(sql(http_api, tokengate, "select 1", password=token))
    error(sql(http_api, tokengate, "select 1", password=bad), 401, "28P01")
    text = tokengate.audit_path.read_bytes()[mark:].decode()  # mark is a byte offset: earlier lines may be UTF-8
    assert token not in text and bad not in text, "a secret reached the audit log"
    logins = [json.loads(x) for x in text.splitlines() if json.loads(x)["event"] == "login"]
    assert [(x["method"], x["outcome"]) for x in logins] == [("token", "ok"), ("password", "denied")], logins
    assert all(x["application_name"].startswith("http: ") for x in logins), logins


def test_unknown_database_is_the_upstream_error(http_api, tokengate):
    body = error(sql(http_api, tokengate, "select 1", password="analyst", db="no_such_db"), 400, "3D000",
                 'database "no_such_db" does not exist')
    assert body["severity"] == "FATAL"


# ---------------------------------------------------------------- results


def test_fields_describe_table_columns_as_postgresql_does(http_api, tokengate, pg):
    table = f"http_fields_{uuid.uuid4().hex[:8]}"
    with pg.admin_conn() as c:
        c.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, name varchar(10), price numeric(8,2))")
        c.execute(f"GRANT SELECT ON {table} TO analyst")
        c.execute(f"INSERT INTO {table} VALUES (1, 'ann', 9.5)")
        oid = c.execute(f"SELECT '{table}'::regclass::oid").fetchone()[0]
    body = ok(sql(http_api, tokengate, f"select id, name, price, 1 as one from {table}", password="analyst"))
    assert body["fields"] == [
        {"name": "id", "dataTypeID": 23, "tableID": oid, "columnID": 1, "dataTypeSize": 4, "dataTypeModifier": -1,
         "format": "text"},
        {"name": "name", "dataTypeID": 1043, "tableID": oid, "columnID": 2, "dataTypeSize": -1,
         "dataTypeModifier": 14, "format": "text"},
        {"name": "price", "dataTypeID": 1700, "tableID": oid, "columnID": 3, "dataTypeSize": -1,
         "dataTypeModifier": 524294, "format": "text"},
        {"name": "one", "dataTypeID": 23, "tableID": 0, "columnID": 0, "dataTypeSize": 4, "dataTypeModifier": -1,
         "format": "text"},
    ]
    assert body["rows"] == [["1", "ann", "9.50", "1"]]


PARAMS_QUERY = ("select $1::int + 1 as i, $2::text as t, $3::bool as b, $4::jsonb as j, $5::numeric as n, "
                "$6::int as nul, $7::int[] as a, $8::text[] as ta, $9::float8 as f, 'NaN'::float8 as nan, "
                "$10::bigint as big")
PARAMS = [41, "it's ünïcode", True, {"a": [1, 2]}, "1.25", None, [1, 2, None], ["x y", 'q"b\\'], 2.5,
          9007199254740993]


def test_parameters_and_raw_text(http_api, tokengate):
    body = ok(sql(http_api, tokengate, PARAMS_QUERY, PARAMS, password="analyst"))
    assert body["rows"] == [["42", "it's ünïcode", "t", '{"a": [1, 2]}', "1.25", None, "{1,2,NULL}",
                             '{"x y","q\\"b\\\\"}', "2.5", "NaN", "9007199254740993"]]


def test_typed_values_as_objects(http_api, tokengate):
    body = ok(sql(http_api, tokengate, PARAMS_QUERY, PARAMS, password="analyst", raw=False))
    assert body["rowAsArray"] is False
    assert body["rows"] == [{"i": 42, "t": "it's ünïcode", "b": True, "j": {"a": [1, 2]}, "n": "1.25", "nul": None,
                             "a": [1, 2, None], "ta": ["x y", 'q"b\\'], "f": 2.5, "nan": "NaN",
                             "big": "9007199254740993"}]


def test_array_mode_per_query(http_api, tokengate):
    h = {"Neon-Connection-String": conn_string(tokengate, password="analyst")}
    body = ok(http_api.call("POST", "/sql", json={"query": "select 1 as a", "arrayMode": True}, headers=h))
    assert body["rows"] == [[1]] and body["rowAsArray"] is True


def test_commands_and_row_counts(http_api, tokengate):
    table = f"{SCHEMA}.http_cmd_{uuid.uuid4().hex[:8]}"
    r = ok(sql(http_api, tokengate, f"create table {table} (v int)", password="analyst"))
    assert (r["command"], r["rowCount"], r["fields"], r["rows"]) == ("CREATE", None, [], [])
    r = ok(sql(http_api, tokengate, f"insert into {table} select generate_series(1, 5)", password="analyst"))
    assert (r["command"], r["rowCount"]) == ("INSERT", 5)
    r = ok(sql(http_api, tokengate, f"update {table} set v = v + 1 where v > $1", [2], password="analyst"))
    assert (r["command"], r["rowCount"]) == ("UPDATE", 3)
    r = ok(sql(http_api, tokengate, f"drop table {table}", password="analyst"))
    assert (r["command"], r["rowCount"]) == ("DROP", None)
    r = ok(sql(http_api, tokengate, "", password="analyst"))
    assert (r["command"], r["rowCount"]) == ("", None)


# ---------------------------------------------------------------- errors


def test_upstream_error_carries_every_field(http_api, tokengate, pg):
    table = f"http_err_{uuid.uuid4().hex[:8]}"
    with pg.admin_conn() as c:
        c.execute(f"CREATE TABLE {table} (id int CONSTRAINT {table}_pk PRIMARY KEY)")
        c.execute(f"GRANT SELECT, INSERT ON {table} TO analyst")  # the DETAIL shows values to readers only
    ok(sql(http_api, tokengate, f"insert into {table} values (1)", password="analyst"))
    body = error(sql(http_api, tokengate, f"insert into {table} values (1)", password="analyst"), 400, "23505")
    assert body["message"] == f'duplicate key value violates unique constraint "{table}_pk"'
    assert body["detail"] == "Key (id)=(1) already exists."
    assert (body["schema"], body["table"], body["constraint"]) == ("public", table, f"{table}_pk")
    assert body["severity"] == "ERROR" and body["file"] and body["line"] and body["routine"], body


def test_syntax_error_position_and_division_by_zero(http_api, tokengate):
    body = error(sql(http_api, tokengate, "select 1 frm x", password="analyst"), 400, "42601",
                 'syntax error at or near "x"')
    assert body["position"] == "14"
    error(sql(http_api, tokengate, "select 1/0", password="analyst"), 400, "22012", "division by zero")
    body = error(sql(http_api, tokengate, "select $1::int", ["x"], password="analyst"), 400, "22P02")
    assert body["message"] == 'invalid input syntax for type integer: "x"'


def test_parameter_count_mismatch_is_postgresqls_error(http_api, tokengate):
    error(sql(http_api, tokengate, "select $1::int", [], password="analyst"), 400, "08P01",
          'bind message supplies 0 parameters, but prepared statement "" requires 1')


def test_several_statements_in_one_query_are_refused_as_by_postgresql(http_api, tokengate):
    error(sql(http_api, tokengate, "select 1; select 2", password="analyst"), 400, "42601",
          "cannot insert multiple commands into a prepared statement")


def test_copy_is_refused(http_api, tokengate):
    error(sql(http_api, tokengate, "copy (select 1) to stdout", password="analyst"), 400, "0A000",
          "COPY TO STDOUT is not supported over HTTP")
    table = f"{SCHEMA}.http_copy_{uuid.uuid4().hex[:8]}"
    ok(sql(http_api, tokengate, f"create table {table} (v int)", password="analyst"))
    error(sql(http_api, tokengate, f"copy {table} from stdin", password="analyst"), 400, "57014",
          "COPY from stdin failed: COPY FROM STDIN is not supported over HTTP")
    # The connection is fine afterwards.
    assert ok(sql(http_api, tokengate, f"select count(*) from {table}", password="analyst"))["rows"] == [["0"]]
    ok(sql(http_api, tokengate, f"drop table {table}", password="analyst"))


@pytest.mark.parametrize("body, headers, code, message", [
    ("{", {}, "08P01", None),
    ("[]", {}, "08P01", 'the request body must be a JSON object with "query"'),
    ('{"sql": "select 1"}', {}, "08P01",
     'the request body must hold "query" (one statement) or "queries" (a transaction)'),
    ('{"query": 1}', {}, "08P01", 'the request: "query" must be a string'),
    ('{"query": "select 1", "params": 1}', {}, "08P01", 'the request: "params" must be an array'),
    ('{"query": "select 1\\u0000"}', {}, "22021", 'invalid byte sequence for encoding "UTF8": 0x00'),
    ('{"queries": []}', {"Neon-Batch-Isolation-Level": "Chaos"}, "08P01", None),
    ('{"query": "select 1"}', {"Neon-Connection-String": "mysql://a@b/c"}, "08P01",
     "the connection string must start with postgresql:// or postgres://"),
])
def test_malformed_requests(http_api, tokengate, body, headers, code, message):
    h = {"Neon-Connection-String": conn_string(tokengate, password="analyst"), "Content-Type": "text/plain"}
    h.update(headers)
    error(http_api.call("POST", "/sql", data=body.encode(), headers=h), 400, code, message)


def test_method_and_body_limits(http_api, tokengate):
    r = http_api.call("GET", "/sql")
    assert r.status_code == 405 and r.headers["Allow"] == "POST", describe(r)
    big = {"query": "select $1::text", "params": ["x" * (1024 * 1024 + 1)]}
    r = http_api.call("POST", "/sql", json=big,
                      headers={"Neon-Connection-String": conn_string(tokengate, password="analyst")})
    assert r.status_code == 413, describe(r)


def test_parameters_of_a_request_are_bounded_in_all(http_api, tokengate):
    """A batch takes at most 65,535 parameters in all, as one Bind would: more is 400 54000 before any credential
    is checked, since each parameter held costs memory while the request waits for its login."""
    queries = [{"query": "select 1", "params": [0] * 40000} for _ in range(2)]
    h = {"Neon-Connection-String": conn_string(tokengate, password="wrong"), "Content-Type": "text/plain"}
    r = http_api.call("POST", "/sql", data=json.dumps({"queries": queries}).encode(), headers=h)
    error(r, 400, "54000", "80000 parameters in one transaction; at most 65535 are accepted")
    queries = [{"query": "select $1::int", "params": [1]} for _ in range(3)]
    body = ok(batch(http_api, tokengate, [(q["query"], q["params"]) for q in queries], password="analyst"))
    assert [res["rows"] for res in body["results"]] == [[["1"]]] * 3, body


def test_unauthenticated_requests_full_of_parameters_do_not_exhaust_memory(spawn_tokengate, pg):
    """The attack: requests of just under 1 MiB holding half a million parameters (`0,`), each with a wrong
    password, sent at once. Each one used to hold about 20 MiB while its password was checked, so a few hundred
    ended the process with no credential at all. Now such a request is refused before it holds anything:
    16 of them must grow the process by far less than one used to cost each (measured as resident memory)."""
    import socket
    tg = spawn_tokengate((str(pg.socket_dir), pg.port))
    body = json.dumps({"queries": [{"query": "select 1", "params": [0] * 60000} for _ in range(8)]},
                      separators=(",", ":")).encode()
    assert len(body) < 1024 * 1024
    head = (f"POST /sql HTTP/1.1\r\nHost: t\r\nNeon-Connection-String: {conn_string(tg, password='wrong')}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    before = tg.rss_kib()
    socks = []
    for _ in range(16):
        s = socket.create_connection((tg.host, tg.http_port), timeout=30)
        s.sendall(head + body)
        socks.append(s)
    peak = before
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        peak = max(peak, tg.rss_kib())
        time.sleep(0.05)
    for s in socks:
        s.close()
    growth_mib = (peak - before) / 1024
    assert growth_mib < 96, f"16 unauthenticated requests grew tokengate by {growth_mib:.0f} MiB"
    assert tg.alive()


def test_result_size_limit(spawn_tokengate, pg):
    tg = spawn_tokengate((str(pg.socket_dir), pg.port),
                         ["--upstream-auth", "trust", "--http-max-response-size", "4096"])
    import http_client  # noqa: PLC0415

    api = http_client.HttpApi(f"http://{tg.host}:{tg.http_port}")
    r = sql(api, tg, "select pg_backend_pid(), g from generate_series(1, 100000) g", password="analyst")
    body = error(r, 507, "54000", "response is too large (max is 4096 bytes)")
    assert "http.max_response_size" in body["hint"]
    # The connection that was cut off is not lent again; a new one serves the next request.
    assert ok(sql(api, tg, "select 1", password="analyst"))["rows"] == [["1"]]
    # A single value larger than the limit too.
    error(sql(api, tg, "select repeat('x', 100000)", password="analyst"), 507, "54000")


# ---------------------------------------------------------------- batches


def test_batch_is_one_transaction_with_its_options(http_api, tokengate):
    r = ok(batch(http_api, tokengate, [
        ("select current_setting('transaction_isolation') as iso", []),
        ("select current_setting('transaction_read_only') as ro, current_setting('transaction_deferrable') as d", []),
        ("select txid_current_if_assigned() is null as no_xid, $1::int as n", [7]),
    ], password="analyst", headers={"Neon-Batch-Isolation-Level": "Serializable", "Neon-Batch-Read-Only": "true",
                                    "Neon-Batch-Deferrable": "true"}))
    results = r["results"]
    assert [x["rows"] for x in results] == [[["serializable"]], [["on", "on"]], [["t", "7"]]]
    assert all(x["command"] == "SELECT" for x in results)
    r = ok(batch(http_api, tokengate, [("select current_setting('transaction_isolation')", []),
                                       ("select current_setting('transaction_read_only')", [])], password="analyst"))
    assert [x["rows"] for x in r["results"]] == [[["read committed"]], [["off"]]]


def test_failing_batch_rolls_back(http_api, tokengate):
    table = f"{SCHEMA}.http_tx_{uuid.uuid4().hex[:8]}"
    ok(sql(http_api, tokengate, f"create table {table} (v int primary key)", password="analyst"))
    error(batch(http_api, tokengate, [(f"insert into {table} values (1)", []), (f"insert into {table} values (2)", []),
                                      (f"insert into {table} values (1)", [])], password="analyst"), 400, "23505")
    assert ok(sql(http_api, tokengate, f"select count(*) from {table}", password="analyst"))["rows"] == [["0"]]
    r = ok(batch(http_api, tokengate, [(f"insert into {table} values ($1)", [1]),
                                       (f"insert into {table} values ($1)", [2])], password="analyst"))
    assert [x["rowCount"] for x in r["results"]] == [1, 1]
    assert ok(sql(http_api, tokengate, f"select count(*) from {table}", password="analyst"))["rows"] == [["2"]]
    error(batch(http_api, tokengate, [(f"insert into {table} values (3)", [])], password="analyst",
                headers={"Neon-Batch-Read-Only": "true"}), 400, "25006")
    ok(sql(http_api, tokengate, f"drop table {table}", password="analyst"))


def test_an_error_at_commit_rolls_back(http_api, tokengate):
    table = f"{SCHEMA}.http_def_{uuid.uuid4().hex[:8]}"
    ok(sql(http_api, tokengate,
           f"create table {table} (v int unique deferrable initially deferred)", password="analyst"))
    # The duplicate is found only at COMMIT.
    error(batch(http_api, tokengate, [(f"insert into {table} values (1)", []), (f"insert into {table} values (1)", [])],
                password="analyst"), 400, "23505")
    assert ok(sql(http_api, tokengate, f"select count(*) from {table}", password="analyst"))["rows"] == [["0"]]
    ok(sql(http_api, tokengate, f"drop table {table}", password="analyst"))


# ---------------------------------------------------------------- API TOKEN statements


def test_api_token_statements_over_http(http_api, tokengate, pg):
    mark = pg.log_mark()
    name = f"http_{uuid.uuid4().hex[:8]}"
    r = ok(sql(http_api, tokengate, f"CREATE API TOKEN {name} MAX DURATION '1h' COMMENT 'over http'",
               password="analyst"))
    assert [(f["name"], f["dataTypeID"]) for f in r["fields"]] == [("name", 25), ("token", 25), ("expires_at", 1184)]
    assert r["command"] == "CREATE" and r["rowCount"] is None
    new = remember_secret(r["rows"][0][1])
    assert r["rows"][0][0] == name and new.count(".") == 2, mask(new)
    # The new token works at once, here and on the wire.
    assert ok(sql(http_api, tokengate, "select current_user", password=new))["rows"] == [["analyst"]]
    shown = ok(sql(http_api, tokengate, "SHOW API TOKENS", password=new))
    mine = [x for x in shown["rows"] if x[0] == name]
    assert mine and mine[0][1] == "analyst" and mine[0][5] == "active" and mine[0][6] == "over http", shown
    assert all(new not in json.dumps(x) for x in shown["rows"])
    error(sql(http_api, tokengate, "DROP API TOKEN no_such_token_here", password="analyst"), 400, "42704",
          'API token "no_such_token_here" does not exist')
    body = error(sql(http_api, tokengate, "CREATE API TOKEN x MAX", password="analyst"), 400, "42601")
    assert body["position"], body
    error(sql(http_api, tokengate, "SHOW API TOKENS", ["x"], password="analyst"), 400, "08P01",
          'bind message supplies 1 parameters, but prepared statement "" requires 0')
    error(sql(http_api, tokengate, "SHOW API TOKENS FOR ALL USERS", password="analyst"), 400, "42501")
    r = ok(sql(http_api, tokengate, f"DROP API TOKEN {name}", password="analyst"))
    assert r["command"] == "DROP"
    error(sql(http_api, tokengate, "select 1", password=new), 401, "28P01")
    # None of it reached PostgreSQL.
    assert "API TOKEN" not in pg.log_since(mark)


def test_a_token_request_cannot_create_tokens_by_default(spawn_tokengate, pg):
    """A request authenticated by a token is a token session (token_sessions.manage_credentials = false by
    default): it may not mint tokens that would outlive its own; a password request may."""
    import http_client  # noqa: PLC0415

    tg = spawn_tokengate((str(pg.socket_dir), pg.port), ["--upstream-auth", "trust"])
    api = http_client.HttpApi(f"http://{tg.host}:{tg.http_port}")
    tok = remember_secret(ok(sql(api, tg, "CREATE API TOKEN MAX DURATION '1h'", password="analyst"))["rows"][0][1])
    for kw in ({"password": tok}, {"token": tok}):
        body = error(sql(api, tg, "CREATE API TOKEN MAX DURATION '1h'", **kw), 400, "42501")
        assert "API token" in body["detail"], body
    assert ok(sql(api, tg, "SHOW API TOKENS", password=tok))["command"] == "SHOW"


def test_api_token_statements_in_a_batch(http_api, tokengate):
    name = f"http_b_{uuid.uuid4().hex[:8]}"
    r = ok(batch(http_api, tokengate, [("select 1 as a", []), (f"CREATE API TOKEN {name} MAX DURATION '1h'", []),
                                       (f"DROP API TOKEN {name}", [])], password="analyst"))
    assert [x["command"] for x in r["results"]] == ["SELECT", "CREATE", "DROP"]
    remember_secret(r["results"][1]["rows"][0][1])


def test_admin_statements_for_other_users(http_api, tokengate):
    name = f"http_adm_{uuid.uuid4().hex[:8]}"
    r = ok(sql(http_api, tokengate, f"CREATE API TOKEN {name} FOR USER analyst MAX DURATION '1h'", user="admin",
               password="admin"))
    remember_secret(r["rows"][0][1])
    r = ok(sql(http_api, tokengate, "SHOW API TOKENS FOR USER analyst", user="admin", password="admin"))
    assert any(x[0] == name for x in r["rows"])
    ok(sql(http_api, tokengate, f"DROP API TOKEN {name} FOR USER analyst", user="admin", password="admin"))


# ---------------------------------------------------------------- the pool


def backend_pids(api, tg, n: int, **kw) -> set[int]:
    return {int(ok(sql(api, tg, "select pg_backend_pid()", **kw))["rows"][0][0]) for _ in range(n)}


def test_requests_share_one_backend(http_api, tokengate, pg, token):
    app = f"pooltest_{uuid.uuid4().hex[:8]}"
    pids = backend_pids(http_api, tokengate, 30, password=token, conn_params=f"application_name={app}")
    assert len(pids) == 1, pids
    pids |= backend_pids(http_api, tokengate, 10, password="analyst", conn_params=f"application_name={app}")
    assert len(pids) == 1, pids  # a password or a token: the same role, the same pooled connection
    with pg.admin_conn() as c:
        rows = c.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,)).fetchall()
    assert {r[0] for r in rows} == pids


def test_pool_keys_keep_roles_databases_and_settings_apart(http_api, tokengate):
    a = backend_pids(http_api, tokengate, 3, password="analyst")
    b = backend_pids(http_api, tokengate, 3, user="admin", password="admin")
    c = backend_pids(http_api, tokengate, 3, password="analyst", conn_params="options=-c%20work_mem%3D8MB")
    assert len(a) == len(b) == len(c) == 1 and len(a | b | c) == 3
    r = ok(sql(http_api, tokengate, "show work_mem", password="analyst", conn_params="options=-c%20work_mem%3D8MB"))
    assert r["rows"] == [["8MB"]]


def test_connections_are_reset_between_requests(http_api, tokengate):
    app = f"reset_{uuid.uuid4().hex[:8]}"
    kw = {"password": "analyst", "conn_params": f"application_name={app}"}
    ok(sql(http_api, tokengate, "set search_path to pg_catalog", **kw))
    ok(sql(http_api, tokengate, "create temp table leftover (v int)", **kw))
    ok(sql(http_api, tokengate, "select pg_advisory_lock(4242)", **kw))
    ok(sql(http_api, tokengate, "prepare p as select 1", **kw))
    ok(sql(http_api, tokengate, "begin", **kw))  # a transaction left open is rolled back
    assert ok(sql(http_api, tokengate, "show search_path", **kw))["rows"] == [['"$user", public']]
    assert ok(sql(http_api, tokengate, "select to_regclass('pg_temp.leftover') is null", **kw))["rows"] == [["t"]]
    assert ok(sql(http_api, tokengate,
                  "select count(*) from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()",
                  **kw))["rows"] == [["0"]]
    assert ok(sql(http_api, tokengate, "select count(*) from pg_prepared_statements", **kw))["rows"] == [["0"]]
    error(sql(http_api, tokengate, "savepoint s", **kw), 400, "25P01")
    assert len(backend_pids(http_api, tokengate, 3, **kw)) == 1


def test_a_backend_that_goes_away_is_replaced(http_api, tokengate, pg):
    app = f"gone_{uuid.uuid4().hex[:8]}"
    kw = {"password": "analyst", "conn_params": f"application_name={app}"}
    (pid,) = backend_pids(http_api, tokengate, 2, **kw)
    with pg.admin_conn() as c:
        c.execute("SELECT pg_terminate_backend(%s)", (pid,))
    time.sleep(0.3)
    new = backend_pids(http_api, tokengate, 2, **kw)
    assert len(new) == 1 and pid not in new


def test_pool_limits_queue_then_refuse(spawn_tokengate, pg):
    tg = spawn_tokengate((str(pg.socket_dir), pg.port),
                         ["--upstream-auth", "trust", "--pool-max-connections", "2",
                          "--pool-max-connections-per-key", "1", "--pool-wait-timeout", "1"])
    import http_client  # noqa: PLC0415

    api = http_client.HttpApi(f"http://{tg.host}:{tg.http_port}")
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        slow = ex.submit(sql, api, tg, "select pg_sleep(2)", password="analyst")
        time.sleep(0.5)
        # Same key: waits 1 s for the busy connection, then gives up.
        started = time.monotonic()
        body = error(sql(api, tg, "select 1", password="analyst"), 503, "53300")
        assert 0.9 < time.monotonic() - started < 2.4
        assert "pool.max_connections_per_key" in body["message"]
        # Another key is not held back.
        assert ok(sql(api, tg, "select 1", user="admin", password="admin"))["rows"] == [["1"]]
        # A request that waits less than the timeout gets the connection when it comes back.
        queued = ex.submit(sql, api, tg, "select pg_backend_pid()", password="analyst")
        assert ok(slow.result())["rows"] == [[""]]
        assert ok(queued.result())["rows"][0][0].isdigit()


def test_connections_are_replaced_after_their_lifetime(spawn_tokengate, pg):
    tg = spawn_tokengate((str(pg.socket_dir), pg.port), ["--upstream-auth", "trust", "--pool-max-lifetime", "1"])
    import http_client  # noqa: PLC0415

    api = http_client.HttpApi(f"http://{tg.host}:{tg.http_port}")
    (first,) = backend_pids(api, tg, 2, password="analyst")
    time.sleep(1.2)
    second = backend_pids(api, tg, 1, password="analyst")
    assert first not in second


def test_password_mode(tokengate_pw):
    """tokengate in password mode: the upstream checks passwords; tokens log in with the userlist's password."""
    import http_client  # noqa: PLC0415

    tg = tokengate_pw
    api = http_client.HttpApi(f"http://{tg.host}:{tg.http_port}")
    assert ok(sql(api, tg, "select current_user", password="analyst"))["rows"] == [["analyst"]]
    error(sql(api, tg, "select 1", password="wrong"), 401, "28P01",
          'password authentication failed for user "analyst"')
    r = ok(sql(api, tg, "CREATE API TOKEN MAX DURATION '1h'", password="analyst"))
    tok = remember_secret(r["rows"][0][1])
    pids = backend_pids(api, tg, 5, password=tok)
    assert len(pids) == 1, pids


def test_show_tokengate_views_for_administrators_only(http_api, tokengate, proxy):
    """SHOW TOKENGATE SESSIONS | STATUS | CONFIG answer over /sql as on the wire: rows for an administrator,
    42501 for anyone else."""
    from conftest import ROLES
    with proxy.connect(user="analyst", application_name="tg_http_show") as wire:
        wire.execute("SELECT 1")
        for view in ("SESSIONS", "STATUS", "CONFIG"):
            body = ok(sql(http_api, tokengate, f"SHOW TOKENGATE {view}", user="admin", password=ROLES["admin"],
                          raw=False))
            assert body["command"] == "SHOW" and body["rows"], body
            if view == "SESSIONS":
                assert [r for r in body["rows"] if r["application_name"] == "tg_http_show"], body
            r = sql(http_api, tokengate, f"SHOW TOKENGATE {view}", password="analyst")
            assert r.status_code == 400, describe(r)
            assert r.json()["code"] == "42501", describe(r)

"""The token REST API (GET/POST /api/tokens, PATCH/DELETE /api/tokens/{name}, ?user=): the same operations,
permissions, policies, errors and audit lines as the API TOKEN statements; the token value only in the POST answer."""
from __future__ import annotations

import datetime as dt
import json
import time
import uuid

import psycopg
import pytest

from conftest import create_token, mask, remember_secret
from http_client import HttpApi, describe
from test_http_gateway import assert_error

TOKEN_FIELDS = ["name", "user", "created_at", "expires_at", "last_used_at", "status", "comment", "created_by"]


def uniq(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)


@pytest.fixture
def role_token(fresh_role, http_api):
    """A fresh LOGIN role and a browser session of it (password login: it may create tokens):
    make() -> (role, password, WebSession). Pass the session as `token=`."""

    def make():
        role, password = fresh_role("LOGIN")
        session = http_api.login(role, password)
        remember_secret(session.cookie)
        return role, password, session

    return make


@pytest.fixture
def admin_token(http_api):
    session = http_api.login("admin", "admin")
    remember_secret(session.cookie)
    return session


def create(http_api, token, **body):
    r = http_api.call("POST", "/api/tokens", token=token, json=body)
    if r.status_code == 201:
        remember_secret(r.json()["token"])
    return r


def listed(http_api, token, query="") -> dict[str, dict]:
    r = http_api.call("GET", "/api/tokens" + query, token=token)
    assert r.status_code == 200, describe(r)
    out = {}
    for t in r.json()["tokens"]:
        assert list(t) == TOKEN_FIELDS, t
        out[t["name"]] = t
    return out


def test_create_list_comment_revoke(http_api, role_token, proxy, tokengate):
    role, password, token = role_token()
    audit_mark = tokengate.audit_path.stat().st_size
    name = uniq("ci")
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    r = create(http_api, token, name=name, max_duration="30d", comment="Деплой из CI")
    assert r.status_code == 201, describe(r)
    created = r.json()
    assert list(created) == ["name", "token", "expires_at"], list(created)
    assert created["name"] == name
    expires = parse_time(created["expires_at"])
    assert before + dt.timedelta(days=30) <= expires <= before + dt.timedelta(days=30, seconds=5), created["expires_at"]

    # The new token logs in on the wire, as its owner.
    with proxy.connect(user=role, password=created["token"]) as c:
        assert c.execute("select current_user").fetchone()[0] == role

    # Listed like SHOW API TOKENS, never with the value.
    r = http_api.call("GET", "/api/tokens", token=token)
    assert created["token"] not in r.text, "the token value appeared in the list"
    rows = listed(http_api, token)
    row = rows[name]
    assert row["user"] == role and row["status"] == "active" and row["comment"] == "Деплой из CI", row
    assert row["created_by"] == role and parse_time(row["expires_at"]) == expires, row
    with proxy.connect(user=role, password=password) as c:
        cur = c.execute("SHOW API TOKENS")
        sql_rows = {r[0]: dict(zip([d.name for d in cur.description], r)) for r in cur.fetchall()}
    assert set(sql_rows) == set(rows), (sorted(sql_rows), sorted(rows))
    assert list(rows) == list(sql_rows), "oldest first, as SHOW API TOKENS"
    assert sql_rows[name]["expires_at"] == expires and sql_rows[name]["comment"] == row["comment"]

    # Comment in place, then removed.
    r = http_api.call("PATCH", f"/api/tokens/{name}", token=token, json={"comment": "deploys"})
    assert r.status_code == 204 and r.content == b"", describe(r)
    assert listed(http_api, token)[name]["comment"] == "deploys"
    r = http_api.call("PATCH", f"/api/tokens/{name}", token=token, json={"comment": None})
    assert r.status_code == 204, describe(r)
    assert listed(http_api, token)[name]["comment"] is None

    # Revoke: listed as revoked, and the token no longer logs in.
    r = http_api.call("DELETE", f"/api/tokens/{name}", token=token)
    assert r.status_code == 204, describe(r)
    assert listed(http_api, token)[name]["status"] == "revoked"
    with pytest.raises(psycopg.OperationalError):
        proxy.connect(user=role, password=created["token"]).close()
    assert_error(http_api.call("DELETE", f"/api/tokens/{name}", token=token), 404, "42704",
                 f'API token "{name}" does not exist')

    # The audit log has the same events as for the statements, without the value.
    text = tokengate.audit_path.read_bytes()[audit_mark:].decode()
    assert created["token"] not in text
    events = [json.loads(x) for x in text.splitlines()]
    mine = [(e["event"], e.get("outcome")) for e in events if e.get("token_name") == name]
    assert ("create_token", "ok") in mine and ("set_comment", "ok") in mine and ("revoke_token", "ok") in mine, mine


def test_generated_name_and_defaults(http_api, role_token):
    _, _, token = role_token()
    r = create(http_api, token)
    assert r.status_code == 201, describe(r)
    body = r.json()
    assert body["name"].startswith("token_") and len(body["name"]) == 14, body["name"]
    days = (parse_time(body["expires_at"]) - dt.datetime.now(dt.timezone.utc)).days
    assert 364 <= days <= 365, body["expires_at"]


def test_revoke_ends_wire_sessions(http_api, role_token, proxy):
    role, password, token = role_token()
    name = uniq("live")
    value = create(http_api, token, name=name, max_duration="1h").json()["token"]
    conn = proxy.connect(user=role, password=value)
    assert http_api.call("DELETE", f"/api/tokens/{name}", token=token).status_code == 204
    with pytest.raises(psycopg.OperationalError) as e:
        for _ in range(50):
            conn.execute("select 1")
            time.sleep(0.1)
    assert "API token revoked" in str(e.value)


@pytest.mark.parametrize("body, status, code", [
    ({"name": "x" * 64}, 422, "42622"),
    ({"max_duration": "fortnight"}, 422, "22023"),
    ({"max_duration": "101 years"}, 422, "22023"),
    ({"comment": "c" * 4097}, 422, "22001"),
    ({"comment": "a\u0000b"}, 422, "22021"),
    ({"comment": 5}, 422, "22023"),
    ({"nmae": "typo"}, 422, "22023"),
    ([1, 2], 422, "22023"),
])
def test_create_errors(http_api, role_token, body, status, code):
    _, _, token = role_token()
    r = http_api.call("POST", "/api/tokens", token=token, json=body)
    assert_error(r, status, code)


def test_create_error_details(http_api, role_token):
    _, _, token = role_token()
    body = assert_error(http_api.call("POST", "/api/tokens", token=token, json={"max_duration": "fortnight"}), 422,
                        "22023", 'invalid duration "fortnight"')
    assert body["detail"] == "Expected a number at position 1."
    body = assert_error(http_api.call("POST", "/api/tokens", token=token, json={"nmae": "x"}), 422, "22023",
                        'unknown field "nmae"')
    assert body["detail"] == "Known fields: name, max_duration, comment."
    r = http_api.call("POST", "/api/tokens", token=token, data=b'{"name": ', headers={"Content-Type": "application/json"})
    assert_error(r, 400, "22P02", "invalid JSON in the request body")


def test_duplicate_name_is_409(http_api, role_token):
    _, _, token = role_token()
    name = uniq("dup")
    assert create(http_api, token, name=name, max_duration="1h").status_code == 201
    body = assert_error(create(http_api, token, name=name), 409, "42710", f'API token "{name}" already exists')
    assert "active token with that name" in body["detail"]


def test_policy_applies(http_api, role_token, admin_token, proxy):
    role, _, token = role_token()
    with proxy.connect(user="admin") as c:
        c.execute(f"ALTER ROLE {role} SET API TOKEN MAX DURATION '1d'")
    body = assert_error(create(http_api, token, max_duration="2d"), 422, "22023",
                        f'MAX DURATION 2d exceeds the maximum for user "{role}"')
    assert "1d" in body["detail"] and role in body["detail"], body
    assert create(http_api, token, max_duration="1d").status_code == 201
    # The administrator is bound by the user's policy too.
    r = http_api.call("POST", f"/api/tokens?user={role}", token=admin_token, json={"max_duration": "2d"})
    assert_error(r, 422, "22023")


def test_non_admin_cannot_name_another_user(http_api, role_token):
    role, _, token = role_token()
    for method, path, body in [("GET", "/api/tokens?user=admin", None),
                               ("GET", "/api/tokens?all=true", None),
                               ("POST", "/api/tokens?user=admin", {"max_duration": "1h"}),
                               ("PATCH", "/api/tokens/x?user=admin", {"comment": "x"}),
                               ("DELETE", "/api/tokens/x?user=admin", None),
                               # A role that does not exist: still 42501, so nothing can be probed.
                               ("GET", "/api/tokens?user=nobody_here", None)]:
        r = http_api.call(method, path, token=token, json=body)
        assert_error(r, 403, "42501")
    # Naming yourself is always allowed.
    assert http_api.call("GET", f"/api/tokens?user={role}", token=token).status_code == 200


def test_admin_acts_for_another_user(http_api, role_token, admin_token, proxy):
    role, password, token = role_token()
    name = uniq("by_admin")
    r = http_api.call("POST", f"/api/tokens?user={role}", token=admin_token,
                      json={"name": name, "max_duration": "1h", "comment": "issued"})
    assert r.status_code == 201, describe(r)
    value = remember_secret(r.json()["token"])
    with proxy.connect(user=role, password=value) as c:
        assert c.execute("select current_user").fetchone()[0] == role
    theirs = listed(http_api, admin_token, f"?user={role}")
    assert theirs[name]["created_by"] == "admin" and theirs[name]["user"] == role, theirs[name]
    assert name in listed(http_api, token), "the owner sees a token an administrator issued for them"
    assert name in listed(http_api, admin_token, "?all=true")
    r = http_api.call("PATCH", f"/api/tokens/{name}?user={role}", token=admin_token, json={"comment": "edited"})
    assert r.status_code == 204, describe(r)
    r = http_api.call("DELETE", f"/api/tokens/{name}?user={role}", token=admin_token)
    assert r.status_code == 204, describe(r)
    assert listed(http_api, token)[name]["status"] == "revoked"
    assert_error(http_api.call("GET", "/api/tokens?user=nobody_here", token=admin_token), 404, "42704",
                 'role "nobody_here" does not exist')


def test_query_parameter_errors(http_api, role_token):
    _, _, token = role_token()
    assert_error(http_api.call("GET", "/api/tokens?usr=admin", token=token), 422, "22023",
                 'unknown query parameter "usr"')
    assert_error(http_api.call("GET", "/api/tokens?user=", token=token), 422, "22023")
    assert_error(http_api.call("GET", "/api/tokens?user=a&all=true", token=token), 422, "22023")
    assert_error(http_api.call("GET", "/api/tokens?all=maybe", token=token), 422, "22023")
    assert_error(http_api.call("GET", "/api/tokens?user=%00", token=token), 422, "22021")
    assert_error(http_api.call("GET", "/api/tokens?user=a&user=b", token=token), 400, "08P01")


def test_patch_needs_comment(http_api, role_token):
    _, _, token = role_token()
    name = uniq("p")
    assert create(http_api, token, name=name, max_duration="1h").status_code == 201
    body = assert_error(http_api.call("PATCH", f"/api/tokens/{name}", token=token, json={}), 422, "22023",
                        'field "comment" is required')
    assert "null" in body["hint"]
    assert_error(http_api.call("PATCH", "/api/tokens/missing_one", token=token, json={"comment": "x"}), 404,
                 "42704", 'API token "missing_one" does not exist')


def test_names_are_exact_and_may_need_encoding(http_api, role_token, proxy):
    """Names in the API are exact (as double-quoted identifiers in SQL): case is kept, any text works."""
    role, password, token = role_token()
    name = "CI Pipeline/№1"
    assert create(http_api, token, name=name, max_duration="1h").status_code == 201
    with proxy.connect(user=role, password=password) as c:
        assert name in [r[0] for r in c.execute("SHOW API TOKENS").fetchall()]
    r = http_api.call("DELETE", "/api/tokens/CI%20Pipeline%2F%E2%84%961", token=token)
    assert r.status_code == 204, describe(r)


def test_token_value_appears_only_once(http_api, role_token, tokengate):
    """Only the POST answer holds the value: not the list, not the logs, not a second call."""
    _, _, token = role_token()
    name = uniq("once")
    log_mark = tokengate.log_mark()
    value = create(http_api, token, name=name, max_duration="1h").json()["token"]
    for path in ("/api/tokens", "/api/me"):
        assert value not in http_api.call("GET", path, token=token).text, path
    assert value not in tokengate.log_since(log_mark), f"token {mask(value)} in the log"
    assert_error(create(http_api, token, name=name), 409, "42710")


def test_token_requests_cannot_create_tokens(spawn_tokengate, pg):
    """A Bearer request is a session that logged in with a token: it lists, comments on and revokes, but a stolen
    token must not turn into new credentials (token_sessions.manage_credentials, off by default; the session
    tokengate of these tests turns it on)."""
    tg = spawn_tokengate((str(pg.socket_dir), pg.port))
    http_api = HttpApi(f"http://{tg.host}:{tg.http_port}")
    _, token, _ = create_token(tg.target(), user="analyst", duration="1h")
    assert http_api.call("GET", "/api/me", token=token).json()["creates_tokens"] is False
    body = assert_error(http_api.call("POST", "/api/tokens", token=token, json={"max_duration": "1h"}), 403, "42501",
                        "permission denied to create API tokens")
    assert "token_sessions.manage_credentials" in body["hint"], body
    name, _, _ = create_token(tg.target(), user="analyst", duration="1h")
    assert http_api.call("PATCH", f"/api/tokens/{name}", token=token, json={"comment": "x"}).status_code == 204
    assert http_api.call("DELETE", f"/api/tokens/{name}", token=token).status_code == 204
    assert name in listed(http_api, token)
    # A password login's browser session may create.
    session = http_api.login("analyst", "analyst")
    remember_secret(session.cookie)
    assert http_api.call("GET", "/api/me", token=session).json()["creates_tokens"] is True
    r = create(http_api, session, max_duration="1h")
    assert r.status_code == 201, describe(r)


def test_manage_credentials_lets_tokens_create(spawn_tokengate, pg):
    tg = spawn_tokengate((str(pg.socket_dir), pg.port), ["--token-sessions-manage-credentials", "true"])
    _, token, _ = create_token(tg.target(), user="analyst", duration="1h")
    api = HttpApi(f"http://{tg.host}:{tg.http_port}")
    assert api.call("GET", "/api/me", token=token).json()["creates_tokens"] is True
    r = api.call("POST", "/api/tokens", token=token, json={"max_duration": "1h"})
    assert r.status_code == 201, describe(r)
    remember_secret(r.json()["token"])


def test_active_tokens_per_owner_are_bounded(spawn_tokengate, pg):
    """max_tokens_per_user bounds the rows one role can add to the store: CREATE API TOKEN, POST /api/tokens and
    web page logins (each a session token) all get 53400 past it; a revoked token frees its place."""
    from http_client import HttpApi
    tg = spawn_tokengate(upstream=(str(pg.socket_dir), pg.port),
                         extra_args=["--max-tokens-per-user", "3", "--max-failed-logins", "100000"])
    api = HttpApi(f"http://{tg.host}:{tg.http_port}")
    session = api.login("analyst", "analyst")  # the first active token: the web session
    remember_secret(session.cookie)
    t = tg.target()
    with t.connect(user="analyst") as c:
        for name in ("quota_a", "quota_b"):
            remember_secret(c.execute(f"CREATE API TOKEN {name}").fetchone()[1])
        with pytest.raises(psycopg.Error) as info:
            c.execute("CREATE API TOKEN quota_c")
        assert info.value.sqlstate == "53400", info.value
        assert info.value.diag.message_primary == 'too many API tokens for user "analyst"'
        assert info.value.diag.message_detail == 'User "analyst" has 3 active tokens; at most 3 are allowed.'
    r = api.call("POST", "/api/tokens", token=session, json={"name": "quota_c"})
    assert_error(r, 503, "53400")
    r = api.call("POST", "/api/login", json={"user": "analyst", "password": "analyst"})
    assert_error(r, 503, "53400")
    with t.connect(user="analyst") as c:
        c.execute("DROP API TOKEN quota_a")
        remember_secret(c.execute("CREATE API TOKEN quota_c").fetchone()[1])

"""Browser login: POST /api/login with a password (checked as a wire login is, in trust and password mode) or a
token sets the auth_token cookie holding a short-lived token, listed as a web session and revoked by
POST /api/logout."""
from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from conftest import create_token, mask, remember_secret
from http_client import CSRF_HEADER, HttpApi, describe
from test_http_gateway import assert_error

SESSION_HOURS = 12  # the default http.session_duration


def cookie_parts(r) -> dict[str, str]:
    """The Set-Cookie header as {name or attribute: value} ("" for flags such as HttpOnly)."""
    parts = {}
    for item in r.headers["Set-Cookie"].split(";"):
        k, _, v = item.strip().partition("=")
        parts[k] = v
    return parts


def login(api: HttpApi, **body):
    r = api.call("POST", "/api/login", json=body)
    if r.status_code == 200:
        remember_secret(cookie_parts(r)["auth_token"])
    return r


def test_password_login_sets_the_cookie(http_api, tokengate, mint_token):
    audit_mark = tokengate.audit_path.stat().st_size
    r = login(http_api, user="analyst", password="analyst")
    assert r.status_code == 200, describe(r)
    body = r.json()
    assert body["user"] == "analyst" and body["session"].startswith("web_session_"), body
    c = cookie_parts(r)
    session_token = c["auth_token"]
    assert session_token.startswith("eyJ") and session_token not in r.text, "the value is only in the cookie"
    assert c["Path"] == "/" and "HttpOnly" in c and c["SameSite"] == "Strict" and "Secure" not in c, c
    assert abs(int(c["Max-Age"]) - SESSION_HOURS * 3600) <= 5, c
    expires = dt.datetime.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    assert abs((expires - dt.datetime.now(dt.timezone.utc)).total_seconds() - SESSION_HOURS * 3600) < 10, body

    me = http_api.call("GET", "/api/me", cookie=session_token)
    assert me.status_code == 200 and me.json()["via"] == "cookie" and me.json()["token_name"] == body["session"]
    assert me.json()["creates_tokens"] is True, "a password login's session may create tokens"
    sessions = {t["name"]: t for t in http_api.call("GET", "/api/tokens", cookie=session_token).json()["tokens"]}
    assert sessions[body["session"]]["comment"] == "web session from 127.0.0.1", sessions[body["session"]]
    events = [json.loads(x) for x in tokengate.audit_path.read_bytes()[audit_mark:].decode().splitlines()]
    assert any(e["event"] == "login" and e["method"] == "password" and e["outcome"] == "ok"
               and e["actor"] == "analyst" for e in events), events
    assert any(e["event"] == "create_token" and e.get("token_name") == body["session"] for e in events), events

    # Logout needs the CSRF header, revokes the session and clears the cookie.
    assert_error(http_api.call("POST", "/api/logout", cookie=session_token), 403, "42501")
    r = http_api.call("POST", "/api/logout", cookie=session_token, headers={CSRF_HEADER: "1"})
    assert r.status_code == 204, describe(r)
    assert r.headers["Set-Cookie"] == "auth_token=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"
    assert_error(http_api.call("GET", "/api/me", cookie=session_token), 401, "28P01")
    _, analyst_token, _ = mint_token(user="analyst", duration="1h")
    listed = {t["name"]: t for t in http_api.call("GET", "/api/tokens", token=analyst_token).json()["tokens"]}
    assert listed[body["session"]]["status"] == "revoked", listed[body["session"]]


def test_logout_keeps_a_long_lived_token(http_api, mint_token):
    """A script presenting its own token to /api/logout does not lose it."""
    _, token, _ = mint_token(user="analyst", duration="1h")
    r = http_api.call("POST", "/api/logout", token=token)
    assert r.status_code == 204, describe(r)
    assert http_api.call("GET", "/api/me", token=token).status_code == 200


@pytest.mark.parametrize("user, password, code, message", [
    ("analyst", "wrong", "28P01", 'password authentication failed for user "analyst"'),
    ("no_such_role", "x", "28P01", 'password authentication failed for user "no_such_role"'),
    ("nologin_role", "nologin_role", "28000", 'role "nologin_role" is not permitted to log in'),
])
def test_password_failures_as_on_the_wire(http_api, proxy, tokengate, user, password, code, message):
    audit_mark = tokengate.audit_path.stat().st_size
    r = login(http_api, user=user, password=password)
    assert_error(r, 401, code, message)
    assert "Set-Cookie" not in r.headers
    events = [json.loads(x) for x in tokengate.audit_path.read_bytes()[audit_mark:].decode().splitlines()]
    assert any(e["event"] == "login" and e["outcome"] == "denied" and e["actor"] == user for e in events), events


def test_token_login(spawn_tokengate, pg):
    """A token login keeps the token itself in the cookie: a new token would outlive its revocation. (An instance
    with the default token_sessions.manage_credentials = false.)"""
    tg = spawn_tokengate((str(pg.socket_dir), pg.port))
    http_api = HttpApi(f"http://{tg.host}:{tg.http_port}")
    name, token, _ = create_token(tg.target(), user="analyst", duration="2h")
    r = login(http_api, token=token)
    assert r.status_code == 200, describe(r)
    assert r.json()["session"] == name, r.json()
    # Never longer than the token logged in with: 2 h, not 12 h.
    assert abs(int(cookie_parts(r)["Max-Age"]) - 2 * 3600) <= 5, cookie_parts(r)["Max-Age"]
    session = cookie_parts(r)["auth_token"]
    assert session == token, f"the cookie should hold the token logged in with, {mask(token)}"
    me = http_api.call("GET", "/api/me", cookie=session).json()
    assert me["user"] == "analyst" and me["creates_tokens"] is False, me
    # A token session: it may not create tokens (token_sessions.manage_credentials is off) …
    body = assert_error(http_api.call("POST", "/api/tokens", cookie=session, json={"max_duration": "1h"},
                                      headers={CSRF_HEADER: "1"}), 403, "42501")
    assert "manage_credentials" in body.get("hint", ""), body
    # … logout does not revoke it, and revoking it ends the browser session at once.
    assert http_api.call("POST", "/api/logout", cookie=session, headers={CSRF_HEADER: "1"}).status_code == 204
    assert http_api.call("GET", "/api/me", token=token).status_code == 200
    assert http_api.call("DELETE", f"/api/tokens/{name}", token=token).status_code == 204
    assert_error(http_api.call("GET", "/api/me", cookie=session), 401, "28P01")


def test_token_login_failures(http_api, mint_token):
    _, token, _ = mint_token(user="analyst", duration="1s")
    time.sleep(2.1)
    assert_error(login(http_api, token=token), 401, "28P01", "API token expired")
    assert_error(login(http_api, token="analyst"), 401, "28P01", "invalid API token")


def test_password_shaped_like_a_token_is_a_token(http_api, pg):
    mark = pg.log_mark()
    r = login(http_api, user="analyst", password="eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyIjoiYW5hbHlzdCJ9.c2ln")
    assert_error(r, 401, "28P01")
    assert "eyJhbGci" not in pg.log_since(mark)


@pytest.mark.parametrize("body, code", [
    ({}, "22023"),
    ({"user": "analyst"}, "22023"),
    ({"password": "analyst"}, "22023"),
    ({"user": "", "password": "x"}, "22023"),
    ({"user": "analyst", "password": "analyst", "token": "eyJ.x.y"}, "22023"),
    ({"user": "analyst", "password": "analyst", "remember": True}, "22023"),
    ({"user": 1, "password": "x"}, "22023"),
])
def test_login_body_errors(http_api, body, code):
    assert_error(http_api.call("POST", "/api/login", json=body), 422, code)


def test_login_needs_json(http_api):
    """An HTML form on another site cannot log a browser in (login CSRF): it cannot send application/json."""
    r = http_api.call("POST", "/api/login", data="user=analyst&password=analyst",
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_error(r, 415, "08P01")
    r = http_api.call("POST", "/api/login", data='{"user":"analyst","password":"analyst"}',
                      headers={"Content-Type": "text/plain"})
    assert_error(r, 415, "08P01")


def test_session_duration_and_policy(spawn_tokengate, pg, fresh_role):
    tg = spawn_tokengate((str(pg.socket_dir), pg.port), ["--http-session-duration", "600"])
    api = HttpApi(f"http://{tg.host}:{tg.http_port}")
    r = login(api, user="analyst", password="analyst")
    assert r.status_code == 200 and abs(int(cookie_parts(r)["Max-Age"]) - 600) <= 5, describe(r)
    # A policy (in this instance's store) shorter than the session bounds it too.
    role, password = fresh_role("LOGIN")
    with tg.target().connect(user="admin") as c:
        c.execute(f"ALTER ROLE {role} SET API TOKEN MAX DURATION '5m'")
    r = login(HttpApi(f"http://{tg.host}:{tg.http_port}"), user=role, password=password)
    assert r.status_code == 200 and abs(int(cookie_parts(r)["Max-Age"]) - 300) <= 5, describe(r)


def test_failed_logins_are_throttled(spawn_tokengate, pg):
    tg = spawn_tokengate((str(pg.socket_dir), pg.port), ["--max-failed-logins", "1"])
    api = HttpApi(f"http://{tg.host}:{tg.http_port}")
    for _ in range(1):
        assert login(api, user="analyst", password="wrong").status_code == 401
    start = time.monotonic()
    assert login(api, user="analyst", password="wrong").status_code == 401
    assert time.monotonic() - start >= 0.9, "the failure over the limit should wait about 1 s"
    start = time.monotonic()
    r = api.call("GET", "/api/me", token="eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyIjoiYW5hbHlzdCJ9.c2ln")
    assert r.status_code == 401 and time.monotonic() - start >= 0.9, "Bearer failures count and wait too"


def test_password_mode_login_checked_upstream(tokengate_pw, pg):
    """upstream.auth = password: the upstream judges the password (SCRAM, MD5 or cleartext as it asks)."""
    api = HttpApi(f"http://{tokengate_pw.host}:{tokengate_pw.http_port}")
    for user in ("analyst", "md5user", "plainuser"):
        r = login(api, user=user, password=user)
        assert r.status_code == 200, f"{user}: {describe(r)}"
        session = cookie_parts(r)["auth_token"]
        assert api.call("GET", "/api/me", cookie=session).json()["user"] == user
    audit_mark = tokengate_pw.audit_path.stat().st_size
    assert_error(login(api, user="analyst", password="wrong"), 401, "28P01",
                 'password authentication failed for user "analyst"')
    events = [json.loads(x) for x in tokengate_pw.audit_path.read_bytes()[audit_mark:].decode().splitlines()]
    assert any(e["event"] == "login" and e["outcome"] == "denied" and e["method"] == "password" for e in events)

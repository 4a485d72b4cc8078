"""The HTTP gateway's listener: /healthz, routing errors, authentication by Bearer token or cookie as a token login
(good, bad, revoked, expired), the JSON error shape, limits (header, body, connections, timeouts), CSRF, and the
plain-HTTP rules. The REST API itself is in test_http_tokens.py, the browser login in test_http_login.py."""
from __future__ import annotations

import json
import re
import socket
import time

import pytest

from conftest import cli_revoke, mask, remember_secret
from http_client import CSRF_HEADER, describe, raw_request, read_response

ERROR_KEYS = {"code", "message", "detail", "hint"}
ROLE_RECHECK = 1.2  # seconds: HTTP requests see a change to the token owner's role within 1 s


def assert_error(r, status: int, code: str, message: str | None = None) -> dict:
    """A JSON error: the status, {"code", "message"[, "detail"][, "hint"]} and nothing else."""
    assert r.status_code == status, describe(r)
    assert r.headers["Content-Type"] == "application/json", describe(r)
    body = r.json()
    assert set(body) <= ERROR_KEYS and {"code", "message"} <= set(body), f"error shape: {body}"
    assert body["code"] == code, describe(r)
    if message is not None:
        assert body["message"] == message, describe(r)
    return body


def test_healthz(http_api):
    r = http_api.call("GET", "/healthz")
    assert r.status_code == 200, describe(r)
    assert r.json() == {"status": "ok"}
    assert r.headers["Cache-Control"] == "no-store"


def test_unknown_path_and_method(http_api):
    assert_error(http_api.call("GET", "/nope"), 404, "08P01", "no such endpoint: GET /nope")
    r = http_api.call("PUT", "/api/tokens")
    assert_error(r, 405, "08P01", "method PUT is not allowed here")
    assert r.headers["Allow"] == "GET, POST"


def test_no_credentials_is_401(http_api):
    r = http_api.call("GET", "/api/me")
    body = assert_error(r, 401, "28000", "authentication required")
    assert "Bearer" in body["hint"]
    assert r.headers["WWW-Authenticate"] == 'Bearer realm="tokengate"'


def test_bearer_token_is_a_token_login(http_api, mint_token, tokengate):
    name, token, _ = mint_token(user="analyst", duration="1h")
    audit_mark = tokengate.audit_path.stat().st_size
    r = http_api.call("GET", "/api/me", token=token)
    assert r.status_code == 200, describe(r)
    me = r.json()
    assert me["user"] == "analyst" and me["token_name"] == name and me["via"] == "bearer", me
    assert me["is_admin"] is False
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", me["expires_at"]), me
    # Audited as a token login, application_name telling HTTP apart.
    lines = [json.loads(x) for x in tokengate.audit_path.read_bytes()[audit_mark:].decode().splitlines()]
    logins = [x for x in lines if x["event"] == "login"]
    assert logins and logins[-1]["method"] == "token" and logins[-1]["outcome"] == "ok", lines
    assert logins[-1]["token_name"] == name and logins[-1]["application_name"].startswith("http: "), logins[-1]


def test_admin_is_admin(http_api, mint_token):
    _, token, _ = mint_token(user="admin", duration="1h")
    r = http_api.call("GET", "/api/me", token=token)
    assert r.status_code == 200 and r.json()["is_admin"] is True, describe(r)


@pytest.mark.parametrize("header", ["Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer a b", "Token abc"])
def test_malformed_authorization(http_api, header):
    r = http_api.call("GET", "/api/me", headers={"Authorization": header})
    assert_error(r, 401, "28000")


def test_bad_tokens_are_401(http_api, mint_token):
    _, token, _ = mint_token(user="analyst", duration="1h")
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for bad in (tampered, "eyJhbGciOiJub25lIn0.eyJ1c2VyIjoiYWRtaW4ifQ.", "not-a-token-at-all", "admin"):
        r = http_api.call("GET", "/api/me", token=bad)
        body = assert_error(r, 401, "28P01")
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="tokengate", error="invalid_token"', mask(bad)
        assert "token" not in body.get("detail", ""), body


def test_a_password_as_bearer_is_never_tried(http_api, pg):
    """A Bearer value without the token form is refused without any check, upstream or local."""
    mark = pg.log_mark()
    r = http_api.call("GET", "/api/me", token="admin")
    assert_error(r, 401, "28P01", "invalid API token")
    assert "password authentication" not in pg.log_since(mark)


def test_revoked_token_refused_from_next_request(http_api, mint_token):
    name, token, _ = mint_token(user="analyst", duration="1h")
    assert http_api.call("GET", "/api/me", token=token).status_code == 200
    r = http_api.call("DELETE", f"/api/tokens/{name}", token=token)
    assert r.status_code == 204, describe(r)
    r = http_api.call("GET", "/api/me", token=token)
    assert_error(r, 401, "28P01", 'password authentication failed for user "analyst"')


def test_token_revoked_by_another_process(http_api, mint_token, tokengate):
    name, token, _ = mint_token(user="analyst", duration="1h")
    assert http_api.call("GET", "/api/me", token=token).status_code == 200
    assert cli_revoke(tokengate, name, "analyst").returncode == 0
    assert_error(http_api.call("GET", "/api/me", token=token), 401, "28P01")


def test_expired_token(http_api, mint_token):
    _, token, _ = mint_token(user="analyst", duration="1s")
    time.sleep(2.1)
    body = assert_error(http_api.call("GET", "/api/me", token=token), 401, "28P01", "API token expired")
    assert body["detail"].startswith("The token expired at "), body


def test_owner_role_checked_as_it_is_now(http_api, fresh_role, proxy, pg):
    """As for a token login: the owner must still have LOGIN, an unexpired VALID UNTIL and the OID the token was
    issued for (not a new role of the same name). A change reaches HTTP requests within a second."""
    role, password = fresh_role("LOGIN")
    with proxy.connect(user=role, password=password) as c:
        token = remember_secret(c.execute("CREATE API TOKEN t MAX DURATION '1h'").fetchone()[1])
    assert http_api.call("GET", "/api/me", token=token).status_code == 200
    with pg.admin_conn() as c:
        c.execute(f"ALTER ROLE {role} NOLOGIN")
    time.sleep(ROLE_RECHECK)
    assert_error(http_api.call("GET", "/api/me", token=token), 401, "28000",
                 f'role "{role}" is not permitted to log in')
    with pg.admin_conn() as c:
        c.execute(f"ALTER ROLE {role} LOGIN VALID UNTIL '2000-01-01'")
    time.sleep(ROLE_RECHECK)
    assert_error(http_api.call("GET", "/api/me", token=token), 401, "28P01",
                 f'password authentication failed for user "{role}"')
    with pg.admin_conn() as c:
        c.execute(f"DROP ROLE {role}")
        c.execute(f"CREATE ROLE {role} LOGIN")
    time.sleep(ROLE_RECHECK)
    assert_error(http_api.call("GET", "/api/me", token=token), 401, "28P01",
                 f'password authentication failed for user "{role}"')


def test_cookie_authenticates(http_api, mint_token):
    name, token, _ = mint_token(user="analyst", duration="1h")
    r = http_api.call("GET", "/api/me", cookie=token)
    assert r.status_code == 200 and r.json()["via"] == "cookie", describe(r)


def test_bad_cookie_is_dropped(http_api):
    r = http_api.call("GET", "/api/me", cookie="eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyIjoiYWRtaW4ifQ.c2ln")
    assert_error(r, 401, "28P01")
    assert r.headers["Set-Cookie"].startswith("auth_token=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict")


def test_bearer_wins_over_cookie(http_api, mint_token):
    _, good, _ = mint_token(user="analyst", duration="1h")
    r = http_api.call("GET", "/api/me", token="eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyIjoiYWRtaW4ifQ.c2ln", cookie=good)
    assert_error(r, 401, "28P01")


def test_csrf_header_required_with_cookie(http_api):
    token = http_api.login("analyst", "analyst").cookie  # a password login's session: it may create tokens
    remember_secret(token)
    r = http_api.call("POST", "/api/tokens", cookie=token, json={"comment": "csrf"})
    body = assert_error(r, 403, "42501", f"missing {CSRF_HEADER} header")
    assert CSRF_HEADER in body["hint"]
    # Nothing was created.
    names = [t["comment"] for t in http_api.call("GET", "/api/tokens", cookie=token).json()["tokens"]]
    assert "csrf" not in names
    # With the header it works; a Bearer request never needs it.
    r = http_api.call("POST", "/api/tokens", cookie=token, json={"comment": "csrf ok", "max_duration": "1h"},
                      headers={CSRF_HEADER: "1"})
    assert r.status_code == 201, describe(r)
    remember_secret(r.json()["token"])
    r = http_api.call("PATCH", f"/api/tokens/{r.json()['name']}", token=token, json={"comment": "bearer ok"})
    assert r.status_code == 204, describe(r)


def test_json_content_type_required(http_api, mint_token):
    _, token, _ = mint_token(user="analyst", duration="1h")
    r = http_api.call("POST", "/api/tokens", token=token, data="comment=x",
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert_error(r, 415, "08P01", "the request body must be JSON")


# ---------------------------------------------------------------- limits


def test_header_too_large(tokengate):
    big = "x" * (20 * 1024)  # the default http.max_header_size is 16 KiB
    req = f"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n".encode()
    r = raw_request(tokengate.host, tokengate.http_port, req)
    assert r.status == 431, r
    body = r.json()
    assert body["code"] == "54000" and body["message"] == "request header is too large", body
    assert r.headers["connection"] == "close"


def test_body_too_large_by_content_length(tokengate, mint_token):
    _, token, _ = mint_token(user="analyst", duration="1h")
    body = json.dumps({"comment": "x" * (70 * 1024)}).encode()  # the token API takes at most 64 KiB
    req = (f"POST /api/tokens HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n"
           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    r = raw_request(tokengate.host, tokengate.http_port, req)
    assert r.status == 413, r.status
    assert r.json() == {"code": "54000", "message": "request body is too large",
                        "detail": "At most 65536 bytes are accepted here."}


def test_body_too_large_chunked(tokengate, mint_token):
    _, token, _ = mint_token(user="analyst", duration="1h")
    chunk = b"x" * 4096
    chunks = b"".join(b"1000\r\n" + chunk + b"\r\n" for _ in range(20)) + b"0\r\n\r\n"
    req = (f"POST /api/tokens HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n"
           f"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode() + chunks
    r = raw_request(tokengate.host, tokengate.http_port, req)
    assert r.status == 413 and r.json()["code"] == "54000", r


def test_expect_100_continue_refused_early(tokengate, mint_token):
    """curl sends Expect: 100-continue for large bodies; a body over the limit is refused before it is sent."""
    _, token, _ = mint_token(user="analyst", duration="1h")
    with socket.create_connection((tokengate.host, tokengate.http_port), timeout=10) as s:
        s.sendall((f"POST /api/tokens HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n"
                   "Content-Type: application/json\r\nContent-Length: 10000000\r\nExpect: 100-continue\r\n\r\n")
                  .encode())
        r = read_response(s)
    assert r.status == 413, r.status


def test_expect_100_continue_accepted(tokengate, mint_token):
    _, token, _ = mint_token(user="analyst", duration="1h")
    body = json.dumps({"comment": "after continue", "max_duration": "1h"}).encode()
    with socket.create_connection((tokengate.host, tokengate.http_port), timeout=10) as s:
        s.sendall((f"POST /api/tokens HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                   "Expect: 100-continue\r\n\r\n").encode())
        interim = read_response(s)
        assert interim.status == 100, interim.status
        s.sendall(body)
        r = read_response(s)
    assert r.status == 201, r.status


def test_malformed_request_is_400(tokengate):
    r = raw_request(tokengate.host, tokengate.http_port, b"GET /healthz HTTP/9.9\r\n\r\n")
    assert r.status == 400 and r.json()["code"] == "08P01", r
    r = raw_request(tokengate.host, tokengate.http_port, b"GET http://evil/healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert r.status == 400 and r.json()["code"] == "08P01", r


@pytest.mark.parametrize("framing", [
    b"HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n",
    b"HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n",
    b"HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: xchunked\r\n",
    b"HTTP/1.0\r\nTransfer-Encoding: chunked\r\n",
], ids=["gzip", "chunked-not-last", "xchunked", "http-1.0"])
def test_a_body_framed_by_an_unknown_transfer_encoding_cannot_smuggle_a_request(tokengate, framing):
    """A Transfer-Encoding that does not end in chunked leaves the body's length unknown (RFC 9112, section 6.3).
    Read as no body (what Beast does by itself), the body would be served as a second request: a proxy in front
    that frames the message otherwise would have a request smuggled past it. It is 400, and the connection closes
    without answering what followed."""
    smuggled = b"GET /nowhere-smuggled HTTP/1.1\r\nHost: t\r\n\r\n"
    body = b"0\r\n\r\n" + smuggled
    with socket.create_connection((tokengate.host, tokengate.http_port), timeout=10) as s:
        s.sendall(b"POST /api/logout " + framing + b"\r\n" + body)
        r = read_response(s)
        assert r.status == 400, r
        assert r.json() == {"code": "08P01", "message": "unsupported Transfer-Encoding",
                            "detail": 'Only "chunked" is accepted, and only in HTTP/1.1.'}, r
        if b"HTTP/1.1" in framing:
            assert r.headers.get("connection") == "close", r
        rest = b""
        while chunk := s.recv(65536):
            rest += chunk
    assert rest == b"", f"a second answer followed: {rest[:300]!r}"
    assert "nowhere-smuggled" not in tokengate.log_tail(200)


def test_one_address_cannot_take_every_http_connection(spawn_tokengate, pg):
    """With the default limits, a host that opens more connections than http.max_connections and sends nothing
    gets at most http.max_connections_per_address (64) of them; a client from another address is still served.
    127.0.0.2 is another loopback address, so the flood and the client are two hosts to tokengate."""
    tg = spawn_tokengate((str(pg.socket_dir), pg.port))
    flood = []
    try:
        for _ in range(300):  # past http.max_connections (256)
            s = socket.socket()
            s.bind(("127.0.0.2", 0))
            s.settimeout(10)
            s.connect((tg.host, tg.http_port))
            flood.append(s)
        time.sleep(0.5)
        r = raw_request(tg.host, tg.http_port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert r.status == 200, r
        # The flooding address itself is refused past its share, with its own words.
        s = socket.socket()
        s.bind(("127.0.0.2", 0))
        s.settimeout(10)
        s.connect((tg.host, tg.http_port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        r = read_response(s)
        s.close()
        assert r.status == 503, r
        assert r.json()["code"] == "53300" and r.json()["message"] == "too many HTTP connections from this address", r
    finally:
        for s in flood:
            s.close()
    assert "http.max_connections_per_address" in tg.log_path.read_text()


def test_http_connections_per_address_setting(spawn_tokengate, pg):
    """http.max_connections_per_address = 2: a third connection from the address gets 503, one from another
    address does not; a closed connection frees its place. 0 turns the limit off."""
    tg = spawn_tokengate((str(pg.socket_dir), pg.port), ["--http-max-connections-per-address", "2"])
    a = socket.create_connection((tg.host, tg.http_port), timeout=10)
    b = socket.create_connection((tg.host, tg.http_port), timeout=10)
    time.sleep(0.2)
    r = raw_request(tg.host, tg.http_port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert r.status == 503 and r.json()["message"] == "too many HTTP connections from this address", r
    other = socket.socket()
    other.bind(("127.0.0.2", 0))
    other.settimeout(10)
    other.connect((tg.host, tg.http_port))
    other.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert read_response(other).status == 200
    other.close()
    a.close()
    time.sleep(0.2)
    r = raw_request(tg.host, tg.http_port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert r.status == 200, r
    b.close()
    off = spawn_tokengate((str(pg.socket_dir), pg.port),
                          ["--http-max-connections-per-address", "0", "--http-max-connections", "4"])
    held = [socket.create_connection((off.host, off.http_port), timeout=10) for _ in range(3)]
    time.sleep(0.2)
    r = raw_request(off.host, off.http_port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert r.status == 200, r
    for s in held:
        s.close()


def test_keep_alive_serves_several_requests(tokengate):
    with socket.create_connection((tokengate.host, tokengate.http_port), timeout=10) as s:
        for _ in range(3):
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(s).status == 200


def test_connection_limit_and_timeouts(spawn_tokengate, pg):
    """Over http.max_connections a client gets 503; an idle connection is closed after http.idle_timeout, a slow
    request after http.request_timeout; the gateway keeps serving."""
    tg = spawn_tokengate((str(pg.socket_dir), pg.port),
                         ["--http-max-connections", "2", "--http-idle-timeout", "1", "--http-request-timeout", "2"])
    a = socket.create_connection((tg.host, tg.http_port), timeout=10)
    b = socket.create_connection((tg.host, tg.http_port), timeout=10)
    time.sleep(0.2)
    r = raw_request(tg.host, tg.http_port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert r.status == 503, r
    assert r.json()["code"] == "53300" and r.headers["retry-after"] == "1", r
    # Idle connections are closed by the server within the idle timeout (1 s).
    for s in (a, b):
        s.settimeout(5)
        assert s.recv(100) == b""
        s.close()
    # A request trickling in is cut off at the request timeout (2 s).
    with socket.create_connection((tg.host, tg.http_port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\n")
        start = time.monotonic()
        assert s.recv(100) == b""
        assert time.monotonic() - start < 4
    r = raw_request(tg.host, tg.http_port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    assert r.status == 200


def test_http_listen_off(spawn_tokengate, pg):
    tg = spawn_tokengate((str(pg.socket_dir), pg.port), ["--http-listen", "off"])
    assert tg.alive()
    assert "HTTP gateway listening" not in tg.log_path.read_text()


def test_http_port_taken_stops_tokengate(spawn_tokengate, pg):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        tg = spawn_tokengate((str(pg.socket_dir), pg.port), ["--http-listen", f"127.0.0.1:{port}"], start=False)
        tg.launch()
        assert tg.proc.wait(10) == 1
    assert f"cannot listen for HTTP on 127.0.0.1:{port}" in tg.log_path.read_text()

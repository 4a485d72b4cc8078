# Logging in with a token (issue 5): token as the password in psql, psycopg and pgjdbc; every way a
# token can be wrong; sessions ended on revoke; the two upstream login modes (trust: tokengate checks ordinary
# passwords itself — the most important test here; password: the upstream does); throttling; and, at the very end,
# a scan of every tokengate log and audit log of the session for any token or password used.
#
# Tokens appear in assertion messages only through mask().
from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import socket
import time
import uuid

import psycopg
import pytest

import pgwire
from conftest import (ROLES, SECRETS, PgCluster, Target, TokengateProcess, all_tokengate_logs, cli_revoke,
                      create_token, fresh_password, mask, remember_secret)

AUTH_FAILED = 'password authentication failed for user "{}"'


# ---------------------------------------------------------------- helpers


def try_login(t: Target, user: str, password: str, extra: dict[str, str] | None = None) -> pgwire.LoginResult:
    """One login over the wire; after a FATAL error the connection must close with nothing else sent."""
    with t.wire() as c:
        r = pgwire.login(c, user, password, extra=extra)
        if r.error is not None:
            rest, closed = c.read_until_closed(timeout=5)
            assert closed, f"connection still open 5 s after {r.error}"
            assert rest == [], f"messages after the FATAL error: {rest}"
        else:
            c.send(pgwire.terminate_message())
        return r


def assert_refused(r: pgwire.LoginResult, user: str, what: str, sqlstate: str = "28P01",
                   message: str | None = None) -> pgwire.ErrorFields:
    assert r.error is not None, f"{what}: login as {user} SUCCEEDED (auth requests {r.auth_requests})"
    err = r.error
    assert err.severity == "FATAL", f"{what}: {err}"
    assert err.sqlstate == sqlstate, f"{what}: {err}"
    expected = AUTH_FAILED.format(user) if message is None else message
    assert err.message == expected, f"{what}: {err}"
    return err


@contextlib.contextmanager
def token_session(t: Target, user: str, token: str):
    """A raw session logged in with a token; yields (connection, LoginResult)."""
    c = t.wire()
    try:
        r = pgwire.login(c, user, token)
        assert r.ok, f"token login of {user} with {mask(token)} failed: {r.error}"
        yield c, r
    finally:
        c.close()


def wait_for_fatal(c: pgwire.WireConnection, within: float) -> tuple[pgwire.ErrorFields | None, float, bool]:
    """Wait (without sending anything) for an unsolicited ErrorResponse; returns (error, seconds, closed after)."""
    start = time.monotonic()
    msgs, closed = c.read_until_closed(timeout=within)
    elapsed = time.monotonic() - start
    errs = [m.error() for m in msgs if m.tag == b"E"]
    return (errs[0] if errs else None), elapsed, closed


def assert_alive(c: pgwire.WireConnection, what: str) -> None:
    msgs = c.simple_query("select 1")
    assert pgwire.data_rows_text(msgs) == [("1",)], f"{what}: {msgs}"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def flip_char(segment: str, index: int) -> str:
    """Change one base64url character to another that decodes to different bits (never the last one, whose low
    bits may be unused)."""
    ch = segment[index]
    new = "B" if ch != "B" else "C"
    return segment[:index] + new + segment[index + 1 :]


def user_connected_upstream(pg: PgCluster, mark: int, user: str) -> list[str]:
    """PostgreSQL's log_connections lines since mark for a session of `user`."""
    return [ln for ln in pg.log_since(mark).splitlines()
            if "connection authorized" in ln and f"user={user} " in ln + " "]


def trust_mode(tokengate: TokengateProcess) -> bool:
    return "--upstream-auth" in tokengate.argv and "trust" in tokengate.argv


def uniq(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------- token logins through each client


def test_psql_with_token_in_pgpassword(proxy: Target, mint_token):
    name, token, _ = mint_token(user="analyst", name=uniq("psql_login"), duration="1h")
    r = proxy.psql("-A", "-t", "-c", "select current_user, session_user", user="analyst", password=token)
    assert r.rc == 0, f"psql with PGPASSWORD=<token {mask(token)}> failed: {r.stderr}"
    assert r.stdout.strip() == "analyst|analyst", r.stdout


def test_psycopg_with_token_as_password(proxy: Target, mint_token):
    _, token, _ = mint_token(user="analyst", name=uniq("psy_login"), duration="1h")
    with proxy.connect(user="analyst", password=token) as conn:
        assert conn.execute("select current_user, session_user").fetchone() == ("analyst", "analyst")
        # The session has the owner's privileges: service_accounts membership is visible upstream.
        assert conn.execute("select pg_has_role('service_accounts', 'member')").fetchone() == (True,)
        # API TOKEN statements work in a token session too.
        assert conn.execute("SHOW API TOKENS").fetchall()


def test_pgjdbc_with_token_as_password(proxy: Target, mint_token):
    import jdbc

    _, token, _ = mint_token(user="analyst", name=uniq("jdbc_login"), duration="1h")
    for threshold in (1, 0):
        rc, f, stderr = jdbc.run("login", proxy.host, proxy.port, "analyst", token,
                                 params=f"prepareThreshold={threshold}")
        assert rc == 0, f"pgjdbc token login failed: {f.get('error_message')} {stderr}"
        assert f["current_user"] == ["analyst"] and f["session_user"] == ["analyst"], f
    rc, f, _ = jdbc.run("login", proxy.host, proxy.port, "admin", token)
    assert rc == 3 and f.get("error_sqlstate") == ["28P01"], f"analyst's token as admin through pgjdbc: {f}"


def test_token_of_another_user_is_28P01(proxy: Target, pg: PgCluster, mint_token):
    _, token, _ = mint_token(user="analyst", name=uniq("not_yours"), duration="1h")
    mark = pg.log_mark()
    for user in ("admin", "md5user", "plainuser"):
        assert_refused(try_login(proxy, user, token), user, f"analyst's token {mask(token)} used as {user}")
        assert not user_connected_upstream(pg, mark, user), f"a session as {user} reached the upstream"


def test_revoked_token_fails_at_once(proxy: Target, mint_token):
    name, token, _ = mint_token(user="analyst", name=uniq("revoked"), duration="1h")
    assert try_login(proxy, "analyst", token).ok
    with proxy.connect(user="analyst") as conn:
        conn.execute(f"DROP API TOKEN {name}")
    assert_refused(try_login(proxy, "analyst", token), "analyst", "a token revoked a moment ago")
    with proxy.connect(user="analyst") as conn:  # a new token with the same name is a different token
        remember_secret(conn.execute(f"CREATE API TOKEN {name} MAX DURATION '1h'").fetchone()[1])
    assert_refused(try_login(proxy, "analyst", token), "analyst", "the revoked token after its name was reused")


def test_live_session_ended_on_drop_api_token(proxy: Target, mint_token):
    name, token, _ = mint_token(user="analyst", name=uniq("live_drop"), duration="1h")
    _, other_token, _ = mint_token(user="analyst", name=uniq("live_keep"), duration="1h")
    with token_session(proxy, "analyst", token) as (victim, _r), \
            token_session(proxy, "analyst", other_token) as (bystander, _r2), proxy.wire() as pw:
        assert pgwire.login(pw, "analyst", "analyst").ok
        assert_alive(victim, "token session before the DROP")
        with proxy.connect(user="analyst") as conn:
            conn.execute(f"DROP API TOKEN {name}")
        err, elapsed, closed = wait_for_fatal(victim, within=4)
        assert err is not None, "the session of a dropped token was not ended within 4 s"
        assert err.severity == "FATAL" and err.sqlstate == "57P01", err
        assert "API token revoked" in err.message, err
        assert elapsed <= 2.5, f"ended after {elapsed:.2f} s (must be within 2 s)"
        assert closed, "connection not closed after the FATAL error"
        assert_alive(bystander, "a session with another token of the same user")
        assert_alive(pw, "a password session of the same user")


def test_live_session_ended_on_cli_revoke(proxy: Target, tokengate: TokengateProcess, mint_token):
    name, token, _ = mint_token(user="analyst", name=uniq("live_cli"), duration="1h")
    with token_session(proxy, "analyst", token) as (victim, _r):
        assert_alive(victim, "token session before the revoke")
        p = cli_revoke(tokengate, name, "analyst")
        assert p.returncode == 0, f"tokengate tokens revoke failed: {p.stdout} {p.stderr}"
        err, elapsed, closed = wait_for_fatal(victim, within=4)
        assert err is not None, "the session was not ended within 4 s of `tokengate tokens revoke`"
        assert err.severity == "FATAL" and err.sqlstate == "57P01" and "API token revoked" in err.message, err
        assert elapsed <= 2.5, f"ended after {elapsed:.2f} s (must be within 2 s)"
        assert closed
    assert_refused(try_login(proxy, "analyst", token), "analyst", "a token revoked from the command line")


def test_drop_all_api_tokens_ends_every_session(proxy: Target, tokengate: TokengateProcess, fresh_role):
    if not trust_mode(tokengate):
        pytest.skip("token sessions of a fresh role need its password in the userlist outside trust mode")
    role, pw = fresh_role()
    tokens = [create_token(proxy, user=role, password=pw, duration="1h")[1] for _ in range(2)]
    with token_session(proxy, role, tokens[0]) as (a, _), token_session(proxy, role, tokens[1]) as (b, _):
        with proxy.connect(user=role, password=pw) as conn:
            conn.execute("DROP ALL API TOKENS")
        for c in (a, b):
            err, elapsed, _closed = wait_for_fatal(c, within=4)
            assert err is not None and err.sqlstate == "57P01", f"DROP ALL API TOKENS: {err}"
            assert elapsed <= 2.5, f"ended after {elapsed:.2f} s"


def test_expired_token(proxy: Target, mint_token):
    _, token, expires_at = mint_token(user="analyst", name=uniq("short"), duration="2s")
    time.sleep(max(0.0, expires_at.timestamp() - time.time()) + 1.2)
    r = try_login(proxy, "analyst", token)
    assert r.error is not None, "an expired token logged in"
    assert r.error.sqlstate == "28P01" and r.error.severity == "FATAL", r.error
    assert "API token expired" in r.error.message, r.error


def test_expiry_warning_notice(proxy: Target, mint_token):
    _, token, _ = mint_token(user="analyst", name=uniq("soon"), duration="2d")
    with token_session(proxy, "analyst", token) as (_c, r):
        notices = [m.error() for m in r.messages if m.tag == b"N"]
        assert notices, f"no NoticeResponse for a token expiring within 7 days: {r.messages}"
        assert any("expire" in (n.message or "") for n in notices), notices
    _, token, _ = mint_token(user="analyst", name=uniq("later"), duration="30d")
    with token_session(proxy, "analyst", token) as (_c, r):
        assert not [m for m in r.messages if m.tag == b"N"], "a notice for a token valid for 30 days"


def forged_tokens(token: str) -> dict[str, str]:
    """Every way of changing a real token that must be refused; none is ever printed."""
    h, p, s = token.split(".")
    header = json.loads(b64url_decode(h))
    payload = b64url_decode(p)
    assert header.get("alg") == "HS256" and header.get("kid"), f"unexpected JWT header {header}"
    forged = {
        "one char of the payload": f"{h}.{flip_char(p, len(p) // 2)}.{s}",
        "one char of the signature": f"{h}.{p}.{flip_char(s, len(s) // 2)}",
        "first char of the signature": f"{h}.{p}.{flip_char(s, 0)}",
        "signature removed": f"{h}.{p}.",
        "signature of another token's length": f"{h}.{p}.{s[:-2]}",
        "alg none, no signature": f"{b64url(json.dumps({**header, 'alg': 'none'}).encode())}.{p}.",
        "alg none, original signature": f"{b64url(json.dumps({**header, 'alg': 'none'}).encode())}.{p}.{s}",
        "alg None": f"{b64url(json.dumps({**header, 'alg': 'None'}).encode())}.{p}.",
        "alg HS512": f"{b64url(json.dumps({**header, 'alg': 'HS512'}).encode())}.{p}.{s}",
        "unknown kid": f"{b64url(json.dumps({**header, 'kid': '00' * 8}).encode())}.{p}.{s}",
        "padding added": f"{h}.{p}.{s}=",
        "extra segment": f"{h}.{p}.{s}.{s}",
    }
    # Signed correctly, but with a key tokengate does not have (under an unknown and under the real kid).
    for label, kid in (("unknown kid, valid HMAC of another key", "ff" * 8),
                       ("real kid, HMAC of another key", header["kid"])):
        hh = b64url(json.dumps({**header, "kid": kid}).encode())
        sig = hmac.digest(os.urandom(32), f"{hh}.{p}".encode(), "sha256")
        forged[label] = f"{hh}.{p}.{b64url(sig)}"
    # A different expiry in an otherwise intact payload.
    claims = json.loads(payload)
    claims["exp"] = claims["exp"] + 3600 * 24 * 365
    forged["payload with a later exp"] = f"{h}.{b64url(json.dumps(claims).encode())}.{s}"
    for v in forged.values():
        remember_secret(v)
    return forged


def test_tampered_tokens_are_28P01(proxy: Target, pg: PgCluster, mint_token):
    _, token, _ = mint_token(user="analyst", name=uniq("tamper"), duration="1h")
    forged = forged_tokens(token)
    mark = pg.log_mark()
    failures = []
    for what, bad in forged.items():
        assert bad != token
        r = try_login(proxy, "analyst", bad)
        if r.error is None:
            failures.append(f"{what}: login SUCCEEDED")
        elif (r.error.sqlstate, r.error.severity, r.error.message) != ("28P01", "FATAL", AUTH_FAILED.format("analyst")):
            failures.append(f"{what}: {r.error}")
    assert not failures, "forged tokens not refused as PostgreSQL refuses a wrong password:\n" + "\n".join(failures)
    assert not user_connected_upstream(pg, mark, "analyst"), "a forged token opened an upstream session"
    assert try_login(proxy, "analyst", token).ok, "the real token stopped working"


# ---------------------------------------------------------------- upstream login mode `trust`


@pytest.fixture
def trust_proxy(proxy: Target, tokengate: TokengateProcess) -> Target:
    if not trust_mode(tokengate):
        pytest.skip("this tokengate binary has no --upstream-auth (relay stage): the session instance uses TCP")
    return proxy


@pytest.mark.parametrize("user", ["admin", "analyst", "md5user", "plainuser"])
def test_trust_mode_refuses_a_wrong_password(trust_proxy: Target, pg: PgCluster, user: str):
    """THE test: the upstream trusts tokengate, so only tokengate stands between a wrong password and a session."""
    mark = pg.log_mark()
    wrong = fresh_password("wrong")
    assert_refused(try_login(trust_proxy, user, wrong), user, "a wrong password in trust mode")
    assert_refused(try_login(trust_proxy, user, ROLES[user] + "x"), user, "the password plus one character")
    assert_refused(try_login(trust_proxy, user, ROLES[user][:-1]), user, "the password minus one character")
    assert_refused(try_login(trust_proxy, user, ROLES[user].upper()), user, "the password in upper case")
    r = try_login(trust_proxy, user, "")
    assert r.error is not None and r.error.sqlstate in ("28P01", "08P01"), f"empty password: {r.error}"
    # Pass-the-hash: the stored verifier itself is not the password.
    with pg.admin_conn() as c:
        verifier = c.execute("select rolpassword from pg_authid where rolname = %s", [user]).fetchone()[0]
    assert_refused(try_login(trust_proxy, user, verifier), user, "the role's verifier sent as the password")
    assert not user_connected_upstream(pg, mark, user), \
        f"a refused login still opened an upstream session as {user}: {user_connected_upstream(pg, mark, user)}"


def test_trust_mode_wrong_password_with_psql_and_psycopg(trust_proxy: Target, pg: PgCluster):
    wrong = fresh_password("wrong")
    r = trust_proxy.psql("-c", "select 1", user="analyst", password=wrong)
    assert r.rc == 2 and AUTH_FAILED.format("analyst") in r.stderr, r
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        trust_proxy.connect(user="admin", password=wrong)


@pytest.mark.parametrize("user", ["admin", "analyst", "md5user", "plainuser"])
def test_trust_mode_correct_password_works(trust_proxy: Target, user: str):
    with trust_proxy.connect(user=user) as conn:
        assert conn.execute("select current_user, session_user").fetchone() == (user, user)


def test_trust_mode_roles_of_all_kinds(trust_proxy: Target, direct: Target, pg: PgCluster, fresh_role):
    """Each case answers as PostgreSQL itself does over TCP (scram-sha-256) — the direct twin."""
    future, future_pw = fresh_role("LOGIN VALID UNTIL 'infinity'")
    soon, soon_pw = fresh_role(f"LOGIN VALID UNTIL '{time.strftime('%Y')}-12-31 23:59:59+00'")
    past, past_pw = fresh_role("LOGIN VALID UNTIL '2001-02-03 04:05:06+00'")
    nologin, nologin_pw = fresh_role("NOLOGIN")
    unicode_role, unicode_pw = fresh_role(password=remember_secret(f"Пароль-ﬁ-ü-{uuid.uuid4().hex[:6]}"))
    md5_role = f"tg_md5_{uuid.uuid4().hex[:8]}"
    md5_pw = fresh_password("md5")
    nopw_role = f"tg_nopw_{uuid.uuid4().hex[:8]}"
    with pg.admin_conn() as c:
        c.execute("SET password_encryption = 'md5'")
        c.execute(f"CREATE ROLE {md5_role} LOGIN PASSWORD '{md5_pw}'")
        c.execute(f"CREATE ROLE {nopw_role} LOGIN")
    try:
        cases = [
            (future, future_pw, True), (soon, soon_pw, True), (unicode_role, unicode_pw, True),
            (md5_role, md5_pw, True),
            (past, past_pw, False), (nologin, nologin_pw, False), (nopw_role, "anything", False),
            (future, "wrong", False), (md5_role, "wrong", False),
        ]
        for user, pw, ok in cases:
            got = try_login(trust_proxy, user, pw)
            if ok:
                # libpq (psycopg) for the direct twin: it applies SASLprep to the password as PostgreSQL expects.
                # (An MD5 verifier cannot answer the cluster's scram-sha-256 TCP line; md5user covers MD5 twins.)
                if user != md5_role:
                    with direct.connect(user=user, password=pw) as conn:
                        conn.execute("select 1")
                assert got.ok, f"{user}: login through tokengate failed: {got.error}"
            else:
                want = try_login(direct, user, pw)
                assert want.error is not None, f"the direct twin of {user} logged in"
                assert got.error is not None, f"{user}: login through tokengate SUCCEEDED"
                assert got.error.visible() == want.error.visible(), \
                    f"{user}: tokengate says {got.error}, PostgreSQL says {want.error}"
    finally:
        with pg.admin_conn() as c:
            c.execute(f"DROP ROLE IF EXISTS {md5_role}")
            c.execute(f"DROP ROLE IF EXISTS {nopw_role}")


def test_trust_mode_password_change_takes_effect(trust_proxy: Target, fresh_role, pg: PgCluster):
    role, old = fresh_role()
    assert try_login(trust_proxy, role, old).ok
    new = fresh_password("new")
    with pg.admin_conn() as c:
        c.execute(f"ALTER ROLE {role} PASSWORD '{new}'")
    deadline = time.monotonic() + 10
    while try_login(trust_proxy, role, old).ok:
        assert time.monotonic() < deadline, "the old password still works 10 s after ALTER ROLE … PASSWORD"
        time.sleep(0.5)
    assert try_login(trust_proxy, role, new).ok


# ---------------------------------------------------------------- upstream login mode `password`


@pytest.mark.parametrize("user", ["admin", "analyst", "md5user", "plainuser"])
def test_password_mode_ordinary_logins(proxy_pw: Target, user: str):
    with proxy_pw.connect(user=user) as conn:
        assert conn.execute("select current_user").fetchone() == (user,)
    wrong = fresh_password("wrong")
    assert_refused(try_login(proxy_pw, user, wrong), user, "a wrong password in password mode")


def test_password_mode_token_login(proxy_pw: Target, pg: PgCluster):
    name, token, _ = create_token(proxy_pw, user="analyst", name=uniq("pwmode"), duration="1h")
    with proxy_pw.connect(user="analyst", password=token) as conn:
        assert conn.execute("select current_user, session_user").fetchone() == ("analyst", "analyst")
    r = proxy_pw.psql("-A", "-t", "-c", "select current_user", user="analyst", password=token)
    assert r.rc == 0 and r.stdout.strip() == "analyst", r
    # A forged token is refused by tokengate and never tried upstream as an ordinary password.
    forwarded = []
    for what, bad in forged_tokens(token).items():
        mark = pg.log_mark()
        assert_refused(try_login(proxy_pw, "analyst", bad), "analyst", f"password mode, {what}")
        # Three base64url segments, the first a JWT header: token form (an unsigned `alg: none` JWT included).
        token_form = re.fullmatch(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*", bad) is not None
        if token_form and 'password authentication failed for user "analyst"' in pg.log_since(mark):
            forwarded.append(what)
    assert not forwarded, f"token-form passwords were tried against the upstream as ordinary passwords: {forwarded}"
    with proxy_pw.connect(user="analyst") as conn:
        conn.execute(f"DROP API TOKEN {name}")


def test_password_mode_owner_missing_from_userlist(proxy_pw: Target, fresh_role):
    role, _ = fresh_role()
    _, token, _ = create_token(proxy_pw, user="admin", for_user=role, duration="1h")
    r = try_login(proxy_pw, role, token)
    assert r.error is not None, "a token session without the owner's upstream password succeeded"
    text = " ".join(filter(None, (r.error.message, r.error.get("D"), r.error.get("H"))))
    assert "userlist" in text, f"the error should name the userlist setting: {r.error}"


# ---------------------------------------------------------------- throttling


def test_failed_logins_are_throttled(spawn_tokengate, pg: PgCluster, fresh_role, tokengate: TokengateProcess):
    if not trust_mode(tokengate):
        pytest.skip("this tokengate binary has no login modes / throttling yet")
    tg = spawn_tokengate(upstream=(str(pg.socket_dir), pg.port),
                         extra_args=["--upstream-auth", "trust", "--max-failed-logins", "2"])
    t = tg.target()
    role, pw = fresh_role()

    def timed(password: str) -> tuple[float, pgwire.LoginResult]:
        start = time.monotonic()
        r = try_login(t, role, password)
        return time.monotonic() - start, r

    # docs/deployment.md: failures up to the limit are answered at once; the first one over it waits 1 s.
    times = []
    for _ in range(3):
        elapsed, r = timed(fresh_password("bad"))
        assert r.error is not None and r.error.sqlstate == "28P01", r.error
        times.append(elapsed)
    assert times[2] >= times[0] + 0.8, \
        f"the 3rd failure with --max-failed-logins 2 is not slower: {[round(x, 3) for x in times]}"
    # A successful login is never slowed.
    elapsed, r = timed(pw)
    assert r.ok, r.error
    assert elapsed < times[0] + 0.5, f"a correct password took {elapsed:.2f} s after failures"


# ---------------------------------------------------------------- audit log and secrets


def test_audit_log_records_token_logins(proxy: Target, tokengate: TokengateProcess, mint_token):
    name, token, _ = mint_token(user="analyst", name=uniq("audited"), duration="1h")
    assert try_login(proxy, "analyst", token).ok
    assert try_login(proxy, "analyst", forged_tokens(token)["one char of the signature"]).error is not None
    deadline = time.monotonic() + 5
    while True:
        try:
            lines = tokengate.audit_path.read_text().splitlines()
        except OSError:
            lines = []
        mentions = [ln for ln in lines if name in ln]
        if len(mentions) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert lines, f"no audit log at {tokengate.audit_path}"
    for ln in lines:
        json.loads(ln)  # every line is one JSON object
    assert len(mentions) >= 2, f"the token's creation and login are not audited: {mentions}"
    events = [json.loads(ln) for ln in mentions]
    assert any("analyst" in json.dumps(e) for e in events)
    assert not any(token in ln for ln in lines), "the audit log contains a token"


def find_secrets(text: str, secrets: list[str]):
    """(secret, offset) of each occurrence of a secret in text. The logs of a whole suite are large and the
    secrets many, so tokens (all JWTs, sharing a few prefixes) are found by their prefix and then looked up by
    length; only the other secrets (passwords, few) are searched for one by one."""
    tokens: dict[str, dict[int, set[str]]] = {}
    others = []
    for s in secrets:
        if s.count(".") >= 2:
            tokens.setdefault(s[:3], {}).setdefault(len(s), set()).add(s)
        else:
            others.append(s)
    for prefix, by_length in tokens.items():
        at = text.find(prefix)
        while at >= 0:
            for length, group in by_length.items():
                if text[at:at + length] in group:
                    yield text[at:at + length], at
            at = text.find(prefix, at + 1)
    for s in others:
        at = text.find(s)
        while at >= 0:
            yield s, at
            at = text.find(s, at + 1)


@pytest.mark.run_last
def test_no_token_or_password_in_any_log(pg: PgCluster):
    """Every tokengate log and audit log line written during the whole suite: no token or password."""
    secrets = [s for s in SECRETS if len(s) >= 8]
    if not secrets:
        pytest.skip("no tokens or passwords were used in this run")
    logs = all_tokengate_logs()
    assert logs, "no tokengate logs were collected"
    leaks = []
    for label, text in logs:
        for secret, at in find_secrets(text, secrets):
            start = text.rfind("\n", 0, at) + 1
            end = text.find("\n", at)
            line = text[start:end if end >= 0 else len(text)]
            n = text.count("\n", 0, at) + 1
            leaks.append(f"{label} line {n}: {line.replace(secret, '<' + mask(secret) + '>')[:300]}")
    # Tokens must not reach the upstream either (passwords do: the harness creates roles with them).
    tokens = [s for s in secrets if s.count(".") >= 2]
    leaks += [f"PostgreSQL's log contains token {mask(s)}" for s, _ in find_secrets(pg.log_since(0), tokens)]
    assert not leaks, f"{len(leaks)} secrets in logs:\n" + "\n".join(leaks[:30])


def test_crafted_jwt_headers_are_refused_and_audited(proxy: Target, tokengate: TokengateProcess, mint_token):
    """A token with a hostile header (deep nesting, a huge kid, not JSON, duplicate keys, a number out of range) is refused as a wrong
    password, and each attempt leaves an audit line: a crafted header must not end the connection unrecorded."""
    _, token, _ = mint_token(user="analyst", name=uniq("crafted"), duration="1h")
    _, p, s = token.split(".")
    headers = {
        "deep nesting": b"[" * 5000 + b"]" * 5000,
        "huge kid": json.dumps({"alg": "HS256", "kid": "k" * 3000}).encode(),
        "not JSON": b"\xff\xfe{not json",
        "duplicate alg": b'{"alg":"none","alg":"HS256","kid":"x"}',
        "number overflow": b'{"alg":"HS256","kid":"x","n":1e999999}',
    }
    time.sleep(0.2)
    before = len(tokengate.audit_path.read_bytes().splitlines())
    for what, header in headers.items():
        r = try_login(proxy, "analyst", f"{b64url(header)}.{p}.{s}")
        assert r.error is not None and r.error.sqlstate == "28P01", f"{what}: {r.error}"
    deadline = time.monotonic() + 5
    while True:
        lines = [json.loads(x) for x in tokengate.audit_path.read_bytes().splitlines()[before:]]
        # Longer than a token may be (2,048 bytes), a token-shaped secret is checked as a password: audited too.
        denied = [x for x in lines if x.get("event") == "login" and x.get("outcome") == "denied"]
        if len(denied) >= len(headers) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(denied) >= len(headers), f"{len(denied)} audit lines for {len(headers)} crafted tokens: {lines}"

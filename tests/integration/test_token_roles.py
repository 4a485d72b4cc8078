# A token follows its role, checked at every login (docs/security.md, "Tokens follow the role"): the role must still
# exist with the OID the token was issued to (dropped and created again under the same name: refused), have LOGIN,
# and be within VALID UNTIL; and a revocation that arrives while a session is logging in is not missed.
# Tokens appear in messages only through mask().
from __future__ import annotations

import threading
import time

import pytest

import pgwire
from conftest import PgCluster, Target, TokengateProcess, create_token, mask

AUTH_FAILED = 'password authentication failed for user "{}"'


@pytest.fixture
def trust_proxy(proxy: Target, tokengate: TokengateProcess) -> Target:
    if "trust" not in tokengate.argv:
        pytest.skip("tokens of fresh roles need their passwords in the userlist outside trust mode")
    return proxy


def token_login(t: Target, user: str, token: str) -> pgwire.LoginResult:
    with t.wire() as w:
        r = pgwire.login(w, user, token)
        if r.ok:
            w.send(pgwire.terminate_message())
        return r


def test_a_token_of_a_dropped_and_recreated_role_is_refused(trust_proxy: Target, pg: PgCluster, fresh_role):
    role, pw = fresh_role()
    _, token, _ = create_token(trust_proxy, user=role, password=pw, duration="1h")
    assert token_login(trust_proxy, role, token).ok, f"the token {mask(token)} did not work for its own role"
    mark = pg.log_mark()
    with pg.admin_conn() as c:
        c.execute(f"DROP ROLE {role}")
        c.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'another-one'")
    r = token_login(trust_proxy, role, token)
    assert r.error is not None, f"the token {mask(token)} logged in as the new role of the same name"
    assert (r.error.sqlstate, r.error.message) == ("28P01", AUTH_FAILED.format(role)), r.error
    assert not [ln for ln in pg.log_since(mark).splitlines()
                if "connection authorized" in ln and f"user={role} " in ln + " "], "a session reached the upstream"


def test_a_token_of_a_dropped_role_is_refused(trust_proxy: Target, pg: PgCluster, fresh_role):
    role, pw = fresh_role()
    _, token, _ = create_token(trust_proxy, user=role, password=pw, duration="1h")
    with pg.admin_conn() as c:
        c.execute(f"DROP ROLE {role}")
    r = token_login(trust_proxy, role, token)
    assert r.error is not None and (r.error.sqlstate, r.error.message) == ("28P01", AUTH_FAILED.format(role)), r.error


def test_a_token_of_a_nologin_role_is_refused(trust_proxy: Target, pg: PgCluster, fresh_role):
    role, pw = fresh_role()
    _, token, _ = create_token(trust_proxy, user=role, password=pw, duration="1h")
    with pg.admin_conn() as c:
        c.execute(f"ALTER ROLE {role} NOLOGIN")
    r = token_login(trust_proxy, role, token)
    assert r.error is not None, f"a NOLOGIN role logged in with token {mask(token)}"
    # PostgreSQL's words for a NOLOGIN role.
    assert (r.error.sqlstate, r.error.message) == ("28000", f'role "{role}" is not permitted to log in'), r.error
    with pg.admin_conn() as c:
        c.execute(f"ALTER ROLE {role} LOGIN")
    assert token_login(trust_proxy, role, token).ok, "LOGIN given back: the token works again"


def test_a_token_of_a_role_past_valid_until_is_refused(trust_proxy: Target, pg: PgCluster, fresh_role):
    """In trust mode PostgreSQL itself never looks at VALID UNTIL (it is about passwords): tokengate must."""
    role, pw = fresh_role()
    _, token, _ = create_token(trust_proxy, user=role, password=pw, duration="1h")
    with pg.admin_conn() as c:
        c.execute(f"ALTER ROLE {role} VALID UNTIL '2001-02-03 04:05:06+00'")
    r = token_login(trust_proxy, role, token)
    assert r.error is not None, f"a role past VALID UNTIL logged in with token {mask(token)}"
    assert (r.error.sqlstate, r.error.message) == ("28P01", AUTH_FAILED.format(role)), r.error
    with pg.admin_conn() as c:
        c.execute(f"ALTER ROLE {role} VALID UNTIL 'infinity'")
    assert token_login(trust_proxy, role, token).ok


def test_a_revocation_during_a_login_is_not_missed(trust_proxy: Target, fresh_role):
    """Tokens revoked while sessions keep logging in with them: a login that was under way when its token was
    revoked either fails, or its session is ended with 57P01 at once; none goes on with a revoked token."""
    role, pw = fresh_role()
    names_tokens = [create_token(trust_proxy, user=role, password=pw, duration="1h")[:2] for _ in range(3)]
    survivors: list[str] = []
    problems: list[str] = []
    lock = threading.Lock()
    revoked = threading.Event()

    def churn(token: str) -> None:
        while True:
            try:
                w = trust_proxy.wire()
            except OSError:
                continue
            try:
                r = pgwire.login(w, role, token)
                if not r.ok:
                    if r.error.sqlstate != "28P01":
                        with lock:
                            problems.append(str(r.error))
                    return  # refused: the revocation was seen at login
                if not revoked.is_set():
                    continue  # logged in before the revocation: log in again
                # Logged in while the revocation happened: the session must be ended.
                msgs, _closed = w.read_until_closed(3)
                errs = [m.error() for m in msgs if m.tag == b"E"]
                if not (errs and errs[0].sqlstate == "57P01"):
                    with lock:
                        survivors.append(f"{mask(token)}: {msgs}")
                return
            finally:
                w.close()

    threads = [threading.Thread(target=churn, args=(tok,)) for _, tok in names_tokens for _ in range(3)]
    for th in threads:
        th.start()
    time.sleep(0.5)
    with trust_proxy.connect(user=role, password=pw) as conn:
        for name, _ in names_tokens:
            conn.execute(f"DROP API TOKEN {name}")
    revoked.set()
    for th in threads:
        th.join(15)
    assert not problems, problems
    assert not survivors, f"sessions outlived the revocation of their token: {survivors}"
    for _, token in names_tokens:
        assert token_login(trust_proxy, role, token).error is not None

# Who administers tokens, and for whom (issue 9): no role is an administrator by its name, a CREATEROLE role
# that joins the admin role itself is none, and a non-superuser administrator cannot act for superusers, roles
# with REPLICATION, BYPASSRLS or CREATEROLE, or other administrators. Also: sessions that logged in with a token
# cannot create tokens unless token_sessions.manage_credentials, and DROP API TOKEN takes expired tokens and ends
# their sessions. Tokens appear in messages only through mask().
from __future__ import annotations

import time
import uuid

import psycopg
import pytest

import pgwire
from conftest import (ROLES, PgCluster, Target, binary_has_flag, create_token, fresh_password, mask,
                      tokengate_binary)

PROTECTED_DETAIL = ("An administrator that is not a superuser cannot act for superusers, roles with REPLICATION, "
                    "BYPASSRLS or CREATEROLE, or other administrators.")


def uniq(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def sql_error(t: Target, user: str, password: str | None, sql: str) -> psycopg.Error:
    """Runs `sql` through `t` as `user` and returns the error it must raise."""
    with t.connect(user=user, password=password) as conn:
        with pytest.raises(psycopg.Error) as e:
            conn.execute(sql)
    return e.value


def rows_of(t: Target, user: str, password: str | None, sql: str) -> list[dict]:
    with t.connect(user=user, password=password) as conn:
        cur = conn.execute(sql)
        cols = [d.name for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]


def token_login(t: Target, user: str, token: str) -> pgwire.LoginResult:
    with t.wire() as c:
        return pgwire.login(c, user, token)


def require_flag(flag: str) -> None:
    if not binary_has_flag(tokengate_binary(), flag):
        pytest.skip(f"this tokengate binary has no {flag}")


@pytest.fixture
def admin_role(pg: PgCluster) -> str:
    """The session tokengate's admin role (the default name), created by a superuser if missing."""
    with pg.admin_conn() as c:
        if c.execute("SELECT 1 FROM pg_roles WHERE rolname = 'tokengate_admin'").fetchone() is None:
            c.execute("CREATE ROLE tokengate_admin NOLOGIN")
    return "tokengate_admin"


def test_a_role_named_admin_cannot_mint_a_superusers_token(spawn_tokengate):
    """The reproduced attack: a non-superuser role called `admin` ran CREATE API TOKEN x FOR USER postgres and
    logged in with the token as a superuser. On a cluster of its own, where `admin` is not a superuser."""
    cluster = PgCluster()
    try:
        cluster.start()
        root_pw = fresh_password("root")
        with cluster.admin_conn() as c:
            c.execute("ALTER ROLE admin NOSUPERUSER")
            c.execute(f"CREATE ROLE root LOGIN SUPERUSER PASSWORD '{root_pw}'")
        tg = spawn_tokengate(upstream=(str(cluster.socket_dir), cluster.port),
                             extra_args=["--upstream-auth", "trust", "--max-failed-logins", "100000"])
        t = tg.target()
        err = sql_error(t, "admin", ROLES["admin"], "CREATE API TOKEN x FOR USER postgres")
        assert err.sqlstate == "42501", f"{err.sqlstate} {err}"
        assert str(err.diag.message_primary) == 'permission denied to create API tokens for user "postgres"'
        # Not an administrator at all: nothing of anyone else's.
        for sql in ("SHOW API TOKENS FOR ALL USERS", "SHOW API TOKENS FOR USER postgres",
                    "ALTER ROLE postgres SET API TOKEN MAX DURATION '1000 days'"):
            err = sql_error(t, "admin", ROLES["admin"], sql)
            assert err.sqlstate == "42501", f"{sql}: {err.sqlstate} {err}"
        # Nothing was issued for postgres, so no login as postgres with a token can exist.
        assert rows_of(t, "root", root_pw, "SHOW API TOKENS FOR USER postgres") == []
        # The admin role's name is no better than `admin`: a role named like it is no administrator either.
        named_pw = fresh_password("named")
        with cluster.admin_conn() as c:
            c.execute(f"CREATE ROLE tokengate_admin LOGIN PASSWORD '{named_pw}'")
        err = sql_error(t, "tokengate_admin", named_pw, "CREATE API TOKEN x FOR USER postgres")
        assert err.sqlstate == "42501", f"{err.sqlstate} {err}"
    finally:
        cluster.stop()


def test_createrole_joining_the_admin_role_is_no_administrator(proxy: Target, direct: Target, admin_role: str,
                                                                fresh_role):
    creator, creator_pw = fresh_role("LOGIN CREATEROLE", prefix="tg_creator")
    # PostgreSQL 15 lets a CREATEROLE role grant itself membership in any non-superuser role.
    with direct.connect(user=creator, password=creator_pw) as conn:
        conn.execute(f"GRANT {admin_role} TO {creator}")
    for sql in (f"CREATE API TOKEN {uniq('x')} FOR USER postgres", f"CREATE API TOKEN {uniq('x')} FOR USER analyst",
                "SHOW API TOKENS FOR ALL USERS"):
        err = sql_error(proxy, creator, creator_pw, sql)
        assert err.sqlstate == "42501", f"{sql}: {err.sqlstate} {err}"
        assert err.diag.message_detail is None, f"{sql}: refused as a non-administrator, not a protected target"
    assert not [r for r in rows_of(proxy, "admin", None, "SHOW API TOKENS FOR USER postgres")
                if r["created_by"] == creator]


def test_a_non_superuser_administrator_cannot_act_for_protected_roles(proxy: Target, pg: PgCluster,
                                                                     admin_role: str, fresh_role):
    boss, boss_pw = fresh_role("LOGIN", prefix="tg_boss")
    peer, _ = fresh_role("LOGIN", prefix="tg_peer")
    repl, _ = fresh_role("LOGIN REPLICATION", prefix="tg_repl")
    rls, _ = fresh_role("LOGIN BYPASSRLS", prefix="tg_rls")
    maker, _ = fresh_role("LOGIN CREATEROLE", prefix="tg_maker")
    plain, _ = fresh_role("LOGIN", prefix="tg_plain")
    with pg.admin_conn() as c:  # granted by a superuser: these count
        c.execute(f"GRANT {admin_role} TO {boss}")
        c.execute(f"GRANT {admin_role} TO {peer}")
    _, su_token, _ = create_token(proxy, user="admin", name=uniq("su"), duration="1h")
    create_token(proxy, user="admin", name=uniq("peer"), for_user=peer, duration="1h")

    for victim in ("postgres", "admin", repl, rls, maker, peer):
        err = sql_error(proxy, boss, boss_pw, f"CREATE API TOKEN {uniq('x')} FOR USER {victim}")
        assert err.sqlstate == "42501", f"for {victim}: {err.sqlstate} {err}"
        assert err.diag.message_detail == PROTECTED_DETAIL, f"for {victim}: {err.diag.message_detail}"
        for sql in (f"SHOW API TOKENS FOR USER {victim}", f"DROP ALL API TOKENS FOR USER {victim}",
                    f"ALTER ROLE {victim} SET API TOKEN MAX DURATION '1000 days'"):
            err = sql_error(proxy, boss, boss_pw, sql)
            assert err.sqlstate == "42501", f"{sql}: {err.sqlstate} {err}"
    # Ordinary roles: allowed, and the token works.
    _, plain_token, _ = create_token(proxy, user=boss, password=boss_pw, name=uniq("plain"), for_user=plain,
                                     duration="1h")
    assert token_login(proxy, plain, plain_token).ok, f"{plain} with {mask(plain_token)}"
    # FOR ALL USERS leaves protected roles' tokens out, without an error.
    owners = {r["user"] for r in rows_of(proxy, boss, boss_pw, "SHOW API TOKENS FOR ALL USERS")}
    assert plain in owners
    assert not owners & {"postgres", "admin", repl, rls, maker, peer}, owners
    # A superuser still sees them all, and the superuser's token still works.
    owners_su = {r["user"] for r in rows_of(proxy, "admin", None, "SHOW API TOKENS FOR ALL USERS")}
    assert {"admin", peer, plain} <= owners_su
    assert token_login(proxy, "admin", su_token).ok, f"admin with {mask(su_token)}"

    # Membership revoked: no administrator any more, at once (acting for others is never answered from a cache).
    with pg.admin_conn() as c:
        c.execute(f"REVOKE {admin_role} FROM {boss}")
    err = sql_error(proxy, boss, boss_pw, f"CREATE API TOKEN {uniq('x')} FOR USER {plain}")
    assert err.sqlstate == "42501" and err.diag.message_detail is None, f"{err.sqlstate} {err}"


def test_token_sessions_cannot_create_tokens_by_default(spawn_tokengate, pg: PgCluster):
    require_flag("--token-sessions-manage-credentials")
    tg = spawn_tokengate(upstream=(str(pg.socket_dir), pg.port),
                         extra_args=["--upstream-auth", "trust", "--max-failed-logins", "100000"])
    t = tg.target()
    name, token, _ = create_token(t, user="analyst", name=uniq("base"), duration="1h")
    with t.connect(user="analyst", password=token) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
            conn.execute(f"CREATE API TOKEN {uniq('child')} MAX DURATION '1h'")
        assert str(e.value.diag.message_primary) == "permission denied to create API tokens"
        assert "token_sessions.manage_credentials" in (e.value.diag.message_hint or ""), e.value.diag.message_hint
        # Listing and dropping stay allowed; the session that drops its own token ends with it.
        assert [r[0] for r in conn.execute("SHOW API TOKENS").fetchall()].count(name) == 1
    # A password session may create tokens as ever.
    create_token(t, user="analyst", name=uniq("pw"), duration="1h")


def test_token_sessions_may_create_tokens_when_configured(spawn_tokengate, pg: PgCluster):
    require_flag("--token-sessions-manage-credentials")
    tg = spawn_tokengate(upstream=(str(pg.socket_dir), pg.port),
                         extra_args=["--upstream-auth", "trust", "--max-failed-logins", "100000",
                                     "--token-sessions-manage-credentials", "true"])
    t = tg.target()
    _, token, _ = create_token(t, user="analyst", name=uniq("base"), duration="1h")
    _, child, _ = create_token(t, user="analyst", password=token, name=uniq("child"), duration="1h")
    assert token_login(t, "analyst", child).ok, f"analyst with {mask(child)}"


def test_drop_api_token_takes_an_expired_token_and_ends_its_session(spawn_tokengate, pg: PgCluster):
    # expiry_ends_sessions off (named, whatever the default): a session may outlive its token's expiry, and
    # dropping the expired token must still end it.
    tg = spawn_tokengate(upstream=(str(pg.socket_dir), pg.port),
                         extra_args=["--upstream-auth", "trust", "--max-failed-logins", "100000",
                                     "--expiry-ends-sessions", "false"])
    t = tg.target()
    name, token, expires_at = create_token(t, user="analyst", name=uniq("brief"), duration="2s")
    victim = t.wire()
    try:
        r = pgwire.login(victim, "analyst", token)
        assert r.ok, f"login with {mask(token)}: {r.error}"
        time.sleep(max(0.0, expires_at.timestamp() - time.time()) + 1.5)
        assert pgwire.data_rows_text(victim.simple_query("select 1")) == [("1",)]
        # Expired is not missing: the drop succeeds and ends the session.
        with t.connect(user="analyst") as conn:
            assert conn.execute(f"DROP API TOKEN {name}").statusmessage == "DROP API TOKEN"
            status = [r[5] for r in conn.execute("SHOW API TOKENS").fetchall() if r[0] == name]
        assert status == ["revoked"], status
        msgs, closed = victim.read_until_closed(timeout=5)
        errs = [m.error() for m in msgs if m.tag == b"E"]
        assert errs and errs[0].severity == "FATAL" and errs[0].sqlstate == "57P01", msgs
        assert "API token revoked" in (errs[0].message or ""), errs[0]
        assert closed, "connection not closed after the FATAL error"
    finally:
        victim.close()


def test_drop_all_api_tokens_takes_expired_tokens(proxy: Target, fresh_role):
    user, pw = fresh_role("LOGIN", prefix="tg_dropall")
    create_token(proxy, user=user, password=pw, name=uniq("brief"), duration="1s")
    create_token(proxy, user=user, password=pw, name=uniq("long"), duration="1h")
    time.sleep(2)
    with proxy.connect(user=user, password=pw) as conn:
        assert conn.execute("DROP ALL API TOKENS").statusmessage == "DROP API TOKENS 2"
        assert {r[5] for r in conn.execute("SHOW API TOKENS").fetchall()} == {"revoked"}

# GET /api/users: the roles an administrator may act for (the web page's user picker), against the catalog and
# against what GET /api/tokens?user= then allows: superusers list every LOGIN role, a non-superuser
# administrator all but the protected ones (and itself), anyone else is refused.
from __future__ import annotations

import pytest

from conftest import remember_secret
from http_client import describe


@pytest.fixture
def admin_role(pg) -> str:
    """The session tokengate's administrator role (the default name), created by a superuser if missing."""
    with pg.admin_conn() as c:
        if c.execute("SELECT 1 FROM pg_roles WHERE rolname = 'tokengate_admin'").fetchone() is None:
            c.execute("CREATE ROLE tokengate_admin NOLOGIN")
    return "tokengate_admin"


def login_roles(pg) -> list[str]:
    with pg.admin_conn() as c:
        rows = c.execute('SELECT rolname FROM pg_roles WHERE rolcanlogin ORDER BY rolname COLLATE "C"').fetchall()
    return [r[0] for r in rows]


def session(http_api, user, password):
    s = http_api.login(user, password)
    remember_secret(s.cookie)
    return s


def test_superuser_lists_every_login_role(http_api, pg):
    r = http_api.call("GET", "/api/users", token=session(http_api, "admin", "admin"))
    assert r.status_code == 200, describe(r)
    body = r.json()
    assert list(body) == ["users", "truncated"] and body["truncated"] is False
    assert body["users"] == login_roles(pg)
    assert {"admin", "analyst", "postgres"} <= set(body["users"])
    assert "nologin_role" not in body["users"] and "service_accounts" not in body["users"]


def test_non_superuser_administrator_lists_only_roles_it_may_act_for(http_api, pg, fresh_role, admin_role):
    me, password = fresh_role("LOGIN", prefix="tg_helpdesk")
    other_admin, _ = fresh_role("LOGIN", prefix="tg_other_admin")
    creator, _ = fresh_role("LOGIN CREATEROLE", prefix="tg_creator")
    plain, _ = fresh_role("LOGIN", prefix="tg_plain")
    with pg.admin_conn() as c:
        c.execute(f"GRANT {admin_role} TO {me}, {other_admin}")
    web = session(http_api, me, password)
    r = http_api.call("GET", "/api/users", token=web)
    assert r.status_code == 200, describe(r)
    users = r.json()["users"]
    assert me in users and plain in users and "analyst" in users
    for protected in ("admin", "postgres", other_admin, creator):
        assert protected not in users, f"{protected} is listed for a non-superuser administrator: {users}"
    assert users == sorted(users, key=lambda u: u.encode())
    # The list is exactly what the token API then lets this administrator do.
    for user in (plain, "analyst"):
        t = http_api.call("GET", f"/api/tokens?user={user}", token=web)
        assert t.status_code == 200, (user, describe(t))
    t = http_api.call("GET", "/api/tokens?user=admin", token=web)
    assert t.status_code == 403 and t.json()["code"] == "42501", describe(t)


def test_others_are_refused(http_api, fresh_role):
    user, password = fresh_role("LOGIN")
    r = http_api.call("GET", "/api/users", token=session(http_api, user, password))
    assert r.status_code == 403, describe(r)
    assert r.json() == {"code": "42501", "message": "permission denied to list users",
                        "detail": "Only tokengate administrators may act for other users."}
    r = http_api.call("GET", "/api/users")
    assert r.status_code == 401 and r.json()["code"] == "28000", describe(r)
    r = http_api.call("GET", "/api/users?all=true", token=session(http_api, "admin", "admin"))
    assert r.status_code == 422 and r.json()["message"] == 'unknown query parameter "all"', describe(r)

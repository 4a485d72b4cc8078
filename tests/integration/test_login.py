# Logging in with ordinary passwords: the upstream's verdicts (SQLSTATE, message) reach the client unchanged (issue 2).
#
# libpq does not expose the SQLSTATE of a failed connection, so the startup phase is driven with
# tests/integration/pgwire.py, which speaks SCRAM-SHA-256, MD5 and cleartext like libpq.
from __future__ import annotations

import time
import uuid

import pytest

import pgwire
from conftest import ROLES, Target, Twin

# Each user makes the upstream ask for a different method (see PgCluster.HBA).
UPSTREAM_METHOD = {
    "admin": "SASL",
    "analyst": "SASL",
    "md5user": "MD5Password",
    "plainuser": "CleartextPassword",
}


def wire_login(t: Target, user: str, password: str, database: str = "postgres",
               extra: dict[str, str] | None = None) -> pgwire.LoginResult:
    with t.wire() as c:
        r = pgwire.login(c, user, password, database, extra)
        if r.error is not None:
            # After a FATAL error the server closes; nothing else may follow.
            rest, closed = c.read_until_closed(timeout=5)
            assert closed, f"connection still open 5 s after {r.error}"
            assert rest == [], f"messages after the FATAL error: {rest}"
        else:
            c.send(pgwire.terminate_message())
        return r


def error_of(r: pgwire.LoginResult) -> dict[str, str]:
    assert r.error is not None, f"login unexpectedly succeeded; messages: {r.messages}"
    return r.error.visible()


@pytest.mark.parametrize("user", sorted(UPSTREAM_METHOD))
def test_correct_password_works(twin: Twin, user: str):
    def who(t: Target):
        with t.connect(user=user) as conn:
            return conn.execute("select current_user, session_user, current_database()").fetchone()

    assert twin.run(who) == (user, user, "postgres")


@pytest.mark.parametrize("user", sorted(UPSTREAM_METHOD))
def test_auth_methods(target: Target, user: str):
    r = wire_login(target, user, ROLES[user])
    assert r.ok, f"login of {user} failed: {r.error}"
    if target.name == "direct":
        # The cluster is set up so that the proxy has to speak each upstream method once.
        assert r.auth_requests[0] == UPSTREAM_METHOD[user], r.messages
    else:
        # tokengate asks the client for a cleartext password whatever the upstream asks.
        assert r.auth_requests == ["CleartextPassword", "Ok"], (
            f"tokengate should ask for a cleartext password and then say Ok; got {r.auth_requests}: {r.messages}")
    assert r.backend_key is not None, f"no BackendKeyData: {r.messages}"
    assert r.ready_status == "I"


@pytest.mark.parametrize("user", ["admin", "md5user", "plainuser"])
def test_wrong_password_is_28P01(twin: Twin, user: str):
    err = twin.run(lambda t: error_of(wire_login(t, user, "not-the-password")), "ErrorResponse")
    assert err["sqlstate"] == "28P01", err
    assert err["severity"] == "FATAL"
    assert err["message"] == f'password authentication failed for user "{user}"'


@pytest.mark.parametrize("size", [65, 4097, 65000])
def test_a_long_wrong_password_is_28P01_as_in_postgresql(twin: Twin, size: int):
    """PostgreSQL takes a password up to its 65,535-byte message limit and hashes it (HMAC keys longer than a block
    are hashed first, RFC 2104). A password longer than Botan's HMAC key limit (4,096 bytes) made the verification
    throw and ended tokengate: one unauthenticated connection took the whole proxy down."""
    err = twin.run(lambda t: error_of(wire_login(t, "admin", "p" * size)), "ErrorResponse")
    assert (err["sqlstate"], err["message"]) == ("28P01", 'password authentication failed for user "admin"'), err
    if twin.is_proxy:
        assert wire_login(twin.target, "admin", "admin").error is None, "tokengate stopped serving"


def test_empty_password(twin: Twin):
    # libpq refuses to send an empty password itself; PostgreSQL answers 28P01 when it gets one.
    err = twin.run(lambda t: error_of(wire_login(t, "admin", "")), "ErrorResponse")
    assert err["sqlstate"] in ("28P01", "08P01"), err


def test_unknown_database_is_3D000(twin: Twin):
    err = twin.run(lambda t: error_of(wire_login(t, "admin", "admin", "no_such_db")), "ErrorResponse")
    assert err["sqlstate"] == "3D000", err
    assert err["message"] == 'database "no_such_db" does not exist'


def test_unknown_role_same_as_postgres(twin: Twin):
    err = twin.run(lambda t: error_of(wire_login(t, "no_such_role", "whatever")), "ErrorResponse")
    # PostgreSQL 15 with scram-sha-256 runs a mock exchange and says 28P01, not "role does not exist".
    assert err["sqlstate"] in ("28P01", "28000"), err


def test_nologin_role_is_28000(twin: Twin):
    err = twin.run(lambda t: error_of(wire_login(t, "nologin_role", "nologin_role")), "ErrorResponse")
    assert err["sqlstate"] == "28000", err
    assert err["message"] == 'role "nologin_role" is not permitted to log in'


def test_parameter_status_relayed(twin: Twin):
    def params(t: Target):
        r = wire_login(t, "analyst", "analyst", extra={"application_name": "tg-login-test"})
        assert r.ok, r.error
        return r.parameters

    p = twin.run(params, "ParameterStatus set")
    # pgjdbc reads these at startup.
    for name in ("server_version", "integer_datetimes", "standard_conforming_strings", "client_encoding",
                 "TimeZone", "DateStyle", "application_name", "session_authorization", "is_superuser"):
        assert name in p, f"ParameterStatus {name} missing: {p}"
    assert p["application_name"] == "tg-login-test"
    assert p["session_authorization"] == "analyst"


def test_startup_parameters_passed_on(twin: Twin):
    """user, database, application_name, options and arbitrary GUCs all reach the upstream."""

    def settings(t: Target):
        with t.connect(
            user="analyst",
            application_name="tg app",
            options="-c search_path=tg_schema,public -c statement_timeout=12345",
        ) as conn:
            return conn.execute(
                "select current_setting('application_name'), current_setting('search_path'), "
                "current_setting('statement_timeout'), current_setting('extra_float_digits')"
            ).fetchone()

    assert twin.run(settings) == ("tg app", "tg_schema,public", "12345ms", "1")

    def raw_guc(t: Target):
        # pgjdbc sends extra_float_digits as its own startup parameter, not in options.
        with t.wire() as c:
            r = pgwire.login(c, "analyst", "analyst", extra={"extra_float_digits": "3", "DateStyle": "ISO"})
            assert r.ok, r.error
            rows = pgwire.data_rows_text(c.simple_query("show extra_float_digits"))
            c.send(pgwire.terminate_message())
            return rows

    assert twin.run(raw_guc) == [("3",)]


def test_psql_login_error_text(twin: Twin):
    """What a person sees in psql for a wrong password is the same through tokengate."""

    def run(t: Target):
        r = t.psql("-c", "select 1", user="analyst", password="wrong")
        return r.rc, t.normalize(r.stderr)

    rc, stderr = twin.run(run, "psql rc and stderr")
    assert rc == 2
    assert 'password authentication failed for user "analyst"' in stderr


def test_many_logins_in_a_row(target: Target):
    """Logins do not leak or wedge: 30 sequential good and bad logins all get the right answer."""
    for i in range(15):
        r = wire_login(target, "analyst", "analyst")
        assert r.ok, f"login {i}: {r.error}"
        r = wire_login(target, "analyst", "bad")
        assert r.error is not None and r.error.sqlstate == "28P01", f"login {i}: {r.messages}"


def test_passwords_never_logged(proxy: Target, tokengate, pg):
    """No password, right or wrong, ever appears in tokengate's log."""
    role = f"tg_secret_{uuid.uuid4().hex[:8]}"
    secret = f"right-{uuid.uuid4().hex}"
    wrong = f"wrong-{uuid.uuid4().hex}"
    with pg.admin_conn() as c:
        c.execute(f"create role {role} login password '{secret}'")
    try:
        mark = tokengate.log_mark()
        with proxy.connect(user=role, password=secret) as conn:
            conn.execute("select 1")
        assert wire_login(proxy, role, wrong).error is not None
        assert wire_login(proxy, "analyst", wrong).error is not None
        time.sleep(0.2)  # let the log lines of the last login land
        log = tokengate.log_since(mark)
        for what, pw in (("right password", secret), ("wrong password", wrong)):
            leaked = [ln.replace(pw, "<PASSWORD>") for ln in log.splitlines() if pw in ln]
            assert not leaked, f"the {what} appears in tokengate's log: {leaked}"
    finally:
        with pg.admin_conn() as c:
            c.execute(f"drop role {role}")

# Identity is decided once, by tokengate (docs/security.md, "Identity"): a startup packet that could make the upstream
# see another role than the one tokengate authenticated is refused before any password is asked for, the upstream
# gets a packet rebuilt from the checked parameters, and replication connections follow the same rules.
from __future__ import annotations

import json
import time
import uuid

import pytest

import pgwire
from conftest import PgCluster, Target, TokengateProcess, Twin, create_token, mask


def refused_before_password(t: Target, params: dict[str, str]) -> pgwire.ErrorFields:
    """Sends a startup packet; the answer must be one FATAL error and a close, without a password request."""
    with t.wire() as w:
        w.send(pgwire.startup_message(params))
        msgs, closed = w.read_until_closed(5)
    assert closed, f"{params}: connection still open; got {msgs}"
    assert [m.tag for m in msgs] == [b"E"], f"{params}: expected one ErrorResponse, got {msgs}"
    err = msgs[0].error()
    assert err.severity == "FATAL", err
    return err


def raw_startup(pairs: list[tuple[str, str]]) -> bytes:
    """A StartupMessage with repeated keys (pgwire.startup_message takes a dict)."""
    body = b"".join(pgwire.cstr(k) + pgwire.cstr(v) for k, v in pairs) + b"\0"
    return (len(body) + 8).to_bytes(4, "big") + pgwire.PROTOCOL_3_0.to_bytes(4, "big") + body


def sessions_as(pg: PgCluster, mark: int, user: str) -> list[str]:
    return [ln for ln in pg.log_since(mark).splitlines()
            if "connection authorized" in ln and f"user={user} " in ln + " "]


def test_repeated_user_cannot_become_another_role(proxy: Target, pg: PgCluster):
    """The reproduced attack: user=analyst … user=postgres with analyst's password gave a postgres superuser session
    (tokengate checked the first `user`, PostgreSQL kept the last). Now the packet is refused before any password."""
    mark = pg.log_mark()
    with proxy.wire() as w:
        w.send(raw_startup([("user", "analyst"), ("database", "postgres"), ("user", "postgres")]))
        msgs, _ = w.read_until_closed(1)
        if any(m.tag == b"R" for m in msgs):  # asked for a password: answer with analyst's, as the attacker did
            w.send(pgwire.password_message(b"analyst\0"))
            more, _ = w.read_until_closed(5)
            msgs += more
    errors = [m.error() for m in msgs if m.tag == b"E"]
    assert not any(m.tag == b"Z" for m in msgs), f"a session was opened: {msgs}"
    assert [m.tag for m in msgs] == [b"E"], f"expected one ErrorResponse and no password request: {msgs}"
    assert (errors[0].sqlstate, errors[0].message) == (
        "08P01", 'invalid startup packet: parameter "user" appears more than once'), errors[0]
    assert not sessions_as(pg, mark, "postgres"), "a postgres session reached the upstream"
    assert not sessions_as(pg, mark, "analyst"), "an analyst session reached the upstream"


@pytest.mark.parametrize("pairs", [
    [("user", "analyst"), ("database", "postgres"), ("database", "template1")],
    [("user", "analyst"), ("DateStyle", "ISO"), ("datestyle", "SQL")],
    [("user", "analyst"), ("options", "-c work_mem=1MB"), ("options", "-c role=admin")],
], ids=["database", "guc-case", "options"])
def test_any_repeated_parameter_is_refused(proxy: Target, pairs):
    with proxy.wire() as w:
        w.send(raw_startup(pairs))
        msgs, closed = w.read_until_closed(5)
    assert closed and [m.tag for m in msgs] == [b"E"], msgs
    assert msgs[0].error().sqlstate == "08P01" and "appears more than once" in msgs[0].error().message


@pytest.mark.parametrize("params,fragment", [
    ({"user": "analyst", "session_authorization": "postgres"}, 'startup parameter "session_authorization"'),
    ({"user": "analyst", "role": "admin"}, 'startup parameter "role"'),
    ({"user": "analyst", "options": "-c session_authorization=postgres"}, 'startup option "session_authorization"'),
    ({"user": "analyst", "options": "--role=admin"}, 'startup option "role"'),
    ({"user": "analyst", "options": "-P"}, 'startup option "-P"'),
    ({"user": "analyst", "not a guc": "x"}, 'startup parameter "not a guc"'),
    ({"user": "ana\nlyst"}, "the user name contains a control character"),
    ({"user": "analyst", "database": "post\x1bgres"}, "the database name contains a control character"),
])
def test_identity_changing_or_unchecked_parameters_are_refused(proxy: Target, pg: PgCluster, params, fragment):
    mark = pg.log_mark()
    err = refused_before_password(proxy, params)
    assert err.sqlstate == "08P01" and fragment in err.message, err
    assert not [ln for ln in pg.log_since(mark).splitlines() if "connection authorized" in ln and "tokengate-control" not in ln]


def test_options_settings_pass(twin: Twin):
    """-c name=value and --name=value settings reach the upstream, rebuilt; names with '-' read as PostgreSQL reads
    them."""

    def settings(t: Target):
        with t.connect(user="analyst", options=r"-c application_name=a\ b --statement-timeout=4321 -cgeqo=off") as c:
            return c.execute("select current_setting('application_name'), current_setting('statement_timeout'), "
                             "current_setting('geqo')").fetchone()

    assert twin.run(settings) == ("a b", "4321ms", "off")


def test_long_names_are_cut_as_postgresql_cuts_them(twin: Twin, pg: PgCluster):
    """PostgreSQL keeps the first 63 bytes of a user name; tokengate authenticates that same role."""
    name = "tg_long_" + uuid.uuid4().hex + "x" * 30
    role = name[:63]
    with pg.admin_conn() as c:
        c.execute(f'CREATE ROLE "{role}" LOGIN PASSWORD \'long-name-pw\'')
    try:
        def who(t: Target):
            with t.connect(user=name + "-ignored-tail", password="long-name-pw") as conn:
                return conn.execute("select current_user").fetchone()[0]

        assert twin.run(who) == role
    finally:
        with pg.admin_conn() as c:
            c.execute(f'DROP ROLE "{role}"')


def test_audit_names_the_authenticated_role(proxy: Target, tokengate: TokengateProcess):
    """A login with a 70-byte user name is audited under the 63 bytes PostgreSQL and tokengate use."""
    name = "tg_audit_" + uuid.uuid4().hex + "y" * 40
    with proxy.wire() as w:
        r = pgwire.login(w, name, "whatever")
    assert r.error is not None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [json.loads(ln) for ln in tokengate.audit_path.read_text().splitlines() if name[:40] in ln]
        if lines:
            break
        time.sleep(0.1)
    assert lines, "the refused login was not audited"
    assert lines[-1]["actor"] == name[:63], lines[-1]


# ---------------------------------------------------------------- replication connections


def identify_system(t: Target, user: str, password: str, replication: str) -> tuple:
    """IDENTIFY_SYSTEM on a replication connection: column names, or the login error."""
    with t.wire() as w:
        r = pgwire.login(w, user, password, extra={"replication": replication})
        if r.error is not None:
            return ("error", r.error.sqlstate, r.error.message)
        msgs = w.simple_query("IDENTIFY_SYSTEM")
        w.send(pgwire.terminate_message())
    errs = [m.error() for m in msgs if m.tag == b"E"]
    if errs:
        return ("error", errs[0].sqlstate, errs[0].message)
    cols = [m for m in msgs if m.tag == b"T"]
    return ("ok", len(pgwire.data_rows_text(msgs)), cols[0].body.count(b"\0") > 0)


@pytest.mark.parametrize("replication", ["database", "true"])
def test_replication_connections_work_and_postgresql_checks_the_attribute(twin: Twin, fresh_role, replication):
    repl, repl_pw = fresh_role("LOGIN REPLICATION")
    plain, plain_pw = fresh_role("LOGIN")
    assert twin.run(lambda t: identify_system(t, repl, repl_pw, replication)) == ("ok", 1, True)
    # Without REPLICATION, PostgreSQL refuses the walsender, through tokengate as directly.
    got = twin.run(lambda t: identify_system(t, plain, plain_pw, replication))
    assert got[0] == "error" and got[1] == "42501", got


def test_replication_connection_with_a_token(proxy: Target, fresh_role, tokengate: TokengateProcess):
    if "trust" not in tokengate.argv:
        pytest.skip("a fresh role's token session needs its password in the userlist outside trust mode")
    repl, repl_pw = fresh_role("LOGIN REPLICATION")
    _, token, _ = create_token(proxy, user=repl, password=repl_pw, duration="1h")
    got = identify_system(proxy, repl, token, "database")
    assert got == ("ok", 1, True), f"replication login with token {mask(token)}: {got}"


# ---------------------------------------------------------------- SQL over HTTP


@pytest.mark.parametrize("options,fragment", [
    ("-c%20session_authorization%3Dpostgres", 'startup option "session_authorization"'),
    ("-c%20role%3Dadmin", 'startup option "role"'),
    ("-P", 'startup option "-P"'),
])
def test_sql_over_http_connection_strings_follow_the_same_rules(http_api, tokengate: TokengateProcess, pg: PgCluster,
                                                               options, fragment):
    """POST /sql logs in on pooled connections with the connection string's settings: the same checks apply."""
    conn = f"postgresql://analyst:analyst@{tokengate.host}:{tokengate.port}/postgres?options={options}"
    r = http_api.call("POST", "/sql", json={"query": "select current_user"},
                      headers={"Neon-Connection-String": conn})
    assert r.status_code == 400, (r.status_code, r.text)
    body = r.json()
    assert body["code"] == "08P01" and fragment in body["message"], body
    # Settings that pass still work.
    ok_conn = f"postgresql://analyst:analyst@{tokengate.host}:{tokengate.port}/postgres?options=-c%20work_mem%3D7MB"
    r = http_api.call("POST", "/sql", json={"query": "show work_mem"}, headers={"Neon-Connection-String": ok_conn,
                                                                               "Neon-Array-Mode": "true"})
    assert r.status_code == 200 and r.json()["rows"] == [["7MB"]], r.text

# Secrets stay secret (docs/security.md, "Secrets"): no core dumps, and the text log escapes what clients send, so a
# newline cannot forge a log line and a token pasted where the user name belongs is not written out.
from __future__ import annotations

import re
import time

import pgwire
from conftest import Target, TokengateProcess, create_token, mask

# What a forged line would look like at the start of a line of tokengate's log.
FORGED = "2026-01-01 00:00:00.000 info user \"admin\" logged in"


def test_no_core_dumps(tokengate: TokengateProcess):
    limits = open(f"/proc/{tokengate.proc.pid}/limits").read()
    core = [ln for ln in limits.splitlines() if ln.startswith("Max core file size")]
    assert core and core[0].split()[4:6] == ["0", "0"], f"core dumps are not off: {core}"


def test_a_newline_from_a_client_cannot_forge_a_log_line(proxy: Target, tokengate: TokengateProcess):
    mark = tokengate.log_mark()
    # A setting's value is passed on; the upstream refuses it and echoes it in its error, which tokengate logs.
    with proxy.wire() as w:
        r = pgwire.login(w, "analyst", "analyst", extra={"DateStyle": "x\n" + FORGED})
    assert r.error is not None and r.error.sqlstate == "22023", r.error
    # A name with a newline is refused before anything logs it raw.
    with proxy.wire() as w:
        w.send(pgwire.startup_message({"user": "eve\n" + FORGED, "database": "postgres"}))
        w.read_until_closed(5)
    time.sleep(0.3)
    log = tokengate.log_since(mark)
    forged = [ln for ln in log.splitlines() if ln.startswith(FORGED) or ln.startswith("x\n")]
    assert not forged, f"a client forged log lines: {forged}"
    assert "\\n" + FORGED.replace('"', '\\"') in log, f"the escaped value is not in the log:\n{log}"


def test_a_token_pasted_as_the_user_name_is_not_logged(proxy: Target, tokengate: TokengateProcess, mint_token):
    _, token, _ = mint_token(user="analyst", duration="1h")
    mark = tokengate.log_mark()
    r = proxy.psql("-c", "select 1", user=token, password="whatever")
    assert r.rc != 0
    time.sleep(0.3)
    log = tokengate.log_since(mark)
    # Not the token, and not the 63 bytes of it PostgreSQL would keep as a user name either.
    leaked = [ln.replace(token[:20], "<" + mask(token) + ">") for ln in log.splitlines() if token[:20] in ln]
    assert not leaked, f"the token pasted as a user name is in the log: {leaked}"
    assert re.search(r"eyJ…\(masked, \d+ bytes\)", log), f"no masked name in the log:\n{log}"


def test_upstream_errors_of_http_logins_cannot_forge_a_log_line(tokengate: TokengateProcess, http_api, mint_token):
    """POST /sql logs in over the upstream pool, whose refusals are logged too: the upstream echoes the client's
    setting (newline included) in its error, which must reach the log escaped, as on the wire."""
    from urllib.parse import quote
    mark = tokengate.log_mark()
    # Spaces and the newline escaped with a backslash, as PostgreSQL reads options.
    options = quote("-c DateStyle=x\\\n" + FORGED.replace(" ", "\\ "), safe="")
    r = http_api.call("POST", "/sql", json={"query": "select 1"},
                      headers={"Neon-Connection-String": f"postgresql://analyst:analyst@x/postgres?options={options}"})
    assert r.status_code == 400 and r.json()["code"] == "22023", r.text
    # A token presented for another user named in the connection string: that name is logged too.
    _, token, _ = mint_token(user="analyst", duration="1h")
    user = quote("eve\n" + FORGED, safe="")
    r = http_api.call("POST", "/sql", json={"query": "select 1"}, token=token,
                      headers={"Neon-Connection-String": f"postgresql://{user}@x/postgres"})
    assert r.status_code == 401, r.text
    time.sleep(0.3)
    log = tokengate.log_since(mark)
    forged = [ln for ln in log.splitlines() if ln.startswith(FORGED)]
    assert not forged, f"an HTTP client forged log lines: {forged}"
    assert "\\n" + FORGED.replace('"', '\\"') in log, f"the escaped value is not in the log:\n{log}"

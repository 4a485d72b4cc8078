# The audit log records token operations of the command line too (issue 5:
# "every token operation"), next to the server's own lines, without secrets.
from __future__ import annotations

import json
import uuid

from conftest import TokengateProcess, cli_revoke, remember_secret, tokengate_cli


def audit_events(tg: TokengateProcess) -> list[dict]:
    return [json.loads(line) for line in tg.audit_path.read_text().splitlines() if line.strip()]


def test_cli_create_and_revoke_are_audited(tokengate: TokengateProcess):
    name = f"cli_{uuid.uuid4().hex[:8]}"
    created = tokengate_cli(tokengate, "tokens", "create", name, "--user", "analyst", "--duration", "1h")
    assert created.returncode == 0, created.stderr
    token = remember_secret(created.stdout.strip())
    revoked = cli_revoke(tokengate, name, "analyst")
    assert revoked.returncode == 0, revoked.stderr

    mine = [e for e in audit_events(tokengate) if e.get("token_name") == name]
    assert [(e["event"], e["actor"], e["owner"], e["outcome"]) for e in mine] == [
        ("create_token", "(command line)", "analyst", "ok"),
        ("revoke_token", "(command line)", "analyst", "ok"),
    ]
    assert token not in tokengate.audit_path.read_text(), "the audit log holds a token value"


def test_failed_cli_revoke_is_audited_as_error(tokengate: TokengateProcess):
    name = f"missing_{uuid.uuid4().hex[:8]}"
    revoked = cli_revoke(tokengate, name, "analyst")
    assert revoked.returncode != 0
    mine = [e for e in audit_events(tokengate) if e.get("token_name") == name]
    assert [(e["event"], e["outcome"]) for e in mine] == [("revoke_token", "error")]


def test_password_mode_logins_are_audited(tokengate_pw: TokengateProcess, proxy_pw):
    """In password mode the upstream judges ordinary passwords; each attempt is still audited."""
    import pgwire

    app = f"audit_{uuid.uuid4().hex[:8]}"
    with proxy_pw.wire() as c:
        assert pgwire.login(c, "analyst", "analyst", extra={"application_name": app}).ok
    with proxy_pw.wire() as c:
        assert not pgwire.login(c, "analyst", "not the password", extra={"application_name": app}).ok
    mine = [e for e in audit_events(tokengate_pw) if e.get("application_name") == app]
    assert [(e["event"], e["method"], e["outcome"]) for e in mine] == [
        ("login", "password", "ok"), ("login", "password", "denied")]
    assert "not the password" not in tokengate_pw.audit_path.read_text()

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

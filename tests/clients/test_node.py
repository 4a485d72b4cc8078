# node-postgres (`pg`, pinned in tests/clients/node/package-lock.json) through tokengate with a freshly issued
# token: a Pool, parameters and types, rollback, named (prepared) queries, 100k rows, queued queries with an error
# and API TOKEN statements among them, cancel, and the token statements. client.js prints JSON facts.
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import clean_env, token_masked

NODE_DIR = Path(__file__).resolve().parent / "node"
REQUIRE = __import__("os").environ.get("TOKENGATE_REQUIRE", "") not in ("", "0")


def ensure_node_modules() -> None:
    """`npm ci` once; skipped while node_modules matches the lock file (npm writes a copy of it there)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        msg = "node or npm missing (./dev installs nodejs and npm)"
        if REQUIRE:
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    lock = NODE_DIR / "package-lock.json"
    hidden = NODE_DIR / "node_modules" / ".package-lock.json"
    if hidden.exists() and hidden.stat().st_mtime >= lock.stat().st_mtime and (NODE_DIR / "node_modules" / "pg").is_dir():
        return
    p = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=NODE_DIR,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"npm ci failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"


def test_node_postgres(proxy, mint_token):
    ensure_node_modules()
    _, token, _ = mint_token(user="analyst", duration="1h")
    env = clean_env(TG_HOST=proxy.host, TG_PORT=str(proxy.port), TG_USER="analyst", TG_TOKEN=token)
    p = subprocess.run(["node", "client.js"], cwd=NODE_DIR, capture_output=True, text=True, timeout=90, env=env)
    stdout, stderr = token_masked(p.stdout, token), token_masked(p.stderr, token)
    assert p.stdout.strip(), f"no output (rc={p.returncode}): {stderr[-3000:]}"
    facts = json.loads(p.stdout.strip().splitlines()[-1])
    assert p.returncode == 0 and "error" not in facts, f"client.js failed: {json.dumps(facts)[-3000:]}\n{stderr[-2000:]}"

    assert facts["pool"]["values"] == [2, 4, 6, 8, 10, 12] and facts["pool"]["users"] == ["analyst"]
    assert 1 <= facts["pool"]["backends"] <= 3

    assert facts["params"]["values"] == {"i": 42, "t": "it's ünïcode", "n": "1.25", "ts": "2026-01-02T03:04:05.000Z",
                                         "b": True, "nul": None, "j": {"a": [1, 2]}}
    assert facts["params"]["types"] == {"i": "number", "t": "string", "n": "string", "ts": "Date", "b": "boolean",
                                        "nul": "null", "j": "object"}
    assert facts["params"]["oids"] == [23, 25, 1700, 1184, 16, 23, 3802]

    assert facts["rollback"] == {"inside": 10, "after": 0}
    assert facts["prepared"] == [2, 3, 4]
    assert facts["bigRows"] == 100000 and facts["bigSum"] == 100000 * 100001 // 2

    show_fields = ["name", "user", "created_at", "expires_at", "last_used_at", "status", "comment", "created_by"]
    pipe = facts["pipeline"]
    assert pipe[0] == {"ok": True, "command": "SELECT", "rows": 1, "fields": ["a"]}, pipe
    assert pipe[1]["ok"] and pipe[1]["command"] == "SHOW" and pipe[1]["fields"] == show_fields, pipe
    assert pipe[2] == {"ok": False, "code": "22012"}, pipe
    assert pipe[3] == {"ok": True, "command": "SELECT", "rows": 1, "fields": ["n"]}, pipe
    assert pipe[4]["ok"] and pipe[4]["fields"] == show_fields and pipe[4]["rows"] == pipe[1]["rows"], pipe
    assert pipe[5] == {"ok": True, "command": "SELECT", "rows": 1, "fields": ["b"]}, pipe

    assert facts["cancel"]["code"] == "57014" and facts["cancel"]["ms"] < 10000, facts["cancel"]
    assert facts["afterCancel"] == 42

    create = facts["create"]
    assert create["command"] == "CREATE", create  # node-postgres keeps the first word of the tag
    assert create["fields"] == [["name", 25], ["token", 25], ["expires_at", 1184]], create
    assert create["tokenParts"] == 3 and create["expiresType"] == "Date", create
    assert 7000 < create["expiresInSeconds"] < 7300, create
    assert facts["newTokenUser"] == "analyst"
    # last_used_at reaches the store within a few seconds of the login (docs/sql.md): NULL or a Date.
    assert facts["alter"].pop("lastUsedType") in ("null", "Date"), facts["alter"]
    assert facts["alter"] == {"command": "ALTER", "comment": "changed from node", "status": "active",
                              "createdAtType": "Date"}, facts["alter"]
    assert facts["drop"] == {"command": "DROP", "status": "revoked"}, facts["drop"]
    assert facts["dropMissing"] == "42704"
    assert facts["revokedLogin"] == "28P01" and facts["revokedLoginLeaksToken"] is False, facts
    assert token[:20] not in stdout

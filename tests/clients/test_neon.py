# @neondatabase/serverless (pinned by neon/package-lock.json) and the ORMs built on it through tokengate, pointed at
# it only through neonConfig (fetchEndpoint, wsProxy, useSecureWebSocket) with a token as the password: neon() with
# parameters of several types, sql.transaction() (also failing, rolled back), a WebSocket Pool with interactive
# transactions, API TOKEN statements over both, Drizzle's neon-http, kysely-neon, and Prisma's @prisma/adapter-neon
# (over WebSocket and HTTP) with the TypeScript query compiler. neon/neon.mjs prints JSON facts.
from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from conftest import clean_env, token_masked

NEON_DIR = Path(__file__).resolve().parent / "neon"
REQUIRE = os.environ.get("TOKENGATE_REQUIRE", "") not in ("", "0")


def tools() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        msg = "node or npm missing (./dev installs nodejs and npm)"
        if REQUIRE:
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return node, npm


def ensure_node_modules() -> None:
    """`npm ci` and `prisma generate` once; skipped while both are newer than the lock file and the schema.

    Install scripts stay off: Prisma's would download engine binaries, and none is needed. The TypeScript query
    compiler (engineType = "client") ships in the npm package; `prisma generate` itself reads the schema with its
    WebAssembly build but insists on a schema-engine path at start-up, so it is given one it never runs."""
    node, npm = tools()
    lock, schema = NEON_DIR / "package-lock.json", NEON_DIR / "prisma" / "schema.prisma"
    hidden = NEON_DIR / "node_modules" / ".package-lock.json"
    if not (hidden.exists() and hidden.stat().st_mtime >= lock.stat().st_mtime):
        p = subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"],
                           cwd=NEON_DIR, capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, f"npm ci failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
    generated = NEON_DIR / "generated" / "prisma" / "index.js"
    if generated.exists() and generated.stat().st_mtime >= max(schema.stat().st_mtime, hidden.stat().st_mtime):
        return
    env = clean_env(DATABASE_URL="postgresql://generate@localhost/generate", PRISMA_SCHEMA_ENGINE_BINARY="/bin/false",
                    PRISMA_HIDE_UPDATE_MESSAGE="1", CHECKPOINT_DISABLE="1")
    p = subprocess.run([node, "node_modules/prisma/build/index.js", "generate"], cwd=NEON_DIR, capture_output=True,
                       text=True, timeout=300, env=env)
    assert p.returncode == 0, f"prisma generate failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"


@pytest.fixture
def analyst_database(pg):
    """A database owned by analyst, so that the ORMs may create their tables in its public schema."""
    name = f"neon_{uuid.uuid4().hex[:8]}"
    with pg.admin_conn() as c:
        c.execute(f"CREATE DATABASE {name} OWNER analyst")
    yield name
    with pg.admin_conn() as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")  # tokengate's pool may still hold a connection


def test_neon_driver_and_orms(tokengate, mint_token, analyst_database, pg):
    ensure_node_modules()
    if tokengate.http_port is None:
        pytest.fail("this tokengate binary has no --http-listen", pytrace=False)
    _, token, _ = mint_token(user="analyst", duration="1h")
    env = clean_env(TG_HOST=tokengate.host, TG_PORT=str(tokengate.port), TG_HTTP_PORT=str(tokengate.http_port),
                    TG_USER="analyst", TG_TOKEN=token, TG_PASSWORD="analyst", TG_DATABASE=analyst_database)
    # Each step of neon.mjs has its own 100 s watchdog that names a step that hangs; this timeout is the last resort.
    try:
        p = subprocess.run(["node", "neon.mjs"], cwd=NEON_DIR, capture_output=True, text=True, timeout=600, env=env)
    except subprocess.TimeoutExpired as e:
        progress = token_masked(e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr or "",
                                token)
        pytest.fail(f"neon.mjs did not end: {progress[-2000:]}\ntokengate's log:\n{token_masked(tokengate.log_tail(), token)}")
    stdout, stderr = token_masked(p.stdout, token), token_masked(p.stderr, token)
    assert p.stdout.strip(), f"no output (rc={p.returncode}): {stderr[-3000:]}"
    facts = json.loads(p.stdout.strip().splitlines()[-1])
    assert p.returncode == 0 and "error" not in facts, \
        f"neon.mjs failed: {json.dumps(facts)[-3000:]}\n{stderr[-2000:]}\ntokengate's log:\n{token_masked(tokengate.log_tail(), token)}"
    assert token[:20] not in stdout

    # neon(): parameters of several types come back as the driver's types.
    assert facts["params"]["values"] == {"i": 42, "t": "it's ünïcode", "n": "1.25", "ts": "2026-01-02T03:04:05.000Z",
                                         "b": True, "nul": None, "j": {"a": [1, 2]}, "arr": [1, 2, 3],
                                         "bytes": "dead", "big": "12345678901234567890"}
    assert facts["params"]["types"] == {"i": "number", "t": "string", "n": "string", "ts": "Date", "b": "boolean",
                                        "nul": "null", "j": "object", "arr": "object", "bytes": "Buffer",
                                        "big": "string"}
    assert facts["fullResults"] == {"rows": [[7, "analyst"]], "command": "SELECT", "rowCount": 1, "rowAsArray": True,
                                    "fields": [["a", 23], ["u", 19]]}
    assert facts["syntaxError"] == {"name": "NeonDbError", "code": "42601",
                                    "message": 'syntax error at or near "nowhere"', "position": "14",
                                    "detail": None}

    # sql.transaction(): one transaction with its options; a failing one rolls back entirely.
    assert facts["transaction"] == {"inserted": [1, 2], "settings": {"iso": "repeatable read", "ro": "off"}}
    assert facts["failingTransaction"]["code"] == "23505", facts["failingTransaction"]
    assert facts["failingTransaction"]["detail"] == "Key (v)=(1) already exists."
    assert facts["afterRollback"] == [1, 2]
    assert facts["readOnlyTransaction"] == "25006"

    # API TOKEN statements over HTTP; the new token works at once and stops working when dropped.
    t = facts["tokenStatements"]
    assert t["name"] == "node_http" and t["tokenParts"] == 3 and t["expiresType"] == "Date", t
    assert t["listed"] == {"status": "active", "comment": "from neon()"}, t
    assert t["newTokenUser"] == "analyst" and t["leaked"] is False, t
    assert t["afterDrop"].startswith("Server error (HTTP status 401): ") and '"code":"28P01"' in t["afterDrop"], t
    assert facts["bearer"] == "analyst"

    # The WebSocket Pool: interactive transactions, parameters, token statements, a refused password.
    ws = facts["ws"]
    assert (ws["inside"], ws["after"], ws["committed"]) == (5, 0, [42]), ws
    assert ws["row"] == {"i": 2, "t": "ü", "ts": "2026-01-02T00:00:00.000Z", "j": {"k": True}}, ws
    assert ws["showFields"] == ["name", "user", "created_at", "expires_at", "last_used_at", "status", "comment",
                                "created_by"]
    assert ws["createdCommand"] == "CREATE" and ws["createdTokenParts"] == 3 and ws["backend"] is True, ws
    assert ws["pooled"] == [2, 4, 6, 8]
    assert facts["wsBadPassword"] == "28P01"

    # Drizzle's neon-http: queries and db.batch() as one transaction.
    d = facts["drizzle"]
    assert d["rows"] == [{"id": 1, "name": "anne", "price": "9.50"}, {"id": 2, "name": "bob", "price": None}], d
    assert d["inserted"] == [{"id": 3}] and d["counted"] == [{"n": 3}], d
    assert d["failedBatch"] == "23505" and d["finalIds"] == [1, 2, 3], d

    # kysely-neon over HTTP.
    assert facts["kysely"] == {"rows": [{"id": 2, "name": "y"}], "deleted": 1}

    # Prisma with the Neon adapter: interactive transactions over WebSocket (one rolled back), queries over HTTP.
    pr = facts["prisma"]
    assert pr["failedTransaction"] == "P2002", pr
    assert pr["ws"] == [{"id": 1, "name": "pencil", "price": "1.5"}, {"id": 2, "name": "ink", "price": "3.25"}], pr
    assert pr["http"] == {"created": "http", "count": 3, "found": "2"}, pr

    # Every query over HTTP ran on pooled connections: no backend per request.
    with pg.admin_conn() as c:
        n = c.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend'",
                      (analyst_database,)).fetchone()[0]
    assert n <= 3, f"{n} backends on {analyst_database} after the run"

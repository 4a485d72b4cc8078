# psql (postgresql-client-15) through tokengate with a freshly issued token as the password: PGPASSWORD and a
# .pgpass file, parameters via psql variables, a rolled-back transaction, 100k rows, \copy both ways, cancel
# (SIGINT), ON_ERROR_STOP, and the API TOKEN statements with their column types (\gdesc).
from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

from conftest import PSQL, clean_env, mask, token_masked, wait_for_active_query


def uniq(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def run_psql(proxy, token: str | None, *args: str, input: str | None = None, env: dict | None = None,
             user: str = "analyst", timeout: float = 60) -> subprocess.CompletedProcess:
    """psql -X against tokengate; the token (if given) in PGPASSWORD, never on the command line."""
    extra = dict(env or {})
    if token is not None:
        extra["PGPASSWORD"] = token
    argv = [PSQL, "-X", "-h", proxy.host, "-p", str(proxy.port), "-U", user, "-d", "postgres", *args]
    return subprocess.run(argv, input=input, capture_output=True, text=True, timeout=timeout,
                          env=clean_env(**extra))


def ok(p: subprocess.CompletedProcess, token: str) -> str:
    assert p.returncode == 0, f"psql failed (rc={p.returncode}): {token_masked(p.stderr, token)[-2000:]}"
    return p.stdout


def test_pgpassword_work(proxy, mint_token, tmp_path: Path):
    _, token, _ = mint_token(user="analyst", duration="1h")
    # Parameters as psql variables, identity, types.
    # (-c does not interpolate variables: the script goes to stdin.)
    out = ok(run_psql(proxy, token, "-At", "-v", "n=41", "-v", "s=it's",
                      input="select current_user, session_user;\n"
                            "select :n + 1, pg_typeof(:n + 1), :'s', pg_typeof(:'s'::text);\n"), token)
    assert out.splitlines() == ["analyst|analyst", "42|integer|it's|text"], out

    # A transaction rolled back, \copy out and in, 100k rows, all in one session.
    csv_out = tmp_path / "out.csv"
    csv_in = tmp_path / "in.csv"
    csv_in.write_text("".join(f"{i},name {i}\n" for i in range(1, 1001)))
    script = f"""
\\set ON_ERROR_STOP on
create temp table t (id int primary key, name text);
begin;
insert into t select g, 'x' || g from generate_series(1, 10) g;
select count(*) from t;
rollback;
select count(*) from t;
\\copy t from '{csv_in}' with (format csv)
select count(*), sum(id) from t;
\\copy (select id, name from t where id <= 500 order by id) to '{csv_out}' with (format csv)
select count(*), sum(g), max(md5(g::text)) from generate_series(1, 100000) g;
"""
    out = ok(run_psql(proxy, token, "-Atq", input=script), token)
    lines = out.splitlines()
    assert lines[0] == "10" and lines[1] == "0", lines  # inside the transaction, then after ROLLBACK
    assert "1000|500500" in lines, lines
    rows = list(csv.reader(io.StringIO(csv_out.read_text())))
    assert len(rows) == 500 and rows[0] == ["1", "name 1"] and rows[-1] == ["500", "name 500"]

    # 100k rows streamed to psql.
    p = run_psql(proxy, token, "-At", "-c", "select g, md5(g::text) from generate_series(1, 100000) g")
    rows = ok(p, token).splitlines()
    assert len(rows) == 100000 and rows[0].startswith("1|c4ca4238") and rows[-1].startswith("100000|")


def test_pgpass_file(proxy, mint_token, tmp_path: Path):
    _, token, _ = mint_token(user="analyst", duration="1h")
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"{proxy.host}:{proxy.port}:*:analyst:{token}\n")
    pgpass.chmod(0o600)
    p = run_psql(proxy, None, "-At", "-w", "-c", "select current_user", env={"PGPASSFILE": str(pgpass)})
    out = ok(p, token).strip()  # (not inside the assert: pytest would show the token argument)
    assert out == "analyst"
    # Without the file (and no PGPASSWORD) -w must fail: the login really used the file.
    p = run_psql(proxy, None, "-At", "-w", "-c", "select 1", env={"PGPASSFILE": str(tmp_path / "none")})
    assert p.returncode == 2, p.stderr


def test_on_error_stop(proxy, mint_token):
    _, token, _ = mint_token(user="analyst", duration="1h")
    script = "\\set ON_ERROR_STOP on\nselect 'before';\nselect 1/0;\nselect 'after';\n"
    p = run_psql(proxy, token, "-At", input=script)
    assert p.returncode == 3, f"rc={p.returncode} {p.stderr}"
    assert "before" in p.stdout and "after" not in p.stdout
    assert "division by zero" in p.stderr
    # The same with a failing API TOKEN statement.
    script = "\\set ON_ERROR_STOP on\nDROP API TOKEN no_such_token_here;\nselect 'after';\n"
    p = run_psql(proxy, token, "-At", input=script)
    assert p.returncode == 3 and "after" not in p.stdout, f"rc={p.returncode} {p.stdout} {p.stderr}"
    assert 'API token "no_such_token_here" does not exist' in p.stderr


def test_cancel_with_sigint(proxy, mint_token, pg):
    _, token, _ = mint_token(user="analyst", duration="1h")
    argv = [PSQL, "-X", "-h", proxy.host, "-p", str(proxy.port), "-U", "analyst", "-d", "postgres",
            "-c", "select pg_sleep(30)"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=clean_env(PGPASSWORD=token))
    wait_for_active_query(pg, "select pg_sleep(30)")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 1, f"rc={proc.returncode} {err}"
    assert "canceling statement due to user request" in err, err


def test_token_statements(proxy, mint_token):
    _, token, _ = mint_token(user="analyst", duration="1h")
    name = uniq("psql")
    p = run_psql(proxy, token, "--csv", "-c",
                 f"CREATE API TOKEN {name} MAX DURATION '2h' COMMENT 'from psql'")
    rows = list(csv.DictReader(io.StringIO(ok(p, token))))
    names = [r["name"] for r in rows]  # (assertion messages must not show a token: no rows in them)
    assert names == [name]
    new_token = rows[0]["token"]
    parts, same = new_token.count("."), new_token == token
    assert parts == 2 and not same, mask(new_token)
    expires_at = rows[0]["expires_at"]
    assert expires_at.endswith("+00"), expires_at

    # The new token logs in too.
    out = ok(run_psql(proxy, new_token, "-At", "-c", "select current_user"), new_token).strip()  # (not inside the assert: pytest would show the token argument)
    assert out == "analyst"

    # Column types through Describe (\gdesc prepares the statement without running it).
    p = run_psql(proxy, token, "-At", input=f"CREATE API TOKEN {uniq('desc')} \\gdesc\nSHOW API TOKENS \\gdesc\n")
    desc = ok(p, token).splitlines()
    assert desc[:3] == ["name|text", "token|text", "expires_at|timestamp with time zone"], desc
    assert desc[3:] == ["name|text", "user|text", "created_at|timestamp with time zone",
                        "expires_at|timestamp with time zone", "last_used_at|timestamp with time zone",
                        "status|text", "comment|text", "created_by|text"], desc

    ok(run_psql(proxy, token, "-c", f"ALTER API TOKEN {name} SET COMMENT 'changed by psql'"), token)
    p = run_psql(proxy, token, "--csv", "-c", "SHOW API TOKENS")
    show = {r["name"]: r for r in csv.DictReader(io.StringIO(ok(p, token)))}
    assert show[name]["comment"] == "changed by psql" and show[name]["status"] == "active"
    assert show[name]["user"] == "analyst" and show[name]["created_by"] == "analyst"
    leaked = token in p.stdout or new_token in p.stdout
    assert not leaked, "SHOW API TOKENS shows a token"

    p = run_psql(proxy, token, "-c", f"DROP API TOKEN {name}")
    out = ok(p, token).strip()  # (not inside the assert: pytest would show the token argument)
    assert out == "DROP API TOKEN"
    p = run_psql(proxy, new_token, "-c", "select 1")
    assert p.returncode == 2 and ("password authentication failed" in p.stderr or "revoked" in p.stderr), \
        token_masked(p.stderr, new_token)
    p = run_psql(proxy, token, "--csv", "-c", "SHOW ALL API TOKENS")
    show = {r["name"]: r for r in csv.DictReader(io.StringIO(ok(p, token)))}
    assert show[name]["status"] == "revoked"

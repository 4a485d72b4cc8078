# pgbench (PostgreSQL 15) through tokengate with a token as PGPASSWORD: `pgbench -i -s 1` (CREATE TABLE, COPY of
# 100k rows, VACUUM, primary keys) and a short run in each query mode (simple, extended, prepared) with 2 clients,
# in a database owned by analyst.
from __future__ import annotations

import re
import subprocess
import uuid

import pytest

from conftest import PG_BIN, clean_env, token_masked

PGBENCH = PG_BIN / "pgbench"


@pytest.fixture
def bench_db(pg):
    name = f"bench_{uuid.uuid4().hex[:8]}"
    with pg.admin_conn() as c:
        c.execute(f"CREATE DATABASE {name} OWNER analyst")
    yield name
    with pg.admin_conn() as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def pgbench(proxy, token: str, db: str, *args: str, timeout: float = 60) -> str:
    argv = [str(PGBENCH), "-h", proxy.host, "-p", str(proxy.port), "-U", "analyst", *args, db]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=clean_env(PGPASSWORD=token))
    out = token_masked(p.stdout + p.stderr, token)
    assert p.returncode == 0, f"pgbench {' '.join(args)} failed (rc={p.returncode}):\n{out[-3000:]}"
    return out


def test_pgbench_init_and_run(proxy, mint_token, bench_db, pg):
    _, token, _ = mint_token(user="analyst", duration="1h")
    out = pgbench(proxy, token, bench_db, "-i", "-s", "1", "-q")
    assert "done in" in out, out
    with pg.admin_conn(bench_db) as c:
        assert c.execute("select count(*) from pgbench_accounts").fetchone() == (100000,)
        assert c.execute("select tableowner from pg_tables where tablename = 'pgbench_accounts'").fetchone() \
            == ("analyst",)

    for mode in ("simple", "extended", "prepared"):
        out = pgbench(proxy, token, bench_db, "-c", "2", "-j", "2", "-t", "100", "-M", mode, "-n")
        m = re.search(r"number of transactions actually processed: (\d+)/(\d+)", out)
        assert m and m.group(1) == m.group(2) == "200", out
        assert re.search(r"number of failed transactions: 0\b", out), out

    with pg.admin_conn(bench_db) as c:
        assert c.execute("select count(*) from pgbench_history").fetchone() == (600,)

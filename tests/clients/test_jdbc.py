# pgjdbc (Debian libpostgresql-jdbc-java, JDK 17) through tokengate with a freshly issued token, prepareThreshold
# 0, 1 and 5: PreparedStatement parameters and types, batch inserts with commit and rollback, 100k rows through a
# cursor (fetch size), DatabaseMetaData.getTables/getColumns/getPrimaryKeys, Statement.cancel(), and the API TOKEN
# statements. tests/integration/test_token_sql.py covers more of the token statements with pgjdbc.
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from conftest import _cleanup_tmp, _cleanups, clean_env, token_masked

JAR = Path("/usr/share/java/postgresql.jar")
SOURCE = Path(__file__).resolve().parent / "java" / "ClientJdbc.java"
_compiled: list[Path] = []


def program_dir() -> Path:
    if not _compiled:
        javac = shutil.which("javac")
        if javac is None or not JAR.exists():
            msg = "javac or /usr/share/java/postgresql.jar missing (./dev installs them)"
            if os.environ.get("TOKENGATE_REQUIRE", "") not in ("", "0"):
                pytest.fail(msg, pytrace=False)
            pytest.skip(msg)
        out = Path(tempfile.mkdtemp(prefix="tg-clientjdbc-"))
        _cleanups.append(lambda: _cleanup_tmp(out))
        p = subprocess.run([javac, "-encoding", "UTF-8", "-cp", str(JAR), "-d", str(out), str(SOURCE)],
                           capture_output=True, text=True, timeout=180)
        assert p.returncode == 0, f"javac failed:\n{p.stderr}"
        _compiled.append(out)
    return _compiled[0]


@pytest.fixture(scope="module")
def analyst_db(pg):
    name = f"jdbc_{uuid.uuid4().hex[:8]}"
    with pg.admin_conn() as c:
        c.execute(f"CREATE DATABASE {name} OWNER analyst")
    yield name
    with pg.admin_conn() as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.mark.parametrize("threshold", [0, 1, 5], ids=lambda t: f"prepareThreshold={t}")
def test_pgjdbc(proxy, mint_token, analyst_db, threshold):
    _, token, _ = mint_token(user="analyst", duration="1h")
    table = f"items_{threshold}"
    url = (f"jdbc:postgresql://{proxy.host}:{proxy.port}/{analyst_db}?sslmode=disable&connectTimeout=10"
           f"&prepareThreshold={threshold}")
    argv = ["java", "-Dfile.encoding=UTF-8", "-Duser.timezone=Europe/Berlin", "-cp", f"{program_dir()}:{JAR}",
            "ClientJdbc", url, "analyst", token, table]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=clean_env())
    stdout = token_masked(p.stdout, token)
    facts = {}
    for line in p.stdout.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            facts[k] = v
    assert p.returncode == 0, f"ClientJdbc failed (rc={p.returncode}):\n{stdout[-3000:]}\n" \
                              f"{token_masked(p.stderr, token)[-3000:]}"
    assert token[:20] not in p.stdout

    want = ";".join(f"{i + 1}|ünï'{i}|2026-01-02T03:04:05Z|analyst" for i in range(7))
    assert facts["prepared"] == want, stdout
    assert facts["batch_count"] == "1000"
    assert facts["rows_after_rollback"] == f"1000|{1000 * 1001 // 2}"
    assert facts["big"] == f"100000|{100000 * 100001 // 2}"
    assert facts["tables"] == f"public.{table}:TABLE"
    assert facts["columns"] == "id:int4:NO,name:text:NO,at:timestamptz:YES"
    assert facts["pk"] == "id"
    assert facts["cancel"] == "57014" and facts["cancel_ms_under_10000"] == "true", stdout
    assert facts["after_cancel"] == "42"
    assert facts["create_columns"] == "name:text,token:text,expires_at:timestamptz"
    assert facts["create_token_parts"] == "3"
    assert 7000 < int(facts["create_expires_in_s"]) < 7300
    assert facts["new_token_user"] == "analyst"
    assert facts["show"] == "active|changed by pgjdbc|analyst|Z", stdout
    assert facts["drop_update_count"] == "0"
    assert facts["drop_again"] == "42704"
    assert facts["revoked_login"] == "28P01" and facts["revoked_login_leaks_token"] == "false"

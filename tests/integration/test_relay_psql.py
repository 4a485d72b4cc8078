# psql through tokengate answers exactly as psql against PostgreSQL (simple protocol, COPY, big messages; issue 2).
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from conftest import PgCluster, Target, Twin

VERBOSE = r"\set VERBOSITY verbose"


def out(r) -> tuple[int, str, str]:
    """What a psql user sees: exit code, stdout, stderr."""
    return r.rc, r.stdout, r.stderr


def test_simple_queries(twin: Twin):
    queries = [
        "select 1 as one, 'x'::text as t, null::int as n, 2.5::numeric as num, true as b",
        "select g, g * g as sq, repeat('ab', g) from generate_series(1, 12) g",
        "select 'ünïcødé ✓ 日本語' as s, E'tab\\there' as esc",
        "select current_user, session_user, current_database()",
        "show server_version",
        "select '2026-07-20 09:00:00+00'::timestamptz at time zone 'UTC' as ts, interval '1 day 02:03'",
        "create temp table tt(a int primary key, b text); insert into tt values (1, 'a'), (2, 'b'); "
        "update tt set b = 'c' where a = 2; delete from tt where a = 1; select * from tt",
        "do $$ begin raise notice 'hello %', 42; raise warning 'careful'; end $$",
        ";",  # EmptyQueryResponse
        "begin; select txid_current() > 0 as in_tx; commit",
    ]

    def run(t: Target):
        return [out(t.psql("-c", q)) for q in queries]

    results = twin.run(run, "psql output")
    for q, (rc, stdout, stderr) in zip(queries, results):
        assert rc == 0, f"{q!r} failed: {stderr}"
    assert " one | t | n | num | b " in results[0][1]
    assert "NOTICE:  hello 42" in results[7][2]
    assert "WARNING:  careful" in results[7][2]


def test_several_statements_in_one_query(twin: Twin, pg: PgCluster):
    sql = "select 1 as first_of_one_query; select 2 as second_of_one_query; select 'three' as third"

    def run(t: Target):
        mark = pg.log_mark()
        r = t.psql("-c", sql)
        # psql -c sends one Query message; the upstream must receive it as one statement string.
        logged = pg.logged_statements(mark)
        return out(r), logged

    (rc, stdout, stderr), logged = twin.run(run, "psql output and upstream statement log")
    assert rc == 0, stderr
    assert "first_of_one_query" in stdout and "second_of_one_query" in stdout and "three" in stdout
    assert logged == [sql], f"upstream should log the Query once, unchanged: {logged}"


def test_upstream_statement_log_helper(twin: Twin, pg: PgCluster):
    """pg.logged_statements sees simple, multi-line and extended-protocol statements (later tests rely on it
    to prove API TOKEN statements never reach the upstream)."""

    def run(t: Target):
        mark = pg.log_mark()
        t.psql("-c", "select 'multi'\n  || 'line' as ml").check()
        with t.connect() as conn:
            conn.execute("select %s::text as ext", ("param",))
        return pg.logged_statements(mark)

    logged = twin.run(run, "upstream statement log")
    assert logged[0] == "select 'multi'\n  || 'line' as ml"
    assert "select $1::text as ext" in logged, logged


def test_error_midway_sqlstate(twin: Twin):
    def run(t: Target):
        return out(t.psql("-c", VERBOSE, "-c", "select 'before' as b; select 1/0; select 'after' as a"))

    rc, stdout, stderr = twin.run(run, "psql output")
    assert rc == 1
    assert "before" in stdout, "statements before the error run"
    assert "after" not in stdout, "statements after the error must not run"
    assert "ERROR:  22012: division by zero" in stderr


def test_error_midway_position(twin: Twin):
    sql = "select 'before' as b; select nosuchcol from pg_class; select 'after' as a"

    def run(t: Target):
        return out(t.psql("-c", VERBOSE, "-c", sql))

    rc, stdout, stderr = twin.run(run, "psql output")
    assert rc == 1
    assert "before" in stdout and "after" not in stdout
    assert 'ERROR:  42703: column "nosuchcol" does not exist' in stderr
    # The caret under LINE 1 shows the position field: 1-based offset into the whole Query string.
    lines = stderr.splitlines()
    i = next(k for k, ln in enumerate(lines) if ln.startswith("LINE 1: "))
    caret = lines[i + 1].index("^") - len("LINE 1: ")
    assert sql[caret:].startswith("nosuchcol"), f"caret at {caret}: {stderr}"


def test_syntax_error_stops_whole_query(twin: Twin):
    def run(t: Target):
        return out(t.psql("-c", VERBOSE, "-c", "select 'before' as b; selec 2; select 3"))

    rc, stdout, stderr = twin.run(run, "psql output")
    assert rc == 1
    assert "before" not in stdout, "a syntax error anywhere rejects the whole Query"
    assert 'ERROR:  42601: syntax error at or near "selec"' in stderr


def test_session_survives_errors(twin: Twin):
    def run(t: Target):
        return out(t.psql(
            "-v", "ON_ERROR_STOP=0",
            "-c", "select 1/0",
            "-c", "begin; select 1/0",
            "-c", "select 'in failed tx'",  # 25P02
            "-c", "rollback",
            "-c", "select 'still alive' as alive",
        ))

    rc, stdout, stderr = twin.run(run, "psql output")
    assert "still alive" in stdout
    assert "current transaction is aborted" in stderr


def test_copy_out_100k_rows(twin: Twin, tmp_path: Path):
    query = "select g, md5(g::text), date '2026-01-01' + g, g * 0.5, null from generate_series(1, 100000) g"

    def run(t: Target):
        f = tmp_path / f"out-{t.name}.tsv"
        r = t.psql("-c", rf"\copy ({query}) to '{f}'").check()
        data = f.read_bytes()
        return r.stdout, len(data), hashlib.sha256(data).hexdigest(), data.count(b"\n")

    stdout, size, _, lines = twin.run(run, "\\copy out result")
    assert stdout.strip() == "COPY 100000"
    assert lines == 100000 and size > 5_000_000


def _write_copy_file(path: Path, rows: int, bad_line: int | None = None) -> None:
    with open(path, "w") as f:
        for i in range(1, rows + 1):
            a = "abc" if i == bad_line else str(i)
            b = r"\N" if i % 1000 == 0 else f"row {i} tab\\there ünï {'x' * (i % 50)}"
            f.write(f"{a}\t{b}\t{i / 4}\n")


def test_copy_in_100k_rows(twin: Twin, tmp_path: Path):
    src = tmp_path / "in.tsv"
    _write_copy_file(src, 100000)
    script = tmp_path / "copy_in.sql"
    script.write_text(
        "create temp table t(a int, b text, c numeric);\n"
        f"\\copy t from '{src}'\n"
        "select count(*), sum(a), count(b), md5(string_agg(coalesce(b, '<null>'), ',' order by a)), sum(c) from t;\n"
    )

    result = twin.run(lambda t: out(t.psql("-f", str(script))), "psql output")
    rc, stdout, stderr = result
    assert rc == 0, stderr
    assert "COPY 100000" in stdout
    assert "100000 | 5000050000 | 99900 |" in stdout


def test_copy_in_error_midway(twin: Twin, tmp_path: Path):
    src = tmp_path / "bad.tsv"
    _write_copy_file(src, 100000, bad_line=50000)
    script = tmp_path / "copy_bad.sql"
    script.write_text(
        "\\set VERBOSITY verbose\n"
        "create temp table t(a int, b text, c numeric);\n"
        f"\\copy t from '{src}'\n"
        "select count(*) as rows_after_failed_copy from t;\n"
    )

    rc, stdout, stderr = twin.run(lambda t: out(t.psql("-v", "ON_ERROR_STOP=0", "-f", str(script))), "psql output")
    assert 'ERROR:  22P02: invalid input syntax for type integer: "abc"' in stderr
    assert "COPY t, line 50000, column a" in stderr
    assert re.search(r"rows_after_failed_copy\s*\n-+\n\s*0\n", stdout), stdout


def test_10mb_query_text(twin: Twin, tmp_path: Path):
    payload = os.urandom(5 * 1024 * 1024).hex()  # 10 MiB of [0-9a-f], no repetition to hide reordering
    script = tmp_path / "big.sql"
    script.write_text(f"select length(s) as len, md5(s) as md5 from (select '{payload}'::text as s) x;\n")
    assert script.stat().st_size > 10 * 1024 * 1024

    rc, stdout, stderr = twin.run(lambda t: out(t.psql("-At", "-f", str(script))), "psql output")
    assert rc == 0, stderr
    assert stdout == f"{len(payload)}|{hashlib.md5(payload.encode()).hexdigest()}\n"


def test_1m_row_result(twin: Twin):
    def run(t: Target):
        r = t.psql("-At", "-c", "select g from generate_series(1, 1000000) g").check()
        return len(r.stdout), hashlib.sha256(r.stdout.encode()).hexdigest()

    size, digest = twin.run(run, "size and sha256 of 1M rows")
    expected = "".join(f"{i}\n" for i in range(1, 1000001)).encode()
    assert (size, digest) == (len(expected), hashlib.sha256(expected).hexdigest())


def test_20mb_single_value(twin: Twin):
    """One DataRow larger than any sane read buffer must stream through."""

    def run(t: Target):
        r = t.psql("-At", "-c", "select repeat('ab', 10 * 1024 * 1024) || 'end'").check()
        return len(r.stdout), hashlib.sha256(r.stdout.encode()).hexdigest()

    size, _ = twin.run(run, "size and sha256 of a 20 MB value")
    assert size == 20 * 1024 * 1024 + 4

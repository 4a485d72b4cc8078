# API TOKEN statements over the wire (issue 4): the seed scenario through psql, errors with SQLSTATEs and
# positions, simple-protocol mixes, transaction blocks, command tags, look-alikes that must stay ordinary SQL, and
# psycopg 3 with server-side prepare, binary results and pipelines. Nothing of these statements may reach the
# upstream (its log_statement=all log is checked).
#
# Tokens are only ever shown through conftest.mask(). Tests use unique token names so that they are independent.
from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import re
import struct
import uuid

import psycopg
import pytest

import pgwire
from conftest import ROLES, PgCluster, Target, Twin, create_token, mask, remember_secret

UTC = dt.timezone.utc
SHOW_COLUMNS = ["name", "user", "created_at", "expires_at", "last_used_at", "status", "comment", "created_by"]
JWT_RE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
CI_COMMENT = "Токен для CI: сборка и выкладка «ci_pipeline»"
CI_COMMENT_2 = "Новый комментарий: только чтение"
REPORT_COMMENT = "Еженедельные отчёты для аналитиков"
OID_TEXT, OID_INT8, OID_TIMESTAMPTZ = 25, 20, 1184


def uniq(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def parse_ts(text: str) -> dt.datetime:
    """A timestamptz in text form as tokengate must send it: UTC, `YYYY-MM-DD HH:MM:SS[.ffffff]+00`."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{1,6})?)\+00", text)
    assert m, f"not a UTC timestamptz in PostgreSQL's text form: {text!r}"
    return dt.datetime.fromisoformat(m.group(1)).replace(tzinfo=UTC)


def assert_about(when: dt.datetime, expected: dt.datetime, what: str, slack: float = 120) -> None:
    delta = abs((when - expected).total_seconds())
    assert delta <= slack, f"{what}: {when.isoformat()} is {delta:.0f} s away from {expected.isoformat()}"


def now() -> dt.datetime:
    return dt.datetime.now(UTC)


# ---------------------------------------------------------------- psql


def psql_csv(t: Target, sql: str, user: str = "analyst", password: str | None = None):
    """psql --csv -c SQL; returns (rc, lines of status tags, rows as dicts, stderr)."""
    r = t.psql("--csv", "-c", sql, user=user, password=password)
    tags, table = [], []
    for line in r.stdout.splitlines():
        if table or "," in line or line in SHOW_COLUMNS or line == "name":
            table.append(line)
        else:
            tags.append(line)
    rows = list(csv.DictReader(io.StringIO("\n".join(table)))) if table else []
    header = table[0].split(",") if table else []
    return r.rc, tags, header, rows, r.stderr


def psql_ok(t: Target, sql: str, user: str = "analyst"):
    rc, tags, header, rows, stderr = psql_csv(t, sql, user)
    assert rc == 0, f"psql -c {sql!r} as {user} failed (rc={rc}): {stderr}"
    return tags, header, rows


def psql_show(t: Target, user: str = "analyst", suffix: str = "") -> dict[str, dict[str, str]]:
    tags, header, rows = psql_ok(t, f"SHOW ALL API TOKENS{suffix}", user)
    if rows:
        assert header == SHOW_COLUMNS, f"SHOW API TOKENS columns: {header}"
    out = {}
    for row in rows:
        if row["status"] == "active" or row["name"] not in out:
            out[row["name"]] = row
    return out


# ---------------------------------------------------------------- raw wire


@contextlib.contextmanager
def session(t: Target, user: str = "analyst", password: str | None = None):
    with t.wire() as c:
        r = pgwire.login(c, user, ROLES.get(user, "") if password is None else password)
        assert r.ok, f"login of {user} through {t.name} failed: {r.error}"
        yield c
        try:
            c.send(pgwire.terminate_message())
        except OSError:
            pass


def cstring(body: bytes) -> str:
    return body.split(b"\0", 1)[0].decode()


def row_description(m: pgwire.Message) -> list[tuple[str, int, int]]:
    """(name, type oid, format) of each column."""
    (n,) = struct.unpack("!h", m.body[:2])
    i, cols = 2, []
    for _ in range(n):
        end = m.body.index(b"\0", i)
        name = m.body[i:end].decode()
        i = end + 1
        _table, _attnum, oid, _len, _mod, fmt = struct.unpack("!ihihih", m.body[i : i + 18])
        i += 18
        cols.append((name, oid, fmt))
    return cols


def summary(msgs: list[pgwire.Message]) -> list[tuple]:
    """Messages as comparable tuples: ("C", tag), ("E", sqlstate), ("N", message), ("T", columns), ("D",), ("Z", status)…"""
    out = []
    for m in msgs:
        if m.tag == b"C":
            out.append(("C", cstring(m.body)))
        elif m.tag == b"E":
            out.append(("E", m.error().sqlstate))
        elif m.tag == b"N":
            out.append(("N", m.error().get("C")))
        elif m.tag == b"T":
            out.append(("T", tuple(c[0] for c in row_description(m))))
        elif m.tag == b"Z":
            out.append(("Z", m.body.decode()))
        else:
            out.append((m.tag.decode(),))
    return out


def describe_all(msgs: list[pgwire.Message]) -> str:
    return "[" + ", ".join(pgwire.describe(m) for m in msgs) + "]"


def only_error(msgs: list[pgwire.Message]) -> pgwire.ErrorFields:
    errs = [m.error() for m in msgs if m.tag == b"E"]
    assert len(errs) == 1, f"expected exactly one ErrorResponse: {describe_all(msgs)}"
    return errs[0]


def tags_of(msgs: list[pgwire.Message]) -> list[str]:
    return [cstring(m.body) for m in msgs if m.tag == b"C"]


def token_rows(c: pgwire.WireConnection) -> dict[str, tuple]:
    """name -> row of SHOW ALL API TOKENS for the session's user (active rows win over old revoked ones)."""
    msgs = c.simple_query("SHOW ALL API TOKENS")
    assert not any(m.tag == b"E" for m in msgs), describe_all(msgs)
    out = {}
    for row in pgwire.data_rows_text(msgs):
        if row[5] == "active" or row[0] not in out:
            out[row[0]] = row
    return out


def assert_never_upstream(pg: PgCluster, mark: int, *needles: str) -> None:
    """None of the upstream's logged statements since mark is an API TOKEN statement or mentions a needle."""
    stmts = pg.logged_statements(mark)
    bad = [s for s in stmts if re.search(r"\bapi\s+tokens?\b", s, re.I) or any(n in s for n in needles)]
    assert not bad, f"API TOKEN statements reached the upstream: {bad}"
    raw = pg.log_since(mark)
    leaked = [n for n in needles if n in raw]
    assert not leaked, f"the upstream's log mentions {leaked}"


# ---------------------------------------------------------------- the seed scenario through psql


def test_seed_user_scenario_psql(proxy: Target, pg: PgCluster):
    """The user's half of the seed, statement by statement as typed into psql."""
    mark = pg.log_mark()
    psql_ok(proxy, "DROP API TOKEN IF EXISTS ci_pipeline")

    t0 = now()
    tags, header, rows = psql_ok(
        proxy, f"CREATE API TOKEN ci_pipeline MAX DURATION '30d' COMMENT '{CI_COMMENT}';")
    assert header == ["name", "token", "expires_at"], header
    assert len(rows) == 1, rows
    ci = rows[0]
    token = remember_secret(ci["token"])
    assert ci["name"] == "ci_pipeline"
    assert JWT_RE.match(token), f"token is not a compact JWT: {mask(token)}"
    assert_about(parse_ts(ci["expires_at"]), t0 + dt.timedelta(days=30), "expires_at of '30d'")

    tags, header, rows = psql_ok(proxy, "CREATE API TOKEN;")
    assert header == ["name", "token", "expires_at"] and len(rows) == 1, (header, len(rows))
    generated = rows[0]
    remember_secret(generated["token"])
    assert re.fullmatch(r"token_[a-z2-7]{8}", generated["name"]), f"generated name {generated['name']!r}"
    assert_about(parse_ts(generated["expires_at"]), t0 + dt.timedelta(days=365), "default validity of 365 days")

    tags, header, rows = psql_ok(proxy, "SHOW API TOKENS")
    assert header == SHOW_COLUMNS, header
    shown = {r["name"]: r for r in rows if r["status"] == "active"}
    assert {"ci_pipeline", generated["name"]} <= set(shown), f"active tokens listed: {sorted(shown)}"
    row = shown["ci_pipeline"]
    assert row["user"] == "analyst" and row["created_by"] == "analyst", row
    assert row["comment"] == CI_COMMENT, row
    assert row["last_used_at"] == "", f"a token never used has last_used_at NULL: {row['last_used_at']!r}"
    assert parse_ts(row["expires_at"]) == parse_ts(ci["expires_at"])
    assert_about(parse_ts(row["created_at"]), t0, "created_at")
    for r in rows:
        for k, v in r.items():
            assert not JWT_RE.match(v or "") and token not in (v or ""), f"SHOW API TOKENS shows a token in {k}"
    stamps = [parse_ts(r["created_at"]) for r in rows]
    assert stamps == sorted(stamps), "SHOW API TOKENS lists oldest first"

    tags, _, _ = psql_ok(proxy, f"ALTER API TOKEN ci_pipeline SET COMMENT '{CI_COMMENT_2}'")
    assert tags == ["ALTER API TOKEN"], tags
    assert psql_show(proxy)["ci_pipeline"]["comment"] == CI_COMMENT_2

    tags, _, _ = psql_ok(proxy, "DROP API TOKEN ci_pipeline")
    assert tags == ["DROP API TOKEN"], tags
    assert psql_show(proxy)["ci_pipeline"]["status"] == "revoked"

    # Every token not revoked yet, expired ones included (their sessions may still be open).
    _, _, listed = psql_ok(proxy, "SHOW ALL API TOKENS")
    unrevoked = [r["name"] for r in listed if r["status"] != "revoked"]
    tags, _, _ = psql_ok(proxy, "DROP ALL API TOKENS FOR USER analyst")
    assert tags == [f"DROP API TOKENS {len(unrevoked)}"], (tags, unrevoked)
    assert not [n for n, r in psql_show(proxy).items() if r["status"] != "revoked"]
    tags, _, _ = psql_ok(proxy, "DROP ALL API TOKENS")
    assert tags == ["DROP API TOKENS 0"], tags

    assert_never_upstream(pg, mark, "ci_pipeline", CI_COMMENT, CI_COMMENT_2)


def test_seed_admin_policies_psql(proxy: Target, pg: PgCluster):
    """The administrator's half of the seed: policies (longest wins), tokens for another user."""
    mark = pg.log_mark()
    try:
        psql_ok(proxy, "DROP API TOKEN IF EXISTS report_bot FOR USER analyst", "admin")
        tags, _, _ = psql_ok(proxy, "ALTER USER analyst SET API TOKEN MAX DURATION '24h'", "admin")
        assert tags == ["ALTER ROLE"], tags
        tags, _, _ = psql_ok(proxy, "ALTER ROLE service_accounts SET API TOKEN MAX DURATION '30d'", "admin")
        assert tags == ["ALTER ROLE"], tags

        # analyst is a member of service_accounts: the longest policy (30d) wins over the user's own 24h.
        name = uniq("policy_ok")
        t0 = now()
        _, _, rows = psql_ok(proxy, f"CREATE API TOKEN {name} MAX DURATION '30d'")
        remember_secret(rows[0]["token"])
        assert_about(parse_ts(rows[0]["expires_at"]), t0 + dt.timedelta(days=30), "30d under a 30d maximum")

        with session(proxy, "analyst") as c:
            over = uniq("policy_over")
            err = only_error(c.simple_query(f"CREATE API TOKEN {over} MAX DURATION '31d'"))
            assert err.sqlstate == "22023", err
            detail = err.get("D") or ""
            assert re.search(r"30 ?d|30 days|720 ?h|2592000", detail), f"DETAIL should name the maximum: {err}"
            assert "service_accounts" in detail, f"DETAIL should name the policy that sets it: {err}"
            assert over not in token_rows(c), "a refused CREATE stored a token"

        # A policy binds every new token for the user, whoever issues it.
        rc, _, _, _, stderr = psql_csv(
            proxy, f"CREATE API TOKEN report_bot FOR USER analyst MAX DURATION '90d' COMMENT '{REPORT_COMMENT}'",
            "admin")
        assert rc != 0 and "ERROR" in stderr, f"90d above analyst's 30d maximum was accepted: {stderr}"

        for stmt in ("ALTER ROLE service_accounts RESET API TOKEN MAX DURATION",
                     "ALTER USER analyst RESET API TOKEN MAX DURATION"):
            tags, _, _ = psql_ok(proxy, stmt, "admin")
            assert tags == ["ALTER ROLE"], (stmt, tags)

        t0 = now()
        _, header, rows = psql_ok(
            proxy, f"CREATE API TOKEN report_bot FOR USER analyst MAX DURATION '90d' COMMENT '{REPORT_COMMENT}'",
            "admin")
        assert header == ["name", "token", "expires_at"] and rows[0]["name"] == "report_bot", (header, rows[:0])
        remember_secret(rows[0]["token"])
        assert_about(parse_ts(rows[0]["expires_at"]), t0 + dt.timedelta(days=90), "report_bot expiry")

        listed = psql_show(proxy, "admin", " FOR USER analyst")
        assert listed["report_bot"]["user"] == "analyst", listed["report_bot"]
        assert listed["report_bot"]["created_by"] == "admin", listed["report_bot"]
        assert listed["report_bot"]["comment"] == REPORT_COMMENT
        assert "report_bot" in psql_show(proxy, "analyst"), "the owner sees a token an admin issued for them"

        tags, _, _ = psql_ok(proxy, "DROP API TOKEN report_bot FOR USER analyst", "admin")
        assert tags == ["DROP API TOKEN"], tags
        assert psql_show(proxy, "admin", " FOR USER analyst")["report_bot"]["status"] == "revoked"
    finally:
        for stmt in ("ALTER ROLE service_accounts RESET API TOKEN MAX DURATION",
                     "ALTER USER analyst RESET API TOKEN MAX DURATION",
                     "DROP API TOKEN IF EXISTS report_bot FOR USER analyst"):
            proxy.psql("-c", stmt, user="admin")
    assert_never_upstream(pg, mark, "report_bot", REPORT_COMMENT)


def test_user_policy_lowers_default_and_refuses_more(proxy: Target, fresh_role):
    role, pw = fresh_role()
    with session(proxy, "admin") as a:
        assert tags_of(a.simple_query(f"ALTER ROLE {role} SET API TOKEN MAX DURATION '24h'")) == ["ALTER ROLE"]
        policies = a.simple_query(f"SHOW API TOKEN POLICIES FOR USER {role}")
        assert not any(m.tag == b"E" for m in policies), describe_all(policies)
    with session(proxy, role, pw) as c:
        t0 = now()
        msgs = c.simple_query("CREATE API TOKEN")
        rows = pgwire.data_rows_text(msgs)
        assert len(rows) == 1, describe_all(msgs)
        remember_secret(rows[0][1])
        assert_about(parse_ts(rows[0][2]), t0 + dt.timedelta(hours=24), "no MAX DURATION under a 24h policy")
        err = only_error(c.simple_query("CREATE API TOKEN MAX DURATION '25h'"))
        assert err.sqlstate == "22023", err
        assert re.search(r"24 ?h|1 ?d|1 day|86400", err.get("D") or ""), f"DETAIL names the maximum: {err}"


# ---------------------------------------------------------------- permissions and errors


@pytest.mark.parametrize("sql", [
    "SHOW API TOKENS FOR USER admin",
    "SHOW API TOKENS FOR ALL USERS",
    "CREATE API TOKEN {name} FOR USER admin",
    "DROP ALL API TOKENS FOR USER admin",
    "ALTER API TOKEN {name} FOR USER admin SET COMMENT 'x'",
    "ALTER USER analyst SET API TOKEN MAX DURATION '1000d'",
    "ALTER ROLE service_accounts RESET API TOKEN MAX DURATION",
    "SHOW API TOKEN POLICIES FOR USER admin",
])
def test_non_admin_gets_42501(proxy: Target, sql: str):
    with session(proxy, "analyst") as c:
        msgs = c.simple_query(sql.format(name=uniq("perm")))
        err = only_error(msgs)
        assert err.sqlstate == "42501", f"{sql}: {err}"
        assert msgs[-1].tag == b"Z" and msgs[-1].body == b"I"


def test_syntax_error_42601_with_position(proxy: Target, pg: PgCluster):
    mark = pg.log_mark()
    sql = "CREATE API TOKEN foo MAX DURATIN '1d'"
    with session(proxy) as c:
        err = only_error(c.simple_query(sql))
    assert err.sqlstate == "42601", err
    assert err.message == 'syntax error at or near "DURATIN"', err
    assert err.get("P") == str(sql.index("DURATIN") + 1), f"position should point at DURATIN: {err}"
    # psql shows the caret under the offending word, as for a server error.
    r = proxy.psql("-c", "SELECT 1;\nSHOW API TOKENS FOR EVERYONE", user="analyst")
    assert r.rc != 0
    assert 'ERROR:  syntax error at or near "EVERYONE"' in r.stderr, r.stderr
    assert "LINE 2: SHOW API TOKENS FOR EVERYONE" in r.stderr, r.stderr
    assert_never_upstream(pg, mark, "DURATIN", "EVERYONE")


def test_error_sqlstates(proxy: Target, fresh_role):
    role, pw = fresh_role()
    name = uniq("dup")
    with session(proxy, role, pw) as c:
        assert tags_of(c.simple_query(f"CREATE API TOKEN {name}")) == ["CREATE API TOKEN"]
        cases = {
            f"CREATE API TOKEN {name}": "42710",
            f"CREATE API TOKEN {uniq()} MAX DURATION 'forever'": "22023",
            f"CREATE API TOKEN {uniq()} MAX DURATION '0s'": "22023",
            f"CREATE API TOKEN {uniq()} MAX DURATION '101 years'": "22023",
            "CREATE API TOKEN " + "n" * 64: "42622",
            f"DROP API TOKEN {uniq('missing')}": "42704",
            f"ALTER API TOKEN {uniq('missing')} SET COMMENT 'x'": "42704",
        }
        for sql, state in cases.items():
            err = only_error(c.simple_query(sql))
            assert err.sqlstate == state, f"{sql[:60]}: {err}"
        # IF EXISTS: no error for a missing token (PostgreSQL gives a NOTICE in such cases).
        msgs = c.simple_query(f"DROP API TOKEN IF EXISTS {uniq('missing')}")
        assert not any(m.tag == b"E" for m in msgs), describe_all(msgs)
        assert tags_of(msgs) == ["DROP API TOKEN"], describe_all(msgs)
    with session(proxy, "admin") as a:
        for sql in (f"ALTER ROLE {uniq('norole')} SET API TOKEN MAX DURATION '1d'",
                    f"CREATE API TOKEN FOR USER {uniq('norole')}",
                    f"SHOW API TOKENS FOR USER {uniq('norole')}"):
            err = only_error(a.simple_query(sql))
            assert err.sqlstate == "42704", f"{sql}: {err}"


def test_dollar_parameter_is_42P02(proxy: Target, pg: PgCluster):
    mark = pg.log_mark()
    with proxy.connect(user="analyst") as conn:
        with pytest.raises(psycopg.errors.UndefinedParameter):
            conn.execute("CREATE API TOKEN MAX DURATION %s", ["1d"])
        assert conn.execute("select 42").fetchone() == (42,), "the session works after 42P02"
    with session(proxy) as c:
        # $1 where a string constant goes (PostgreSQL allows a parameter there; API TOKEN statements do not).
        c.send(pgwire.parse_message("", "ALTER API TOKEN some_token SET COMMENT $1") + pgwire.sync_message())
        msgs = c.read_until_ready()
        assert summary(msgs) == [("E", "42P02"), ("Z", "I")], describe_all(msgs)
    assert_never_upstream(pg, mark)


def test_parse_with_an_api_token_statement_after_another_is_refused_locally(proxy: Target, pg: PgCluster):
    """PostgreSQL refuses a Parse holding several statements (42601, no position). tokengate gives the same answer
    itself when any of them is an API TOKEN statement, so the statement's text never reaches the upstream or its
    log, wherever it stands in the string."""
    name = uniq("parse_mix")
    mark = pg.log_mark()
    with session(proxy) as c:
        for sql in (f"select 1; CREATE API TOKEN {name}", f"select 1; select 2; DROP API TOKEN {name}",
                    f"select 1;; /* c */ ALTER API TOKEN {name} SET COMMENT 'x'", f"CREATE API TOKEN {name}; select 1",
                    f"select 'a;b'; SHOW API TOKENS"):
            c.send(pgwire.parse_message("", sql) + pgwire.bind_message("", "") + pgwire.execute_message("")
                   + pgwire.sync_message())
            msgs = c.read_until_ready()
            assert summary(msgs) == [("E", "42601"), ("Z", "I")], f"{sql}: {describe_all(msgs)}"
            err = only_error(msgs)
            assert err.message == "cannot insert multiple commands into a prepared statement", err
            assert err.get("P") is None, err
        assert name not in token_rows(c)
    assert_never_upstream(pg, mark, name)


def test_a_local_portal_ends_at_its_sync_as_an_upstream_portal_does(proxy: Target, direct: Target):
    """A pipeline that executes a portal again after the Sync that ended its transaction: PostgreSQL answers 34000
    and goes on; so does tokengate for a portal of an API TOKEN statement (it used to end the session with
    XX000 when the second Execute was read before the first Sync was answered)."""
    def pipeline(sql: str) -> bytes:
        return (pgwire.parse_message("t", sql) + pgwire.bind_message("p", "t") + pgwire.execute_message("p", 1)
                + pgwire.sync_message() + pgwire.execute_message("p") + pgwire.describe_message(b"P", "p")
                + pgwire.sync_message() + pgwire.bind_message("q", "t") + pgwire.execute_message("q", 1)
                + pgwire.sync_message() + pgwire.close_message(b"S", "t") + pgwire.sync_message())

    shapes = []
    for target, sql in ((direct, "select 1 union all select 2"), (proxy, "SHOW API TOKENS")):
        with session(target) as c:
            if target is proxy:  # two rows to show, so that Execute with a limit of one suspends
                for _ in range(2):
                    remember_secret(pgwire.data_rows_text(c.simple_query(f"CREATE API TOKEN {uniq('portal')}"))[0][1])
            c.send(pipeline(sql))
            msgs = []
            for _ in range(4):
                msgs += c.read_until_ready()
            shapes.append([(m.name, m.error().sqlstate, m.error().message) if m.tag == b"E" else m.name
                           for m in msgs if m.tag != b"D"])
            assert c.simple_query("select 42")[-1].tag == b"Z"
    assert shapes[0] == shapes[1], shapes
    assert ("ErrorResponse", "34000", 'portal "p" does not exist') in shapes[1], shapes


# ---------------------------------------------------------------- simple protocol: mixes and blocks


def test_mixed_multi_statement_query(proxy: Target, pg: PgCluster):
    name, other = uniq("mix"), uniq("mix_other")
    with session(proxy) as c:
        for n in (name, other):
            remember_secret(pgwire.data_rows_text(c.simple_query(f"CREATE API TOKEN {n}"))[0][1])
    mark = pg.log_mark()
    with session(proxy) as c:
        msgs = c.simple_query(f"select 1 as a; ALTER API TOKEN {name} SET COMMENT 'mixed'; select 2 as b")
        s = summary(msgs)
        assert s == [("T", ("a",)), ("D",), ("C", "SELECT 1"), ("C", "ALTER API TOKEN"),
                     ("T", ("b",)), ("D",), ("C", "SELECT 1"), ("Z", "I")], describe_all(msgs)
        rows = pgwire.data_rows_text(msgs)
        assert rows == [("1",), ("2",)]
        assert token_rows(c)[name][6] == "mixed"

        # An error in the middle stops the rest; exactly one ReadyForQuery.
        msgs = c.simple_query(f"select 1; DROP API TOKEN {uniq('missing')}; DROP API TOKEN {other}; select 2")
        assert summary(msgs) == [("T", ("?column?",)), ("D",), ("C", "SELECT 1"), ("E", "42704"), ("Z", "I")], \
            describe_all(msgs)
        assert token_rows(c)[other][5] == "active", "a token statement after a failed one ran"
        msgs = c.simple_query(f"select 1/0; DROP API TOKEN {other}; select 3")
        assert summary(msgs) == [("E", "22012"), ("Z", "I")], describe_all(msgs)
        assert token_rows(c)[other][5] == "active", "a token statement after a failed statement ran"

        # Consecutive ordinary statements around token statements still run (and a token statement alone).
        msgs = c.simple_query(f"SHOW API TOKENS; select 4; select 5; ALTER API TOKEN {name} SET COMMENT NULL")
        assert tags_of(msgs) == ["SHOW", "SELECT 1", "SELECT 1", "ALTER API TOKEN"], describe_all(msgs)
        assert sum(1 for m in msgs if m.tag == b"Z") == 1
    stmts = pg.logged_statements(mark)
    assert any("select 1 as a" in s for s in stmts), stmts
    assert any("select 2 as b" in s for s in stmts), stmts
    assert not any("select 3" in s for s in stmts), f"a statement after the error reached the upstream: {stmts}"
    assert_never_upstream(pg, mark, name, other)


def test_create_in_multi_statement_query_is_refused(proxy: Target, pg: PgCluster):
    """CREATE API TOKEN shows a secret that no rollback can take back, so, like CREATE DATABASE, it refuses to run
    in a multi-statement Query (an implicit transaction block): 25001, and nothing of the string runs."""
    name = uniq("mix_create")
    mark = pg.log_mark()
    with session(proxy) as c:
        for sql in (f"select 'before'; CREATE API TOKEN {name}", f"CREATE API TOKEN {name}; select 'after'",
                    f"CREATE API TOKEN {name}; SHOW API TOKENS"):
            msgs = c.simple_query(sql)
            assert summary(msgs) == [("E", "25001"), ("Z", "I")], describe_all(msgs)
            assert only_error(msgs).message == "CREATE API TOKEN cannot run inside a transaction block"
        assert name not in token_rows(c)
    stmts = pg.logged_statements(mark)
    assert not any("before" in s or "after" in s for s in stmts), stmts


def test_psql_multi_statement(proxy: Target):
    name = uniq("psqlmix")
    with session(proxy) as c:
        remember_secret(pgwire.data_rows_text(c.simple_query(f"CREATE API TOKEN {name}"))[0][1])
    r = proxy.psql("--csv", "-c", f"select 'x' as before; ALTER API TOKEN {name} SET COMMENT 'psql'; "
                   "select 'y' as after", user="analyst")
    assert r.rc == 0, r.stderr
    # psql 15 prints every result of a multi-statement -c string; the last one is the final select.
    assert r.stdout.splitlines()[-2:] == ["after", "y"], r.stdout
    r = proxy.psql("-c", f"select 1; CREATE API TOKEN {uniq('psqlmix')}", user="analyst")
    assert r.rc != 0 and "CREATE API TOKEN cannot run inside a transaction block" in r.stderr, r


def test_inside_transaction_block(twin: Twin):
    """API TOKEN statements in a transaction block behave as PostgreSQL's own statements do there: CREATE API TOKEN
    is refused as CREATE DATABASE is (25001), an error fails the block (25P02 after it, COMMIT answers ROLLBACK), and
    the other statements run at once with a NOTICE. Each case is compared with PostgreSQL's own counterpart."""
    setup = {}
    if twin.is_proxy:
        with session(twin.target) as c:
            setup["name"] = uniq("txn")
            remember_secret(pgwire.data_rows_text(c.simple_query(f"CREATE API TOKEN {setup['name']}"))[0][1])

    def statements(t: Target) -> dict[str, str]:
        # The proxy's API TOKEN statement and the ordinary statement PostgreSQL treats the same way.
        if t.name == "proxy":
            return {"create": f"CREATE API TOKEN {uniq('txn_refused')}",
                    "failing": f"DROP API TOKEN {uniq('missing')}",
                    "ok": f"ALTER API TOKEN {setup['name']} SET COMMENT 'in a block'"}
        return {"create": f"CREATE DATABASE {uniq('txn_db')}",
                "failing": f"DROP TABLE {uniq('missing')}",
                "ok": "SET LOCAL work_mem = '5MB'"}

    def run(t: Target) -> list:
        sql = statements(t)
        out = []
        with session(t) as c:
            for steps in (["BEGIN", sql["create"], "select 1", "COMMIT"],
                          ["BEGIN", sql["failing"], "select 1", "COMMIT"],
                          ["BEGIN", sql["ok"], "select 1", "COMMIT"]):
                for q in steps:
                    msgs = c.simple_query(q)
                    # Errors by SQLSTATE where both must agree; the statement's own error only as "E".
                    out.append([("E", m.error().sqlstate if m.error().sqlstate in ("25001", "25P02") else "")
                                if m.tag == b"E" else ("Z", m.body.decode()) for m in msgs if m.tag in (b"E", b"Z")])
                    if q == "COMMIT":
                        out.append(next(m.body.rstrip(b"\0").decode() for m in msgs if m.tag == b"C"))
        return out

    got = twin.run(run, "transaction-block behaviour")
    assert got[1] == [("E", "25001"), ("Z", "E")] and got[2] == [("E", "25P02"), ("Z", "E")], got
    assert got[4] == "ROLLBACK" and got[6] == [("E", ""), ("Z", "E")] and got[9] == "ROLLBACK", got
    assert got[14] == "COMMIT", got
    if twin.is_proxy:
        with session(twin.target) as c:
            assert token_rows(c)[setup["name"]][6] == "in a block", "API TOKEN statements are not transactional"
            msgs = c.simple_query("BEGIN")
            msgs = c.simple_query(f"ALTER API TOKEN {setup['name']} SET COMMENT 'noticed'")
            assert any(m.tag == b"N" for m in msgs), f"no NOTICE inside a block: {describe_all(msgs)}"
            c.simple_query("ROLLBACK")


def test_command_tags(proxy: Target, fresh_role):
    role, pw = fresh_role()
    names = [uniq("tag") for _ in range(3)]
    with session(proxy, role, pw) as c:
        for n in names:
            msgs = c.simple_query(f"CREATE API TOKEN {n}")
            assert tags_of(msgs) == ["CREATE API TOKEN"], describe_all(msgs)
            remember_secret(pgwire.data_rows_text(msgs)[0][1])
        msgs = c.simple_query("SHOW API TOKENS")
        assert tags_of(msgs) == ["SHOW"], describe_all(msgs)
        t = next(m for m in msgs if m.tag == b"T")
        assert [(n, o) for n, o, _ in row_description(t)] == [
            ("name", OID_TEXT), ("user", OID_TEXT), ("created_at", OID_TIMESTAMPTZ),
            ("expires_at", OID_TIMESTAMPTZ), ("last_used_at", OID_TIMESTAMPTZ), ("status", OID_TEXT),
            ("comment", OID_TEXT), ("created_by", OID_TEXT)]
        assert tags_of(c.simple_query(f"ALTER API TOKEN {names[0]} SET COMMENT 'c'")) == ["ALTER API TOKEN"]
        assert tags_of(c.simple_query(f"DROP API TOKEN {names[0]}")) == ["DROP API TOKEN"]
        assert tags_of(c.simple_query(f"DROP ALL API TOKENS FOR USER {role}")) == ["DROP API TOKENS 2"]
        assert tags_of(c.simple_query("DROP ALL API TOKENS")) == ["DROP API TOKENS 0"]
    with session(proxy, "admin") as a:
        assert tags_of(a.simple_query(f"ALTER USER {role} SET API TOKEN MAX DURATION '2w'")) == ["ALTER ROLE"]
        assert tags_of(a.simple_query(f"ALTER ROLE {role} RESET API TOKEN MAX DURATION")) == ["ALTER ROLE"]


def test_lookalikes_go_upstream(proxy: Target, direct: Target, pg: PgCluster, fresh_role):
    role, _ = fresh_role()
    schema = uniq("tg_look")
    stmts = [
        f"CREATE SCHEMA {schema}",
        f"SET search_path = {schema}",
        "CREATE TABLE api (token text)",
        "INSERT INTO api VALUES ('x')",
        "COMMENT ON TABLE api IS 'api token store'",
        "SHOW search_path",
        "SET api.token = 'custom'",
        "SHOW api.token",
        "DROP TABLE IF EXISTS tokens",
        "DROP TABLE api",
        f"ALTER ROLE {role} SET search_path = public",
        f"ALTER USER {role} RESET search_path",
        f"DROP SCHEMA {schema}",
    ]

    def run(t: Target):
        out = []
        with session(t, "admin") as c:
            for s in stmts:
                msgs = c.simple_query(s)
                out.append((summary(msgs), pgwire.data_rows_text(msgs)))
        return out

    mark = pg.log_mark()
    got = run(proxy)
    logged = pg.logged_statements(mark)
    for s in stmts:
        assert s in logged, f"{s!r} did not reach the upstream; it logged {logged}"
    want = run(direct)
    assert got == want, f"look-alikes answer differently through tokengate:\n{got}\nvs\n{want}"
    with session(proxy, "admin") as c:
        err = only_error(c.simple_query("SHOW api_token"))
        assert err.sqlstate == "42704" and "unrecognized configuration parameter" in err.message, err


def test_never_upstream_in_any_protocol(proxy: Target, pg: PgCluster):
    name = uniq("hidden")
    mark = pg.log_mark()
    with proxy.connect(user="analyst") as conn:
        remember_secret(conn.execute(f"CREATE API TOKEN {name} COMMENT 'via extended'").fetchone()[1])
        conn.execute(f"ALTER API TOKEN {name} SET COMMENT 'again'", prepare=True)
        conn.execute("SHOW API TOKENS", prepare=True).fetchall()
        conn.execute(f"DROP API TOKEN {name}")
    proxy.psql("-c", "SHOW API TOKENS; SHOW API TOKEN POLICIES", user="admin").check()
    with session(proxy) as c:
        c.simple_query(f"/* {name} */ SHOW API TOKENS")
    assert_never_upstream(pg, mark, name, "via extended")


# ---------------------------------------------------------------- psycopg 3


def test_psycopg_server_side_prepare(proxy: Target, pg: PgCluster):
    mark = pg.log_mark()
    with psycopg.connect(proxy.conninfo(user="analyst"), autocommit=True, prepare_threshold=0) as conn:
        names = []
        for _ in range(3):  # the same prepared text executed again: generated names differ
            cur = conn.execute("CREATE API TOKEN MAX DURATION '1h' COMMENT 'prepared'", prepare=True)
            assert [d.name for d in cur.description] == ["name", "token", "expires_at"]
            assert cur.statusmessage == "CREATE API TOKEN", cur.statusmessage
            n, tok, exp = cur.fetchone()
            remember_secret(tok)
            assert isinstance(exp, dt.datetime) and exp.utcoffset() is not None
            assert_about(exp, now() + dt.timedelta(hours=1), "expires_at of '1h'")
            names.append(n)
            assert conn.execute("select %s::int + 1", [len(names)], prepare=True).fetchone() == (len(names) + 1,)
        assert len(set(names)) == 3, names
        cur = conn.cursor()
        for _ in range(2):
            rows = cur.execute("SHOW API TOKENS", prepare=True).fetchall()
            assert [d.name for d in cur.description] == SHOW_COLUMNS
            assert set(names) <= {r[0] for r in rows}
        for n in names:
            cur.execute(f"DROP API TOKEN {n}", prepare=True)
            assert cur.statusmessage == "DROP API TOKEN"
        # Prepared ordinary statements keep working next to the local ones.
        assert conn.execute("select current_user", prepare=True).fetchone() == ("analyst",)
    assert_never_upstream(pg, mark, *names)


def test_psycopg_binary_results(proxy: Target):
    name = uniq("binary")
    with proxy.connect(user="analyst") as conn:
        cur = conn.cursor(binary=True)
        cur.execute(f"CREATE API TOKEN {name} MAX DURATION '1d12h' COMMENT 'двоичный'")
        n, tok, exp = cur.fetchone()
        remember_secret(tok)
        assert n == name and isinstance(tok, str)
        assert isinstance(exp, dt.datetime) and exp.tzinfo is not None, repr(exp)
        assert_about(exp, now() + dt.timedelta(hours=36), "binary expires_at")
        cur.execute("SHOW API TOKENS")
        brows = {r[0]: r for r in cur.fetchall()}
        trows = {r[0]: r for r in conn.execute("SHOW API TOKENS").fetchall()}
        assert brows[name] == trows[name], f"binary and text results differ: {brows[name]} vs {trows[name]}"
        _, user, created, expires, last_used, status, comment, by = brows[name]
        assert (user, status, comment, by, last_used) == ("analyst", "active", "двоичный", "analyst", None)
        assert expires == exp and created.tzinfo is not None
        cur.execute(f"DROP API TOKEN {name}")


def test_psycopg_pipeline_interleaved(proxy: Target, pg: PgCluster):
    name = uniq("pipe")
    mark = pg.log_mark()
    with proxy.connect(user="analyst") as conn:
        with conn.pipeline():
            c1 = conn.execute("select 1 as first")
            c2 = conn.execute(f"CREATE API TOKEN {name} COMMENT 'pipelined'")
            c3 = conn.execute("select %s::text as third", ["three"])
            c4 = conn.execute("SHOW API TOKENS")
            c5 = conn.execute(f"ALTER API TOKEN {name} SET COMMENT 'changed in the pipeline'")
            c6 = conn.execute("select 6 as sixth")
            c7 = conn.execute("SHOW API TOKENS")
        assert c1.fetchall() == [(1,)]
        row = c2.fetchone()
        remember_secret(row[1])
        assert row[0] == name and c2.statusmessage == "CREATE API TOKEN"
        assert c3.fetchall() == [("three",)]
        assert name in {r[0] for r in c4.fetchall()}, "SHOW ran before the CREATE before it"
        assert c5.statusmessage == "ALTER API TOKEN"
        assert c6.fetchall() == [(6,)]
        assert {r[0]: r[6] for r in c7.fetchall()}[name] == "changed in the pipeline"
    logged = pg.logged_statements(mark)
    order = [i for i, s in enumerate(logged) if s in ("select 1 as first", "select $1::text as third",
                                                      "select 6 as sixth")]
    assert len(order) == 3, logged
    assert_never_upstream(pg, mark, name)


def test_psycopg_pipeline_error_skips_token_statement(proxy: Target):
    name = uniq("skipped")
    with proxy.connect(user="analyst") as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            with conn.pipeline():
                conn.execute("select 1/0")
                conn.execute(f"CREATE API TOKEN {name}")
                conn.execute("select 2")
        assert conn.execute("select 3").fetchone() == (3,), "the session works after the failed pipeline"
        names = {r[0] for r in conn.execute("SHOW API TOKENS").fetchall()}
    assert name not in names, "PostgreSQL skips every message up to Sync after an error; the token was created"


def test_psycopg_transaction_rollback_keeps_token(proxy: Target):
    name = uniq("psy_txn")
    notices = []
    with proxy.connect(user="analyst", autocommit=True) as conn:
        remember_secret(conn.execute(f"CREATE API TOKEN {name}").fetchone()[1])
    with proxy.connect(user="analyst", autocommit=False) as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute(f"ALTER API TOKEN {name} SET COMMENT 'rolled back?'")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        conn.rollback()
        assert notices, "no NOTICE that the statement is not transactional"
        assert {r[0]: r[6] for r in conn.execute("SHOW API TOKENS").fetchall()}[name] == "rolled back?"
        conn.rollback()
        # CREATE API TOKEN needs autocommit, as CREATE DATABASE does.
        with pytest.raises(psycopg.errors.ActiveSqlTransaction):
            conn.execute(f"CREATE API TOKEN {uniq('psy_refused')}")
        conn.rollback()


# ---------------------------------------------------------------- raw extended protocol


def test_extended_named_statement_shadowing(proxy: Target):
    """S_1 first a local API TOKEN statement, closed, then an ordinary upstream one (names shadow across the two sides)."""
    with session(proxy) as c:
        c.send(pgwire.parse_message("S_1", "SHOW API TOKENS") + pgwire.describe_message(b"S", "S_1")
               + pgwire.bind_message("", "S_1") + pgwire.execute_message("") + pgwire.sync_message())
        msgs = c.read_until_ready()
        s = summary(msgs)
        assert s[0] == ("1",) and s[1] == ("t",) and s[2] == ("T", tuple(SHOW_COLUMNS)), describe_all(msgs)
        assert s[-2:] == [("C", "SHOW"), ("Z", "I")], describe_all(msgs)
        c.send(pgwire.close_message(b"S", "S_1") + pgwire.parse_message("S_1", "select 'upstream' as w")
               + pgwire.bind_message("", "S_1") + pgwire.execute_message("") + pgwire.sync_message())
        msgs = c.read_until_ready()
        assert summary(msgs) == [("3",), ("1",), ("2",), ("D",), ("C", "SELECT 1"), ("Z", "I")], describe_all(msgs)
        assert pgwire.data_rows_text(msgs) == [("upstream",)]
        # Unnamed: an ordinary Parse replaces a local unnamed statement and vice versa.
        c.send(pgwire.parse_message("", "SHOW API TOKENS") + pgwire.parse_message("", "select 7")
               + pgwire.bind_message("", "") + pgwire.execute_message("") + pgwire.sync_message())
        msgs = c.read_until_ready()
        assert pgwire.data_rows_text(msgs) == [("7",)], describe_all(msgs)


def test_extended_error_before_token_statement_skips_it(proxy: Target):
    name = uniq("wire_skip")
    with session(proxy) as c:
        c.send(pgwire.parse_message("", "select 1/0") + pgwire.bind_message("", "") + pgwire.execute_message("")
               + pgwire.parse_message("", f"CREATE API TOKEN {name}") + pgwire.bind_message("", "")
               + pgwire.execute_message("") + pgwire.sync_message())
        msgs = c.read_until_ready()
        # PostgreSQL plans the unnamed statement at Bind, so 1/0 fails there: no BindComplete.
        assert summary(msgs) == [("1",), ("E", "22012"), ("Z", "I")], describe_all(msgs)
        assert name not in token_rows(c)


# ---------------------------------------------------------------- pgjdbc


def masked_facts(facts: dict[str, list[str]]) -> dict[str, list[str]]:
    return {k: [mask(v) for v in vs] if k.endswith("_token") else vs for k, vs in facts.items()}


@pytest.mark.parametrize("threshold", [1, 0], ids=["prepareThreshold=1", "prepareThreshold=0"])
def test_pgjdbc_token_statements(proxy: Target, pg: PgCluster, threshold: int):
    import jdbc

    table = "tg_jdbc_meta"
    with pg.admin_conn() as c:
        c.execute(f"CREATE TABLE IF NOT EXISTS public.{table} (x int)")
    name, tx = uniq("jdbc"), uniq("jdbc_tx")
    mark = pg.log_mark()
    t0 = now()
    rc, f, stderr = jdbc.run("sql", proxy.host, proxy.port, "analyst", "analyst", name, tx, table,
                             params=f"prepareThreshold={threshold}")
    assert rc == 0 and f.get("done") == ["true"], f"TokenJdbc failed (rc={rc}): {masked_facts(f)}\n{stderr}"
    shown = masked_facts(f)
    assert f["autocommit"] == ["true"]
    for label, n in (("ac", name), ("tx", tx)):
        assert f[f"{label}_name"] == [n], shown
        assert JWT_RE.match(f[f"{label}_token"][0]), shown
        assert f[f"{label}_more_rows"] == ["false"], shown
        exp = dt.datetime.fromisoformat(f[f"{label}_expires_at"][0])
        assert exp.utcoffset() is not None
        assert_about(exp, t0 + dt.timedelta(days=7), f"{label} expires_at as OffsetDateTime")
    assert f["ac_show_columns"] == ["name:text,user:text,created_at:timestamptz,expires_at:timestamptz,"
                                    "last_used_at:timestamptz,status:text,comment:text,created_by:text"], shown
    assert any(r.startswith(f"{name}|active|из JDBC|") for r in f["ac_show_row"]), shown
    assert "alter_count" in f and f["ordinary"] == ["42"] and f["tx_ordinary"] == ["true"], shown
    # Inside a transaction: CREATE API TOKEN is refused and fails the transaction; ALTER runs, with a NOTICE,
    # and stays after the rollback.
    assert f.get("tx_create_error") == ["25001"], shown
    assert f.get("tx_after_create_error") == ["25P02"], shown
    assert "tx_refused_name" not in f, shown
    assert f.get("tx_notice"), f"no NOTICE (SQLWarning) for the API TOKEN statement in a transaction: {shown}"
    assert any(r.startswith(f"{name}|active|in a transaction|") for r in f["tx_show_row"]), shown
    assert any(r.startswith(f"{name}|active|in a transaction|") for r in f["after_rollback_row"]), \
        f"the comment changed in the rolled-back transaction was undone: {shown}"
    assert any(r.startswith(f"{tx}|active|") for r in f["after_rollback_row"]), shown
    assert f.get("meta_table") == [table], f"DatabaseMetaData.getTables through tokengate: {shown}"
    assert f["missing_error"] == ["42704"] and f["after_error"] == ["1"], shown
    assert_never_upstream(pg, mark, name, tx)
    with session(proxy) as c:
        rows = token_rows(c)
    assert rows[name][5] == "revoked" and rows[tx][5] == "revoked", "DROP API TOKEN through JDBC"

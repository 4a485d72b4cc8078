# standard_conforming_strings = off through real clients (docs/sql.md, "Several statements in one Query";
# docs/security.md, "Settings"): psql (-c strings, stdin scripts, PGOPTIONS at startup) and psycopg (simple protocol,
# extended protocol, client-side binding) send backslash-escaped strings the way they do in practice. tokengate must
# split every Query and Parse exactly where PostgreSQL does: no API TOKEN statement may run that PostgreSQL would see
# inside a string, and no API TOKEN statement may reach PostgreSQL (its statement log is checked).
# test_relay_sessions.py::test_standard_conforming_strings_off_cannot_smuggle does the same on the wire itself.
from __future__ import annotations

import uuid

import psycopg
import pytest

from conftest import PgCluster, Target


def marker() -> str:
    return f"smug_{uuid.uuid4().hex[:10]}"


def token_names(proxy: Target) -> set[str]:
    with proxy.connect(user="analyst") as c:
        cur = c.execute("SHOW API TOKENS")
        i = [d.name for d in cur.description].index("name")
        return {row[i] for row in cur.fetchall()}


def hidden_in_a_string(name: str) -> str:
    """Under scs off, one SELECT of one string; read with scs on, a SELECT, then CREATE API TOKEN, then a comment."""
    return f"SELECT 'a\\'; CREATE API TOKEN {name} MAX DURATION ''1h''; --'"


def statement_after_a_string(name: str) -> str:
    """Under scs off, a SELECT of "a'", then SHOW API TOKENS (tokengate's), then a comment; read with scs on, one
    SELECT whose string runs to the end: PostgreSQL would get SHOW API TOKENS and the marker."""
    return f"SELECT 'a\\''; SHOW API TOKENS; -- {name}'"


def comment_in_a_token_statement(name: str) -> str:
    """Under scs off, one CREATE API TOKEN with a syntax error at the marker; read with scs on, a token statement and
    a SELECT of the marker that PostgreSQL would run."""
    return f"CREATE API TOKEN {name} COMMENT 'x\\'; SELECT '{name}'; --'"


def reached_postgres(pg: PgCluster, mark: int, name: str) -> list[str]:
    """Lines of PostgreSQL's log since mark that show a statement naming the marker or an API TOKEN statement:
    statements run (log_statement = all) and statements it refused (the STATEMENT line of an error)."""
    return [ln for ln in pg.log_since(mark).splitlines()
            if (name in ln or "API TOKEN" in ln.upper()) and " tokengate-control: " not in ln]


# ---------------------------------------------------------------- psql

SCS_OFF_WAYS = {
    # how the session gets standard_conforming_strings = off: (psql arguments before the statement, environment)
    "set-c": (["-c", "SET standard_conforming_strings = off"], {}),
    "pgoptions": ([], {"PGOPTIONS": "-c standard_conforming_strings=off"}),
}


@pytest.mark.parametrize("way", list(SCS_OFF_WAYS))
def test_psql_c_string_hidden_in_a_string_is_not_run(proxy: Target, direct: Target, pg: PgCluster, way: str):
    before, env = SCS_OFF_WAYS[way]
    name = marker()
    sql = hidden_in_a_string(name)
    got = proxy.psql(*before, "-A", "-t", "-c", sql, user="analyst", env=env)
    want = direct.psql(*before, "-A", "-t", "-c", sql, user="analyst", env=env)
    assert (got.rc, got.stdout, proxy.normalize(got.stderr)) == (want.rc, want.stdout, direct.normalize(want.stderr))
    assert got.stdout.splitlines()[-1] == f"a'; CREATE API TOKEN {name} MAX DURATION '1h'; --", got
    assert name not in token_names(proxy), "tokengate ran an API TOKEN statement PostgreSQL sees as a string"


@pytest.mark.parametrize("way", list(SCS_OFF_WAYS))
def test_psql_c_token_statement_after_a_string_stays_in_tokengate(proxy: Target, pg: PgCluster, way: str):
    before, env = SCS_OFF_WAYS[way]
    name = marker()
    mark = pg.log_mark()
    r = proxy.psql(*before, "-A", "-t", "-c", statement_after_a_string(name), user="analyst", env=env)
    assert r.rc == 0, r
    assert r.stdout.splitlines()[0 if way == "pgoptions" else 1] == "a'", r.stdout
    assert reached_postgres(pg, mark, name) == [], "SHOW API TOKENS reached PostgreSQL"
    # And the mirror case: the marker after a token statement's string never runs upstream.
    mark = pg.log_mark()
    r = proxy.psql(*before, "-c", comment_in_a_token_statement(name), user="analyst", env=env)
    assert r.rc != 0 and "syntax error" in r.stderr, r
    assert reached_postgres(pg, mark, name) == []
    assert name not in token_names(proxy)


def test_psql_script_on_stdin(proxy: Target, direct: Target, pg: PgCluster):
    """A script: psql itself splits it under the setting it learns from the server, then sends one statement a
    Query (and `\\;` joins two into one Query). Every answer equals PostgreSQL's, and nothing of an API TOKEN
    statement reaches it."""
    name = marker()
    script = "\n".join([
        "SET standard_conforming_strings = off;",
        hidden_in_a_string(name) + ";",
        f"SELECT 'b\\\\' AS one_backslash \\; SELECT 'c\\'; CREATE API TOKEN {name}; --' AS hidden;",
        "SELECT 'done';",
    ]) + "\n"
    mark = pg.log_mark()
    got = proxy.psql("-A", "-t", user="analyst", input=script)
    want = direct.psql("-A", "-t", user="analyst", input=script)
    assert (got.rc, got.stdout, got.stderr) == (want.rc, want.stdout, want.stderr)
    assert got.stdout.splitlines() == ["SET", f"a'; CREATE API TOKEN {name} MAX DURATION '1h'; --", "b\\",
                                       f"c'; CREATE API TOKEN {name}; --", "done"], got.stdout
    assert name not in token_names(proxy)
    # What PostgreSQL got through tokengate: the strings, in the statements psql sent (none starts with a token
    # statement).
    sent = [s for s in pg.logged_statements(mark) if name in s]
    assert len(sent) == 4 and all(s.startswith("SELECT '") for s in sent), sent


# ---------------------------------------------------------------- psycopg


@pytest.fixture(params=["set", "startup"])
def scs_off(request):
    """Connects to a target with standard_conforming_strings off, by SET or by the startup packet's options."""

    def connect(t: Target, **kw) -> psycopg.Connection:
        if request.param == "startup":
            return t.connect(user="analyst", options="-c standard_conforming_strings=off", **kw)
        c = t.connect(user="analyst", **kw)
        c.execute("SET standard_conforming_strings = off")
        return c

    return connect


def test_psycopg_simple_protocol(proxy: Target, direct: Target, pg: PgCluster, scs_off):
    name = marker()

    def run(t: Target):
        out = []
        with scs_off(t) as c:
            assert c.execute("SHOW standard_conforming_strings").fetchone() == ("off",)
            out.append(c.execute(hidden_in_a_string(name)).fetchall())  # no parameters: a simple Query
        return out

    assert run(proxy) == run(direct) == [[(f"a'; CREATE API TOKEN {name} MAX DURATION '1h'; --",)]]
    assert name not in token_names(proxy)
    # Statements PostgreSQL cannot run (API TOKEN statements): through tokengate only.
    mark = pg.log_mark()
    with scs_off(proxy) as c:
        cur = c.execute(statement_after_a_string(name))
        assert cur.fetchall() == [("a'",)]
        assert cur.nextset() and "name" in [d.name for d in cur.description], "SHOW API TOKENS did not run"
        with pytest.raises(psycopg.errors.SyntaxError):
            c.execute(comment_in_a_token_statement(name))
    assert reached_postgres(pg, mark, name) == []


def test_psycopg_extended_protocol(proxy: Target, direct: Target, pg: PgCluster, scs_off):
    """Parse with parameters (server-side binding) and prepared statements: a Parse is one statement, split as
    PostgreSQL splits it."""
    name = marker()

    def run(t: Target):
        with scs_off(t) as c:
            a = c.execute(hidden_in_a_string(name) + " || %s", ["!"]).fetchall()
            b = c.execute(hidden_in_a_string(name) + " || %s", ["?"], prepare=True).fetchall()
            try:
                c.execute(statement_after_a_string(name) + " || %s", ["!"])
                e = None
            except psycopg.Error as err:
                e = (err.sqlstate, str(err).splitlines()[0])
            return a, b, e

    got, want = run(proxy), run(direct)
    assert got[:2] == want[:2]
    # PostgreSQL's grammar has no SHOW API TOKENS, so it sees a syntax error; tokengate's has, so the Parse holds
    # two statements, and tokengate gives PostgreSQL's error for that (the same SQLSTATE) without the upstream.
    assert want[2] == ("42601", 'syntax error at or near "TOKENS"'), want
    assert got[2] == ("42601", "cannot insert multiple commands into a prepared statement"), got
    assert got[0] == [(f"a'; CREATE API TOKEN {name} MAX DURATION '1h'; --!",)], got
    assert name not in token_names(proxy)
    mark = pg.log_mark()
    with scs_off(proxy) as c:
        with pytest.raises(psycopg.Error):
            c.execute(comment_in_a_token_statement(name) + " %s", ["x"])
    assert reached_postgres(pg, mark, name) == []


def test_psycopg_client_side_binding(proxy: Target, direct: Target, pg: PgCluster, scs_off):
    """ClientCursor quotes values into the Query text itself, for the session's setting (E'…' with doubled
    backslashes when it is off): values full of backslashes and quotes stay values."""
    name = marker()
    values = ["\\", "\\'", f"\\'; CREATE API TOKEN {name}; --", f"'; CREATE API TOKEN {name}; --\\",
              f"\\\\'; SHOW API TOKENS; -- {name}"]

    def run(t: Target):
        with scs_off(t) as c:
            cur = psycopg.ClientCursor(c)
            return [cur.execute("SELECT %s, %s", [v, v]).fetchone() for v in values]

    mark = pg.log_mark()
    got = run(proxy)
    sent = [s for s in pg.logged_statements(mark) if name in s]
    assert got == [(v, v) for v in values], got
    assert run(direct) == got
    assert name not in token_names(proxy)
    assert len(sent) == 3 and all(s.startswith("SELECT ") for s in sent), sent

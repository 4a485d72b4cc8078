"""README.md's and docs/sql.md's psql examples work as written. Each fenced block preceded by the line
`<!-- doc-test: psql -->` is a psql transcript: `analyst=> …` runs as analyst, `postgres=# …` as the superuser admin
(the prompts of `./dev run`'s two psql lines), all blocks of a document in order against one fresh tokengate. The
lines after a statement are what psql shows; they must match what it shows now, with token values, timestamps and
generated names compared by shape, and column widths ignored. A line `…` stands for any further output."""
from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import PSQL, REPO, ROLES, PgCluster, _cleanup_tmp, clean_env

MARKER = "<!-- doc-test: psql -->"
PROMPT = re.compile(r"^(analyst=>|postgres=#) (.*)$")
WHO = {"analyst=>": ("analyst", "postgres"), "postgres=#": ("admin", "postgres")}


def transcripts(text: str) -> list[list[tuple[str, str, list[str]]]]:
    """Each marked block as (prompt, statement, expected output lines)."""
    blocks = []
    for m in re.finditer(re.escape(MARKER) + r"\n```[a-z]*\n(.*?)```", text, re.S):
        steps: list[tuple[str, str, list[str]]] = []
        for line in m.group(1).splitlines():
            p = PROMPT.match(line)
            if p:
                steps.append((p.group(1), p.group(2), []))
            else:
                assert steps, f"a marked block does not start with a prompt: {line!r}"
                steps[-1][2].append(line)
        blocks.append(steps)
    return blocks


def shape(line: str) -> str:
    """A line with what varies between runs replaced, and alignment removed."""
    line = re.sub(r"eyJ[A-Za-z0-9_\-.]+…?", "<token>", line)
    line = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+00", "<time>", line)
    line = re.sub(r"\btoken_[a-z0-9]{8}\b", "<generated name>", line)
    if re.fullmatch(r"[-+]+", line.strip()):
        return "<rule>"
    if re.match(r"-\[ RECORD \d+ \]", line):
        return re.sub(r"[-+]+$", "", line.strip())
    if "|" in line:
        return "|".join(cell.strip() for cell in line.split("|")).strip()
    return line.strip()


def rows_sorted(lines: list[str]) -> list[str]:
    """The data rows of each table sorted: rows created within one second (as here) tie on created_at, so their
    order is not what the examples are about."""
    out, i = [], 0
    while i < len(lines):
        if lines[i] == "<rule>":
            j = i + 1
            while j < len(lines) and "|" in lines[j]:
                j += 1
            out += ["<rule>"] + sorted(lines[i + 1:j])
            i = j
        else:
            out.append(lines[i])
            i += 1
    return out


def compare(expected: list[str], got: list[str]) -> str | None:
    """None when `got` is what the document shows, else why not."""
    while expected and not expected[-1].strip():
        expected = expected[:-1]
    while got and not got[-1].strip():
        got = got[:-1]
    want = rows_sorted([shape(l) for l in expected])
    have = rows_sorted([shape(l) for l in got])
    if want and want[-1] == "…":
        want = want[:-1]
        have = have[:len(want)]
    if want != have:
        return "documented:\n  " + "\n  ".join(expected) + "\npsql shows:\n  " + "\n  ".join(got)
    return None


class Psql:
    """One psql run per statement; meta-commands (\\x) stay in force for later statements of the same user."""

    def __init__(self, host: str, port: int, cwd: Path) -> None:
        self.host, self.port, self.cwd = host, port, cwd
        self.meta: dict[str, list[str]] = {}

    def run(self, prompt: str, statement: str) -> list[str]:
        user, db = WHO[prompt]
        setup = self.meta.setdefault(prompt, [])
        script = "\\set QUIET on\n" + "".join(m + "\n" for m in setup) + "\\set QUIET off\n" + statement + "\n"
        if statement.startswith("\\"):
            setup.append(statement)
        p = subprocess.run([PSQL, "-X", "-P", "pager=off", "-h", self.host, "-p", str(self.port), "-U", user, "-d", db],
                           input=script, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60,
                           cwd=self.cwd, env=clean_env(PGPASSWORD=ROLES[user]))
        # psql names the input line in errors read from stdin; the doc shows them as typed interactively.
        return [re.sub(r"^psql:<stdin>:\d+: ", "", l) for l in p.stdout.splitlines()]


@pytest.mark.parametrize("doc", ["README.md", "docs/sql.md"])
def test_psql_examples_work_as_written(doc: str, spawn_tokengate, pg: PgCluster):
    blocks = transcripts((REPO / doc).read_text())
    assert blocks, f"{doc} has no block marked {MARKER!r}"
    tg = spawn_tokengate((str(pg.socket_dir), pg.port))
    work = Path(tempfile.mkdtemp(prefix="tg-doc-"))
    try:
        psql = Psql(tg.host, tg.port, work)
        failures = []
        for steps in blocks:
            for prompt, statement, expected in steps:
                got = psql.run(prompt, statement)
                if expected or any(l.startswith(("ERROR:", "FATAL:")) for l in got):
                    why = compare(expected, got)
                    if why:
                        failures.append(f"{prompt} {statement}\n{why}")
        assert not failures, f"{doc}'s examples differ from what tokengate does:\n\n" + "\n\n".join(failures)
    finally:
        _cleanup_tmp(work)

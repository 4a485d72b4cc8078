"""docs/http.md's SQL-over-HTTP examples work as written: every ```sh block of "SQL over HTTP by example" runs, in
order, in one bash against a fresh tokengate (ports rewritten from 6432/8432), and its output matches the ```json
or ```text block that follows it ("…" in the documented output stands for any value)."""
from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path

from conftest import PG_BIN, REPO, _cleanup_tmp, clean_env, mask, remember_secret
from test_http_docs import matches

DOC = REPO / "docs" / "http.md"
SECTION = "### SQL over HTTP by example"
MARK = "@@example-{}@@"


def examples(text: str) -> list[tuple[str, str | None, str | None]]:
    """(commands, expected output language, expected output) for each sh block of the section."""
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(\w*)\n(.*?)```", section, re.S)
    out = []
    for i, (lang, body) in enumerate(blocks):
        if lang != "sh":
            continue
        nxt = blocks[i + 1] if i + 1 < len(blocks) else None
        out.append((body, nxt[0], nxt[1]) if nxt is not None and nxt[0] in ("json", "text") else (body, None, None))
    return out


def test_sql_examples_work_as_written(spawn_tokengate, pg):
    tg = spawn_tokengate((str(pg.socket_dir), pg.port))  # a fresh store: SHOW API TOKENS lists only sql_docs
    assert tg.http_port is not None
    items = examples(DOC.read_text())
    assert len(items) >= 7, "docs/http.md lost its SQL-over-HTTP examples"
    script = ["set -euo pipefail"]
    for i, (commands, _, _) in enumerate(items):
        script.append(f"printf '\\n{MARK.format(i)}\\n'")
        script.append(commands.replace("127.0.0.1:8432", f"127.0.0.1:{tg.http_port}")
                      .replace("port=6432", f"port={tg.port}"))
    script.append("printf '\\n@@token@@\\n%s\\n' \"$TOKEN\"")
    work = Path(tempfile.mkdtemp(prefix="tg-sql-docs-"))
    try:
        env = clean_env()
        env["PATH"] = f"/usr/bin:/bin:{PG_BIN}"
        p = subprocess.run(["bash", "-c", "\n".join(script)], cwd=work, capture_output=True, text=True, timeout=120,
                           env=env)
    finally:
        _cleanup_tmp(work)
    out, _, token = p.stdout.partition("\n@@token@@\n")
    remember_secret(token.strip())
    assert p.returncode == 0, f"the examples failed (rc={p.returncode}):\n{mask(p.stderr[-3000:])}"
    outputs = re.split(r"\n@@example-\d+@@\n", out)[1:]
    assert len(outputs) == len(items)
    for (commands, lang, expected), got in zip(items, outputs):
        if lang is None:
            continue
        first = commands.strip().splitlines()[0]
        if lang == "text":
            assert got.strip() == expected.strip(), f"{first}\n  documented: {expected.strip()!r}\n  got: {got.strip()!r}"
            continue
        want = json.loads(expected)
        try:
            actual = json.loads(got)
        except ValueError:
            raise AssertionError(f"{first}: output is not JSON: {got[:300]!r}") from None
        assert matches(want, actual), f"{first}\n  documented: {expected.strip()}\n  got:        {got.strip()}"

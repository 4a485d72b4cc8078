"""A real browser for the web page's tests: Debian's chromium driven by playwright-core (npm, locked in
browser/package-lock.json) through browser/bridge.js, one JSON command per line.

    ui = Browser.start(shots_dir)            # node + playwright-core; `npm ci` first when needed
    ui.launch(base_url)                      # a fresh chromium profile (cookies, storage), clipboard allowed
    ui.fill(label("User name"), "analyst")
    ui.click(role("button", "Log in"))
    ui.wait(role("heading", "API tokens"))
    ui.shot("01-list", mask=[label("Token")])   # PNG under shots_dir; masked parts drawn over
    ui.close()

Locators are dicts (role/label/text/css, within=..., nth=...); Playwright's locators are strict, so one that
matches two elements fails the step. A failed step raises BrowserError with Playwright's words.
"""
from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

BROWSER_DIR = Path(__file__).resolve().parent / "browser"
CHROMIUM = os.environ.get("TG_CHROMIUM", "/usr/bin/chromium")
# A step's answer: Playwright's own waits end after 10 s; launching chromium may take longer on a busy machine.
STEP_TIMEOUT = 60.0


class BrowserError(AssertionError):
    pass


def role(name: str, accessible_name: str | None = None, exact: bool = True, **kw: Any) -> dict:
    loc = {"role": name, "exact": exact, **kw}
    if accessible_name is not None:
        loc["name"] = accessible_name
    return loc


def label(text: str, exact: bool = True, **kw: Any) -> dict:
    return {"label": text, "exact": exact, **kw}


def text(value: str, exact: bool = True, **kw: Any) -> dict:
    return {"text": value, "exact": exact, **kw}


def css(selector: str, **kw: Any) -> dict:
    return {"css": selector, **kw}


def within(outer: dict, inner: dict) -> dict:
    return {**inner, "within": outer}


def ensure_node_modules() -> None:
    """`npm ci` in browser/ unless node_modules already matches the lock file; skip (or fail under
    TOKENGATE_REQUIRE=1) without node, npm or chromium."""
    require = os.environ.get("TOKENGATE_REQUIRE", "") not in ("", "0")
    missing = [what for what, ok in (("node", shutil.which("node")), ("npm", shutil.which("npm")),
                                     (CHROMIUM, os.access(CHROMIUM, os.X_OK))) if not ok]
    if missing:
        msg = f"{', '.join(missing)} missing (./dev installs nodejs, npm and chromium)"
        if require:
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    lock = BROWSER_DIR / "package-lock.json"
    hidden = BROWSER_DIR / "node_modules" / ".package-lock.json"
    if hidden.exists() and hidden.stat().st_mtime >= lock.stat().st_mtime and \
            (BROWSER_DIR / "node_modules" / "playwright-core").is_dir():
        return
    p = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=BROWSER_DIR,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"npm ci failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"


class Browser:
    def __init__(self, proc: subprocess.Popen, shots: Path, stderr_path: Path) -> None:
        self.proc = proc
        self.shots = shots
        self.stderr_path = stderr_path
        self.next_id = 0
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    @classmethod
    def start(cls, shots: Path) -> "Browser":
        ensure_node_modules()
        shots.mkdir(parents=True, exist_ok=True)
        stderr_path = shots / "bridge.stderr.txt"
        proc = subprocess.Popen(["node", str(BROWSER_DIR / "bridge.js")], cwd=BROWSER_DIR, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=open(stderr_path, "wb"), text=True, bufsize=1,
                                env={**os.environ, "TG_CHROMIUM": CHROMIUM})
        return cls(proc, shots, stderr_path)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def call(self, cmd: str, **args: Any) -> Any:
        self.next_id += 1
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"id": self.next_id, "cmd": cmd, "args": args}) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise BrowserError(f"bridge.js is gone; its stderr:\n{self.stderr_tail()}") from None
        try:
            line = self.lines.get(timeout=STEP_TIMEOUT)
        except queue.Empty:
            raise BrowserError(f"{cmd} got no answer within {STEP_TIMEOUT:.0f} s") from None
        if line is None:
            raise BrowserError(f"bridge.js exited during {cmd}; its stderr:\n{self.stderr_tail()}")
        answer = json.loads(line)
        if not answer.get("ok"):
            shown = {k: v for k, v in args.items() if k != "value"}  # a filled value may be a password
            raise BrowserError(f"{cmd} {json.dumps(shown)} failed: {answer.get('error')}")
        return answer.get("value")

    def stderr_tail(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-3000:]
        except OSError:
            return "(none)"

    # ---- the steps a test takes ----

    def launch(self, base: str, width: int = 1280, height: int = 800) -> None:
        self.base = base.rstrip("/")
        self.call("launch", base=self.base, shots=str(self.shots), width=width, height=height)

    def goto(self, path: str = "/") -> str:
        return self.call("goto", url=self.base + path)

    def reload(self) -> str:
        return self.call("reload")

    def url(self) -> str:
        return self.call("url")

    def viewport(self, width: int, height: int) -> None:
        self.call("viewport", width=width, height=height)

    def fill(self, loc: dict, value: str) -> None:
        self.call("fill", loc=loc, value=value)

    def click(self, loc: dict) -> None:
        self.call("click", loc=loc)

    def check(self, loc: dict) -> None:
        self.call("check", loc=loc)

    def uncheck(self, loc: dict) -> None:
        self.call("uncheck", loc=loc)

    def checked(self, loc: dict) -> bool:
        return self.call("checked", loc=loc)

    def select(self, loc: dict, value: str) -> None:
        self.call("select", loc=loc, value=value)

    def press(self, key: str, loc: dict | None = None) -> None:
        self.call("press", loc=loc, key=key)

    def type(self, value: str) -> None:
        self.call("type", text=value)

    def text(self, loc: dict) -> str:
        return self.call("text", loc=loc)

    def value(self, loc: dict) -> str:
        return self.call("value", loc=loc)

    def count(self, loc: dict) -> int:
        return self.call("count", loc=loc)

    def visible(self, loc: dict) -> bool:
        return self.call("visible", loc=loc)

    def attr(self, loc: dict, name: str) -> str | None:
        return self.call("attr", loc=loc, name=name)

    def wait(self, loc: dict, state: str = "visible", timeout: int | None = None) -> None:
        self.call("wait", loc=loc, state=state, timeout=timeout)

    def wait_text(self, loc: dict, value: str, absent: bool = False) -> str:
        return self.call("wait_text", loc=loc, text=value, absent=absent)

    def focused(self) -> dict | None:
        return self.call("focused")

    def clipboard(self) -> str:
        return self.call("clipboard")

    def dump(self) -> dict:
        return self.call("dump")

    def layout(self) -> dict:
        return self.call("layout")

    def shot(self, name: str, mask: list[dict] | None = None, full_page: bool = False) -> Path:
        return Path(self.call("shot", name=name, mask=mask or [], full_page=full_page))

    def axe(self) -> list[dict]:
        return self.call("axe")

    def problems(self) -> list[dict]:
        return self.call("problems")

    def close(self) -> None:
        try:
            self.call("close")
        except BrowserError:
            pass

    def quit(self) -> None:
        self.close()
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

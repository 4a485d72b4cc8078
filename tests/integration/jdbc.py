# Compile and run tests/integration/java/TokenJdbc.java with Debian's pgjdbc (libpostgresql-jdbc-java).
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import _cleanup_tmp, _cleanups, clean_env, remember_secret

JAR = Path("/usr/share/java/postgresql.jar")
SOURCE = Path(__file__).resolve().parent / "java" / "TokenJdbc.java"
_compiled: Path | None = None


def program_dir() -> Path:
    """The compiled class directory (once per session); skips when the JDK or pgjdbc is missing."""
    global _compiled
    if _compiled is None:
        javac = shutil.which("javac")
        if javac is None or not JAR.exists():
            msg = "javac or /usr/share/java/postgresql.jar missing (./dev installs default-jdk-headless, " \
                  "libpostgresql-jdbc-java)"
            if os.environ.get("TOKENGATE_REQUIRE", "") not in ("", "0"):
                pytest.fail(msg, pytrace=False)
            pytest.skip(msg)
        out = Path(tempfile.mkdtemp(prefix="tg-jdbc-"))
        _cleanups.append(lambda: _cleanup_tmp(out))
        p = subprocess.run([javac, "-encoding", "UTF-8", "-cp", str(JAR), "-d", str(out), str(SOURCE)],
                           capture_output=True, text=True, timeout=180)
        assert p.returncode == 0, f"javac failed:\n{p.stderr}"
        _compiled = out
    return _compiled


def run(mode: str, host: str, port: int, user: str, password: str, *args: str, params: str = "",
        timeout: float = 120, ssl_params: str = "sslmode=disable") -> tuple[int, dict[str, list[str]], str]:
    """Run TokenJdbc; returns (rc, {key: [values…]}, stderr). Token values it prints are remembered as secrets.
    ssl_params replaces the default `sslmode=disable`, e.g. "ssl=true&sslmode=verify-full&sslrootcert=/ca.crt"."""
    url = f"jdbc:postgresql://{host}:{port}/postgres?{ssl_params}&connectTimeout=10"
    if params:
        url += "&" + params
    argv = ["java", "-Dfile.encoding=UTF-8", "-Duser.timezone=Europe/Berlin", "-cp",
            f"{program_dir()}:{JAR}", "TokenJdbc", mode, url, user, password, *args]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=clean_env())
    facts: dict[str, list[str]] = {}
    for line in p.stdout.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            facts.setdefault(k, []).append(v)
            if k.endswith("_token"):
                remember_secret(v)
    return p.returncode, facts, p.stderr[-3000:]

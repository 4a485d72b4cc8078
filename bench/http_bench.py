#!/usr/bin/python3
"""HTTP gateway benchmark: requests per second with ApacheBench (`ab`, Debian's apache2-utils) against one
tokengate, keep-alive, for GET /healthz (no credentials), GET /api/me (a Bearer token verified as a token login,
the role looked up fresh upstream, an audit line) and GET /api/tokens (the same, plus SHOW API TOKENS).

Usage: /usr/bin/python3 bench/http_bench.py [--requests 20000] [--concurrency 8]
Not a test: nothing here asserts a speed."""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "bench"))
from conftest import PgCluster, free_port  # noqa: E402  (the test harness's throwaway cluster)
from relay_bench import wait_port  # noqa: E402


def ab(url: str, requests: int, concurrency: int, token: str | None) -> tuple[float, float]:
    """(requests per second, mean latency of one request in ms) of one ab run; failures are an error."""
    args = ["ab", "-q", "-k", "-n", str(requests), "-c", str(concurrency)]
    if token:
        args += ["-H", f"Authorization: Bearer {token}"]
    p = subprocess.run(args + [url], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"ab failed: {p.stderr[-500:]}")
    failed = int(re.search(r"Failed requests:\s+(\d+)", p.stdout).group(1))
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", p.stdout)
    if failed or non2xx:
        raise RuntimeError(f"ab saw failures on {url}:\n{p.stdout[-1500:]}")
    rps = float(re.search(r"Requests per second:\s+([0-9.]+)", p.stdout).group(1))
    mean = float(re.search(r"Time per request:\s+([0-9.]+) \[ms\] \(mean\)", p.stdout).group(1))
    return rps, mean


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--tokengate-args", default="", help="extra flags for tokengate, e.g. '--threads 1'")
    a = ap.parse_args()
    if shutil.which("ab") is None:
        print("ab is missing: apt install apache2-utils", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="tg-http-bench-"))
    pg = PgCluster()
    tg = None
    try:
        pg.start()
        with pg.admin_conn() as c:
            c.execute("ALTER SYSTEM SET log_statement = 'none'")
            c.execute("ALTER SYSTEM SET log_connections = off")
            c.execute("SELECT pg_reload_conf()")
        port, http_port, data = free_port(), free_port(), tmp / "tg-data"
        tg = subprocess.Popen([str(REPO / "build" / "tokengate"), "serve", "--listen", f"127.0.0.1:{port}",
                               "--http-listen", f"127.0.0.1:{http_port}", "--upstream", f"{pg.socket_dir}:{pg.port}",
                               "--data-dir", str(data), "--log-level", "warn", *a.tokengate_args.split()],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(http_port, tg, "tokengate")
        token = subprocess.run([str(REPO / "build" / "tokengate"), "tokens", "create", "bench", "--user", "analyst",
                                "--duration", "1d", "--data-dir", str(data)],
                               check=True, capture_output=True, text=True).stdout.strip()
        base = f"http://127.0.0.1:{http_port}"
        print(f"{a.requests} requests, {a.concurrency} concurrent keep-alive connections, {os.cpu_count()} cores")
        print(f"{'endpoint':<28} {'requests/s':>12} {'ms/request':>12}")
        for path, auth in (("/healthz", False), ("/api/me", True), ("/api/tokens", True)):
            ab(base + path, min(2000, a.requests), a.concurrency, token if auth else None)  # warm-up
            rps, mean = ab(base + path, a.requests, a.concurrency, token if auth else None)
            print(f"GET {path:<24} {rps:>12,.0f} {mean:>12.2f}")
    finally:
        if tg is not None:
            tg.terminate()
            tg.wait()
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

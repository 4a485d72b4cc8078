#!/usr/bin/python3
"""SQL over HTTP benchmark: one small query per request through POST /sql on the upstream pool (ApacheBench,
keep-alive), against the same query over wire sessions through tokengate and directly to PostgreSQL (pgbench,
one session per client, extended protocol), all logged in as the same role with a token. The HTTP rows differ in
how the request authenticates: the token as the connection string's password, as a Bearer token, and the role's
password (checked by tokengate against the SCRAM verifier, PBKDF2 each time).

Usage: /usr/bin/python3 bench/sql_bench.py [--seconds 10] [--concurrency 8]
Run by `./dev bench`. Not a test: nothing here asserts a speed."""
from __future__ import annotations

import argparse
import json
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
from relay_bench import PGBENCH, wait_port  # noqa: E402

QUERY = "select $1::int + 1 as n"


def ab(url: str, seconds: int, concurrency: int, headers: dict[str, str], body: Path) -> tuple[float, float]:
    """(requests per second, mean ms per request) of one ab run of `seconds`; any failure is an error."""
    args = ["ab", "-q", "-k", "-t", str(seconds), "-n", "10000000", "-c", str(concurrency), "-p", str(body),
            "-T", "application/json"]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    p = subprocess.run(args + [url], capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"ab failed: {p.stderr[-500:]}")
    failed = int(re.search(r"Failed requests:\s+(\d+)", p.stdout).group(1))
    if failed or re.search(r"Non-2xx responses:\s+(\d+)", p.stdout):
        raise RuntimeError(f"ab saw failures on {url}:\n{p.stdout[-1500:]}")
    rps = float(re.search(r"Requests per second:\s+([0-9.]+)", p.stdout).group(1))
    mean = float(re.search(r"Time per request:\s+([0-9.]+) \[ms\] \(mean\)", p.stdout).group(1))
    return rps, mean


def pgbench(port: int, host: str, password: str, seconds: int, clients: int, script: Path) -> tuple[float, float]:
    """(transactions per second, mean latency in ms) of `script` on `clients` sessions."""
    env = dict(os.environ, PGPASSWORD=password, PGSSLMODE="disable")
    args = [PGBENCH, "-n", "-M", "extended", "-f", str(script), "-c", str(clients), "-j", "2", "-T", str(seconds),
            "-h", host, "-p", str(port), "-U", "analyst", "postgres"]
    p = subprocess.run(args, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"pgbench failed:\n{p.stderr[-2000:]}")
    tps = float((re.search(r"tps = ([0-9.]+) \(without initial connection time\)", p.stdout) or
                 re.search(r"tps = ([0-9.]+)", p.stdout)).group(1))
    latency = float(re.search(r"latency average = ([0-9.]+) ms", p.stdout).group(1))
    return tps, latency


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--tokengate-args", default="", help="extra flags for tokengate, e.g. '--threads 1'")
    a = ap.parse_args()
    if shutil.which("ab") is None:
        print("ab is missing: apt install apache2-utils", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="tg-sql-bench-"))
    os.chmod(tmp, 0o755)
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
                               "--data-dir", str(data), "--log-level", "warn", "--audit-log", "off",
                               "--max-failed-logins", "1000000", *a.tokengate_args.split()],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(http_port, tg, "tokengate")
        token = subprocess.run([str(REPO / "build" / "tokengate"), "tokens", "create", "bench", "--user", "analyst",
                                "--duration", "1d", "--data-dir", str(data)],
                               check=True, capture_output=True, text=True).stdout.strip()
        body = tmp / "body.json"
        body.write_text(json.dumps({"query": QUERY, "params": [41]}))
        script = tmp / "query.sql"
        script.write_text("\\set v 41\n" + QUERY.replace("$1", ":v") + ";\n")
        url = f"http://127.0.0.1:{http_port}/sql"
        conn = lambda pw: f"postgresql://analyst{':' + pw if pw else ''}@127.0.0.1:{port}/postgres"  # noqa: E731
        driver = {"Neon-Raw-Text-Output": "true", "Neon-Array-Mode": "true"}
        http_runs = [
            ("POST /sql, token as password", {**driver, "Neon-Connection-String": conn(token)}),
            ("POST /sql, Bearer token", {**driver, "Neon-Connection-String": conn(None),
                                         "Authorization": f"Bearer {token}"}),
            ("POST /sql, password", {**driver, "Neon-Connection-String": conn("analyst")}),
        ]
        print(f"{a.seconds} s per run, {a.concurrency} clients, {os.cpu_count()} cores, query: {QUERY}")
        print(f"{'':<34} {'queries/s':>10} {'ms/query':>9}")
        results = {}
        for name, headers in http_runs:
            ab(url, 1, a.concurrency, headers, body)  # warm-up: the pool opens its connections
            results[name] = ab(url, a.seconds, a.concurrency, headers, body)
        results["wire session via tokengate (token)"] = pgbench(port, "127.0.0.1", token, a.seconds, a.concurrency,
                                                                 script)
        results["wire session, PostgreSQL direct"] = pgbench(pg.port, str(pg.socket_dir), "", a.seconds,
                                                             a.concurrency, script)
        for name, (qps, ms) in results.items():
            print(f"{name:<34} {qps:>10,.0f} {ms:>9.2f}")
        with pg.admin_conn() as c:
            n = c.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = 'analyst'").fetchone()[0]
        print(f"upstream backends of analyst after the runs (the HTTP pool's): {n}")
    finally:
        if tg is not None:
            tg.terminate()
            tg.wait()
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

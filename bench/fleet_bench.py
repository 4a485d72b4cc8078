#!/usr/bin/python3
"""Fleet benchmark: three tokengate instances sharing a registry in one PostgreSQL (store.backend = postgres).

Measures, per instance, token logins per second (pgbench with a new connection per transaction, the token
as the password) next to the same through a single LMDB instance, and how long a DROP API TOKEN on one
instance takes to end the token's sessions on the two others. Before that it runs tokenstore_bench with
--pg-dsn: verifications per second from the registry's local copy.

Usage: /usr/bin/python3 bench/fleet_bench.py [--seconds 10] [--tokens 1000000] [--rounds 20]
Run by `./dev bench`. Not a test: nothing here asserts a speed."""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
from conftest import PgCluster, free_port  # noqa: E402  (the test harness's throwaway cluster)

PGBENCH = "/usr/lib/postgresql/15/bin/pgbench"
BIN = REPO / "build" / "tokengate"


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    import socket
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port}")


def login_rate(port: int, token: str, seconds: int, tmp: Path) -> float:
    script = tmp / "select1.sql"
    script.write_text("SELECT 1;\n")
    env = dict(os.environ, PGPASSWORD=token, PGHOST="127.0.0.1", PGPORT=str(port), PGUSER="admin",
               PGDATABASE="postgres", PGSSLMODE="disable")
    p = subprocess.run([PGBENCH, "-n", "-C", "-c", "4", "-j", "2", "-T", str(seconds), "-f", str(script)],
                       env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"pgbench on {port} failed:\n{p.stderr[-2000:]}")
    m = re.search(r"tps = ([0-9.]+)", p.stdout)
    return float(m.group(1))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--tokens", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=20)
    a = ap.parse_args()

    import psycopg

    tmp = Path(tempfile.mkdtemp(prefix="tg-fleet-bench-"))
    os.chmod(tmp, 0o755)
    pg = PgCluster()
    procs: list[subprocess.Popen] = []
    try:
        pg.start()
        with pg.admin_conn() as c:
            c.execute("ALTER SYSTEM SET log_statement = 'none'")
            c.execute("ALTER SYSTEM SET log_connections = off")
            c.execute("SELECT pg_reload_conf()")
            c.execute("CREATE DATABASE copy_bench")
            c.execute("CREATE DATABASE fleet_bench")

        # 1. Verifications from the registry's local copy (and LMDB's, for comparison).
        print("tokenstore_bench with a registry:", flush=True)
        subprocess.run([str(REPO / "build" / "bench" / "tokenstore_bench"), "--tokens", str(a.tokens),
                        "--pg-dsn", f"host={pg.socket_dir} port={pg.port} user=postgres dbname=copy_bench"],
                       check=True)

        # 2. Three instances, the registry in fleet_bench.
        kek = tmp / "kek"
        kek.write_text(os.urandom(32).hex() + "\n")
        kek.chmod(0o600)
        ports = []
        for i in range(3):
            port = free_port()
            p = subprocess.Popen([str(BIN), "serve", "--listen", f"127.0.0.1:{port}",
                                  "--upstream", f"{pg.socket_dir}:{pg.port}", "--data-dir", str(tmp / f"tg{i}"),
                                  "--store-backend", "postgres", "--control-database", "fleet_bench",
                                  "--kek-file", str(kek), "--log-level", "warn", "--max-failed-logins", "1000000"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(p)
            wait_port(port, p, f"tokengate {i + 1}")
            ports.append(port)
        # A single LMDB instance for comparison.
        lmdb_port = free_port()
        lmdb = subprocess.Popen([str(BIN), "serve", "--listen", f"127.0.0.1:{lmdb_port}",
                                 "--upstream", f"{pg.socket_dir}:{pg.port}", "--data-dir", str(tmp / "lmdb"),
                                 "--log-level", "warn", "--max-failed-logins", "1000000"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(lmdb)
        wait_port(lmdb_port, lmdb, "tokengate (lmdb)")

        def make_token(port: int, name: str) -> str:
            with psycopg.connect(host="127.0.0.1", port=port, user="admin", password="admin", dbname="postgres",
                                 autocommit=True, sslmode="disable") as c:
                return c.execute(f"CREATE API TOKEN {name}").fetchone()[1]

        fleet_token = make_token(ports[0], "bench")
        lmdb_token = make_token(lmdb_port, "bench")
        print(f"\ntoken logins per second (pgbench -C, 4 clients, {a.seconds} s each, one instance at a time):")
        print("| instance | logins/s |\n|---|---|")
        for i, port in enumerate(ports):
            print(f"| fleet instance {i + 1} (registry in PostgreSQL) | {login_rate(port, fleet_token, a.seconds, tmp):,.0f} |",
                  flush=True)
        print(f"| single instance (LMDB) | {login_rate(lmdb_port, lmdb_token, a.seconds, tmp):,.0f} |", flush=True)

        # 3. Revocation propagation: DROP on instance 1, sessions held on instances 2 and 3.
        times: list[float] = []
        for r in range(a.rounds):
            token = make_token(ports[0], f"prop_{r}")
            held = [psycopg.connect(host="127.0.0.1", port=p, user="admin", password=token, dbname="postgres",
                                    autocommit=True, sslmode="disable") for p in ports[1:]]
            with psycopg.connect(host="127.0.0.1", port=ports[0], user="admin", password="admin",
                                 dbname="postgres", autocommit=True, sslmode="disable") as c:
                start = time.monotonic()
                c.execute(f"DROP API TOKEN prop_{r}")
            for h in held:
                while True:
                    try:
                        h.execute("SELECT 1")
                    except psycopg.Error:
                        times.append(time.monotonic() - start)
                        break
                    if time.monotonic() - start > 10:
                        times.append(float("inf"))
                        break
                    time.sleep(0.005)
                h.close()
        times.sort()
        print(f"\nrevocation propagation ({a.rounds} DROPs on instance 1, a session held on each of the two others, "
              f"polled every 5 ms):")
        print(f"median {statistics.median(times) * 1000:.0f} ms, 90th percentile "
              f"{times[int(len(times) * 0.9) - 1] * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms")
        return 0
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

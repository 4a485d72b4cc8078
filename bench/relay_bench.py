#!/usr/bin/python3
"""Relay benchmark: pgbench select-only against PostgreSQL directly, through
tokengate and through PgBouncer (session pooling), in one run on this machine,
reported as transactions per second and as ratios to direct.

Usage: /usr/bin/python3 bench/relay_bench.py [--seconds 10] [--scale 10]
Run by `./dev bench`. Not a test: nothing here asserts a speed."""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
from conftest import PgCluster, free_port  # noqa: E402  (the test harness's throwaway cluster)

PGBENCH = "/usr/lib/postgresql/15/bin/pgbench"


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    import socket
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port}")


def pgbench(port: int, password: str, args: list[str]) -> float:
    env = dict(os.environ, PGPASSWORD=password, PGHOST="127.0.0.1", PGPORT=str(port), PGUSER="admin",
               PGDATABASE="postgres", PGSSLMODE="disable")
    p = subprocess.run([PGBENCH, *args], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"pgbench {' '.join(args)} on port {port} failed:\n{p.stderr[-2000:]}")
    m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", p.stdout) or \
        re.search(r"tps = ([0-9.]+)", p.stdout)
    return float(m.group(1))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--tokengate-args", default="", help="extra flags for tokengate, e.g. '--threads 1'")
    a = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="tg-bench-"))
    os.chmod(tmp, 0o755)
    pg = PgCluster()
    procs: list[subprocess.Popen] = []
    try:
        pg.start()
        with pg.admin_conn() as c:
            c.execute("ALTER SYSTEM SET log_statement = 'none'")
            c.execute("ALTER SYSTEM SET log_connections = off")
            c.execute("SELECT pg_reload_conf()")
        subprocess.run([PGBENCH, "-i", "-q", "-s", str(a.scale), "-h", str(pg.socket_dir), "-p", str(pg.port),
                        "-U", "postgres", "postgres"], check=True, capture_output=True)

        # tokengate in its default mode: trust over the cluster's Unix socket.
        tg_port, tg_data = free_port(), tmp / "tg-data"
        tg = subprocess.Popen([str(REPO / "build" / "tokengate"), "serve", "--listen", f"127.0.0.1:{tg_port}",
                               "--upstream", f"{pg.socket_dir}:{pg.port}", "--data-dir", str(tg_data),
                               "--http-listen", f"127.0.0.1:{free_port()}",  # not 8432: ./dev run may hold it
                               "--log-level", "warn", *a.tokengate_args.split()], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(tg)
        wait_port(tg_port, tg, "tokengate")
        token = subprocess.run([str(REPO / "build" / "tokengate"), "tokens", "create", "bench", "--user", "admin",
                                "--duration", "1d", "--data-dir", str(tg_data)],
                               check=True, capture_output=True, text=True).stdout.strip()

        # PgBouncer 1.18 in session mode, the same way in front of the same socket.
        pgb_port = free_port()
        targets = {"direct": (pg.port, "admin"), "tokengate": (tg_port, token)}
        if shutil.which("pgbouncer"):
            (tmp / "users.txt").write_text('"admin" "admin"\n')
            (tmp / "pgbouncer.ini").write_text(
                f"[databases]\n* = host={pg.socket_dir} port={pg.port}\n[pgbouncer]\n"
                f"listen_addr = 127.0.0.1\nlisten_port = {pgb_port}\nauth_type = plain\n"
                f"auth_file = {tmp}/users.txt\npool_mode = session\nmax_client_conn = 200\n"
                f"default_pool_size = 50\nlogfile = {tmp}/pgbouncer.log\nunix_socket_dir =\n")
            cmd = ["pgbouncer", str(tmp / "pgbouncer.ini")]
            if os.geteuid() == 0:
                shutil.chown(tmp, "postgres")
                for f in tmp.iterdir():
                    shutil.chown(f, "postgres")
                cmd = ["runuser", "-u", "postgres", "--"] + cmd
            pgb = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(pgb)
            wait_port(pgb_port, pgb, "pgbouncer")
            targets["pgbouncer"] = (pgb_port, "admin")
        else:
            print("(pgbouncer is not installed: its column is left out)")

        runs = [("select-only, simple, 1 client", ["-S", "-M", "simple", "-c", "1", "-j", "1"]),
                ("select-only, simple, 8 clients", ["-S", "-M", "simple", "-c", "8", "-j", "2"]),
                ("select-only, prepared, 1 client", ["-S", "-M", "prepared", "-c", "1", "-j", "1"]),
                ("select-only, prepared, 8 clients", ["-S", "-M", "prepared", "-c", "8", "-j", "2"]),
                ("new connection per transaction, 4 clients", ["-S", "-C", "-c", "4", "-j", "2"])]
        names = list(targets)
        print(f"pgbench, scale {a.scale}, {a.seconds} s per run, tps (ratio to direct)\n")
        print("| run | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        for label, args in runs:
            tps = {n: pgbench(port, pw, [*args, "-T", str(a.seconds), "-n"]) for n, (port, pw) in targets.items()}
            cells = [f"{tps[n]:,.0f}" + ("" if n == "direct" else f" ({tps[n] / tps['direct']:.2f}×)") for n in names]
            print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
        def rss_kib(pid: int) -> int:
            return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))

        # Memory per idle logged-in client (target: at most 2 KiB): open many
        # sessions with the token, let them idle, compare resident sizes.
        import psycopg
        n_idle = 150
        before = rss_kib(tg.pid)
        conns = [psycopg.connect(host="127.0.0.1", port=tg_port, user="admin", dbname="postgres", password=token,
                                 sslmode="disable") for _ in range(n_idle)]
        for c in conns:
            c.execute("select 1")
        time.sleep(1)
        after = rss_kib(tg.pid)
        for c in conns:
            c.close()
        print(f"\ntokengate resident memory: {before} KiB before {n_idle} idle token sessions, {after} KiB with "
              f"them: {(after - before) / n_idle:.1f} KiB per idle session")
        print("The last row logs in for every transaction: direct and PgBouncer with a SCRAM/plain password,\n"
              "tokengate with an API token (verified locally, upstream login by trust).")
        return 0
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT if p is procs[0] else signal.SIGTERM)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Relay benchmark: pgbench select-only against PostgreSQL directly, through tokengate and through PgBouncer
(session pooling), in one run on this machine. Reports, per line: transactions per second and their ratio to
direct; the CPU time each proxy process spends per transaction (from /proc/<pid>/task/*/schedstat, all threads,
user and kernel), which stays meaningful on a busy machine where TPS does not; system calls per transaction
(strace -c); user-space instructions per transaction (callgrind, when valgrind is installed); resident memory
per idle session; token logins per second against direct SCRAM logins.

Usage: /usr/bin/python3 bench/relay_bench.py [--seconds 5] [--reps 3] [--scale 10] [--no-instructions]
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
RUNS = [("select-only, simple, 1 client", ["-S", "-M", "simple", "-c", "1", "-j", "1"]),
        ("select-only, simple, 8 clients", ["-S", "-M", "simple", "-c", "8", "-j", "2"]),
        ("select-only, prepared, 1 client", ["-S", "-M", "prepared", "-c", "1", "-j", "1"]),
        ("select-only, prepared, 8 clients", ["-S", "-M", "prepared", "-c", "8", "-j", "2"])]
LOGINS = ("new connection per transaction, 4 clients", ["-S", "-C", "-c", "4", "-j", "2"])


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


def pgbench(port: int, password: str, args: list[str]) -> tuple[int, float]:
    """(transactions processed, tps)"""
    env = dict(os.environ, PGPASSWORD=password, PGHOST="127.0.0.1", PGPORT=str(port), PGUSER="admin",
               PGDATABASE="postgres", PGSSLMODE="disable")
    p = subprocess.run([PGBENCH, *args], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"pgbench {' '.join(args)} on port {port} failed:\n{p.stderr[-2000:]}")
    n = int(re.search(r"number of transactions actually processed: (\d+)", p.stdout).group(1))
    m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", p.stdout) or \
        re.search(r"tps = ([0-9.]+)", p.stdout)
    return n, float(m.group(1))


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of the process, user and system, in nanoseconds."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError):
            pass  # a thread that just ended
    return total


def rss_kib(pid: int) -> int:
    return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))


def syscalls_per_txn(pid: int, port: int, password: str, args: list[str], txns: int) -> tuple[float, str]:
    """strace -c -f attached to the process during a pgbench of `txns` transactions: total per transaction and
    the main calls."""
    out = Path(tempfile.mkstemp(prefix="tg-strace-")[1])
    st = subprocess.Popen(["strace", "-c", "-f", "-p", str(pid), "-o", str(out)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    time.sleep(1)
    try:
        n, _ = pgbench(port, password, [*args, "-t", str(txns // int(args[args.index("-c") + 1])), "-n"])
    finally:
        st.send_signal(signal.SIGINT)
        st.wait(10)
    counts: dict[str, int] = {}
    for line in out.read_text().splitlines():
        f = line.split()
        if len(f) >= 5 and f[0][0].isdigit() and f[-1] not in ("total", "syscall"):
            counts[f[-1]] = int(f[3])
    out.unlink()
    total = sum(counts.values()) / n
    main = ", ".join(f"{counts[k] / n:.1f} {k}" for k in sorted(counts, key=counts.get, reverse=True)
                     if counts[k] / n >= 0.05)
    return total, main


def callgrind_instructions(name: str, cmd: list[str], port: int, password: str, args: list[str], user: str | None,
                           tmp: Path) -> float | None:
    """User-space instructions per transaction: the proxy under callgrind serves two pgbench runs of different
    lengths; the difference of the totals, over the difference of transactions, leaves start-up out."""
    totals = []
    for txns in (1000, 3000):
        out = tmp / f"callgrind.{name}.{txns}.out"
        vg = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no"]
        full = vg + cmd
        if user:
            full = ["runuser", "-u", user, "--"] + full
        log = open(tmp / f"callgrind.{name}.{txns}.log", "wb")
        p = subprocess.Popen(full, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        try:
            try:
                wait_port(port, p, "proxy under callgrind")
            except RuntimeError as e:
                print(f"({e}: {(tmp / f'callgrind.{name}.{txns}.log').read_text(errors='replace')[-600:]})")
                return None
            time.sleep(1)
            n, _ = pgbench(port, password, [*args, "-t", str(txns), "-n"])
        finally:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        if not out.exists():
            return None
        m = re.search(r"^(?:summary|totals):\s+(\d+)", out.read_text(errors="replace"), re.M)
        if not m:
            return None
        totals.append((n, int(m.group(1))))
    (n1, i1), (n2, i2) = totals
    return (i2 - i1) / (n2 - n1)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5, help="per pgbench run")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions per line; medians are reported")
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--idle", type=int, default=150, help="idle sessions for the memory measurement")
    ap.add_argument("--no-instructions", action="store_true", help="skip the callgrind measurement")
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
        tg_cmd = [str(REPO / "build" / "tokengate"), "serve", "--listen", f"127.0.0.1:{tg_port}",
                  "--upstream", f"{pg.socket_dir}:{pg.port}", "--data-dir", str(tg_data),
                  "--http-listen", f"127.0.0.1:{free_port()}",  # not 8432: ./dev run may hold it
                  "--log-level", "warn", *a.tokengate_args.split()]
        tg = subprocess.Popen(tg_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(tg)
        wait_port(tg_port, tg, "tokengate")
        token = subprocess.run([str(REPO / "build" / "tokengate"), "tokens", "create", "bench", "--user", "admin",
                                "--duration", "1d", "--data-dir", str(tg_data)],
                               check=True, capture_output=True, text=True).stdout.strip()

        # PgBouncer 1.18 in session mode, the same way in front of the same socket.
        pgb_port = free_port()
        pgb = None
        pgb_cmd: list[str] = []
        run_as = "postgres" if os.geteuid() == 0 else None
        targets = {"direct": (pg.port, "admin", None), "tokengate": (tg_port, token, tg.pid)}
        if shutil.which("pgbouncer"):
            (tmp / "users.txt").write_text('"admin" "admin"\n')
            (tmp / "pgbouncer.ini").write_text(
                f"[databases]\n* = host={pg.socket_dir} port={pg.port}\n[pgbouncer]\n"
                f"listen_addr = 127.0.0.1\nlisten_port = {pgb_port}\nauth_type = plain\n"
                f"auth_file = {tmp}/users.txt\npool_mode = session\nmax_client_conn = 400\n"
                f"default_pool_size = 190\nlogfile = {tmp}/pgbouncer.log\nunix_socket_dir =\n")
            pgb_cmd = [shutil.which("pgbouncer"), str(tmp / "pgbouncer.ini")]
            if run_as:
                shutil.chown(tmp, run_as)
                for f in tmp.iterdir():
                    shutil.chown(f, run_as)
            pgb = subprocess.Popen((["runuser", "-u", run_as, "--"] if run_as else []) + pgb_cmd,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(pgb)
            wait_port(pgb_port, pgb, "pgbouncer")
            time.sleep(0.3)
            pgb_pid = int(subprocess.run(["pgrep", "-n", "-f", str(tmp / "pgbouncer.ini")], capture_output=True,
                                         text=True).stdout.split()[0])
            targets["pgbouncer"] = (pgb_port, "admin", pgb_pid)
        else:
            print("(pgbouncer is not installed: its columns are left out)")
        names = list(targets)
        proxies = [n for n in names if n != "direct"]

        print(f"pgbench, scale {a.scale}, {a.seconds} s per run, median of {a.reps} interleaved runs\n")
        tps_rows, cpu_rows = [], []
        for label, args in RUNS + [LOGINS]:
            samples: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
            for rep in range(a.reps):
                for n, (port, pw, pid) in targets.items():
                    before = cpu_ns(pid) if pid else 0
                    txns, tps = pgbench(port, pw, [*args, "-T", str(a.seconds), "-n"])
                    us = (cpu_ns(pid) - before) / txns / 1000 if pid else 0.0
                    samples[n].append((tps, us))
            tps = {n: statistics.median(s[0] for s in v) for n, v in samples.items()}
            cpu = {n: statistics.median(s[1] for s in v) for n, v in samples.items()}
            tps_rows.append((label, tps))
            cpu_rows.append((label, cpu))

        print("Transactions per second (ratio to direct):\n")
        print("| run | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        for label, tps in tps_rows:
            cells = [f"{tps[n]:,.0f}" + ("" if n == "direct" else f" ({tps[n] / tps['direct']:.2f}×)") for n in names]
            print(f"| {label} | " + " | ".join(cells) + " |")
        if "pgbouncer" in targets:
            print("\nCPU time of the proxy process per transaction (all threads, user + system):\n")
            print("| run | tokengate | PgBouncer | tokengate ÷ PgBouncer |")
            print("|---|---|---|---|")
            for label, cpu in cpu_rows:
                print(f"| {label} | {cpu['tokengate']:.1f} µs | {cpu['pgbouncer']:.1f} µs | "
                      f"{cpu['tokengate'] / cpu['pgbouncer']:.2f} |")
        login = tps_rows[-1][1]
        print(f"\nToken logins per second: {login['tokengate']:,.0f}, {login['tokengate'] / login['direct']:.2f}× "
              f"direct SCRAM logins ({login['direct']:,.0f}/s).")

        if shutil.which("strace"):
            print("\nSystem calls per transaction (strace -c -f, 2,000 transactions):\n")
            print("| run | proxy | total | main calls |")
            print("|---|---|---|---|")
            for label, args in RUNS:
                for n in proxies:
                    port, pw, pid = targets[n]
                    total, main_calls = syscalls_per_txn(pid, port, pw, args, 2000)
                    print(f"| {label} | {n} | {total:.1f} | {main_calls} |", flush=True)
        else:
            print("\n(strace is not installed: no system call counts)")

        # Memory per idle logged-in client (target: at most 2 KiB): open many sessions, let them idle,
        # compare resident sizes.
        import psycopg
        print()
        for n in proxies:
            port, pw, pid = targets[n]
            before = rss_kib(pid)
            conns = [psycopg.connect(host="127.0.0.1", port=port, user="admin", dbname="postgres", password=pw,
                                     sslmode="disable") for _ in range(a.idle)]
            for c in conns:
                c.execute("select 1")
            time.sleep(1)
            after = rss_kib(pid)
            for c in conns:
                c.close()
            print(f"{n} resident memory: {before} KiB, {after} KiB with {a.idle} idle sessions: "
                  f"{(after - before) / a.idle:.1f} KiB per idle session")
            time.sleep(1)

        if not a.no_instructions and shutil.which("valgrind"):
            # Each proxy again, alone, under callgrind (on its own port).
            print("\nUser-space instructions per transaction (callgrind, select-only simple, 1 client):\n")
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
            procs.clear()
            vg_port = free_port()
            cmd = [c if not c.startswith("127.0.0.1:") else f"127.0.0.1:{vg_port}" for c in tg_cmd]
            tg_ins = callgrind_instructions("tokengate", cmd, vg_port, token, RUNS[0][1], None, tmp)
            pgb_ins = None
            if pgb_cmd:
                ini = (tmp / "pgbouncer.ini").read_text().replace(f"listen_port = {pgb_port}", f"listen_port = {vg_port}")
                (tmp / "pgbouncer.ini").write_text(ini)
                pgb_ins = callgrind_instructions("pgbouncer", pgb_cmd, vg_port, "admin", RUNS[0][1], run_as, tmp)
            if tg_ins and pgb_ins:
                print(f"tokengate {tg_ins:,.0f}, PgBouncer {pgb_ins:,.0f} ({tg_ins / pgb_ins:.2f}×)")
            else:
                print(f"tokengate {tg_ins}, PgBouncer {pgb_ins} (callgrind gave no total)")
        print("\nThe login row logs in for every transaction: direct and PgBouncer with a SCRAM/plain password,\n"
              "tokengate with an API token (verified locally, upstream login by trust).")
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

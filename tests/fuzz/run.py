#!/usr/bin/python3
"""Runs the libFuzzer targets of tests/fuzz (built in build-fuzz/ by ./dev).

Each run first replays the target's seed corpus (tests/fuzz/corpus/<target>/,
regression inputs included), then fuzzes for the given time. New inputs go to
build-fuzz/fuzz-corpus/<target>/, never into the repository unless --merge is
given; crashes go to build-fuzz/crashes/<target>/. Every run is appended to
build-fuzz/fuzz-history.tsv (date, target, seconds, executions, coverage,
result), from which the CPU time per target is summed (--history).

  run.py [--seconds N] [--parallel N] [--junit FILE] [--merge] [target ...]
  run.py --history
"""
import argparse
import datetime
import os
import pathlib
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from xml.sax.saxutils import escape, quoteattr

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# Target -> the longest input worth trying (-max_len). Seeds must not be
# longer: libFuzzer cuts inputs to this length, also when replaying.
TARGETS = {
    "startup": 16384,   # a startup packet (<= 10000) and a password message
    "relay": 16384,     # interleaved client and upstream reads
    "splitter": 8192,   # a Query string
    "grammar": 4096,    # one statement
    "jwt": 4096,        # tokens are refused above 2048 bytes
    "duration": 256,
    "userlist": 8192,
    "config": 8192,
}

# Targets that share a dictionary (dict/<name>.dict; default: the target's name).
DICTIONARY = {"splitter": "sql", "grammar": "sql"}

# Sanitizer findings abort with a stack trace; leaks are findings too.
SANITIZER_ENV = {
    "ASAN_OPTIONS": "abort_on_error=1:detect_leaks=1:symbolize=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1:abort_on_error=1",
}


def run_target(build: pathlib.Path, target: str, seconds: int, merge: bool) -> dict:
    exe = build / "tests" / "fuzz" / f"fuzz_{target}"
    seeds = HERE / "corpus" / target
    work = build / "fuzz-corpus" / target
    crashes = build / "crashes" / target
    logs = build / "fuzz-logs"
    for d in (seeds, work, crashes, logs):
        d.mkdir(parents=True, exist_ok=True)
    before = set(crashes.iterdir())
    cmd = [str(exe), f"-max_total_time={seconds}", f"-max_len={TARGETS[target]}", "-timeout=10",
           "-rss_limit_mb=2560", "-print_final_stats=1", f"-artifact_prefix={crashes}/"]
    dictionary = HERE / "dict" / f"{DICTIONARY.get(target, target)}.dict"
    if dictionary.exists():
        cmd.append(f"-dict={dictionary}")
    # New inputs are written to the first directory only.
    cmd += [str(work), str(seeds)]
    log_path = logs / f"{target}.log"
    env = dict(os.environ, **SANITIZER_ENV)
    started = time.monotonic()
    with open(log_path, "w") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
    elapsed = time.monotonic() - started
    text = log_path.read_text(errors="replace")
    execs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", text)
    cov = re.findall(r"#\d+\s+\w+\s+cov: (\d+) ft: (\d+)", text)
    new_crashes = sorted(set(crashes.iterdir()) - before)
    result = {
        "target": target, "rc": rc, "seconds": elapsed, "log": log_path,
        "execs": int(execs[-1]) if execs else 0,
        "cov": cov[-1][0] if cov else "?", "ft": cov[-1][1] if cov else "?",
        "crashes": new_crashes, "text": text, "cmd": cmd,
    }
    if merge and rc == 0:
        # Keeps only inputs that add coverage to the seed corpus.
        subprocess.run([str(exe), "-merge=1", f"-max_len={TARGETS[target]}", str(seeds), str(work)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    with open(build / "fuzz-history.tsv", "a") as h:
        h.write("\t".join([datetime.datetime.now().isoformat(timespec="seconds"), target, f"{elapsed:.0f}",
                           str(result["execs"]), str(result["cov"]), "ok" if rc == 0 else "FAILED"]) + "\n")
    return result


def finding(r: dict) -> str:
    """The lines of a failed run's log that say what broke."""
    keep = []
    for line in r["text"].splitlines():
        if (line.startswith("==== property violated") or "runtime error:" in line or "ERROR: " in line
                or line.startswith("SUMMARY:") or (keep and keep[-1].startswith("==== property") and len(keep) < 8)):
            keep.append(line)
    return "\n".join(keep[:20]) or r["text"][-3000:]


def write_junit(path: pathlib.Path, results: list) -> None:
    failed = sum(1 for r in results if r["rc"] != 0)
    out = [f'<?xml version="1.0" encoding="utf-8"?>',
           f'<testsuite name="fuzz" tests="{len(results)}" failures="{failed}">']
    for r in results:
        out.append(f'  <testcase classname="fuzz" name="{r["target"]}" time="{r["seconds"]:.1f}">')
        if r["rc"] != 0:
            crash = r["crashes"][0] if r["crashes"] else None
            msg = f"fuzz target {r['target']} failed (exit {r['rc']})"
            body = finding(r)
            if crash:
                body += f"\nreproduce: {r['cmd'][0]} {crash}"
            body += f"\nlog: {r['log']}"
            out.append(f"    <failure message={quoteattr(msg)}>{escape(body)}</failure>")
        out.append("  </testcase>")
    out.append("</testsuite>")
    path.write_text("\n".join(out) + "\n")


def history(build: pathlib.Path) -> int:
    path = build / "fuzz-history.tsv"
    if not path.exists():
        print("no runs recorded in", path)
        return 0
    totals = {}
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) < 6:
            continue
        t = totals.setdefault(parts[1], [0.0, 0, 0, parts[4]])
        t[0] += float(parts[2])
        t[1] += int(parts[3])
        t[2] += parts[5] != "ok"
        t[3] = parts[4]
    print(f"{'target':10} {'CPU min':>8} {'executions':>12} {'failed runs':>11} {'last cov':>9}")
    for name in TARGETS:
        if name in totals:
            s, e, f, c = totals[name]
            print(f"{name:10} {s / 60:8.1f} {e:12d} {f:11d} {c:>9}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("targets", nargs="*", help=f"default: all ({', '.join(TARGETS)})")
    p.add_argument("--seconds", type=int, default=30, help="fuzzing time per target (default 30)")
    p.add_argument("--parallel", type=int, default=1, help="targets run at once (default 1)")
    p.add_argument("--build", default=str(ROOT / "build-fuzz"))
    p.add_argument("--junit", help="write results as JUnit XML (for tests/summarize.py)")
    p.add_argument("--merge", action="store_true", help="merge new coverage into tests/fuzz/corpus/<target>/")
    p.add_argument("--history", action="store_true", help="CPU time per target over all recorded runs")
    a = p.parse_args()
    build = pathlib.Path(a.build)
    if a.history:
        return history(build)
    unknown = [t for t in a.targets if t not in TARGETS]
    if unknown:
        p.error(f"unknown target(s) {', '.join(unknown)}; targets: {', '.join(TARGETS)}")
    targets = a.targets or list(TARGETS)
    missing = [t for t in targets if not (build / "tests" / "fuzz" / f"fuzz_{t}").exists()]
    if missing:
        print(f"not built: {', '.join(missing)} (./dev build --fuzz)", file=sys.stderr)
        return 2
    with ThreadPoolExecutor(max_workers=max(1, a.parallel)) as pool:
        results = list(pool.map(lambda t: run_target(build, t, a.seconds, a.merge), targets))
    for r in results:
        status = "ok" if r["rc"] == 0 else "FAILED"
        print(f"  fuzz {r['target']:9} {status:6} {r['execs']:>10} runs in {r['seconds']:4.0f} s, cov {r['cov']}"
              + (f", crash: {r['crashes'][0]}" if r["crashes"] else ""))
        if r["rc"] != 0:
            print("    " + finding(r).replace("\n", "\n    "))
    if a.junit:
        write_junit(pathlib.Path(a.junit), results)
    return 1 if any(r["rc"] != 0 for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

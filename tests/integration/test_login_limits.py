# Login work is bounded (docs/security.md, "Logging in"): a role's costly verifier cannot slow other users' logins,
# a parallel guesser gains nothing past the failure limit, connections still logging in are limited per address and
# in total and cannot hold a descriptor for the whole auth_timeout, and running out of descriptors is reported once
# per interval, not ten times a second.
from __future__ import annotations

import base64
import json
import os
import re
import socket
import struct
import subprocess
import threading
import time

import psycopg
import pytest
import requests

import pgwire
from conftest import PgCluster, Target, TokengateProcess, fresh_password
from test_tls import pki, tls_wire  # noqa: F401 - a fixture and a helper
from wsclient import WebSocketConnection


def trust_args(*extra: str) -> list[str]:
    return ["--upstream-auth", "trust", *extra]


def timed_login(t: Target, user: str, password: str, source: str | None = None) -> tuple[float, pgwire.LoginResult]:
    started = time.monotonic()
    w = pgwire.WireConnection(t.host, t.port, timeout=35, source=source)
    try:
        r = pgwire.login(w, user, password)
        if r.ok:
            w.send(pgwire.terminate_message())
        return time.monotonic() - started, r
    finally:
        w.close()


# ---------------------------------------------------------------- a costly verifier


def costly_verifier(iterations: int) -> str:
    """A well-formed SCRAM-SHA-256 verifier demanding `iterations` PBKDF2 rounds (its keys match no password)."""
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    return f"SCRAM-SHA-256${iterations}:{b64(os.urandom(16))}${b64(os.urandom(32))}:{b64(os.urandom(32))}"


def test_a_ten_million_round_verifier_does_not_slow_another_users_login(
        spawn_tokengate, pg: PgCluster, direct: Target, fresh_role):
    tg = spawn_tokengate(upstream=(str(pg.socket_dir), pg.port), extra_args=trust_args("--max-failed-logins", "0"))
    t = tg.target()
    attacker, attacker_pw = fresh_role()
    # Any role may set its own password, pre-hashed: here to a verifier that costs seconds per check.
    with psycopg.connect(direct.conninfo(user=attacker, password=attacker_pw), autocommit=True) as c:
        c.execute(f"ALTER ROLE CURRENT_USER PASSWORD '{costly_verifier(10_000_000)}'")

    stop = threading.Event()

    def attack() -> None:
        while not stop.is_set():
            try:
                timed_login(t, attacker, "guess")
            except OSError:
                pass

    threads = [threading.Thread(target=attack) for _ in range(4)]
    for th in threads:
        th.start()
    try:
        time.sleep(0.5)
        times = []
        for _ in range(5):
            elapsed, r = timed_login(t, "analyst", "analyst")
            assert r.ok, r.error
            times.append(elapsed)
    finally:
        stop.set()
        for th in threads:
            th.join(30)
    assert max(times) < 1.0, f"analyst's logins took {[round(x, 2) for x in times]} s while {attacker} was attacked"
    # The costly verifier is refused, not computed, and says why in the log.
    assert "auth.max_scram_iterations" in tg.log_since(0)


def password_checks(tg: TokengateProcess) -> dict[str, float]:
    """tokengate_password_checks_total by outcome (run, skipped), from GET /metrics."""
    r = requests.get(f"http://{tg.host}:{tg.http_port}/metrics", timeout=10)
    assert r.status_code == 200, r.text
    out = {}
    for line in r.text.splitlines():
        m = re.fullmatch(r'tokengate_password_checks_total\{outcome="(\w+)"\} (\S+)', line)
        if m:
            out[m.group(1)] = float(m.group(2))
    assert set(out) == {"run", "skipped"}, r.text
    return out


@pytest.mark.parametrize("transport", ["tcp", "tls", "websocket"])
def test_queued_verifications_of_clients_that_hung_up_are_dropped(spawn_tokengate, pg: PgCluster, direct: Target,
                                                                  fresh_role, pki, transport: str):
    """Logins that wait on the verification queue and whose clients hang up are never verified: a flood of
    attempts against a costly verifier that hang up at once costs the PBKDF2 of the few that had started, not of
    all (tokengate_password_checks_total counts both), and the next attempt in that name is answered at once.
    The same over TLS and WebSocket, where tokengate looks at the socket under the stream without reading it."""
    tls_args = ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)] if transport == "tls" else []
    tg = spawn_tokengate(upstream=(str(pg.socket_dir), pg.port),
                         extra_args=trust_args("--max-failed-logins", "100000", "--login-max-connections", "200",
                                               "--login-max-connections-per-address", "200",
                                               "--max-scram-iterations", "1000000", *tls_args))
    t = tg.target()

    def connect() -> pgwire.WireConnection:
        if transport == "tls":
            return tls_wire(tg.host, tg.port, pki.ca_cert)
        if transport == "websocket":
            return WebSocketConnection(tg.host, tg.http_port, timeout=10)
        return t.wire(timeout=10)

    role, pw = fresh_role()
    # A million rounds (auth.max_scram_iterations raised to allow it): computed, not refused, and slow enough on
    # any machine that few checks can run in the moment the flood is still connected (at 100,000 rounds a fast
    # machine ran a dozen of them before the hang-up, legitimately).
    with psycopg.connect(direct.conninfo(user=role, password=pw), autocommit=True) as c:
        c.execute(f"ALTER ROLE CURRENT_USER PASSWORD '{costly_verifier(1_000_000)}'")
    one_check, r = timed_login(t, role, "guess")
    assert r.error is not None and r.error.sqlstate == "28P01", r.error
    before = password_checks(tg)
    assert before["run"] >= 1

    flood = 40
    conns = []
    for _ in range(flood):
        w = connect()
        w.send(pgwire.startup_message({"user": role, "database": "postgres"}))
        conns.append(w)
    for w in conns:
        assert w.read_message().auth_code() == 3  # CleartextPassword
        w.send(pgwire.password_message(pgwire.cstr(fresh_password("guess"))))
    time.sleep(0.3)  # the catalog look-ups are done; the checks wait in the queue, one running
    for w in conns:
        w.close()
    time.sleep(0.1)

    # The next attempt in that name waits behind the flood's checks in the queue: it is answered after about one
    # check, not forty.
    elapsed, r = timed_login(t, role, "guess")
    assert r.error is not None and r.error.sqlstate == "28P01", r.error
    assert elapsed < 6 * one_check + 0.75, \
        f"a login right after the flood hung up took {elapsed:.2f} s (one check takes {one_check:.2f} s)"
    # Until the queue is empty: every check of the flood has been taken, run or skipped (a login that hung up
    # before its catalog look-up ended never reached the queue, on a slow machine).
    deadline, last = time.monotonic() + 30, None
    while time.monotonic() < deadline:
        now = password_checks(tg)
        run, skipped = now["run"] - before["run"] - 1, now["skipped"] - before["skipped"]
        if run + skipped >= flood or (run, skipped) == last:
            break
        last = (run, skipped)
        time.sleep(1)
    assert run <= 10 and skipped >= flood // 2, \
        f"{run:.0f} of {flood} checks ran after their clients hung up, {skipped:.0f} skipped " \
        f"(one check takes {one_check:.2f} s)"


# ---------------------------------------------------------------- a parallel guesser


def test_a_correct_password_inside_a_flood_is_not_accepted_faster_than_the_limit(spawn_tokengate, pg: PgCluster,
                                                                                   fresh_role):
    """The attack the throttle used to lose to: many connections guess at once and hang up after 100 ms, reading
    "no answer yet" as "wrong" (only failures were delayed). Past the limit, nothing is verified before its turn, so
    the right password inside the flood is not let in sooner than a wrong one would be answered."""
    tg = spawn_tokengate(upstream=(str(pg.socket_dir), pg.port), extra_args=trust_args("--max-failed-logins", "3"))
    t = tg.target()
    role, pw = fresh_role()
    stop = threading.Event()
    quick_answers: list[str] = []
    lock = threading.Lock()

    def guess() -> None:
        while not stop.is_set():
            try:
                with t.wire(timeout=0.1) as w:
                    w.send(pgwire.startup_message({"user": role, "database": "postgres"}))
                    w.read_message()  # the password request
                    w.send(pgwire.password_message(pgwire.cstr(fresh_password("guess"))))
                    m = w.read_message()  # an answer within 100 ms, or the hang-up below
                    with lock:
                        quick_answers.append(m.name)
            except (AssertionError, OSError, pgwire.ConnectionClosed):
                pass  # no answer within 100 ms: hang up and try the next guess

    threads = [threading.Thread(target=guess) for _ in range(4)]
    for th in threads:
        th.start()
    try:
        time.sleep(1.5)  # the flood is well past the limit of 3
        elapsed, r = timed_login(t, role, pw)
    finally:
        stop.set()
        for th in threads:
            th.join(10)
    assert not (r.ok and elapsed < 0.9), \
        f"the right password inside the flood was accepted after {elapsed:.2f} s (the limit allows one try per second)"
    assert "AuthenticationOk" not in quick_answers
    audit = [json.loads(ln) for ln in tg.audit_path.read_text().splitlines() if role in ln]
    unchecked = [a for a in audit if "refused without checking" in a.get("reason", "")]
    checked = [a for a in audit if a.get("reason") == "wrong password"]
    assert unchecked, "past the limit, attempts should be refused without being verified"
    # Guesses verified: a few before the limit was known, then about one per turn (1 s, 2 s, 4 s…).
    assert len(checked) <= 20, f"{len(checked)} guesses were verified in 1.5 s with a limit of 3"


# ---------------------------------------------------------------- connections still logging in


def idle_connection(t: Target, source: str) -> socket.socket:
    return socket.create_connection((t.host, t.port), timeout=10, source_address=(source, 0))


def closed_within(s: socket.socket, seconds: float) -> tuple[bool, bytes]:
    s.settimeout(seconds)
    data = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return True, data
            data += chunk
    except socket.timeout:
        return False, data
    except ConnectionResetError:
        return True, data


def test_login_phase_flooding(spawn_tokengate, pg: PgCluster):
    tg = spawn_tokengate(upstream=(str(pg.socket_dir), pg.port),
                         extra_args=trust_args("--login-max-connections-per-address", "5", "--login-max-connections",
                                               "12", "--login-client-timeout", "2", "--auth-timeout", "30"))
    t = tg.target()
    held = [idle_connection(t, "127.0.0.2") for _ in range(5)]
    time.sleep(0.2)
    # Past the per-address limit: refused at once with a FATAL, not left to hang.
    extra = idle_connection(t, "127.0.0.2")
    closed, data = closed_within(extra, 2)
    assert closed, "a sixth idle connection from one address was kept"
    err = pgwire.parse_messages(data)[0].error()
    assert err.sqlstate == "53300", err
    # Somebody else still logs in at once.
    elapsed, r = timed_login(t, "analyst", "analyst")
    assert r.ok and elapsed < 1.0, (elapsed, r.error)
    # A slow client (one byte of its startup packet every 0.4 s) is cut off with the idle ones, at the client
    # timeout (2 s), not at auth_timeout (30 s).
    slow = idle_connection(t, "127.0.0.3")
    started = time.monotonic()
    packet = pgwire.startup_message({"user": "analyst", "database": "postgres"})
    cut = False
    for b in packet:
        try:
            slow.send(bytes([b]))
        except OSError:
            cut = True
            break
        time.sleep(0.4)
        if time.monotonic() - started > 5:
            break
    if not cut:
        cut, _ = closed_within(slow, 1)
    assert cut and time.monotonic() - started < 4, "a slow client held its connection past the client timeout"
    for s in held:
        c, _ = closed_within(s, 3)
        assert c, "an idle connection was held past login.client_timeout"
    for s in [*held, extra, slow]:
        s.close()
    # In total: 12 connections logging in from 12 addresses; the 13th is refused with PostgreSQL's words.
    many = [idle_connection(t, f"127.0.1.{i}") for i in range(1, 13)]
    time.sleep(0.2)
    last = idle_connection(t, "127.0.1.13")
    closed, data = closed_within(last, 2)
    assert closed
    err = pgwire.parse_messages(data)[0].error()
    assert (err.sqlstate, err.message) == ("53300", "sorry, too many clients already"), err
    for s in [*many, last]:
        s.close()
    time.sleep(0.3)
    assert timed_login(t, "analyst", "analyst")[1].ok


def test_running_out_of_descriptors_is_reported_not_flooded(spawn_tokengate, pg: PgCluster):
    tg = spawn_tokengate(upstream=(str(pg.socket_dir), pg.port), extra_args=trust_args())
    t = tg.target()
    assert timed_login(t, "analyst", "analyst")[1].ok  # control connections open before the limit bites
    # Only the soft limit: the hard one could not be raised again without CAP_SYS_RESOURCE.
    soft = subprocess.run(["prlimit", f"--pid={tg.proc.pid}", "--nofile", "--output=SOFT", "--noheadings"],
                          check=True, capture_output=True, text=True).stdout.strip()
    subprocess.run(["prlimit", f"--pid={tg.proc.pid}", "--nofile=40:"], check=True)
    mark = tg.log_mark()
    conns = []
    try:
        for i in range(60):
            try:
                conns.append(socket.create_connection((t.host, t.port), timeout=2,
                                                      source_address=(f"127.0.2.{i % 200 + 1}", 0)))
            except OSError:
                break
        time.sleep(3.5)
        lines = [ln for ln in tg.log_since(mark).splitlines() if "accept on" in ln]
    finally:
        for s in conns:
            s.close()
    assert lines, "tokengate did not run out of descriptors: the test proves nothing"
    assert len(lines) <= 2, f"{len(lines)} log lines in 3.5 s about failing accepts:\n" + "\n".join(lines[:5])
    subprocess.run(["prlimit", f"--pid={tg.proc.pid}", f"--nofile={soft}:"], check=True)
    time.sleep(0.5)
    assert timed_login(t, "analyst", "analyst")[1].ok

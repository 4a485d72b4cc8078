# The tokengate process itself: upstream unreachable, busy listen port, SIGTERM, bounded buffering for slow clients.
from __future__ import annotations

import signal
import socket
import subprocess
import time

import pytest

import pgwire
from conftest import PgCluster, Target, TokengateProcess, free_port


def test_upstream_down_gives_error_not_hang(spawn_tokengate):
    dead = ("127.0.0.1", free_port())  # nothing listens there
    tg = spawn_tokengate(upstream=dead)
    t = tg.target()
    started = time.monotonic()
    with t.wire(timeout=10) as w:
        r = pgwire.login(w, "analyst", "analyst")
        assert r.error is not None, f"login succeeded without an upstream?! {r.messages}"
        rest, closed = w.read_until_closed(5)
        assert closed and not rest, f"after the error: {rest}, closed={closed}"
    assert time.monotonic() - started < 10
    assert r.error.get("S") == "FATAL", r.error
    assert (r.error.sqlstate or "").startswith("08"), f"expected a connection exception (class 08): {r.error}"
    assert tg.alive(), f"tokengate died when the upstream was down; log:\n{tg.log_tail()}"
    p = t.psql("-c", "select 1", user="analyst")
    assert p.rc == 2 and "FATAL" in p.stderr, p


def test_listen_port_in_use_fails_clearly(spawn_tokengate, pg: PgCluster):
    tg = spawn_tokengate(upstream=(str(pg.socket_dir), pg.port), start=False)
    with socket.socket() as squatter:
        squatter.bind((tg.host, tg.port))
        squatter.listen()
        tg.launch()
        try:
            rc = tg.proc.wait(5)
        except subprocess.TimeoutExpired:
            pytest.fail(f"tokengate kept running although {tg.host}:{tg.port} was taken; log:\n{tg.log_tail()}")
    assert rc != 0, f"tokengate should exit non-zero when it cannot listen; log:\n{tg.log_tail()}"
    assert tg.log_path.read_text(errors="replace").strip(), "tokengate exited without saying why"


def test_sigterm_stops_promptly(spawn_tokengate, pg: PgCluster):
    # The Unix socket, which the cluster trusts: in the default upstream.auth = trust tokengate reads password
    # verifiers there as the control user (postgres), who has no password over TCP.
    tg = spawn_tokengate(upstream=(str(pg.socket_dir), pg.port))
    with tg.target().connect(user="analyst") as conn:
        conn.execute("select 1")
    tg.proc.send_signal(signal.SIGTERM)
    try:
        rc = tg.proc.wait(5)
    except subprocess.TimeoutExpired:
        pytest.fail(f"tokengate still running 5 s after SIGTERM with no clients; log:\n{tg.log_tail()}")
    assert rc == 0, f"SIGTERM exit code {rc}; log:\n{tg.log_tail()}"


def test_slow_reader_does_not_make_tokengate_buffer_everything(proxy: Target, tokengate: TokengateProcess):
    """A client that stops reading must push back on the upstream, not grow tokengate's memory (bounded memory)."""
    result_bytes = 120 * 1024 * 1024
    rows = result_bytes // 1000
    with proxy.wire(timeout=30) as w:
        w.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        assert pgwire.login(w, "analyst", "analyst").ok
        before = tokengate.rss_kib()
        w.send(pgwire.query_message(f"select repeat('x', 1000) from generate_series(1, {rows})"))
        time.sleep(3)  # PostgreSQL produces the whole result in well under 3 s
        during = tokengate.rss_kib()
        # Drain it all and check that nothing was lost.
        n_rows = 0
        while True:
            m = w.read_message()
            if m.tag == b"D":
                n_rows += 1
            elif m.tag == b"Z":
                break
            elif m.tag == b"E":
                pytest.fail(f"query failed: {m}")
    growth_mib = (during - before) / 1024
    assert n_rows == rows
    assert growth_mib < 48, (
        f"tokengate's RSS grew by {growth_mib:.0f} MiB while a client did not read a "
        f"{result_bytes >> 20} MiB result: it buffers instead of applying backpressure")

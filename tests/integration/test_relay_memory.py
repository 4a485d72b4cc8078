# Memory the relay holds is bounded (issue 9): a header's announced length allocates nothing, messages too long to
# inspect stream through (or end only their session when they might hold an API TOKEN statement), and the
# process-wide limit ends the session that would exceed it, with 53200 (the per-session limit, which backpressure
# keeps out of reach of a client, is tested on the machine in tests/unit/proxy/relay_test.cpp).
from __future__ import annotations

import struct
import time
import uuid

import pgwire
from conftest import PgCluster, Target, TokengateProcess, Twin


def uniq(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def logged_in(t: Target) -> pgwire.WireConnection:
    w = t.wire(timeout=20)
    r = pgwire.login(w, "analyst", "analyst")
    assert r.ok, r.error
    return w


def test_announced_gigabyte_allocates_nothing(proxy: Target, tokengate: TokengateProcess):
    """Five bytes, a Query header announcing 0x3fffffff bytes, used to make tokengate allocate and zero a gigabyte."""
    before = tokengate.rss_kib()
    conns = [logged_in(proxy) for _ in range(3)]
    try:
        for w in conns:
            w.send(b"Q" + struct.pack("!i", 0x3FFFFFFF))
        time.sleep(1)
        grown_mib = (tokengate.rss_kib() - before) / 1024
        assert grown_mib < 16, f"tokengate grew by {grown_mib:.0f} MiB for three announced gigabytes"
        # The sessions wait for their bytes; nothing else is affected.
        with proxy.connect() as c:
            assert c.execute("select 'still serving'").fetchone() == ("still serving",)
    finally:
        for w in conns:
            w.close()


def test_query_too_long_to_inspect_streams_through(twin: Twin):
    big = "x" * (3 * 1024 * 1024)

    def run(t: Target):
        with logged_in(t) as w:
            return pgwire.data_rows_text(w.simple_query(f"select length('{big}'), 'done'"))

    assert twin.run(run) == [(str(len(big)), "done")]


def test_long_query_that_may_hold_an_api_token_statement_ends_its_session(proxy: Target, pg: PgCluster):
    """Longer than relay.max_inspected_message (1 MiB) and containing the word `api`: tokengate cannot check it,
    so the session ends with 54000 and the upstream never gets the whole message: the insert does not happen."""
    table = uniq("tg_long")
    with pg.admin_conn() as a:
        a.execute(f"CREATE TABLE {table} (v text)")
        a.execute(f"GRANT ALL ON {table} TO analyst")
    try:
        w = logged_in(proxy)
        w.send(pgwire.query_message(f"insert into {table} values ('{'y' * (2 * 1024 * 1024)} api')"))
        msgs, closed = w.read_until_closed(15)
        w.close()
        errs = [m.error() for m in msgs if m.tag == b"E"]
        assert errs and errs[-1].sqlstate == "54000" and errs[-1].severity == "FATAL", msgs
        assert closed
        time.sleep(0.5)
        with pg.admin_conn() as a:
            assert a.execute(f"select count(*) from {table}").fetchone()[0] == 0
        with proxy.connect() as c:
            assert c.execute("select 'others go on'").fetchone() == ("others go on",)
    finally:
        with pg.admin_conn() as a:
            a.execute(f"DROP TABLE {table}")


def test_process_memory_limit_ends_only_the_session_over_it(spawn_tokengate, pg: PgCluster):
    # Each session below makes tokengate buffer a 200 kB Query that is not complete yet (about 256 kB of buffer);
    # three do not fit in 600 kB.
    tg = spawn_tokengate(upstream=(str(pg.socket_dir), pg.port),
                         extra_args=["--upstream-auth", "trust", "--max-failed-logins", "100000",
                                     "--max-inspected-message", "256kB", "--session-memory-limit", "512kB",
                                     "--memory-limit", "600kB"])
    t = tg.target()
    query = pgwire.query_message(f"select length('{'z' * 200000}')")
    conns = [logged_in(t) for _ in range(3)]
    try:
        for w in conns:
            w.send(query[:-1])  # all but the last byte: tokengate holds it to look at it whole
            time.sleep(0.5)
        msgs, closed = conns[2].read_until_closed(5)
        errs = [m.error() for m in msgs if m.tag == b"E"]
        assert closed and errs and errs[-1].sqlstate == "53200", msgs
        assert "relay.memory_limit" in (errs[-1].get("D") or ""), errs[-1]
        for w in conns[:2]:
            w.send(query[-1:])
            msgs = w.read_until_ready()
            assert pgwire.data_rows_text(msgs) == [("200000",)], msgs
    finally:
        for w in conns:
            w.close()

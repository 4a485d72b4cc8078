# The startup phase, case by case, side by side with PostgreSQL 15 (the twin): bad and unusual startup packets,
# requests, and password messages get exactly what PostgreSQL gives them, silence included (the cases its
# ProcessStartupPacket only logs before it closes: "invalid length of startup packet", "incomplete startup packet").
#
# Each case sends bytes to both and compares what comes back, decoded: the message sequence, every ErrorResponse field
# except the server's source location (F, L, R: file and line of a PostgreSQL build), and whether the server closed.
# Password-phase cases log in as `plainuser`, for whom the cluster asks for a cleartext password as tokengate does.
from __future__ import annotations

import socket
import struct
import time

import psycopg
import pytest

import pgwire
from conftest import Target, Twin

STARTUP_LIMIT = 10_000  # bytes after the length word; PostgreSQL's MAX_STARTUP_PACKET_LENGTH
P3 = pgwire.PROTOCOL_3_0
SSL = pgwire.ssl_request()


def assert_still_serving(t: Target) -> None:
    """A fresh, ordinary client gets through after the bad one."""
    with t.connect(user="analyst") as conn:
        assert conn.execute("select 'alive'").fetchone() == ("alive",)


def decode(data: bytes) -> list[str]:
    """What a server sent, readable and comparable: one entry per message; source-location fields left out."""
    if data[:1] == b"E" and (len(data) < 5 or struct.unpack("!i", data[1:5])[0] > len(data)):
        return [f"old-format error {data!r}"]  # PostgreSQL's answer to a pre-3.0 client: no length word
    out = []
    for m in pgwire.parse_messages(data):
        if m.tag in (b"E", b"N"):
            fields = {c: v for c, v in m.error().fields if c not in "FLR"}
            out.append(f"{m.name}{fields}")
        else:
            out.append(pgwire.describe(m))
    return out


class Request(bytes):
    """A step whose first bytes are an SSLRequest or GSSENCRequest: its one-byte answer is read right after."""


def exchange(t: Target, steps: list, timeout: float = 3.0) -> tuple[list[str], bool]:
    """Sends each bytes step (a float: pause that long; "half-close": shutdown(SHUT_WR); a Request: then read its
    answer byte), then reads until the server closes or `timeout` passes. Returns (decoded answer, closed)."""
    out: list[str] = []
    with t.wire(timeout=timeout) as w:
        for step in steps:
            if isinstance(step, float):
                time.sleep(step)
            elif step == "half-close":
                w.shutdown_write()
            else:
                try:
                    w.send(step)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the server may close before reading everything
                if isinstance(step, Request):
                    out.append(f"answer byte {w.read_bytes(1)!r}")
        data, closed = w.read_raw_until_closed(timeout)
    return out + decode(data), closed


def startup(params: dict[str, str], version: int = P3) -> bytes:
    return pgwire.startup_message(params, version=version)


def startup_of_total_length(n: int, **params: str) -> bytes:
    base = {"user": "plainuser", "database": "postgres", **params, "tg.pad": ""}
    pad = n - len(startup(base))
    assert pad >= 0
    return startup({**base, "tg.pad": "p" * pad})


PLAIN = startup({"user": "plainuser", "database": "postgres"})

# name -> steps. Every case is run against PostgreSQL and through tokengate; the answers must be identical.
CASES: dict[str, list] = {
    # Nothing, or part of a length word, then the client hangs up: PostgreSQL closes without a word.
    "hang up at once": ["half-close"],
    "two bytes then hang up": [b"\0\0", "half-close"],
    "half a packet then hang up": [struct.pack("!ii", 100, P3) + b"user\0plainuser", "half-close"],
    # An impossible length is dropped as soon as it is read; waiting for more would hang.
    "length 4": [struct.pack("!i", 4)],
    "Terminate before the startup packet": [pgwire.terminate_message()],
    "an HTTP request": [b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"],
    "length one over the limit": [struct.pack("!ii", STARTUP_LIMIT + 5, P3)],
    "a full packet over the limit": [startup_of_total_length(STARTUP_LIMIT + 100)],
    # Protocol versions.
    "protocol 2.0 (old-format answer)": [startup({"user": "plainuser"}, version=2 << 16)],
    "protocol 4.0": [startup({"user": "plainuser"}, version=4 << 16)],
    "protocol 3.2 without a user": [startup({"database": "postgres", "_pq_.tg_option": "1"}, version=(3 << 16) | 2)],
    # Malformed packets.
    "no user": [startup({"database": "postgres"})],
    "empty user": [startup({"user": "", "database": "postgres"})],
    "no terminator": [struct.pack("!i", 4 + 4 + len(b"user\0plainuser\0")) + struct.pack("!i", P3) + b"user\0plainuser\0"],
    "unterminated value": [struct.pack("!i", 4 + 4 + len(b"user\0plainuser")) + struct.pack("!i", P3) + b"user\0plainuser"],
    "bad replication value": [startup({"user": "plainuser", "replication": "maybe"})],
    "bad replication value, then a broken layout": [
        struct.pack("!i", 8 + len(b"replication\0maybe\0user\0x")) + struct.pack("!i", P3) + b"replication\0maybe\0user\0x"],
    # Cancel requests are never answered, well-formed or not.
    "cancel request with an unknown key": [pgwire.cancel_request(12345, 67890)],
    "cancel request too short": [struct.pack("!iii", 12, 80877102, 1)],
    # SSLRequest: answered 'N' (no certificate configured), once.
    "SSLRequest with data pipelined after it": [Request(SSL + PLAIN)],
    "SSLRequest twice": [Request(SSL), SSL],
    "SSLRequest, then hang up": [Request(SSL), "half-close"],
    # The password message (the cluster asks plainuser for a cleartext password, as tokengate asks everyone).
    "Terminate instead of the password": [PLAIN, 0.2, pgwire.terminate_message()],
    "a Query instead of the password": [PLAIN, 0.2, pgwire.query_message("select 1")],
    "hang up instead of the password": [PLAIN, 0.2, "half-close"],
    "half a password message, then hang up": [PLAIN, 0.2, b"p\0\0", "half-close"],
    "password message over 65535 bytes": [PLAIN, 0.2, b"p" + struct.pack("!i", 65536) + b"a" * 100],
    "password message of length 3": [PLAIN, 0.2, b"p" + struct.pack("!i", 3)],
    "bytes after the password's NUL": [PLAIN, 0.2, pgwire.password_message(b"plainuser\0xx")],
    "password without its NUL": [PLAIN, 0.2, pgwire.password_message(b"plainuser")],
    "wrong password": [PLAIN, 0.2, pgwire.password_message(b"not-the-password\0")],
}


@pytest.mark.parametrize("case", list(CASES))
def test_startup_case_as_postgresql(twin: Twin, case: str):
    steps = CASES[case]
    answer = twin.run(lambda t: exchange(t, steps), f"answer to {case!r} (decoded messages, closed)")
    print(f"{case}: {answer}")
    assert_still_serving(twin.target)


def test_silent_cases_are_silent(target: Target):
    """The cases PostgreSQL drops without a word: not one byte, and closed at once (no wait for the timeout)."""
    asked = ["AuthenticationCleartextPassword"]
    for case, before in (("length 4", []), ("Terminate before the startup packet", []), ("an HTTP request", []),
                         ("length one over the limit", []), ("cancel request too short", []),
                         ("hang up instead of the password", asked), ("password message over 65535 bytes", asked)):
        started = time.monotonic()
        answer, closed = exchange(target, CASES[case])
        assert (answer, closed) == (before, True), f"{case}: {answer} (closed={closed})"
        assert time.monotonic() - started < 2.5, f"{case}: closing took {time.monotonic() - started:.1f} s"


def test_length_at_the_limit_waits_for_the_rest(twin: Twin):
    """10,004 bytes in all (10,000 after the length word) is a legal length: the server waits for the body."""

    def run(t: Target):
        with t.wire(timeout=5) as w:
            w.send(struct.pack("!ii", STARTUP_LIMIT + 4, P3))
            early, closed_early = w.read_raw_until_closed(1.0)
            w.shutdown_write()
            late, closed = w.read_raw_until_closed(3.0)
            return decode(early), closed_early, decode(late), closed

    assert twin.run(run) == ([], False, [], True)


@pytest.mark.parametrize("total", [STARTUP_LIMIT, STARTUP_LIMIT + 4])
def test_startup_at_the_limit_is_accepted(twin: Twin, total: int):
    """A startup packet as long as PostgreSQL allows is legal, and every parameter in it reaches the upstream."""
    pkt = startup_of_total_length(total)
    assert len(pkt) == total

    def run(t: Target):
        with t.wire() as w:
            w.send(pkt)
            r = pgwire.login(w, "plainuser", "plainuser", send_startup=False)
            assert r.ok, f"login with a {len(pkt)}-byte startup packet failed: {r.error}"
            rows = pgwire.data_rows_text(w.simple_query("select length(current_setting('tg.pad'))"))
            w.send(pgwire.terminate_message())
            return rows

    rows = twin.run(run)
    assert int(rows[0][0]) > 9_900


def test_ssl_request_then_startup_on_same_connection(twin: Twin):
    def run(t: Target):
        with t.wire() as w:
            w.send(pgwire.ssl_request())
            answer = w.read_bytes(1)
            assert answer == b"N", f"SSLRequest answered {answer!r} (+{w.buf!r}); TLS is not configured"
            r = pgwire.login(w, "analyst", "analyst")
            assert r.ok, f"startup after SSLRequest failed: {r.error}"
            rows = pgwire.data_rows_text(w.simple_query("select current_user"))
            w.send(pgwire.terminate_message())
            return answer, rows

    assert twin.run(run) == (b"N", [("analyst",)])


def test_ssl_request_with_a_longer_length_is_an_ssl_request(twin: Twin):
    """PostgreSQL 15 reads the request code and ignores the rest of the packet: answered 'N', then a login works."""

    def run(t: Target):
        with t.wire() as w:
            w.send(struct.pack("!iii", 12, 80877103, 0))
            answer = w.read_bytes(1)
            r = pgwire.login(w, "plainuser", "plainuser")
            w.send(pgwire.terminate_message())
            return answer, r.ok, r.error

    assert twin.run(run) == (b"N", True, None)


def test_newer_minor_version_is_negotiated_down(twin: Twin):
    """Protocol 3.2 (PostgreSQL 18 clients can ask for it) plus a _pq_ option: NegotiateProtocolVersion(3.0,
    [option]), then the login goes on."""

    def run(t: Target):
        with t.wire() as w:
            w.send(startup({"user": "plainuser", "database": "postgres", "_pq_.tg_option": "1"}, version=(3 << 16) | 2))
            r = pgwire.login(w, "plainuser", "plainuser", send_startup=False)
            assert r.ok, r.error
            negotiated = [pgwire.describe(m) for m in r.messages if m.tag == b"v"]
            rows = pgwire.data_rows_text(w.simple_query("select 1"))
            w.send(pgwire.terminate_message())
            return negotiated, rows

    assert twin.run(run) == (["NegotiateProtocolVersion(3.0, unrecognized=['_pq_.tg_option'])"], [("1",)])


def test_gssenc_request_is_declined(target: Target):
    with target.wire() as w:
        w.send(pgwire.gssenc_request())
        answer = w.read_bytes(1)
        if target.name == "direct":
            # Debian's PostgreSQL is built with GSSAPI and offers it ('G'); tokengate never does.
            assert answer in (b"G", b"N"), answer
            return
        assert answer == b"N", f"GSSENCRequest answered {answer!r}"
        r = pgwire.login(w, "analyst", "analyst")
        assert r.ok, f"startup after GSSENCRequest failed: {r.error}"
        assert pgwire.data_rows_text(w.simple_query("select 1")) == [("1",)]


def test_gssenc_then_ssl_then_startup_proxy(proxy: Target):
    """libpq's order with gssencmode=prefer and sslmode=prefer: GSSENC, then SSL, then the startup.
    (Proxy only: Debian's PostgreSQL is built with GSSAPI and would start a GSS handshake.)"""
    with proxy.wire() as w:
        w.send(pgwire.gssenc_request())
        assert w.read_bytes(1) == b"N"
        w.send(pgwire.ssl_request())
        assert w.read_bytes(1) == b"N"
        r = pgwire.login(w, "analyst", "analyst")
        assert r.ok, f"startup after GSSENC+SSL requests failed: {r.error}"


def test_gssenc_data_pipelined_proxy(proxy: Target):
    """As PostgreSQL does after an SSLRequest (tested against it above): the answer, then FATAL 08P01."""
    answer, closed = exchange(proxy, [Request(pgwire.gssenc_request() + PLAIN)])
    assert closed
    assert answer == [
        "answer byte b'N'",
        "ErrorResponse{'S': 'FATAL', 'V': 'FATAL', 'C': '08P01', 'M': 'received unencrypted data after GSSAPI "
        "encryption request', 'D': 'This could be either a client-software bug or evidence of an attempted "
        "man-in-the-middle attack.'}"], answer


def test_idle_half_open_connections_do_not_block_others(target: Target):
    """Clients that connect and stall in the startup phase must not hold up anybody else."""
    stalled = []
    try:
        for i in range(20):
            s = socket.create_connection((target.host, target.port), timeout=5)
            if i % 2:
                s.sendall(struct.pack("!ii", 100, P3))  # half a startup packet
            stalled.append(s)
        started = time.monotonic()
        assert_still_serving(target)
        assert time.monotonic() - started < 2, "a login took over 2 s while other clients stalled"
    finally:
        for s in stalled:
            s.close()
    assert_still_serving(target)


def test_connect_and_close_storm(target: Target):
    for _ in range(100):
        socket.create_connection((target.host, target.port), timeout=5).close()
    for _ in range(20):
        with target.wire() as w:
            w.send(pgwire.startup_message({"user": "analyst", "database": "postgres"}))
            # close in the middle of authentication
    # Each hung-up connection holds one of the address's login slots
    # (login.max_connections_per_address, 50) until its coroutine reads the
    # end of input; on a loaded machine that takes a moment, and a refusal
    # for that limit meanwhile is by design (libpq reports it only as "an
    # error response during SSL exchange"). Once they are gone, the next
    # client gets in.
    deadline = time.monotonic() + 10
    while True:
        try:
            assert_still_serving(target)
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)

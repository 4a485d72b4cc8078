# The PostgreSQL protocol over WebSocket (GET /v2, proxy/http/websocket_stream.cpp) follows exactly the rules of a
# TCP connection (docs/security.md, "Identity"; docs/http.md): the same startup refusals byte for byte, the upstream
# packet rebuilt for the authenticated role, a token's owner as the session user, revoked tokens refused, failures
# counted by the same throttle. And the WebSocket layer itself is bounded: frames announcing huge lengths, fragmented
# and interleaved messages, text frames, protocol violations, ping floods and clients that never finish their
# startup leave tokengate's memory small and end in a clean close. The client is tests/integration/wsclient.py.
from __future__ import annotations

import socket
import struct
import threading
import time
import uuid

import pytest

import pgwire
from conftest import PgCluster, Target, TokengateProcess, fresh_password, mask
from wsclient import BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, WebSocketConnection, frame


def ws(tg: TokengateProcess, timeout: float = 10.0, **kw) -> WebSocketConnection:
    if tg.http_port is None:
        pytest.fail("this tokengate has no HTTP listener (--http-listen)", pytrace=False)
    return WebSocketConnection(tg.host, tg.http_port, timeout=timeout, pg_port=tg.port, **kw)


def raw_startup(pairs: list[tuple[str, str]]) -> bytes:
    """A StartupMessage with the pairs as given (repeated keys too)."""
    body = b"".join(pgwire.cstr(k) + pgwire.cstr(v) for k, v in pairs) + b"\0"
    return (len(body) + 8).to_bytes(4, "big") + pgwire.PROTOCOL_3_0.to_bytes(4, "big") + body


def packet(version: int, body: bytes) -> bytes:
    return (len(body) + 8).to_bytes(4, "big") + version.to_bytes(4, "big") + body


def answer_until_closed(conn: pgwire.WireConnection, data: bytes, timeout: float = 5.0) -> bytes:
    conn.send(data)
    got, closed = conn.read_raw_until_closed(timeout)
    assert closed, f"connection still open {timeout} s after {data[:60]!r}; got {got!r}"
    return got


def decoded(data: bytes) -> str:
    try:
        return repr(pgwire.parse_messages(data))
    except AssertionError:
        return repr(data)


def upstream_sessions(pg: PgCluster, mark: int) -> list[str]:
    """PostgreSQL's log_connections lines since mark, tokengate's own catalog connections left out."""
    return [ln for ln in pg.log_since(mark).splitlines()
            if "connection authorized" in ln and "tokengate-control" not in ln]


def login_over(conn: pgwire.WireConnection, user: str, password: str, extra: dict[str, str] | None = None):
    with conn:
        r = pgwire.login(conn, user, password, extra=extra)
        if r.error is not None:
            rest, closed = conn.read_until_closed(5)
            assert closed and rest == [], f"after {r.error}: closed={closed}, {rest}"
            return r, None
        rows = pgwire.data_rows_text(conn.simple_query(
            "select current_user, session_user, current_setting('work_mem'), current_setting('application_name')"))
        conn.send(pgwire.terminate_message())
        return r, rows


def backend_ends(pg: PgCluster, pid: int) -> None:
    deadline = time.monotonic() + 5
    with pg.admin_conn() as a:
        while a.execute("select 1 from pg_stat_activity where pid = %s", (pid,)).fetchone():
            assert time.monotonic() < deadline, f"the upstream backend {pid} outlived the WebSocket connection"
            time.sleep(0.1)


def comparable(r: pgwire.LoginResult) -> list[tuple[bytes, bytes]]:
    """The login's messages with what differs between any two sessions (the backend's key) left out."""
    return [(m.tag, m.body) for m in r.messages if m.tag != b"K"]


# ---------------------------------------------------------------- identity: the same rules as TCP

STARTUP_CASES = {
    # The reproduced attack: tokengate checked the first `user`, PostgreSQL kept the last.
    "repeated-user": raw_startup([("user", "analyst"), ("database", "postgres"), ("user", "postgres")]),
    "repeated-database": raw_startup([("user", "analyst"), ("database", "postgres"), ("database", "template1")]),
    "repeated-guc-case": raw_startup([("user", "analyst"), ("DateStyle", "ISO"), ("datestyle", "SQL")]),
    "repeated-options": raw_startup([("user", "analyst"), ("options", "-c work_mem=1MB"), ("options", "-c role=admin")]),
    "session-authorization": raw_startup([("user", "analyst"), ("session_authorization", "postgres")]),
    "role": raw_startup([("user", "analyst"), ("role", "admin")]),
    "options-session-authorization": raw_startup([("user", "analyst"),
                                                  ("options", "-c session_authorization=postgres")]),
    "options-role": raw_startup([("user", "analyst"), ("options", "--role=admin")]),
    "options-P": raw_startup([("user", "analyst"), ("options", "-P")]),
    "options-escaped-role": raw_startup([("user", "analyst"), ("options", r"-c\ role=admin")]),
    "not-a-guc": raw_startup([("user", "analyst"), ("not a guc", "x")]),
    "control-in-user": raw_startup([("user", "ana\nlyst")]),
    "control-in-database": raw_startup([("user", "analyst"), ("database", "post\x1bgres")]),
    # A NUL inside the name ends it: "ana" with a key "lyst" and no value, and no terminator.
    "nul-in-user": packet(pgwire.PROTOCOL_3_0, b"user\0ana\0lyst\0\0"),
    "no-user": raw_startup([("database", "postgres")]),
    "replication-with-role": raw_startup([("user", "analyst"), ("replication", "database"),
                                          ("options", "-c role=admin")]),
    "announced-gigabyte": (1 << 30).to_bytes(4, "big") + pgwire.PROTOCOL_3_0.to_bytes(4, "big"),
    "protocol-2": packet(2 << 16, b"user\0analyst\0\0"),
}


# PostgreSQL closes without a word on a startup length past 10,000 bytes, and answers protocol 2 in its format.
NOT_V3_ANSWERS = {"announced-gigabyte", "protocol-2"}


@pytest.mark.parametrize("case", list(STARTUP_CASES))
def test_websocket_startup_refusals_match_tcp_byte_for_byte(tokengate: TokengateProcess, proxy: Target,
                                                             pg: PgCluster, case: str):
    packet = STARTUP_CASES[case]
    mark = pg.log_mark()
    over_tcp = answer_until_closed(proxy.wire(), packet)
    over_ws = answer_until_closed(ws(tokengate), packet)
    assert over_ws == over_tcp, f"{case}: over WebSocket {decoded(over_ws)}\n over TCP {decoded(over_tcp)}"
    if case not in NOT_V3_ANSWERS:
        msgs = pgwire.parse_messages(over_ws)
        assert [m.tag for m in msgs] == [b"E"], f"{case}: expected one FATAL and no password request: {msgs}"
        assert msgs[0].error().severity == "FATAL", msgs
    assert upstream_sessions(pg, mark) == [], f"{case}: a session reached PostgreSQL"


def test_websocket_repeated_user_with_the_password_opens_no_session(tokengate: TokengateProcess, pg: PgCluster):
    """The attack as the attacker ran it: the packet, then analyst's password anyway."""
    mark = pg.log_mark()
    with ws(tokengate) as c:
        c.send(STARTUP_CASES["repeated-user"] + pgwire.password_message(b"analyst\0"))
        msgs, closed = c.read_until_closed(5)
    assert closed and [m.tag for m in msgs] == [b"E"], msgs
    assert msgs[0].error().sqlstate == "08P01", msgs
    assert upstream_sessions(pg, mark) == []


def test_websocket_token_login_is_rebuilt_for_the_owner(tokengate: TokengateProcess, proxy: Target, pg: PgCluster,
                                                        mint_token):
    """A token login over WebSocket gets what the same login over TCP gets, message for message, and the upstream
    sees the owner with the checked settings only."""
    _, token, _ = mint_token(user="analyst", duration="1h")
    extra = {"options": r"-c work_mem=7MB -c application_name=ws\ app", "DateStyle": "ISO, DMY"}
    mark = pg.log_mark()
    r_ws, rows_ws = login_over(ws(tokengate), "analyst", token, extra)
    r_tcp, rows_tcp = login_over(proxy.wire(), "analyst", token, extra)
    assert r_ws.ok and r_tcp.ok, (r_ws.error, r_tcp.error)
    assert comparable(r_ws) == comparable(r_tcp), f"over WebSocket {r_ws.messages}\n over TCP {r_tcp.messages}"
    assert rows_ws == rows_tcp == [("analyst", "analyst", "7MB", "ws app")], (rows_ws, rows_tcp)
    sessions = upstream_sessions(pg, mark)
    assert len(sessions) == 2 and all(s.endswith("connection authorized: user=analyst database=postgres")
                                      for s in sessions), sessions


def test_websocket_long_names_are_cut_as_over_tcp(tokengate: TokengateProcess, proxy: Target, pg: PgCluster):
    name = "tg_ws_long_" + uuid.uuid4().hex + "x" * 30
    role = name[:63]
    pw = fresh_password("ws-long")
    with pg.admin_conn() as c:
        c.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{pw}'")
    try:
        r_ws, rows_ws = login_over(ws(tokengate), name + "-tail", pw)
        r_tcp, rows_tcp = login_over(proxy.wire(), name + "-tail", pw)
        assert r_ws.ok, r_ws.error
        assert rows_ws == rows_tcp and rows_ws[0][:2] == (role, role), (rows_ws, rows_tcp)
    finally:
        with pg.admin_conn() as c:
            c.execute(f'DROP ROLE "{role}"')


def test_websocket_token_of_another_user_and_revoked_tokens_are_refused_as_over_tcp(
        tokengate: TokengateProcess, proxy: Target, pg: PgCluster, mint_token):
    name, token, _ = mint_token(user="analyst", duration="1h")
    mark = pg.log_mark()
    for user in ("admin", "postgres", "md5user"):
        r_ws, _ = login_over(ws(tokengate), user, token)
        r_tcp, _ = login_over(proxy.wire(), user, token)
        assert r_ws.error is not None and r_ws.error.sqlstate == "28P01", \
            f"analyst's token {mask(token)} as {user} over WebSocket: {r_ws.messages}"
        assert comparable(r_ws) == comparable(r_tcp), (r_ws.messages, r_tcp.messages)
    assert upstream_sessions(pg, mark) == [], "a session of another role reached PostgreSQL"

    r_ws, _ = login_over(ws(tokengate), "analyst", token)
    assert r_ws.ok, r_ws.error
    with proxy.connect(user="analyst") as c:
        c.execute(f"DROP API TOKEN {name}")
    mark = pg.log_mark()
    r_ws, _ = login_over(ws(tokengate), "analyst", token)
    r_tcp, _ = login_over(proxy.wire(), "analyst", token)
    assert r_ws.error is not None and r_ws.error.sqlstate == "28P01", r_ws.messages
    assert comparable(r_ws) == comparable(r_tcp), (r_ws.messages, r_tcp.messages)
    assert upstream_sessions(pg, mark) == []


def test_websocket_failures_count_in_the_same_throttle(spawn_tokengate, pg: PgCluster, fresh_role):
    """Failures over WebSocket and over TCP are one count for the role (and the address): with
    --max-failed-logins 2, two WebSocket failures make the next TCP failure wait its turn, and the reverse."""
    tg = spawn_tokengate(upstream=(str(pg.socket_dir), pg.port),
                         extra_args=["--upstream-auth", "trust", "--max-failed-logins", "2"])
    for first, then in (("ws", "tcp"), ("tcp", "ws")):
        role, pw = fresh_role()
        conns = {"ws": lambda: ws(tg, timeout=35), "tcp": lambda: tg.target().wire(timeout=35)}

        def timed(kind: str, password: str) -> tuple[float, pgwire.LoginResult]:
            started = time.monotonic()
            r, _ = login_over(conns[kind](), role, password)
            return time.monotonic() - started, r

        times = []
        for kind in (first, first, then):
            elapsed, r = timed(kind, fresh_password("bad"))
            assert r.error is not None and r.error.sqlstate == "28P01", r.messages
            times.append(elapsed)
        assert times[2] >= times[0] + 0.8, \
            f"two failures over {first}, then one over {then}: not throttled ({[round(x, 3) for x in times]} s)"
        elapsed, r = timed(then, pw)
        assert r.ok, r.error


# ---------------------------------------------------------------- the WebSocket layer is bounded


@pytest.fixture
def bounded_tg(spawn_tokengate, pg: PgCluster) -> TokengateProcess:
    """An instance of its own (its resident memory is measured) that cuts off slow logins after 2 s."""
    return spawn_tokengate(upstream=(str(pg.socket_dir), pg.port),
                           extra_args=["--upstream-auth", "trust", "--max-failed-logins", "100000",
                                       "--login-client-timeout", "2"])


def warm(tg: TokengateProcess) -> int:
    """Logs in once over each transport (so that lazily built state exists), then returns the RSS in KiB."""
    for conn in (ws(tg), tg.target().wire()):
        r, rows = login_over(conn, "analyst", "analyst")
        assert r.ok, r.error
    time.sleep(0.2)
    return tg.rss_kib()


def closed_within(c: WebSocketConnection, seconds: float) -> bool:
    """Reads frames until the server closes the connection (close frame then EOF, or EOF alone)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        c.sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            c.next_frame()
        except pgwire.ConnectionClosed:
            return True
        except socket.timeout:
            return False
        except OSError:
            return True
    return False


def assert_rss_growth_below(tg: TokengateProcess, before_kib: int, limit_mib: int, what: str) -> None:
    grown = tg.rss_kib() - before_kib
    assert grown < limit_mib * 1024, f"{what}: tokengate's resident memory grew by {grown / 1024:.1f} MiB"


def test_websocket_fragments_and_control_frames_between_them_are_one_stream(bounded_tg: TokengateProcess):
    """The driver's bytes may come in any framing: a startup packet in one-byte continuation frames with pings
    between them, an empty message, the password split across two messages. All of it logs in."""
    with ws(bounded_tg) as c:
        startup = pgwire.startup_message({"user": "analyst", "database": "postgres"})
        c.send_frame(BINARY, b"")  # an empty message carries no bytes
        c.send_frame(BINARY, startup[:1], fin=False)
        for i, b in enumerate(startup[1:-1]):
            c.send_frame(CONTINUATION, bytes([b]), fin=False)
            if i % 5 == 0:
                c.send_frame(PING, b"p%d" % i)
        c.send_frame(CONTINUATION, startup[-1:])
        # Pongs first: the server answers each ping in order, before any data it sends later.
        pongs = []
        while len(pongs) < (len(startup) - 2 + 4) // 5:
            opcode, payload = c.next_frame()
            assert opcode == PONG, (opcode, payload)
            pongs.append(payload)
        assert pongs[:2] == [b"p0", b"p5"], pongs
        m = c.read_message()
        assert m.tag == b"R" and m.auth_code() == 3, m
        pw = pgwire.password_message(b"analyst\0")
        c.send(pw[:3])
        c.send(pw[3:])
        r = pgwire.login(c, "analyst", "analyst", send_startup=False)
        assert r.ok, r.error
        assert pgwire.data_rows_text(c.simple_query("select current_user")) == [("analyst",)]
        c.send(pgwire.terminate_message())


@pytest.mark.parametrize("when", ["startup", "session"])
def test_websocket_text_frames_end_the_connection(bounded_tg: TokengateProcess, pg: PgCluster, when: str):
    """The protocol is binary: a text message ends the connection, whether it carries a startup packet or a
    query; nothing of it reaches PostgreSQL."""
    mark = pg.log_mark()
    with ws(bounded_tg) as c:
        pid = None
        if when == "session":
            assert pgwire.login(c, "analyst", "analyst").ok
            pid = int(pgwire.data_rows_text(c.simple_query("select pg_backend_pid()"))[0][0])
            seen = len(c.frames)
            c.send_frame(TEXT, pgwire.query_message("select 'text frame smuggled'"))
        else:
            seen = 0
            c.send_frame(TEXT, pgwire.startup_message({"user": "analyst", "database": "postgres"}))
        started = time.monotonic()
        assert closed_within(c, 5), f"still open after a text frame ({when}); frames {c.frames}"
        assert time.monotonic() - started < 2, "the closing handshake was not over at once"
        assert [f for f in c.frames[seen:] if f[0] != CLOSE] == [], c.frames[seen:]
        # A clean close that says why: 1003, unsupported data (RFC 6455, section 7.4.1).
        assert (c.close_code, c.close_reason) == (1003, "text messages carry no PostgreSQL protocol"), c.frames
    # A client that never answers the close frame holds the connection a few seconds at most.
    with ws(bounded_tg, answer_close=False) as c:
        c.send_frame(TEXT, b"x" * 1000)
        started = time.monotonic()
        assert closed_within(c, 10) and c.close_code == 1003, c.frames
        assert time.monotonic() - started < 7, f"closed after {time.monotonic() - started:.1f} s"
    assert not any("text frame smuggled" in s for s in pg.logged_statements(mark))
    if when == "startup":
        assert upstream_sessions(pg, mark) == []
    if pid is not None:  # the upstream session of the ended connection goes away too
        backend_ends(pg, pid)


VIOLATIONS = {
    # Each is a protocol error (RFC 6455, section 5): the connection must end, whatever state it is in.
    "unmasked": frame(BINARY, b"\0\0\0\x08\x04\xd2\x16\x2f", masked=False),
    "reserved-bits": frame(BINARY, b"\0\0\0\x08\x04\xd2\x16\x2f", rsv=4),
    "unknown-opcode": frame(0x3, b"x"),
    "control-too-long": frame(PING, b"x" * 126),
    "fragmented-control": frame(PING, b"x", fin=False),
    "continuation-first": frame(CONTINUATION, b"x"),
    "message-inside-message": frame(BINARY, b"\0\0", fin=False) + frame(BINARY, b"\0\0"),
    "length-high-bit": frame(BINARY, b"", announced=1 << 63),
    "length-past-the-limit": frame(BINARY, b"", announced=(1 << 30) + 1),
    "length-far-past-the-limit": frame(BINARY, b"", announced=1 << 62),
}
# A message whose fragments add up to more than 1 GiB: its first fragment carries bytes that leave tokengate waiting
# for more (the start of a long startup packet, or of a long Query).
FRAGMENTS_PAST_THE_LIMIT = "fragments-past-the-limit"
WAITING_FOR_MORE = {
    True: pgwire.startup_message({"user": "analyst", "application_name": "x" * 500})[:100],
    False: (b"Q" + struct.pack("!i", 1000) + b"select '" + b"x" * 100)[:100],
}


def test_websocket_protocol_violations_close_and_stay_small(bounded_tg: TokengateProcess, pg: PgCluster):
    """Frames announcing more than a message may hold (1 GiB) are refused from their header, before any byte of
    them is read or allocated; malformed frames end the connection; nothing reaches PostgreSQL."""
    before = warm(bounded_tg)
    mark = pg.log_mark()
    codes = {}
    for name in [*VIOLATIONS, FRAGMENTS_PAST_THE_LIMIT]:
        for at_login in (True, False):
            data = VIOLATIONS.get(name) or (frame(BINARY, WAITING_FOR_MORE[at_login], fin=False) +
                                            frame(CONTINUATION, b"", announced=(1 << 30) - 99))
            with ws(bounded_tg) as c:
                if not at_login:
                    assert pgwire.login(c, "analyst", "analyst").ok
                started = time.monotonic()
                c.sock.sendall(data)
                assert closed_within(c, 5), f"{name}: still open after 5 s; frames {c.frames}"
                assert time.monotonic() - started < 3, f"{name}: closed only after {time.monotonic() - started:.1f} s"
                codes[name, at_login] = c.close_code
    assert bounded_tg.alive()
    assert_rss_growth_below(bounded_tg, before, 16, "malformed frames")
    # The sessions that logged in first are the only ones upstream.
    assert len(upstream_sessions(pg, mark)) == len(VIOLATIONS) + 1
    # Where Beast sends a close frame, its code says why (1002 protocol error, 1009 too big).
    too_big = {"length-high-bit", "length-past-the-limit", "length-far-past-the-limit", FRAGMENTS_PAST_THE_LIMIT}
    assert codes == {(n, a): 1009 if n in too_big else 1002 for n, a in codes}, codes


def test_websocket_announced_huge_messages_allocate_nothing(bounded_tg: TokengateProcess):
    """A frame announcing the most a message may hold (1 GiB) and a Query inside it announcing about as much, a few
    bytes of each sent: memory stays small, and the login timeout ends the one still logging in."""
    before = warm(bounded_tg)
    conns = []
    for i in range(3):
        logging_in = ws(bounded_tg)
        logging_in.send_frame(BINARY, b"\0\0\x10\x00" + b"\0" * 60, announced=(1 << 30) - 1)
        in_session = ws(bounded_tg)
        assert pgwire.login(in_session, "analyst", "analyst").ok
        in_session.send_frame(BINARY, b"Q" + struct.pack("!i", (1 << 30) - 16) + b"select '" + b"x" * 100,
                              announced=(1 << 30) - 1)
        conns += [logging_in, in_session]
    time.sleep(0.5)
    assert_rss_growth_below(bounded_tg, before, 16, "3 gigabyte frames and 3 gigabyte Queries announced")
    started = time.monotonic()
    for c in conns[0::2]:
        assert closed_within(c, 5), "a connection stuck inside its startup packet's frame was not cut off"
    assert time.monotonic() - started < 4, "cut off later than login.client_timeout (2 s)"
    for c in conns:
        c.close()
    assert bounded_tg.alive()


def test_websocket_large_message_is_streamed(bounded_tg: TokengateProcess):
    """A 24 MiB Query in one WebSocket frame reaches PostgreSQL whole, without tokengate holding it."""
    before = warm(bounded_tg)
    with ws(bounded_tg, timeout=60) as c:
        assert pgwire.login(c, "analyst", "analyst").ok
        literal = "y" * (24 << 20)
        msgs = c.simple_query(f"select length('{literal}')")
        assert pgwire.data_rows_text(msgs) == [(str(24 << 20),)], msgs[-2:]
        assert_rss_growth_below(bounded_tg, before, 16, "a 24 MiB message")
        c.send(pgwire.terminate_message())


def test_websocket_clients_that_never_finish_their_startup_are_cut_off(bounded_tg: TokengateProcess):
    """login.client_timeout holds for WebSocket clients as for TCP ones: silent after the upgrade, half a startup
    packet, half a frame header, half a frame; every one closed after 2 s."""
    startup = pgwire.startup_message({"user": "analyst", "database": "postgres"})
    stalls = {
        "silent": b"",
        "half-startup": frame(BINARY, startup[:10]),
        "half-frame-header": frame(BINARY, b"x" * 300)[:3],
        "half-frame": frame(BINARY, startup)[:12],
        "startup-no-password": frame(BINARY, startup),
    }
    conns = {}
    for name, data in stalls.items():
        c = ws(bounded_tg)
        c.sock.sendall(data)
        conns[name] = c
    # Control frames and empty messages are no progress: a client that only sends those is cut off too.
    busy = {"pings": frame(PING, b"still here"), "empty-messages": frame(BINARY, b"")}
    stop = threading.Event()

    def keep_busy(c: WebSocketConnection, data: bytes) -> None:
        while not stop.is_set():
            try:
                c.sock.sendall(data)
            except OSError:
                return
            time.sleep(0.05)

    threads = []
    for name, data in busy.items():
        conns[name] = ws(bounded_tg)
        threads.append(threading.Thread(target=keep_busy, args=(conns[name], data)))
        threads[-1].start()
    started = time.monotonic()
    try:
        for name, c in conns.items():
            assert closed_within(c, 6), f"{name}: still open after {time.monotonic() - started:.1f} s"
        assert time.monotonic() - started < 4.5, f"cut off after {time.monotonic() - started:.1f} s, not 2 s"
    finally:
        stop.set()
        for th in threads:
            th.join(5)
        for c in conns.values():
            c.close()
    assert bounded_tg.alive()


def test_websocket_compression_is_not_negotiated(tokengate: TokengateProcess):
    """permessage-deflate would let a small frame inflate into a large message; tokengate does not offer it, and a
    compressed frame (RSV1 set) is a protocol error."""
    with ws(tokengate, extra_headers="Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n") as c:
        assert "sec-websocket-extensions" not in c.headers, c.headers
        c.sock.sendall(frame(BINARY, b"\x02\x00", rsv=4))
        assert closed_within(c, 5) and c.close_code == 1002, c.frames


def test_websocket_ping_flood_stays_bounded(bounded_tg: TokengateProcess):
    """Pings are answered (pongs) as they are read; a client that sends pings without reading the pongs is held back
    by TCP, not buffered: tokengate's memory stays small, and the session still works once the client reads."""
    before = warm(bounded_tg)
    ping = frame(PING, b"z" * 125)
    flood = memoryview(ping * 200_000)  # 26 MiB of pings, at most
    with ws(bounded_tg) as c:
        assert pgwire.login(c, "analyst", "analyst").ok
        c.sock.settimeout(2)
        off = 0
        try:
            while off < len(flood):
                off += c.sock.send(flood[off:off + 65536])
        except socket.timeout:
            pass  # tokengate stopped reading: its pongs fill the socket this client does not read
        assert_rss_growth_below(bounded_tg, before, 16, f"{off // len(ping)} pings unread")
        # Finish the last ping while its pongs are read, then use the session.
        rest = (-off) % len(ping)
        sender = threading.Thread(target=lambda: c.sock.sendall(flood[off:off + rest]))
        c.sock.settimeout(20)
        sender.start()
        pings = (off + rest) // len(ping)
        for _ in range(pings):
            opcode, _ = c.next_frame()
            assert opcode == PONG, opcode
        sender.join(10)
        assert pgwire.data_rows_text(c.simple_query("select 1")) == [("1",)]
        c.send(pgwire.terminate_message())
    assert_rss_growth_below(bounded_tg, before, 16, "a ping flood")


def test_websocket_close_frame_ends_the_session(bounded_tg: TokengateProcess, pg: PgCluster):
    """A client's close frame (the driver's end after Terminate, or without one) is answered with a close frame and
    ends the upstream session."""
    with ws(bounded_tg) as c:
        assert pgwire.login(c, "analyst", "analyst").ok
        pid = int(pgwire.data_rows_text(c.simple_query("select pg_backend_pid()"))[0][0])
        c.send_frame(CLOSE, struct.pack("!H", 1000))
        assert closed_within(c, 5), c.frames
    backend_ends(pg, pid)

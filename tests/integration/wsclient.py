# A minimal RFC 6455 client for tokengate's PostgreSQL-over-WebSocket endpoint (GET /v2), as the
# @neondatabase/serverless driver reaches it: an HTTP upgrade, then the protocol's bytes in binary frames.
# WebSocketConnection is a pgwire.WireConnection, so pgwire.login() and the message readers work over it; send_frame()
# writes any frame, well-formed or not (wrong opcodes, unmasked, lengths that do not match), for the limit tests.
from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import time

import pgwire

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455, section 1.3

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def frame(opcode: int, payload: bytes, fin: bool = True, masked: bool = True, announced: int | None = None,
          rsv: int = 0) -> bytes:
    """One frame; `announced` overrides the payload length written in the header (payload is sent as given)."""
    n = len(payload) if announced is None else announced
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    m = 0x80 if masked else 0
    if n < 126:
        head += bytes([m | n])
    elif n < 1 << 16:
        head += bytes([m | 126]) + struct.pack("!H", n)
    else:
        head += bytes([m | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class WebSocketConnection(pgwire.WireConnection):
    """The client side of GET /v2: binary frames out, binary messages' bytes in (as one byte stream, which is how
    the driver reads them). A close frame or EOF ends the stream (pgwire.ConnectionClosed); close_code keeps the
    code of the server's close frame, if one came."""

    def __init__(self, host: str, port: int, timeout: float = 10.0, path: str = "/v2",
                 pg_port: int = 5432, extra_headers: str = "", answer_close: bool = True) -> None:
        self.answer_close = answer_close
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""       # payload bytes of binary messages not read yet
        self.raw = b""       # bytes from the socket not yet parsed as frames
        self.received: list[pgwire.Message] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self.frames: list[tuple[int, bytes]] = []  # every frame received (opcode, payload), for the limit tests
        key = base64.b64encode(os.urandom(16)).decode()
        # The path and query the driver's wsProxy setting produces: host:port/v2?address=host:port.
        self.sock.sendall((f"GET {path}?address={host}:{pg_port} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                           f"Sec-WebSocket-Key: {key}\r\n{extra_headers}\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise pgwire.ConnectionClosed(f"closed during the WebSocket handshake: {head!r}")
            head += chunk
        head, self.raw = head.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        if not lines[0].startswith("HTTP/1.1 101"):
            raise AssertionError(f"WebSocket upgrade refused: {head!r}")
        self.headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
        want = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        assert self.headers.get("sec-websocket-accept") == want, f"bad Sec-WebSocket-Accept in {head!r}"

    def send(self, data: bytes) -> None:
        self.sock.sendall(frame(BINARY, data))

    def send_frame(self, opcode: int, payload: bytes = b"", **kw) -> None:
        self.sock.sendall(frame(opcode, payload, **kw))

    def _frame(self) -> tuple[int, bool, bytes]:
        """The next whole frame from the socket (server frames are unmasked)."""
        while True:
            r = self.raw
            if len(r) >= 2:
                n, off = r[1] & 0x7F, 2
                if n == 126 and len(r) >= 4:
                    n, off = struct.unpack("!H", r[2:4])[0], 4
                elif n == 127 and len(r) >= 10:
                    n, off = struct.unpack("!Q", r[2:10])[0], 10
                if n < 126 or off > 2:
                    if n > pgwire.MAX_TEST_MESSAGE:
                        raise pgwire.ProtocolViolation(f"server frame of {n} bytes")
                    if len(r) >= off + n:
                        self.raw = r[off + n:]
                        return r[0] & 0x0F, bool(r[0] & 0x80), r[off:off + n]
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError as e:
                raise pgwire.ConnectionClosed(f"connection reset ({e})") from e
            if not chunk:
                raise pgwire.ConnectionClosed(f"peer closed the connection; {len(self.buf)} unread bytes")
            self.raw += chunk

    def next_frame(self) -> tuple[int, bytes]:
        """The next frame of any kind (socket.timeout when none comes in time)."""
        opcode, _fin, payload = self._frame()
        self.frames.append((opcode, payload))
        if opcode == CLOSE and self.close_code is None:
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            self.close_reason = payload[2:].decode("utf-8", "replace")
            if self.answer_close:  # as RFC 6455 (section 5.5.1) asks of an endpoint that has not sent one
                try:
                    self.send_frame(CLOSE, payload[:2])
                except OSError:
                    pass
        return opcode, payload

    def _fill(self, n: int) -> None:
        while len(self.buf) < n:
            try:
                opcode, payload = self.next_frame()
            except socket.timeout as e:
                raise AssertionError(f"timed out waiting for {n - len(self.buf)} more bytes; "
                                     f"messages so far: {self.received}") from e
            if opcode == CLOSE:
                raise pgwire.ConnectionClosed(f"WebSocket close {self.close_code}; {len(self.buf)} unread bytes")
            if opcode in (BINARY, CONTINUATION):
                self.buf += payload
            elif opcode == PING:
                self.send_frame(PONG, payload)
            elif opcode != PONG:
                raise pgwire.ProtocolViolation(f"unexpected WebSocket frame opcode {opcode}: {payload[:40]!r}")

    def read_raw_until_closed(self, timeout: float = 5.0) -> tuple[bytes, bool]:
        """The binary messages' bytes until the server closes (close frame or EOF); (bytes, closed)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                data, self.buf = self.buf, b""
                return data, False
            self.sock.settimeout(remaining)
            try:
                self._fill(len(self.buf) + 1)
            except pgwire.ConnectionClosed:
                data, self.buf = self.buf, b""
                return data, True
            except AssertionError as e:
                if "timed out" not in str(e):
                    raise

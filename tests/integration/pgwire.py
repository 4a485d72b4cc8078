# A tiny PostgreSQL v3 wire client for black-box tests: raw startup packets, login (SCRAM/MD5/cleartext), message decoding.
#
# Deliberately independent of tokengate's C++ codec so that the two check each other.
# Everything returns values with readable reprs so that a failing assert prints decoded messages.
from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import os
import socket
import struct
import time

PROTOCOL_3_0 = 3 << 16  # 196608
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102

# ErrorResponse / NoticeResponse field codes (protocol-error-fields.html), for readable output.
ERROR_FIELD_NAMES = {
    "S": "severity",
    "V": "severity_nonlocalized",
    "C": "sqlstate",
    "M": "message",
    "D": "detail",
    "H": "hint",
    "P": "position",
    "p": "internal_position",
    "q": "internal_query",
    "W": "where",
    "s": "schema",
    "t": "table",
    "c": "column",
    "d": "data_type",
    "n": "constraint",
    "F": "file",
    "L": "line",
    "R": "routine",
}

# Fields a client can act on; file/line/routine are PostgreSQL implementation detail.
USER_VISIBLE_ERROR_FIELDS = ("S", "V", "C", "M", "D", "H", "P", "W")

BACKEND_TAG_NAMES = {
    b"R": "Authentication",
    b"K": "BackendKeyData",
    b"2": "BindComplete",
    b"3": "CloseComplete",
    b"C": "CommandComplete",
    b"d": "CopyData",
    b"c": "CopyDone",
    b"G": "CopyInResponse",
    b"H": "CopyOutResponse",
    b"W": "CopyBothResponse",
    b"D": "DataRow",
    b"I": "EmptyQueryResponse",
    b"E": "ErrorResponse",
    b"V": "FunctionCallResponse",
    b"v": "NegotiateProtocolVersion",
    b"n": "NoData",
    b"N": "NoticeResponse",
    b"A": "NotificationResponse",
    b"t": "ParameterDescription",
    b"S": "ParameterStatus",
    b"1": "ParseComplete",
    b"s": "PortalSuspended",
    b"Z": "ReadyForQuery",
    b"T": "RowDescription",
}

AUTH_NAMES = {
    0: "Ok",
    2: "KerberosV5",
    3: "CleartextPassword",
    5: "MD5Password",
    7: "GSS",
    8: "GSSContinue",
    9: "SSPI",
    10: "SASL",
    11: "SASLContinue",
    12: "SASLFinal",
}


class ProtocolViolation(AssertionError):
    """The peer sent something a v3 backend must not send; the message says what."""


class ConnectionClosed(Exception):
    """The peer closed (or reset) the connection."""


# ---------------------------------------------------------------- building frontend messages


def cstr(s: str | bytes) -> bytes:
    if isinstance(s, str):
        s = s.encode()
    return s + b"\0"


def startup_message(params: dict[str, str], version: int = PROTOCOL_3_0) -> bytes:
    body = struct.pack("!i", version)
    for k, v in params.items():
        body += cstr(k) + cstr(v)
    body += b"\0"
    return struct.pack("!i", len(body) + 4) + body


def ssl_request() -> bytes:
    return struct.pack("!ii", 8, SSL_REQUEST_CODE)


def gssenc_request() -> bytes:
    return struct.pack("!ii", 8, GSSENC_REQUEST_CODE)


def cancel_request(pid: int, secret: int) -> bytes:
    return struct.pack("!iiii", 16, CANCEL_REQUEST_CODE, pid, secret)


def frontend_message(tag: bytes, body: bytes) -> bytes:
    return tag + struct.pack("!i", len(body) + 4) + body


def query_message(sql: str) -> bytes:
    return frontend_message(b"Q", cstr(sql))


def password_message(data: bytes) -> bytes:
    return frontend_message(b"p", data)


def terminate_message() -> bytes:
    return frontend_message(b"X", b"")


def parse_message(statement: str, sql: str, param_oids: tuple[int, ...] = ()) -> bytes:
    body = cstr(statement) + cstr(sql) + struct.pack("!h", len(param_oids))
    body += b"".join(struct.pack("!I", o) for o in param_oids)
    return frontend_message(b"P", body)


def bind_message(portal: str, statement: str, params: tuple[bytes | None, ...] = (),
                 param_formats: tuple[int, ...] = (), result_formats: tuple[int, ...] = ()) -> bytes:
    body = cstr(portal) + cstr(statement)
    body += struct.pack("!h", len(param_formats)) + b"".join(struct.pack("!h", f) for f in param_formats)
    body += struct.pack("!h", len(params))
    for p in params:
        body += struct.pack("!i", -1) if p is None else struct.pack("!i", len(p)) + p
    body += struct.pack("!h", len(result_formats)) + b"".join(struct.pack("!h", f) for f in result_formats)
    return frontend_message(b"B", body)


def describe_message(kind: bytes, name: str) -> bytes:
    """kind b"S" for a prepared statement, b"P" for a portal."""
    return frontend_message(b"D", kind + cstr(name))


def execute_message(portal: str = "", max_rows: int = 0) -> bytes:
    return frontend_message(b"E", cstr(portal) + struct.pack("!i", max_rows))


def close_message(kind: bytes, name: str) -> bytes:
    return frontend_message(b"C", kind + cstr(name))


def sync_message() -> bytes:
    return frontend_message(b"S", b"")


def flush_message() -> bytes:
    return frontend_message(b"H", b"")


def copy_data_message(data: bytes) -> bytes:
    return frontend_message(b"d", data)


def copy_done_message() -> bytes:
    return frontend_message(b"c", b"")


def copy_fail_message(reason: str) -> bytes:
    return frontend_message(b"f", cstr(reason))


def function_call_message(oid: int, args: tuple[bytes | None, ...], result_format: int = 0) -> bytes:
    """Legacy fast-path FunctionCall ('F'), still used by libpq's large-object functions."""
    body = struct.pack("!I", oid) + struct.pack("!hh", 1, 0) + struct.pack("!h", len(args))
    for a in args:
        body += struct.pack("!i", -1) if a is None else struct.pack("!i", len(a)) + a
    body += struct.pack("!h", result_format)
    return frontend_message(b"F", body)


# ---------------------------------------------------------------- decoding backend messages


@dataclasses.dataclass(frozen=True)
class ErrorFields:
    """Decoded ErrorResponse/NoticeResponse: field code -> value, in wire order."""

    fields: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, body: bytes) -> "ErrorFields":
        out = []
        i = 0
        while True:
            if i >= len(body):
                raise ProtocolViolation(f"error fields not terminated by a zero byte: {body!r}")
            code = body[i : i + 1]
            if code == b"\0":
                if i + 1 != len(body):
                    raise ProtocolViolation(f"trailing bytes after error fields: {body[i + 1:]!r}")
                break
            end = body.find(b"\0", i + 1)
            if end < 0:
                raise ProtocolViolation(f"unterminated error field {code!r} in {body!r}")
            out.append((code.decode(), body[i + 1 : end].decode("utf-8", "replace")))
            i = end + 1
        return cls(tuple(out))

    def get(self, code: str, default: str | None = None) -> str | None:
        for c, v in self.fields:
            if c == code:
                return v
        return default

    @property
    def sqlstate(self) -> str | None:
        return self.get("C")

    @property
    def severity(self) -> str | None:
        return self.get("V") or self.get("S")

    @property
    def message(self) -> str | None:
        return self.get("M")

    def visible(self) -> dict[str, str]:
        """The fields a client acts on, keyed by readable names (for twin comparisons)."""
        return {ERROR_FIELD_NAMES[c]: v for c, v in self.fields if c in USER_VISIBLE_ERROR_FIELDS}

    def __str__(self) -> str:
        parts = [f"{ERROR_FIELD_NAMES.get(c, c)}={v!r}" for c, v in self.fields if c not in "FLR"]
        return "{" + ", ".join(parts) + "}"


@dataclasses.dataclass(frozen=True)
class Message:
    tag: bytes
    body: bytes

    @property
    def name(self) -> str:
        return BACKEND_TAG_NAMES.get(self.tag, f"Unknown{self.tag!r}")

    def error(self) -> ErrorFields:
        if self.tag not in (b"E", b"N"):
            raise AssertionError(f"expected ErrorResponse/NoticeResponse, got {self}")
        return ErrorFields.parse(self.body)

    def auth_code(self) -> int:
        assert self.tag == b"R", f"expected Authentication, got {self}"
        return struct.unpack("!i", self.body[:4])[0]

    def __repr__(self) -> str:
        return describe(self)


def describe(m: Message) -> str:
    """One line that a reader of the protocol documentation recognises."""
    t, b = m.tag, m.body
    try:
        if t in (b"E", b"N"):
            return f"{m.name}{ErrorFields.parse(b)}"
        if t == b"R":
            code = struct.unpack("!i", b[:4])[0]
            extra = ""
            if code == 10:
                extra = " mechanisms=" + ",".join(x.decode() for x in b[4:].split(b"\0") if x)
            elif code == 5:
                extra = f" salt={b[4:8].hex()}"
            return f"Authentication{AUTH_NAMES.get(code, code)}{extra}"
        if t == b"S":
            k, v, _ = b.split(b"\0")
            return f"ParameterStatus({k.decode()}={v.decode()!r})"
        if t == b"K":
            pid, key = struct.unpack("!ii", b)
            return f"BackendKeyData(pid={pid}, secret=…)"
        if t == b"Z":
            return f"ReadyForQuery({b.decode()!r})"
        if t == b"C":
            tag = b.rstrip(b"\0").decode()
            return f"CommandComplete({tag!r})"
        if t == b"D":
            return f"DataRow({len(b)} bytes)"
        if t == b"v":
            # PostgreSQL sends the whole newest version it supports (e.g. 3.0 = 196608), then the options it ignored.
            version, n = struct.unpack("!ii", b[:8])
            names = [x.decode() for x in b[8:].split(b"\0") if x]
            return f"NegotiateProtocolVersion({version >> 16}.{version & 0xFFFF}, unrecognized={names})"
    except Exception:  # noqa: BLE001 - describing must never hide the real failure
        pass
    return f"{m.name}({b[:60]!r}{'…' if len(b) > 60 else ''})"


# Longest backend message a test expects; guards against reading garbage as a length.
MAX_TEST_MESSAGE = 64 * 1024 * 1024


class WireConnection:
    """A blocking socket with message framing. Every read has a deadline so that a hang fails the test."""

    def __init__(self, host: str, port: int, timeout: float = 10.0, source: str | None = None):
        # source: the local address to connect from (any 127.x.y.z is loopback: tests of per-address limits).
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.sock.settimeout(timeout)
        self.buf = b""
        self.received: list[Message] = []  # for failure messages

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "WireConnection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def _fill(self, n: int) -> None:
        while len(self.buf) < n:
            try:
                chunk = self.sock.recv(max(65536, n - len(self.buf)))
            except ConnectionResetError as e:
                raise ConnectionClosed(f"connection reset ({e}); had {len(self.buf)} unread bytes") from e
            except socket.timeout as e:
                raise AssertionError(
                    f"timed out waiting for {n - len(self.buf)} more bytes; "
                    f"messages so far: {self.received}"
                ) from e
            if not chunk:
                raise ConnectionClosed(
                    f"peer closed the connection; {len(self.buf)} unread bytes {self.buf[:40]!r}"
                )
            self.buf += chunk

    def read_bytes(self, n: int) -> bytes:
        self._fill(n)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_message(self) -> Message:
        self._fill(5)
        tag = self.buf[:1]
        (length,) = struct.unpack("!i", self.buf[1:5])
        if length < 4 or length > MAX_TEST_MESSAGE:
            raise ProtocolViolation(f"message {tag!r} with impossible length {length}")
        self._fill(1 + length)
        body = self.buf[5 : 1 + length]
        self.buf = self.buf[1 + length :]
        m = Message(tag, body)
        self.received.append(m)
        return m

    def read_until_closed(self, timeout: float = 5.0) -> tuple[list[Message], bool]:
        """Read messages until the peer closes. Returns (messages, closed); closed is False on timeout."""
        deadline = time.monotonic() + timeout
        msgs: list[Message] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return msgs, False
            self.sock.settimeout(remaining)
            try:
                msgs.append(self.read_message())
            except ConnectionClosed:
                return msgs, True
            except AssertionError as e:
                if "timed out" in str(e):
                    return msgs, False
                raise

    def read_raw_until_closed(self, timeout: float = 5.0) -> tuple[bytes, bool]:
        """All bytes until the peer closes, unparsed. Returns (bytes, closed); closed is False on timeout."""
        deadline = time.monotonic() + timeout
        data, self.buf = self.buf, b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return data, False
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                return data, True
            except socket.timeout:
                return data, False
            if not chunk:
                return data, True
            data += chunk

    def read_until_ready(self) -> list[Message]:
        """Messages up to and including ReadyForQuery; raises if the connection closes first."""
        msgs = []
        while True:
            m = self.read_message()
            msgs.append(m)
            if m.tag == b"Z":
                return msgs

    def simple_query(self, sql: str) -> list[Message]:
        self.send(query_message(sql))
        return self.read_until_ready()


def parse_messages(data: bytes) -> list[Message]:
    """Split raw backend bytes into v3 messages; anything that does not frame exactly is a ProtocolViolation."""
    msgs = []
    i = 0
    while i < len(data):
        if len(data) - i < 5:
            raise ProtocolViolation(f"{len(data) - i} stray bytes after {msgs}: {data[i:]!r}")
        tag = data[i : i + 1]
        (length,) = struct.unpack("!i", data[i + 1 : i + 5])
        if length < 4 or i + 1 + length > len(data):
            raise ProtocolViolation(
                f"not a v3 message at offset {i}: tag {tag!r} length {length}, {len(data) - i} bytes left: "
                f"{data[i:i + 80]!r}"
            )
        msgs.append(Message(tag, data[i + 5 : i + 1 + length]))
        i += 1 + length
    return msgs


# ---------------------------------------------------------------- login


@dataclasses.dataclass
class LoginResult:
    auth_requests: list[str]  # e.g. ["CleartextPassword", "Ok"]
    error: ErrorFields | None
    parameters: dict[str, str]
    backend_key: tuple[int, int] | None
    messages: list[Message]
    ready_status: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.ready_status is not None


def _md5_response(user: str, password: str, salt: bytes) -> bytes:
    inner = hashlib.md5((password + user).encode()).hexdigest()
    return b"md5" + hashlib.md5(inner.encode() + salt).hexdigest().encode() + b"\0"


class _ScramClient:
    """RFC 5802/7677 SCRAM-SHA-256 without channel binding, as libpq does it."""

    def __init__(self, password: str):
        self.password = password.encode()
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.client_first_bare = f"n=,r={self.nonce}"
        self.server_signature = b""

    def first(self) -> bytes:
        data = ("n,," + self.client_first_bare).encode()
        return cstr("SCRAM-SHA-256") + struct.pack("!i", len(data)) + data

    def final(self, server_first: bytes) -> bytes:
        attrs = dict(kv.split("=", 1) for kv in server_first.decode().split(","))
        if not attrs["r"].startswith(self.nonce):
            raise ProtocolViolation(f"SCRAM server nonce does not extend ours: {server_first!r}")
        salt = base64.b64decode(attrs["s"])
        iterations = int(attrs["i"])
        salted = hashlib.pbkdf2_hmac("sha256", self.password, salt, iterations)
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={attrs['r']}"
        auth_message = f"{self.client_first_bare},{server_first.decode()},{without_proof}".encode()
        client_sig = hmac.digest(stored_key, auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, client_sig))
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        self.server_signature = hmac.digest(server_key, auth_message, "sha256")
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> None:
        attrs = dict(kv.split("=", 1) for kv in server_final.decode().split(","))
        if base64.b64decode(attrs.get("v", "")) != self.server_signature:
            raise ProtocolViolation(f"SCRAM server signature mismatch: {server_final!r}")


def login(
    conn: WireConnection,
    user: str,
    password: str,
    database: str = "postgres",
    extra: dict[str, str] | None = None,
    send_startup: bool = True,
) -> LoginResult:
    """Run the startup phase. Stops at ReadyForQuery (ok) or at an ErrorResponse (error, connection then closed)."""
    params = {"user": user, "database": database}
    params.update(extra or {})
    if send_startup:
        conn.send(startup_message(params))
    result = LoginResult([], None, {}, None, [])
    scram: _ScramClient | None = None
    while True:
        m = conn.read_message()
        result.messages.append(m)
        if m.tag == b"E":
            result.error = m.error()
            return result
        if m.tag == b"R":
            code = m.auth_code()
            result.auth_requests.append(AUTH_NAMES.get(code, str(code)))
            if code == 0:
                continue
            if code == 3:
                conn.send(password_message(cstr(password)))
            elif code == 5:
                conn.send(password_message(_md5_response(user, password, m.body[4:8])))
            elif code == 10:
                mechs = [x.decode() for x in m.body[4:].split(b"\0") if x]
                if "SCRAM-SHA-256" not in mechs:
                    raise ProtocolViolation(f"no SCRAM-SHA-256 among SASL mechanisms {mechs}")
                scram = _ScramClient(password)
                conn.send(password_message(scram.first()))
            elif code == 11:
                assert scram is not None, "SASLContinue before SASL"
                conn.send(password_message(scram.final(m.body[4:])))
            elif code == 12:
                assert scram is not None, "SASLFinal before SASL"
                scram.verify(m.body[4:])
            else:
                raise ProtocolViolation(f"unsupported authentication request {describe(m)}")
        elif m.tag == b"S":
            k, v, _ = m.body.split(b"\0")
            result.parameters[k.decode()] = v.decode()
        elif m.tag == b"K":
            result.backend_key = struct.unpack("!ii", m.body)
        elif m.tag in (b"N", b"v"):  # notices; NegotiateProtocolVersion answering a 3.x minor or _pq_ options
            continue
        elif m.tag == b"Z":
            result.ready_status = m.body.decode()
            return result
        else:
            raise ProtocolViolation(f"unexpected message during startup: {describe(m)}")


def data_rows_text(msgs: list[Message]) -> list[tuple[str | None, ...]]:
    """Decode the DataRows of a text-format result."""
    rows = []
    for m in msgs:
        if m.tag != b"D":
            continue
        (n,) = struct.unpack("!h", m.body[:2])
        i = 2
        row = []
        for _ in range(n):
            (ln,) = struct.unpack("!i", m.body[i : i + 4])
            i += 4
            if ln < 0:
                row.append(None)
            else:
                row.append(m.body[i : i + ln].decode())
                i += ln
        rows.append(tuple(row))
    return rows

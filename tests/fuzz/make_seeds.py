#!/usr/bin/python3
"""Writes the seed corpora of the fuzz targets: tests/fuzz/corpus/<target>/seed-*.

Real bytes where they matter:
- startup: what psql and psycopg (libpq) send to a server that answers
  SSLRequest with N and asks for a cleartext password, as tokengate does;
- relay: client and server streams recorded between psql, psycopg or a raw
  wire client and a throwaway PostgreSQL 15 cluster (the integration tests'
  PgCluster), from the first ReadyForQuery on, cut into the reads they
  arrived in;
- splitter, grammar: the SQL corpus of tests/unit/parser_ext and the API
  TOKEN statements of docs/sql.md with their lexical variants.
JWT seeds are never signed tokens: mode-1/2 seeds are unsigned (the target
signs them with its own test keys at run time) and mode-0 tokens, signed with
a throwaway key made here, have their signatures cut short.
Regression inputs (regress-*) and anything else not named seed-* are kept.

Usage: /usr/bin/python3 tests/fuzz/make_seeds.py [target ...]
(as root, or as a user that may run PostgreSQL, like ./dev test).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CORPUS = HERE / "corpus"
sys.path.insert(0, str(ROOT / "tests" / "integration"))

MAX_SEED = 12000  # below every target's -max_len (tests/fuzz/run.py)
FAKE_PASSWORD = "seed-password"  # what clients send to the fake server: not a secret

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
PROTOCOL_3_0 = 196608


def i32(v: int) -> bytes:
    return struct.pack("!i", v)


def cstr(s: str | bytes) -> bytes:
    return (s.encode() if isinstance(s, str) else s) + b"\0"


def msg(tag: bytes, body: bytes) -> bytes:
    return tag + struct.pack("!I", len(body) + 4) + body


def packet(code: int, payload: bytes = b"") -> bytes:
    return struct.pack("!I", len(payload) + 8) + i32(code) + payload


def startup(params: list[tuple[str, str]], version: int = PROTOCOL_3_0) -> bytes:
    return packet(version, b"".join(cstr(k) + cstr(v) for k, v in params) + b"\0")


class Writer:
    """Replaces one target's seed-* files."""

    def __init__(self, target: str):
        self.dir = CORPUS / target
        self.dir.mkdir(parents=True, exist_ok=True)
        for old in self.dir.glob("seed-*"):
            old.unlink()
        self.count = 0
        self.target = target

    def add(self, name: str, data: bytes) -> None:
        if len(data) > MAX_SEED:
            data = data[:MAX_SEED]
        safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in name)[:60]
        path = self.dir / f"seed-{self.count:03d}-{safe}"
        path.write_bytes(data)
        self.count += 1

    def done(self) -> None:
        print(f"  {self.target}: {self.count} seeds")


# ---------------------------------------------------------------- startup

def startup_trailer(chunks: list[int], options: int) -> bytes:
    """The startup target's trailer: read sizes (u16 each, read from the end), their count, options."""
    chunks = chunks[:15]
    return b"".join(struct.pack("!H", min(c, 0xFFFF)) for c in reversed(chunks)) + bytes([len(chunks), options])


class FakeServer:
    """Answers like tokengate's ClientHandshake: N to SSL/GSSENC, AuthenticationCleartextPassword to a
    StartupMessage, then FATAL to the password; records every read of the client."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.reads: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        conn.settimeout(10)
        buf = b""
        phase = "startup"
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                self.reads.append(data)
                buf += data
                while True:
                    if phase == "startup" and len(buf) >= 8 and len(buf) >= struct.unpack("!I", buf[:4])[0]:
                        n = struct.unpack("!I", buf[:4])[0]
                        code = struct.unpack("!i", buf[4:8])[0]
                        buf = buf[n:]
                        if code in (SSL_REQUEST, GSSENC_REQUEST):
                            conn.sendall(b"N")
                        elif code == CANCEL_REQUEST:
                            return
                        else:
                            conn.sendall(msg(b"R", i32(3)))
                            phase = "password"
                        continue
                    if phase == "password" and len(buf) >= 5 and len(buf) >= 1 + struct.unpack("!I", buf[1:5])[0]:
                        conn.sendall(msg(b"E", cstr("SFATAL") + cstr("C28P01") + cstr("Mseed capture") + b"\0"))
                        return
                    break
        finally:
            conn.close()
            self.sock.close()

    def result(self) -> list[bytes]:
        self.thread.join(15)
        return self.reads


def capture_client(run) -> list[bytes]:
    server = FakeServer()
    try:
        run(server.port)
    except Exception:  # noqa: BLE001 - the client fails at our FATAL, as intended
        pass
    return server.result()


def psql(port: int, conninfo: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "PGPASSWORD": FAKE_PASSWORD, "PGCONNECT_TIMEOUT": "5"}
    subprocess.run(["psql", f"host=127.0.0.1 port={port} " + conninfo, "-X", "-c", "select 1"],
                   env=env, capture_output=True, timeout=20)


def psycopg_connect(port: int, **kw) -> None:
    import psycopg
    psycopg.connect(host="127.0.0.1", port=port, password=FAKE_PASSWORD, connect_timeout=5, **kw).close()


def seeds_startup() -> None:
    w = Writer("startup")
    captures = {
        "psql-sslmode-prefer": lambda p: psql(p, "user=analyst dbname=analyst sslmode=prefer application_name=psql"),
        "psql-sslmode-disable-options": lambda p: psql(
            p, "user=admin dbname=postgres sslmode=disable options='-c search_path=public -c statement_timeout=5s'"),
        "psql-replication": lambda p: psql(p, "user=analyst dbname=analyst sslmode=disable replication=database"),
        "psycopg": lambda p: psycopg_connect(p, user="analyst", dbname="analyst", sslmode="disable",
                                             application_name="etl-job"),
        "psycopg-prefer": lambda p: psycopg_connect(p, user="analyst", dbname="analyst", sslmode="prefer"),
    }
    for name, run in captures.items():
        reads = capture_client(run)
        if not reads:
            print(f"  startup: no capture from {name}", file=sys.stderr)
            continue
        stream = b"".join(reads)
        sizes = [len(r) for r in reads]
        w.add(name, stream + startup_trailer(sizes, 0))
        w.add(name + "-tls", stream + startup_trailer(sizes, 1 | 8))
        w.add(name + "-onebyte", stream + startup_trailer([1] * 15, 0))
        w.add(name + "-require-tls", stream + startup_trailer([], 2))
        w.add(name + "-refuse-plaintext", stream + startup_trailer([], 4))

    pw = msg(b"p", cstr(FAKE_PASSWORD))
    jdbc = [("user", "analyst"), ("database", "analyst"), ("client_encoding", "UTF8"), ("DateStyle", "ISO"),
            ("TimeZone", "UTC"), ("extra_float_digits", "2"), ("application_name", "PostgreSQL JDBC Driver")]
    handmade = {
        "jdbc-shaped": startup(jdbc) + pw,
        "cancel": packet(CANCEL_REQUEST, i32(4242) + i32(-123456)),
        "gssenc-then-ssl-then-startup": packet(GSSENC_REQUEST) + packet(SSL_REQUEST) + startup([("user", "u")]) + pw,
        "ssl-twice": packet(SSL_REQUEST) + packet(SSL_REQUEST),
        "protocol-3.2-with-options": startup([("user", "u"), ("_pq_.compression", "on"), ("database", "d")],
                                             version=(3 << 16) | 2) + pw,
        "protocol-2": startup([("user", "u")], version=2 << 16),
        "duplicate-user": startup([("user", "analyst"), ("database", "x"), ("user", "postgres")]) + pw,
        "no-user": startup([("database", "x")]),
        "empty-user": startup([("user", "")]),
        "control-characters": startup([("user", "a\nb"), ("database", "\x01"), ("application_name", "x\ty")]) + pw,
        "unterminated": packet(PROTOCOL_3_0, cstr("user") + b"analyst"),
        "length-too-long": struct.pack("!I", 10001) + i32(PROTOCOL_3_0),
        "length-too-short": struct.pack("!I", 7) + i32(PROTOCOL_3_0),
        "terminate-before-startup": msg(b"X", b""),
        "password-wrong-tag": startup([("user", "u")]) + msg(b"Q", cstr("select 1")),
        "password-no-nul": startup([("user", "u")]) + msg(b"p", b"abc"),
        "password-too-long": startup([("user", "u")]) + b"p" + struct.pack("!I", 70000),
        "password-then-query": startup([("user", "u")]) + pw + msg(b"Q", cstr("select 1")),
        "token-as-password": startup([("user", "analyst")]) + msg(b"p", cstr("eyJhbGciOiJIUzI1NiJ9.e30.sig")),
    }
    for name, stream in handmade.items():
        w.add(name, stream + startup_trailer([], 0))
        w.add(name + "-split", stream + startup_trailer([3, 5, 1, 8, 2], 1 | 8))
    w.done()


# ---------------------------------------------------------------- relay

RESULT = "result"  # a record of relay_records: the result of the statement requested last
EVENT = "event"    # a record of relay_records: 0 client EOF, 1 upstream EOF, 2 end(FATAL)


def relay_records(records: list[tuple], options: int = 0) -> bytes:
    """The relay target's input (see relay_fuzz.cpp): an options byte, then per record
    <(len << 2) | side> and the bytes (len 1-63; 0 and a big-endian u16 for longer reads),
    or <(shape << 2) | 2> for a statement result, or <(event << 2) | 3>."""
    out = bytearray([options])
    for side, data in records:
        if side == RESULT:
            out.append(((data & 63) << 2) | 2)
            continue
        if side == EVENT:
            out.append(((data & 63) << 2) | 3)
            continue
        for i in range(0, len(data), 0xFFFF):
            piece = data[i:i + 0xFFFF]
            if len(piece) < 64:
                out.append((len(piece) << 2) | side)
            else:
                out += bytes([side]) + struct.pack("!H", len(piece))
            out += piece
    return bytes(out)


class Recorder:
    """A TCP relay between clients and PostgreSQL that records each read: (direction, bytes), 0 = client."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.sessions: list[list[tuple[int, bytes]]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            up = socket.create_connection(self.upstream)
            records: list[tuple[int, bytes]] = []
            with self.lock:
                self.sessions.append(records)
            for src, dst, direction in ((client, up, 0), (up, client, 1)):
                threading.Thread(target=self._pump, args=(src, dst, direction, records), daemon=True).start()

    def _pump(self, src, dst, direction, records) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                for s in (src, dst):
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                return
            with self.lock:
                records.append((direction, data))
            dst.sendall(data)

    def take(self) -> list[tuple[int, bytes]]:
        """The last session's records after login: from the end of the first ReadyForQuery on."""
        time.sleep(0.3)
        with self.lock:
            records = list(self.sessions[-1])
        upstream = b"".join(d for direction, d in records if direction == 1)
        pos, end = 0, None
        while pos + 5 <= len(upstream):
            tag = upstream[pos:pos + 1]
            pos += 1 + struct.unpack("!I", upstream[pos + 1:pos + 5])[0]
            if tag == b"Z":
                end = pos
                break
        if end is None:
            return []
        seen = 0
        for i, (direction, data) in enumerate(records):
            if direction != 1:
                continue
            if seen + len(data) >= end:
                rest = data[end - seen:]
                return ([(1, rest)] if rest else []) + records[i + 1:]
            seen += len(data)
        return []


def seeds_relay() -> None:
    import conftest  # the integration tests' cluster
    import pgwire
    import psycopg

    w = Writer("relay")
    pg = conftest.PgCluster()
    pg.start()
    try:
        rec = Recorder((pg.host, pg.port))
        env = {"PATH": "/usr/bin:/bin", "PGPASSWORD": "admin"}
        conninfo = f"host=127.0.0.1 port={rec.port} user=admin dbname=postgres sslmode=disable"
        with pg.admin_conn() as c:
            c.execute("CREATE TABLE IF NOT EXISTS seed_t (id int, name text)")

        def psql(name: str, script: str) -> None:
            subprocess.run(["psql", conninfo, "-X", "-q"], input=script, text=True, env=env,
                           capture_output=True, timeout=30)
            w.add(name, relay_records(rec.take()))

        psql("psql-simple", "select 1;\nselect 'x' as a, 2 as b;\nselect 1; select 2;\n")
        psql("psql-error-in-transaction", "begin;\nselect 1/0;\nselect 1;\nrollback;\nselect 3;\n")
        psql("psql-notice", "do $$ begin raise notice 'hello %', 42; end $$;\nset client_min_messages = debug1;\n")
        psql("psql-copy-out", "copy (select g, 'row ' || g from generate_series(1, 40) g) to stdout;\n")
        psql("psql-copy-in", "copy seed_t from stdin;\n1\tone\n2\ttwo\n\\.\nselect count(*) from seed_t;\n")
        psql("psql-copy-in-fail", "copy seed_t from stdin;\n1\tone\nnot a number\tx\n\\.\n")
        psql("psql-set-and-show", "set standard_conforming_strings = off;\nshow standard_conforming_strings;\n"
                                  "set client_encoding = 'LATIN1';\nselect 'api';\n")
        psql("psql-empty-and-comment", ";\n-- only a comment\nselect /* api */ 1;\n")
        psql("psql-api-look-alike", "select 'create api token x' as api;\nshow search_path;\n")

        def psycopg_session(name: str, fn) -> None:
            with psycopg.connect(conninfo, password="admin", autocommit=True) as conn:
                fn(conn)
            w.add(name, relay_records(rec.take()))

        def params(conn):
            conn.execute("select %s::int + 1, %s::text", (41, "x")).fetchall()
            conn.execute("select %b::bytea", (b"\x00\x01",), binary=True).fetchall()

        def prepared(conn):
            for i in range(3):
                conn.execute("select %s::int * 2", (i,), prepare=True).fetchall()

        def pipeline(conn):
            with conn.pipeline():
                conn.execute("select 1")
                conn.execute("select %s::int", (2,))
                conn.execute("insert into seed_t values (%s, %s)", (3, "three"))

        def pipeline_error(conn):
            try:
                with conn.pipeline():
                    conn.execute("select 1/0")
                    conn.execute("select 2")
            except psycopg.Error:
                pass
            conn.execute("select 3").fetchall()

        def server_cursor(conn):
            with conn.transaction():
                with conn.cursor(name="c1") as cur:
                    cur.itersize = 5
                    cur.execute("select generate_series(1, 12)")
                    cur.fetchall()

        def copy(conn):
            with conn.cursor() as cur:
                with cur.copy("copy seed_t (id, name) from stdin") as cp:
                    cp.write_row((7, "seven"))
                with cur.copy("copy (select * from seed_t limit 3) to stdout") as cp:
                    for _ in cp.rows():
                        pass

        def notify(conn):
            conn.execute("listen seed_channel")
            with pg.admin_conn() as other:
                other.execute("notify seed_channel, 'payload'")
            time.sleep(0.2)
            conn.execute("select 1").fetchall()

        def transaction(conn):
            with conn.transaction():
                conn.execute("insert into seed_t values (1, 'a')")
                try:
                    with conn.transaction():
                        conn.execute("select 1/0")
                except psycopg.Error:
                    pass
            conn.execute("show server_version").fetchall()

        for name, fn in (("psycopg-params", params), ("psycopg-prepared", prepared), ("psycopg-pipeline", pipeline),
                         ("psycopg-pipeline-error", pipeline_error), ("psycopg-server-cursor", server_cursor),
                         ("psycopg-copy", copy), ("psycopg-notify", notify), ("psycopg-transaction", transaction)):
            psycopg_session(name, fn)

        # Raw extended protocol: Describe, Flush, row limits, Close, FunctionCall, Terminate.
        def wire(name: str, messages: list[bytes], waits: int) -> None:
            conn = pgwire.WireConnection("127.0.0.1", rec.port)
            pgwire.login(conn, "admin", "admin")
            for m in messages:
                conn.send(m)
            for _ in range(waits):
                conn.read_until_ready()
            conn.send(pgwire.terminate_message())
            conn.close()
            w.add(name, relay_records(rec.take()))

        wire("wire-describe-flush-rowlimit", [
            pgwire.parse_message("s1", "select generate_series(1, $1::int)"),
            pgwire.describe_message(b"S", "s1"), pgwire.flush_message(),
            pgwire.bind_message("p1", "s1", (b"5",)), pgwire.describe_message(b"P", "p1"),
            pgwire.execute_message("p1", 2), pgwire.execute_message("p1", 0),
            pgwire.close_message(b"P", "p1"), pgwire.close_message(b"S", "s1"), pgwire.sync_message(),
        ], 1)
        wire("wire-error-skips-until-sync", [
            pgwire.parse_message("", "select 1/0"), pgwire.bind_message("", ""), pgwire.execute_message(),
            pgwire.parse_message("", "select 2"), pgwire.bind_message("", ""), pgwire.execute_message(),
            pgwire.sync_message(),
            pgwire.parse_message("", "select 3"), pgwire.bind_message("", ""), pgwire.execute_message(),
            pgwire.sync_message(),
        ], 2)
        wire("wire-function-call", [pgwire.function_call_message(1317, (b"abc",))], 1)  # length(text)
        wire("wire-empty-query", [pgwire.query_message("")], 1)
    finally:
        pg.stop()

    # Sessions with API TOKEN statements, answered by tokengate itself in
    # part, and the relay's other paths (made by hand, after
    # tests/unit/proxy/relay_test.cpp): the upstream's answers, the results of
    # the statements (RESULT records), endings, memory limits.
    def ready(s: bytes) -> bytes:
        return msg(b"Z", s)

    def q(sql: str) -> bytes:
        return msg(b"Q", cstr(sql))

    def parse(name: str, sql: str) -> bytes:
        return msg(b"P", cstr(name) + cstr(sql) + b"\0\0")

    def bind(portal: str, stmt: str) -> bytes:
        return msg(b"B", cstr(portal) + cstr(stmt) + b"\0\0\0\0\0\0")

    def execute(portal: str = "", max_rows: int = 0) -> bytes:
        return msg(b"E", cstr(portal) + i32(max_rows))

    def describe(kind: bytes, name: str) -> bytes:
        return msg(b"D", kind + cstr(name))

    def close(kind: bytes, name: str) -> bytes:
        return msg(b"C", kind + cstr(name))

    def error(sqlstate: str, text: str, severity: str = "ERROR") -> bytes:
        return msg(b"E", b"S" + cstr(severity) + b"V" + cstr(severity) + b"C" + cstr(sqlstate) + b"M" + cstr(text) + b"\0")

    def complete(tag: str) -> bytes:
        return msg(b"C", cstr(tag))

    def param(name: str, value: str) -> bytes:
        return msg(b"S", cstr(name) + cstr(value))

    sync, flush, terminate = msg(b"S", b""), msg(b"H", b""), msg(b"X", b"")
    parse_ok, bind_ok, close_ok = msg(b"1", b""), msg(b"2", b""), msg(b"3", b"")
    one_row = (msg(b"T", struct.pack("!H", 1) + cstr("?column?") + i32(0) + struct.pack("!H", 0) + i32(23)
                   + struct.pack("!hih", 4, -1, 0)) + msg(b"D", struct.pack("!H", 1) + i32(1) + b"1")
               + complete("SELECT 1"))
    data_row = msg(b"D", struct.pack("!H", 1) + i32(1) + b"1")
    notification = msg(b"A", i32(7) + cstr("ch") + cstr("x"))
    notice = msg(b"N", b"SNOTICE\0C00000\0Mhello\0\0")
    syntax_error = error("42601", 'syntax error at or near "tokengate"')
    rows2, failed, with_notice = 2 << 1, 1, 16
    IN_BLOCK, REFUSE_PASSWORDS, SCS_OFF, SJIS = 1, 4, 8, 1 << 4
    SMALL_INSPECT, SMALL_SESSION, SMALL_PROCESS = 1 << 6, 2 << 6, 3 << 6

    hand = {
        "api-token-between-selects": ([
            (0, q("select 1; show api tokens; select 2")), (1, one_row + ready(b"I")), (RESULT, rows2),
            (1, one_row + ready(b"I"))], 0),
        "api-token-in-transaction": ([
            (0, q("begin; show api tokens; select 1; commit")), (1, complete("BEGIN") + ready(b"T")),
            (RESULT, rows2 | with_notice), (1, one_row + complete("COMMIT") + ready(b"I"))], 0),
        "api-token-parse": ([
            (0, parse("", "drop api token if exists x") + bind("", "") + execute() + sync), (RESULT, 0),
            (1, ready(b"I"))], 0),
        "create-in-multi-statement-query": ([(0, q("select 1; CREATE API TOKEN t"))], 0),
        "syntax-error-in-query": ([(0, q("select 1; CREATE API TOKEN MAX DURATIN '1d'"))], 0),
        "notification-split": ([
            (0, q("select 1")), (1, one_row[:7]), (1, one_row[7:] + notification[:9]),
            (1, notification[9:] + ready(b"I"))], 0),
        "notification-split-around-local-answer": ([
            (1, notification[:7]), (0, q("SHOW API TOKENS")), (1, notification[7:]), (RESULT, rows2)], 0),
        "notice-while-statement-runs": ([
            (0, q("SHOW API TOKENS")), (1, notice[:3]), (RESULT, 0), (1, notice[3:])], 0),
        "pipeline-mixed": ([
            (0, parse("s1", "select 1") + bind("", "s1") + execute() + parse("t", "SHOW API TOKENS") + bind("p", "t")
             + describe(b"P", "p") + execute("p") + parse("", "select 2") + bind("", "") + execute() + sync),
            (1, parse_ok + bind_ok + data_row + complete("SELECT 1")), (RESULT, rows2),
            (1, parse_ok + bind_ok + data_row + complete("SELECT 1") + ready(b"I"))], 0),
        "pipeline-upstream-error-skips-local": ([
            (0, parse("", "select 1/0") + bind("", "") + execute() + parse("t", "DROP API TOKEN x") + bind("", "t")
             + execute() + sync + q("select 'after'")),
            (1, parse_ok + bind_ok + error("22012", "division by zero")), (1, ready(b"I")),
            (1, data_row + complete("SELECT 1") + ready(b"I"))], 0),
        "pipeline-local-error-injects-failure": ([
            (0, parse("", "insert into t values (1)") + bind("", "") + execute()
             + parse("bad", "CREATE API TOKEN MAX DURATIN '1d'") + bind("", "bad") + execute() + sync),
            (1, parse_ok + bind_ok + complete("INSERT 0 1")), (1, syntax_error + ready(b"I"))], 0),
        "row-limits-local-portal": ([
            (0, parse("t", "SHOW API TOKENS") + bind("p", "t") + execute("p", 1) + execute("p", 1) + execute("p", 1)
             + sync), (RESULT, 3 << 1), (1, ready(b"I"))], 0),
        "local-statement-describe-close-reparse": ([
            (0, parse("s", "SHOW API TOKENS") + describe(b"S", "s") + close(b"S", "s") + parse("s", "select 1")
             + describe(b"S", "s") + sync),
            (1, parse_ok + msg(b"t", b"\0\0") + one_row[:one_row.index(b"D")] + ready(b"I"))], 0),
        "failed-statement-in-block": ([
            (0, q("DROP API TOKEN nope")), (RESULT, failed), (1, syntax_error + ready(b"E")),
            (0, q("SHOW API TOKENS")), (RESULT, failed | with_notice)], IN_BLOCK),
        "fatal-answer-to-injected-parse": ([
            (0, q("DROP API TOKEN nope")), (RESULT, failed),
            (1, error("57P01", "terminating connection due to administrator command", "FATAL"))], IN_BLOCK),
        "copy-in": ([
            (0, q("copy t from stdin")), (1, msg(b"G", b"\0\0\1\0\0")),
            (0, msg(b"d", b"1\n") + msg(b"d", b"2\n") + msg(b"c", b"")), (1, complete("COPY 2") + ready(b"I"))], 0),
        "copy-both": ([
            (0, q("START_REPLICATION SLOT s LOGICAL 0/0")), (1, msg(b"W", b"\0\0\0") + msg(b"d", b"w-record")),
            (0, msg(b"d", b"r-status")), (0, msg(b"c", b"")),
            (1, msg(b"c", b"") + complete("START_REPLICATION") + ready(b"I"))], 0),
        "password-change-refused": ([
            (0, q("ALTER ROLE me PASSWORD 'x'") + parse("", "alter role me password 'y'") + bind("", "")
             + execute() + sync), (1, ready(b"I"))], REFUSE_PASSWORDS),
        "oversized-query-with-api": ([
            (0, q("select '" + "y" * 1500 + "'; CREATE API TOKEN x"))], SMALL_INSPECT),
        "oversized-query-plain": ([
            (0, q("select '" + "y" * 1500 + "'")), (1, one_row + ready(b"I"))], SMALL_INSPECT),
        "oversized-bind-to-local-statement": ([
            (0, parse("t", "SHOW API TOKENS") + msg(b"B", cstr("") + cstr("t") + b"\0\0\0\1" + i32(1500)
                                                    + b"p" * 1500 + b"\0\0") + sync),
            (1, ready(b"I"))], SMALL_INSPECT),
        "session-memory-limit": ([(0, sync * 1700)], SMALL_SESSION),
        "process-memory-limit": ([(0, q("x" * 3000)[:-1])], SMALL_PROCESS),
        "end-inside-data-row": ([
            (0, q("select repeat('x', 100)")), (1, one_row[:20]), (EVENT, 2), (0, q("select 'dropped'")),
            (1, one_row[20:])], 0),
        "standard-conforming-strings-off": ([
            (1, param("standard_conforming_strings", "off") + param("client_encoding", "SJIS")),
            (0, q("select 'a\\'; show api tokens; select '\x95\\'")), (1, one_row + ready(b"I")),
            (RESULT, rows2)], SCS_OFF | SJIS),
        "deallocate-all": ([
            (0, parse("t", "SHOW API TOKENS") + parse("s", "select 1") + sync), (1, parse_ok + ready(b"I")),
            (0, q("DEALLOCATE ALL")), (1, complete("DEALLOCATE ALL") + ready(b"I")),
            (0, describe(b"S", "t") + parse("s", "SHOW API TOKENS") + sync),
            (1, error("26000", 'prepared statement "t" does not exist')), (1, ready(b"I"))], 0),
        "terminate": ([(0, q("select 1") + terminate + q("select 'never'"))], 0),
        "client-eof-while-statement-runs": ([(0, q("SHOW API TOKENS")), (EVENT, 0), (RESULT, 0)], 0),
        "upstream-bad-length-after-split-header": ([
            (0, q("select 1")), (1, b"oz\0"), (1, b"\x11\x0a")], 0),
    }
    for name, (records, options) in hand.items():
        w.add(name, relay_records(records, options))
    w.done()


# ---------------------------------------------------------------- SQL

API_STATEMENTS = [
    "CREATE API TOKEN",
    "CREATE API TOKEN ci_pipeline MAX DURATION '30d' COMMENT 'deploys from CI'",
    "create api token for user analyst",
    "CREATE API TOKEN \"For\" FOR USER \"Analyst\" MAX DURATION '1 year' COMMENT E'tab\\there'",
    "CREATE API TOKEN x COMMENT U&'d\\0061t\\+000061' MAX DURATION $$12 hours$$",
    "CREATE API TOKEN U&\"!0441\" UESCAPE '!' FOR USER U&\"\\0061nalyst\"",
    "CREATE API TOKEN x COMMENT 'a' -- continued\n'b'",
    "CREATE /* c /* nested */ */ API TOKEN x;",
    "CREATE API TOKEN x MAX DURATION '1d' MAX DURATION '2d'",
    "CREATE API TOKEN $1",
    "CREATE API TOKEN " + "n" * 64,
    "CREATE API TOKEN x COMMENT 'Деплой из CI'",
    "SHOW API TOKENS",
    "SHOW API TOKENS FOR ALL USERS",
    "show api tokens for user \"admin\";",
    "SHOW API TOKEN POLICIES FOR USER analyst",
    "ALTER API TOKEN ci SET COMMENT NULL",
    "ALTER API TOKEN ci FOR USER analyst SET COMMENT 'rotated'",
    "DROP API TOKEN ci",
    "DROP API TOKEN IF EXISTS ci FOR USER analyst",
    "DROP ALL API TOKENS",
    "DROP ALL API TOKENS FOR USER analyst",
    "ALTER USER analyst SET API TOKEN MAX DURATION '30d'",
    "ALTER ROLE \"Analyst\" RESET API TOKEN MAX DURATION",
    "ALTER ROLE analyst SET API TOKEN MAX DURATION",
    "CREATE API TOKEN x; SELECT 1",
    "CREATE API TOKEN x COMMENT 'unterminated",
    "CREATE API TOKEN x COMMENT E'\\xff'",
    "SHOW API",
    "SHOW api.token",
    "CREATE \"api\" TOKEN x",
]


def sql_statements() -> list[str]:
    """Statements of the parser's SQL corpus (ordinary SQL), one per entry."""
    out, cur = [], []
    for line in (ROOT / "tests/unit/parser_ext/corpus.sql").read_text().splitlines():
        if line.startswith("--") and not cur:
            continue
        cur.append(line)
        if line.rstrip().endswith(";"):
            out.append("\n".join(cur))
            cur = []
    return out


def seeds_sql() -> None:
    corpus = sql_statements()
    handwritten = [l for l in (ROOT / "tests/unit/parser_ext/corpus_handwritten.sql").read_text().splitlines()
                   if l.strip() and not l.startswith("--")]
    step = max(1, len(corpus) // 120)
    sample = corpus[::step]

    # The first byte picks the session settings (tests/fuzz/sql_options.hpp):
    # 0 is UTF8 with standard_conforming_strings on.
    default = b"\x00"
    settings = {"scs-off": b"\x01", "sql-ascii": b"\x02", "latin1": b"\x04", "sjis": b"\x0c",
                "big5": b"\x0e", "gbk": b"\x10", "gb18030": b"\x14", "unknown-encoding": b"\x16"}
    # Multibyte characters whose second byte is a backslash or a quote.
    client_only = {
        "sjis": b"CREATE API TOKEN t COMMENT '\x95\x5c'; SELECT '\x95\x5c' AS x; -- '",
        "big5": b"SELECT '\xa5\x5c'; DROP API TOKEN t; SELECT '\xa5\x5c''",
        "gbk": b"SHOW API TOKENS; SELECT '\x81\x27'; SELECT 1",
        "gb18030": b"SELECT '\x81\x30\x81\x30'; SHOW API TOKENS",
    }

    w = Writer("grammar")
    for s in API_STATEMENTS + handwritten:
        w.add(s[:40], default + s.encode())
    for name, prefix in settings.items():
        for s in API_STATEMENTS[:6]:
            w.add(name + "-" + s[:30], prefix + s.encode())
    w.add("scs-off-backslash-quote", settings["scs-off"] + b"CREATE API TOKEN t COMMENT 'x\\'' MAX DURATION '1d'")
    w.add("sjis-comment", settings["sjis"] + b"CREATE API TOKEN t COMMENT '\x95\x5c'")
    w.done()

    w = Writer("splitter")
    for i, s in enumerate(sample):
        # The API TOKEN statement after it makes the splitter work on real SQL.
        w.add(f"corpus-{i}", default + (s + "\nSHOW API TOKENS;").encode())
    for s in API_STATEMENTS:
        w.add(s[:40], default + f"SELECT 1; {s}; SELECT 'api'".encode())
    for s in handwritten:
        w.add(s[:40], default + s.encode())
    for name, text in client_only.items():
        w.add(name, settings[name] + text)
        w.add(name + "-as-utf8", default + text)
    for name, prefix in settings.items():
        w.add(name + "-smuggling", prefix + b"CREATE API TOKEN t COMMENT 'x\\'; SELECT 'smuggled'; --'")
    extra = [
        "SELECT $$a;b$$; CREATE API TOKEN t; SELECT $x$;$x$",
        "SELECT 'a;b' ; /* ; */ DROP API TOKEN t -- ;\n; SELECT E'\\';'",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; END; SHOW API TOKENS",
        "SET standard_conforming_strings = off; CREATE API TOKEN t COMMENT 'x\\'; SELECT 'smuggled'; --'",
        ";;; SHOW API TOKENS ;;;",
        "SELECT U&'\\0061pi'; SELECT \"api\"; SELECT api FROM api",
    ]
    for s in extra:
        w.add(s[:40], default + s.encode())
    w.done()


# ---------------------------------------------------------------- tokens

def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def seeds_jwt() -> None:
    w = Writer("jwt")
    kid_a, kid_b = "00000000000000a1", "00000000000000b2"  # the target's own kids (jwt_fuzz.cpp)
    tid = "0123456789abcdef0123456789abcdef"

    def header(kid: str) -> str:
        return '{"alg":"HS256","typ":"JWT","kid":"%s"}' % kid

    def payload(user: str = "analyst", exp: int = 1900000000, iat: int = 1700000000) -> str:
        return '{"user":%s,"tid":"%s","iat":%d,"exp":%d}' % (json.dumps(user, ensure_ascii=False), tid, iat, exp)

    # Mode 2: JSON header and payload, signed by the target.
    json_pairs = {
        "canonical": (header(kid_a), payload()),
        "canonical-key-b": (header(kid_b), payload()),
        "expired": (header(kid_a), payload(exp=1700000001)),
        "reordered": ('{"kid":"%s","typ":"JWT","alg":"HS256"}' % kid_a,
                      '{"exp":1900000000,"iat":1,"tid":"%s","user":"a"}' % tid),
        "spaces-escapes": ('{ "alg" : "HS256", "kid" : "\\u0030000000000000a1" }',
                           '{"user":"a\\"b\\\\c\\u00e9","tid":"%s","iat":0,"exp":1900000000}' % tid),
        "alg-none": ('{"alg":"none","kid":"%s"}' % kid_a, payload()),
        "alg-missing": ('{"kid":"%s"}' % kid_a, payload()),
        "unknown-kid": (header("ffffffffffffffff"), payload()),
        "long-kid": ('{"alg":"HS256","kid":"%s"}' % ("k" * 80), payload()),
        "float-exp": (header(kid_a), '{"user":"a","tid":"%s","iat":1,"exp":1.9e9}' % tid),
        "negative-exp": (header(kid_a), payload(exp=-5)),
        "huge-exp": (header(kid_a), '{"user":"a","tid":"%s","iat":1,"exp":99999999999999999999}' % tid),
        "bad-tid": (header(kid_a), '{"user":"a","tid":"XYZ","iat":1,"exp":1900000000}'),
        "duplicate-keys": (header(kid_a), payload()[:-1] + ',"user":"postgres"}'),
        "nested": (header(kid_a), '{"user":{"a":[1,2,{"b":null}]},"tid":"%s","iat":1,"exp":2}' % tid),
        "array": ("[1,2,3]", "[]"),
        "deep": ("[" * 200 + "]" * 200, payload()),
        "unicode-user": (header(kid_a), payload(user="Деплой")),
    }
    for name, (h, p) in json_pairs.items():
        w.add("json-" + name, bytes([2]) + h.encode() + b"\n" + p.encode())
        w.add("json-" + name + "-key-b", bytes([6]) + h.encode() + b"\n" + p.encode())
    # Mode 1: base64 header and payload, signed by the target.
    for name, (h, p) in list(json_pairs.items())[:6]:
        w.add("b64-" + name, bytes([1]) + f"{b64(h.encode())}.{b64(p.encode())}".encode())
    w.add("b64-padding", bytes([1]) + f"{b64(header(kid_a).encode())}=.{b64(payload().encode())}".encode())
    w.add("b64-bad-char", bytes([1]) + f"{b64(header(kid_a).encode())}*.{b64(payload().encode())}".encode())
    # Mode 0: tokens signed with a throwaway key, their signatures cut short
    # (never a complete signed token in the repository).
    throwaway = secrets.token_bytes(32)
    for name, (h, p) in list(json_pairs.items())[:4]:
        signing_input = f"{b64(h.encode())}.{b64(p.encode())}"
        sig = b64(hmac.new(throwaway, signing_input.encode(), hashlib.sha256).digest())
        w.add("raw-" + name, bytes([0]) + f"{signing_input}.{sig[:12]}".encode())
    for name, text in {"empty": "", "dots": "..", "four-parts": "a.b.c.d", "not-base64": "eyJ!.eyJ.x",
                       "long": "eyJ" + "A" * 2100 + ".e30.x"}.items():
        w.add("raw-" + name, bytes([0]) + text.encode())
    # Mode 3: claims minted by the target.
    for name, (exp, iat, user) in {"plain": (1900000000, 1700000000, b"analyst"),
                                   "expired": (1, 0, b"analyst"),
                                   "extremes": (2**63 - 1, -2**63, b"a\"b\\c\x01\x7f"),
                                   "utf8": (1900000000, 0, "Деплой".encode()),
                                   "not-utf8": (1900000000, 0, b"\xff\xfe"),
                                   "long-user": (1900000000, 0, b"u" * 800)}.items():
        w.add("mint-" + name, bytes([3]) + struct.pack("!qq", exp, iat) + bytes(range(16)) + user)
    w.done()


def seeds_duration() -> None:
    w = Writer("duration")
    for d in ["30d", "1d12h", "12 hours", "1 year", "100y", "36500d", "1h30m", "45s", "2 weeks 3 days",
              "1month", "0d", "101y", " 7 d ", "1.5d", "-1d", "99999999999999999999s", "1D2H3M4S", "3 mins"]:
        w.add(d, d.encode())
    w.done()


def seeds_userlist() -> None:
    w = Writer("userlist")
    files = {
        "pgbouncer": '"analyst" "s3cret"\n"admin" "md5' + "0" * 32 + '"\n; comment\n# comment\n\n'
                     '"scram" "SCRAM-SHA-256$4096:c2FsdA==$a:b"\n"empty" ""\n',
        "quotes": '"a""b" "p""w" trailing\r\n\t "x"\t"y"\n',
        "errors": 'analyst "pw"\n',
        "unterminated-user": '"analyst\n',
        "unterminated-password": '"analyst" "pw\n',
        "missing-password": '"analyst"\n',
        "repeated": '"u" "one"\n"u" "two"\n',
    }
    for name, text in files.items():
        w.add("raw-" + name, b"\0" + text.encode())

    def entry(style: int, user: bytes, password: bytes) -> bytes:
        return bytes([style]) + user + b"\0" + password + b"\0"

    w.add("structured-plain", b"\1" + entry(0, b"analyst", b"pw") + entry(1 | 2 | 4, b"admin", b"x\"y"))
    w.add("structured-verifiers", b"\1" + entry(128, b"m", b"md5" + b"a" * 32) + entry(128, b"s", b"SCRAM-SHA-256$1:a")
          + entry(128, b"e", b""))
    w.add("structured-broken", b"\1" + entry(8 | 16 | 64, b"u", b"p") + entry(32, b"v", b"w"))
    w.done()


def seeds_config() -> None:
    w = Writer("config")
    files = {
        "deployment-example": """listen = "0.0.0.0:6432,/run/tokengate:6432"
data_dir = "/var/lib/tokengate"
admin_role = "tokengate_admin"
expiry_warning = 1209600            # 14 days

[upstream]
address = "/run/postgresql:5432"    # Unix socket: trusted, see above
auth = "trust"
control_user = "postgres"
control_database = "postgres"

[tls]
cert = "/etc/tokengate/tls/fullchain.pem"
key = "/etc/tokengate/tls/privkey.pem"
mode = "require"
""",
        "dotted-keys": 'upstream.address = "[::1]:5433"\nupstream.auth = "password"\nauth.userlist = "/etc/u.txt"\n'
                       'threads = 4\nrevoke_ends_sessions = false\nmax_failed_logins = 1000000\n',
        "wrong-types": 'threads = "four"\nauth_timeout = 3.5\nlisten = ["a", "b"]\n[tls]\nmode = 1\n',
        "unknown-key": 'no_such_setting = 1\n',
        "inline-table": 'upstream = { address = "db:5432", sslmode = "verify-full" }\n',
        "dates-and-arrays": 'log_level = 1979-05-27T07:32:00Z\n',
        "bad-toml": '[upstream\naddress = \n',
    }
    for name, text in files.items():
        w.add(name, text.encode())
    w.done()


GENERATORS = {
    "startup": seeds_startup, "relay": seeds_relay, "sql": seeds_sql, "jwt": seeds_jwt,
    "duration": seeds_duration, "userlist": seeds_userlist, "config": seeds_config,
}


def main() -> int:
    wanted = sys.argv[1:] or list(GENERATORS)
    for name in wanted:
        if name in ("splitter", "grammar"):
            name = "sql"
        GENERATORS[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main())

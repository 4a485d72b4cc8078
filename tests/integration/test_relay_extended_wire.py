# Extended protocol and rare messages over raw sockets: the backend's message sequence through tokengate equals PostgreSQL's exactly.
#
# Each test sends frontend bytes after login and compares every backend message up to the expected number of
# ReadyForQuery, decoded (DataRows by value, errors by their visible fields), between direct and proxy.
from __future__ import annotations

import socket
import struct
import time
import uuid

import pgwire
from conftest import Target, Twin
from pgwire import (bind_message, close_message, copy_data_message, copy_done_message, copy_fail_message,
                    describe_message, execute_message, flush_message, function_call_message, parse_message,
                    query_message, sync_message)

INT4, TEXT = 23, 25


def canon(m: pgwire.Message) -> tuple:
    """A comparable, readable form of a backend message."""
    if m.tag == b"D":
        # Text-format rows by value; anything that does not look like text (binary results) as raw bytes.
        try:
            vals = pgwire.data_rows_text([m])[0]
        except UnicodeDecodeError:
            return ("DataRow", m.body)
        if all(v is None or v.isprintable() for v in vals):
            return ("DataRow", vals)
        return ("DataRow", m.body)
    if m.tag in (b"E", b"N"):
        return (m.name, m.error().visible())
    if m.tag == b"Z":
        return ("ReadyForQuery", m.body.decode())
    if m.tag == b"C":
        return ("CommandComplete", m.body.rstrip(b"\0").decode())
    if m.tag in (b"1", b"2", b"3", b"n", b"s", b"I", b"c"):
        assert m.body == b"", f"{m.name} with a body: {m.body!r}"
        return (m.name,)
    return (m.name, m.body)


def login(t: Target) -> pgwire.WireConnection:
    w = t.wire()
    r = pgwire.login(w, "analyst", "analyst")
    assert r.ok, f"login failed: {r.error}"
    return w


def exchange(t: Target, data: bytes | list[bytes], ready: int = 1, setup: str | None = None) -> list[tuple]:
    """Log in, optionally run `setup` (simple query), send `data`, return messages up to `ready` ReadyForQuery."""
    w = login(t)
    try:
        if setup:
            msgs = w.simple_query(setup)
            assert not [m for m in msgs if m.tag == b"E"], f"setup failed: {msgs}"
        chunks = data if isinstance(data, list) else [data]
        for c in chunks:
            w.send(c)
        out = []
        while ready:
            m = w.read_message()
            out.append(canon(m))
            if m.tag == b"Z":
                ready -= 1
        w.send(pgwire.terminate_message())
        return out
    finally:
        w.close()


def names(msgs: list[tuple]) -> list[str]:
    return [m[0] for m in msgs]


def test_named_statement_and_portal_with_describes(twin: Twin):
    data = (
        parse_message("s1", "select $1::int + 1 as x, $2::text as y", (INT4, TEXT))
        + describe_message(b"S", "s1")
        + bind_message("p1", "s1", (b"41", b"hi"))
        + describe_message(b"P", "p1")
        + execute_message("p1")
        + close_message(b"P", "p1")
        + close_message(b"S", "s1")
        + sync_message()
    )
    msgs = twin.run(lambda t: exchange(t, data), "backend messages")
    assert names(msgs) == ["ParseComplete", "ParameterDescription", "RowDescription", "BindComplete",
                           "RowDescription", "DataRow", "CommandComplete", "CloseComplete", "CloseComplete",
                           "ReadyForQuery"]
    assert msgs[5] == ("DataRow", ("42", "hi"))


def test_describe_statement_without_result_is_nodata(twin: Twin):
    data = parse_message("s_set", "set search_path = public") + describe_message(b"S", "s_set") + sync_message()
    msgs = twin.run(lambda t: exchange(t, data))
    assert names(msgs) == ["ParseComplete", "ParameterDescription", "NoData", "ReadyForQuery"]


def test_portal_suspended(twin: Twin):
    data = (
        parse_message("", "select g from generate_series(1, 5) g")
        + bind_message("", "")
        + execute_message("", 2) + execute_message("", 2) + execute_message("", 2)
        + sync_message()
    )
    msgs = twin.run(lambda t: exchange(t, data))
    assert names(msgs) == ["ParseComplete", "BindComplete", "DataRow", "DataRow", "PortalSuspended",
                           "DataRow", "DataRow", "PortalSuspended", "DataRow", "CommandComplete", "ReadyForQuery"]


def test_error_skips_to_sync(twin: Twin):
    data = (
        parse_message("", "select 1 / g from generate_series(0, 0) g") + bind_message("", "") + execute_message()
        + parse_message("", "select 'skipped'") + bind_message("", "") + execute_message()
        + sync_message()
        + parse_message("", "select 'after sync'") + bind_message("", "") + execute_message()
        + sync_message()
    )
    msgs = twin.run(lambda t: exchange(t, data, ready=2))
    assert names(msgs) == ["ParseComplete", "BindComplete", "ErrorResponse", "ReadyForQuery",
                           "ParseComplete", "BindComplete", "DataRow", "CommandComplete", "ReadyForQuery"]
    assert msgs[2][1]["sqlstate"] == "22012" and msgs[6] == ("DataRow", ("after sync",))


def test_flush_without_sync(twin: Twin):
    """Flush asks for pending output now; nothing may wait for a Sync that has not been sent."""

    def run(t: Target):
        w = login(t)
        try:
            w.send(parse_message("s_flush", "select 'flushed'") + flush_message())
            first = canon(w.read_message())  # times out (fails) if held back until Sync
            w.send(bind_message("", "s_flush") + execute_message() + flush_message())
            second = [canon(w.read_message()) for _ in range(3)]
            w.send(sync_message())
            rest = [canon(m) for m in w.read_until_ready()]
            return [first] + second + rest
        finally:
            w.close()

    msgs = twin.run(run)
    assert names(msgs) == ["ParseComplete", "BindComplete", "DataRow", "CommandComplete", "ReadyForQuery"]


def test_simple_query_right_after_extended_messages(twin: Twin):
    """pgjdbc sometimes sends a Query after Parse/Bind/Execute with no Sync between."""
    data = (
        parse_message("", "select 'extended'") + bind_message("", "") + execute_message()
        + query_message("select 'simple'")
        + sync_message()
    )
    msgs = twin.run(lambda t: exchange(t, data, ready=2))
    assert ("DataRow", ("extended",)) in msgs and ("DataRow", ("simple",)) in msgs


def test_unnamed_statement_replaced_and_named_reused(twin: Twin):
    data = (
        parse_message("", "select 'first'") + parse_message("", "select 'second'")
        + bind_message("", "") + execute_message() + sync_message()
        + parse_message("S_1", "select 'old'") + sync_message()
        + bind_message("", "S_1") + execute_message() + close_message(b"S", "S_1") + sync_message()
        + parse_message("S_1", "select 'new'") + bind_message("", "S_1") + execute_message() + sync_message()
        + bind_message("", "no_such_statement") + sync_message()
    )
    msgs = twin.run(lambda t: exchange(t, data, ready=5))
    rows = [m[1] for m in msgs if m[0] == "DataRow"]
    assert rows == [("second",), ("old",), ("new",)]
    assert msgs[-2][0] == "ErrorResponse" and msgs[-2][1]["sqlstate"] == "26000"


def test_binary_parameters_and_results(twin: Twin):
    data = (
        parse_message("", "select $1::int4 * 2, $2::bytea", (INT4, 17))
        + bind_message("", "", (struct.pack("!i", 21), b"\x00\x01\x02"), param_formats=(1, 1), result_formats=(1,))
        + execute_message() + sync_message()
    )
    msgs = twin.run(lambda t: exchange(t, data))
    assert msgs[2][0] == "DataRow"
    assert msgs[2][1] == b"\x00\x02" + struct.pack("!i", 4) + struct.pack("!i", 42) + struct.pack("!i", 3) + b"\x00\x01\x02"


def test_empty_query_extended(twin: Twin):
    data = parse_message("", "") + bind_message("", "") + execute_message() + sync_message()
    msgs = twin.run(lambda t: exchange(t, data))
    assert names(msgs) == ["ParseComplete", "BindComplete", "EmptyQueryResponse", "ReadyForQuery"]


def test_thousand_statements_before_one_sync(twin: Twin):
    data = b"".join(
        parse_message("", f"select {i}") + bind_message("", "") + execute_message() for i in range(1000)
    ) + sync_message()
    msgs = twin.run(lambda t: exchange(t, data))
    assert [m[1] for m in msgs if m[0] == "DataRow"] == [(str(i),) for i in range(1000)]


def test_messages_split_at_every_byte(twin: Twin):
    """Framing must not depend on how TCP cuts the stream: send one byte per segment."""
    data = (
        parse_message("s_split", "select $1::text || '!'", (TEXT,))
        + bind_message("", "s_split", (b"split",)) + execute_message() + sync_message()
        + query_message("select 'q1'; select 'q2'")
    )

    def run(t: Target):
        w = login(t)
        try:
            w.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i in range(len(data)):
                w.send(data[i : i + 1])
                if i % 8 == 0:
                    time.sleep(0.001)
            out = [canon(m) for m in w.read_until_ready()] + [canon(m) for m in w.read_until_ready()]
            return out
        finally:
            w.close()

    msgs = twin.run(run)
    assert [m[1] for m in msgs if m[0] == "DataRow"] == [("split!",), ("q1",), ("q2",)]


def test_function_call(twin: Twin):
    """The legacy fast-path FunctionCall message (libpq large objects use it) is relayed like any other."""

    def run(t: Target):
        w = login(t)
        try:
            oid = int(pgwire.data_rows_text(w.simple_query("select 'int4pl'::regproc::oid"))[0][0])
            w.send(function_call_message(oid, (b"40", b"2")))
            return [canon(m) for m in w.read_until_ready()]
        finally:
            w.close()

    msgs = twin.run(run)
    assert msgs == [("FunctionCallResponse", struct.pack("!i", 2) + b"42"), ("ReadyForQuery", "I")]


def test_copy_fail_from_client(twin: Twin):
    def run(t: Target):
        w = login(t)
        try:
            w.simple_query("create temp table cf(a int)")
            w.send(query_message("copy cf from stdin"))
            first = canon(w.read_message())
            w.send(copy_data_message(b"1\n2\n") + copy_fail_message("client gave up"))
            msgs = [first] + [canon(m) for m in w.read_until_ready()]
            msgs += [canon(m) for m in w.simple_query("select count(*) from cf")]
            return msgs
        finally:
            w.close()

    msgs = twin.run(run)
    assert msgs[0][0] == "CopyInResponse"
    assert msgs[1][0] == "ErrorResponse" and msgs[1][1]["sqlstate"] == "57014"
    assert msgs[1][1]["message"] == "COPY from stdin failed: client gave up"
    assert ("DataRow", ("0",)) in msgs


def test_copy_in_many_small_messages(twin: Twin):
    """20,000 CopyData messages of one row each, sent in one go."""

    def run(t: Target):
        w = login(t)
        try:
            w.simple_query("create temp table cs(a int, b text)")
            w.send(query_message("copy cs from stdin"))
            assert canon(w.read_message())[0] == "CopyInResponse"
            w.send(b"".join(copy_data_message(f"{i}\tv{i}\n".encode()) for i in range(20000)) + copy_done_message())
            msgs = [canon(m) for m in w.read_until_ready()]
            msgs += [canon(m) for m in w.simple_query("select count(*), sum(a), max(b) from cs")]
            return msgs
        finally:
            w.close()

    msgs = twin.run(run)
    assert ("CommandComplete", "COPY 20000") in msgs
    assert ("DataRow", ("20000", str(sum(range(20000))), "v9999")) in msgs


def test_copy_out_raw(twin: Twin):
    data = query_message("copy (select g, 'r' || g from generate_series(1, 3) g) to stdout")
    msgs = twin.run(lambda t: exchange(t, data))
    assert names(msgs) == ["CopyOutResponse", "CopyData", "CopyData", "CopyData", "CopyDone", "CommandComplete",
                           "ReadyForQuery"]
    assert msgs[1] == ("CopyData", b"1\tr1\n")


def test_many_bare_syncs(twin: Twin):
    msgs = twin.run(lambda t: exchange(t, sync_message() * 100, ready=100))
    assert msgs == [("ReadyForQuery", "I")] * 100


# ---------------------------------------------------------------- API TOKEN statements in a batch (issue 10)
# tokengate's statement fails where an ordinary one fails at PostgreSQL; the client must see the same.


def _failing_parse(t: Target) -> bytes:
    # An error at Parse: tokengate's 42P02 (a parameter in an API TOKEN statement), PostgreSQL's 42601.
    return parse_message("bad", "DROP API TOKEN $1" if t.name == "proxy" else "selec 1")


def _errors_as_one(msgs: list[tuple]) -> list[tuple]:
    return [("ErrorResponse",) if m[0] == "ErrorResponse" else m for m in msgs]


def test_local_error_rolls_the_batch_back(twin: Twin, pg):
    """An error in the middle of a pipelined batch: everything up to Sync is skipped and what ran before it
    rolls back (the implicit transaction of the batch), whether the failing statement is tokengate's or not."""
    table = f"tg_batch_{uuid.uuid4().hex[:8]}"
    with pg.admin_conn() as a:
        a.execute(f"CREATE TABLE {table} (v int)")
        a.execute(f"GRANT ALL ON {table} TO analyst")

    def run(t: Target):
        data = (parse_message("", f"insert into {table} values (1)") + bind_message("", "") + execute_message("")
                + _failing_parse(t) + bind_message("", "bad") + execute_message("")
                + parse_message("", f"insert into {table} values (2)") + bind_message("", "") + execute_message("")
                + sync_message() + query_message(f"select count(*) from {table}"))
        return _errors_as_one(exchange(t, data, ready=2))

    try:
        msgs = twin.run(run)
        assert ("DataRow", ("0",)) in msgs, msgs
    finally:
        with pg.admin_conn() as a:
            a.execute(f"DROP TABLE {table}")


def test_local_error_fails_the_transaction_block(twin: Twin):
    """Inside BEGIN … in one batch (pgjdbc with autocommit off): the block fails, later statements get 25P02,
    COMMIT answers ROLLBACK."""

    def run(t: Target):
        data = (query_message("BEGIN") + _failing_parse(t) + bind_message("", "bad") + execute_message("")
                + sync_message() + query_message("select 1") + query_message("COMMIT"))
        return _errors_as_one(exchange(t, data, ready=4))

    msgs = twin.run(run)
    assert ("CommandComplete", "ROLLBACK") in msgs and ("ReadyForQuery", "E") in msgs, msgs


def test_parse_under_a_name_prepared_upstream_is_42P05(twin: Twin):
    def run(t: Target):
        second = "SHOW API TOKENS" if t.name == "proxy" else "select 2"
        data = (parse_message("s1", "select 1") + sync_message() + parse_message("s1", second) + sync_message())
        return exchange(t, data, ready=2)

    msgs = twin.run(run)
    assert [m[1]["sqlstate"] for m in msgs if m[0] == "ErrorResponse"] == ["42P05"], msgs


def test_create_api_token_after_begin_in_one_batch_is_refused(proxy: Target):
    """pgjdbc with autocommit off sends BEGIN in the same batch as the statement: tokengate sees that the
    block began (the BEGIN's CommandComplete) and refuses CREATE API TOKEN with 25001, as PostgreSQL refuses
    CREATE DATABASE there."""
    data = (parse_message("", "BEGIN") + bind_message("", "") + execute_message("")
            + parse_message("", "CREATE API TOKEN tg_batch_refused") + bind_message("", "") + execute_message("")
            + sync_message() + query_message("ROLLBACK"))
    msgs = exchange(proxy, data, ready=2)
    errors = [m[1] for m in msgs if m[0] == "ErrorResponse"]
    assert [e["sqlstate"] for e in errors] == ["25001"], msgs
    assert errors[0]["message"] == "CREATE API TOKEN cannot run inside a transaction block"
    assert ("ReadyForQuery", "E") in msgs, msgs


def test_client_bytes_arriving_while_a_local_answer_waits_are_read(proxy: Target):
    """The client's next messages arrive while tokengate holds a local answer behind a slow statement: they must
    be read once the upstream has answered (edge-triggered readiness is not announced twice)."""
    w = login(proxy)
    try:
        w.send(parse_message("", "select pg_sleep(0.5)") + bind_message("", "") + execute_message("")
               + parse_message("t", "SHOW API TOKENS"))
        time.sleep(0.2)
        w.send(describe_message(b"S", "t") + sync_message())
        names_seen = []
        while True:
            m = w.read_message()
            names_seen.append(m.name)
            if m.tag == b"Z":
                break
        assert names_seen == ["ParseComplete", "BindComplete", "DataRow", "CommandComplete", "ParseComplete",
                              "ParameterDescription", "RowDescription", "ReadyForQuery"], names_seen
    finally:
        w.close()

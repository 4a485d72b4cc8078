// Scripts of the one-query client: the exact frontend bytes it writes, and
// what it collects from the backend messages fed to it.
#include <catch2/catch.hpp>

#include "proxy/protocol/frame.hpp"
#include "proxy/session/query_client.hpp"
#include "tests/common/pg_bytes.hpp"

using namespace tokengate;
using namespace tokengate::protocol;
using namespace tokengate::test;
using session::QueryClient;
using Status = QueryClient::Status;

namespace {

// Frames `bytes` (one or more whole messages) and feeds each to the client,
// returning the status after the last one.
Status feed(QueryClient& q, const Bytes& bytes) {
  ByteView rest(bytes);
  Status st = q.status();
  while (!rest.empty()) {
    auto fr = read_frame(rest);
    REQUIRE(fr.status == FrameStatus::complete);
    st = q.on_message(fr.frame);
    rest = rest.subspan(fr.frame.size);
  }
  return st;
}

Bytes parse_complete() { return msg('1', {}); }
Bytes bind_complete() { return msg('2', {}); }
Bytes no_data() { return msg('n', {}); }
Bytes ready(char status = 'I') { return msg('Z', Bytes{std::uint8_t(status)}); }
Bytes command_complete(std::string_view tag) { return msg('C', body_cstrs({tag})); }

// RowDescription with text columns of type text (oid 25).
Bytes row_description(std::initializer_list<std::string_view> names) {
  Bytes b;
  put_i16(b, std::int16_t(names.size()));
  for (auto n : names) {
    put_cstr(b, n);
    put_i32(b, 0);    // table oid
    put_i16(b, 0);    // column number
    put_i32(b, 25);   // type oid
    put_i16(b, -1);   // type size
    put_i32(b, -1);   // type modifier
    put_i16(b, 0);    // text format
  }
  return msg('T', b);
}
Bytes data_row(std::initializer_list<std::optional<std::string_view>> values) {
  Bytes b;
  put_i16(b, std::int16_t(values.size()));
  for (auto v : values) {
    if (!v) {
      put_i32(b, -1);
    } else {
      put_i32(b, std::int32_t(v->size()));
      put_str(b, *v);
    }
  }
  return msg('D', b);
}

}  // namespace

TEST_CASE("query client: writes Parse, Bind with text parameters, Describe portal, Execute, Sync") {
  QueryClient q("SELECT $1::text, $2::text", {std::string("alice"), std::nullopt});
  Bytes parse_body = body_cstrs({"", "SELECT $1::text, $2::text"});
  put_i16(parse_body, 0);  // no parameter types
  Bytes bind_body = body_cstrs({"", ""});
  put_i16(bind_body, 0);   // no parameter format codes: all text
  put_i16(bind_body, 2);   // two parameters
  put_i32(bind_body, 5);
  put_str(bind_body, "alice");
  put_i32(bind_body, -1);  // NULL
  put_i16(bind_body, 0);   // no result format codes: all text
  Bytes describe_body{'P'};
  put_cstr(describe_body, "");
  Bytes execute_body = body_cstrs({""});
  put_i32(execute_body, 0);  // no row limit
  CHECK(q.start() == concat({msg('P', parse_body), msg('B', bind_body), msg('D', describe_body),
                             msg('E', execute_body), msg('S', {})}));
  CHECK(q.status() == Status::in_progress);
}

TEST_CASE("query client: parameters are sent as bytes, quotes and all, never spliced into the SQL") {
  const std::string evil = "x'; DROP ROLE postgres; --";
  QueryClient q("SELECT 1 WHERE $1 = ''", {evil});
  Bytes out = q.start();
  Bytes parse_body = body_cstrs({"", "SELECT 1 WHERE $1 = ''"});
  put_i16(parse_body, 0);
  Bytes bind_body = body_cstrs({"", ""});
  put_i16(bind_body, 0);
  put_i16(bind_body, 1);
  put_i32(bind_body, std::int32_t(evil.size()));
  put_str(bind_body, evil);
  put_i16(bind_body, 0);
  Bytes expected_head = concat({msg('P', parse_body), msg('B', bind_body)});
  REQUIRE(out.size() > expected_head.size());
  CHECK(Bytes(out.begin(), out.begin() + std::ptrdiff_t(expected_head.size())) == expected_head);
}

TEST_CASE("query client: collects columns, rows with NULLs, and the command tag") {
  QueryClient q("SELECT a, b FROM t", {});
  (void)q.start();
  CHECK(feed(q, concat({parse_complete(), bind_complete(), row_description({"a", "b"})})) ==
        Status::in_progress);
  CHECK(feed(q, concat({data_row({"1", std::nullopt}), data_row({"", "два"})})) == Status::in_progress);
  CHECK(feed(q, command_complete("SELECT 2")) == Status::in_progress);
  CHECK(feed(q, ready()) == Status::done);

  const auto& r = q.result();
  CHECK(r.columns == std::vector<std::string>{"a", "b"});
  REQUIRE(r.rows.size() == 2);
  CHECK(r.rows[0] == session::QueryRow{std::string("1"), std::nullopt});
  CHECK(r.rows[1] == session::QueryRow{std::string(""), std::string("два")});
  CHECK(r.command_tag == "SELECT 2");
  CHECK_FALSE(r.error);
  CHECK(r.tx_status == 'I');
}

TEST_CASE("query client: a statement without rows (NoData) gives just the tag") {
  QueryClient q("SET application_name = 'x'", {});
  (void)q.start();
  CHECK(feed(q, concat({parse_complete(), bind_complete(), no_data(), command_complete("SET"), ready()})) ==
        Status::done);
  CHECK(q.result().columns.empty());
  CHECK(q.result().rows.empty());
  CHECK(q.result().command_tag == "SET");
}

TEST_CASE("query client: an empty query completes with EmptyQueryResponse") {
  QueryClient q("", {});
  (void)q.start();
  CHECK(feed(q, concat({parse_complete(), bind_complete(), no_data(), msg('I', {}), ready()})) ==
        Status::done);
  CHECK(q.result().command_tag.empty());
  CHECK_FALSE(q.result().error);
}

TEST_CASE("query client: an ErrorResponse is data; the client waits for ReadyForQuery") {
  QueryClient q("SELECT * FROM missing", {});
  (void)q.start();
  SECTION("at Parse") {
    CHECK(feed(q, error_response("ERROR", "42P01", "relation \"missing\" does not exist")) ==
          Status::in_progress);
  }
  SECTION("after some rows") {
    CHECK(feed(q, concat({parse_complete(), bind_complete(), row_description({"a"}), data_row({"1"}),
                          error_response("ERROR", "22012", "division by zero")})) == Status::in_progress);
  }
  CHECK(feed(q, ready()) == Status::done);
  REQUIRE(q.result().error);
  CHECK(q.result().rows.empty());
  CHECK(q.result().command_tag.empty());
  CHECK((q.result().error->sqlstate() == "42P01" || q.result().error->sqlstate() == "22012"));
}

TEST_CASE("query client: an error at commit, after CommandComplete, still fails the query") {
  QueryClient q("INSERT INTO t VALUES (1)", {});
  (void)q.start();
  CHECK(feed(q, concat({parse_complete(), bind_complete(), no_data(), command_complete("INSERT 0 1"),
                        error_response("ERROR", "23503", "violates foreign key constraint"), ready()})) ==
        Status::done);
  REQUIRE(q.result().error);
  CHECK(q.result().error->sqlstate() == "23503");
  CHECK(q.result().command_tag.empty());
}

TEST_CASE("query client: notices, parameter status and notifications are ignored anywhere") {
  QueryClient q("SELECT 1", {});
  (void)q.start();
  Bytes notice = error_response("NOTICE", "00000", "hello", 'N');
  Bytes param_status = msg('S', body_cstrs({"TimeZone", "UTC"}));
  Bytes notification;
  {
    Bytes b;
    put_i32(b, 42);
    put_cstr(b, "chan");
    put_cstr(b, "payload");
    notification = msg('A', b);
  }
  CHECK(feed(q, concat({notice, parse_complete(), param_status, bind_complete(), notification,
                        row_description({"?column?"}), notice, data_row({"1"}), command_complete("SELECT 1"),
                        notice, ready('I')})) == Status::done);
  REQUIRE(q.result().rows.size() == 1);
  CHECK(q.result().rows[0][0] == std::optional<std::string>("1"));
}

TEST_CASE("query client: ReadyForQuery reports the transaction status") {
  QueryClient q("BEGIN", {});
  (void)q.start();
  CHECK(feed(q, concat({parse_complete(), bind_complete(), no_data(), command_complete("BEGIN"), ready('T')})) ==
        Status::done);
  CHECK(q.result().tx_status == 'T');
}

TEST_CASE("query client: protocol violations fail the exchange") {
  QueryClient q("SELECT a FROM t", {});
  (void)q.start();
  Status st = Status::in_progress;
  SECTION("ReadyForQuery too early") {
    st = feed(q, concat({parse_complete(), ready()}));
    CHECK(q.failure_reason() == "ReadyForQuery before the query completed");
  }
  SECTION("messages out of order") {
    st = feed(q, bind_complete());
    CHECK(q.failure_reason() == "unexpected message '2' from upstream while waiting for ParseComplete");
  }
  SECTION("a DataRow with the wrong number of columns") {
    st = feed(q, concat({parse_complete(), bind_complete(), row_description({"a"}), data_row({"1", "2"})}));
    CHECK(q.failure_reason() == "DataRow from upstream does not match its RowDescription");
  }
  SECTION("a DataRow whose value runs past the end") {
    Bytes b;
    put_i16(b, 1);
    put_i32(b, 10);
    put_str(b, "abc");
    st = feed(q, concat({parse_complete(), bind_complete(), row_description({"a"}), msg('D', b)}));
    CHECK(q.failure_reason() == "malformed DataRow from upstream");
  }
  SECTION("a DataRow with trailing bytes") {
    Bytes b;
    put_i16(b, 1);
    put_i32(b, 1);
    put_str(b, "ab");
    st = feed(q, concat({parse_complete(), bind_complete(), row_description({"a"}), msg('D', b)}));
    CHECK(q.failure_reason() == "malformed DataRow from upstream");
  }
  SECTION("a truncated RowDescription") {
    Bytes b;
    put_i16(b, 1);
    put_cstr(b, "a");
    st = feed(q, concat({parse_complete(), bind_complete(), msg('T', b)}));
    CHECK(q.failure_reason() == "malformed RowDescription from upstream");
  }
  SECTION("a malformed ErrorResponse") {
    st = feed(q, msg('E', Bytes{'M', 'x'}));
    CHECK(q.failure_reason() == "malformed ErrorResponse from upstream");
  }
  SECTION("COPY") {
    Bytes b{0};
    put_i16(b, 0);
    st = feed(q, concat({parse_complete(), bind_complete(), no_data(), msg('G', b)}));
    CHECK(q.failure_reason() == "COPY is not supported on a control connection");
  }
  SECTION("a message after ReadyForQuery") {
    st = feed(q, concat({parse_complete(), bind_complete(), no_data(), command_complete("SELECT 0"), ready()}));
    CHECK(st == Status::done);
    st = feed(q, ready());
    CHECK(q.failure_reason() == "message 'Z' after ReadyForQuery");
  }
  CHECK(st == Status::failed);
  CHECK(q.status() == Status::failed);
}

TEST_CASE("query client: a result over the size limit fails instead of growing without bound") {
  QueryClient q("SELECT big FROM t", {});
  (void)q.start();
  REQUIRE(feed(q, concat({parse_complete(), bind_complete(), row_description({"big"})})) == Status::in_progress);
  const std::string chunk(1024 * 1024, 'x');
  Bytes row;
  put_i16(row, 1);
  put_i32(row, std::int32_t(chunk.size()));
  put_str(row, chunk);
  Bytes row_msg = msg('D', row);
  Status st = Status::in_progress;
  for (int i = 0; i < 20 && st == Status::in_progress; ++i) st = feed(q, row_msg);
  CHECK(st == Status::failed);
  CHECK(q.failure_reason() == "the query result exceeds 16777216 bytes");
}

TEST_CASE("query client: an unsendable query fails before writing anything") {
  SECTION("NUL in the SQL") {
    QueryClient q(std::string("SELECT 1\0; DROP", 16), {});
    CHECK(q.start().empty());
    CHECK(q.status() == Status::failed);
    CHECK(q.failure_reason() == "the query text contains a NUL byte");
  }
  SECTION("too many parameters") {
    QueryClient q("SELECT 1", std::vector<session::QueryParam>(70000, std::string("v")));
    CHECK(q.start().empty());
    CHECK(q.status() == Status::failed);
    CHECK(q.failure_reason() == "the query has 70000 parameters; the protocol allows 65535");
  }
}

TEST_CASE("query client: take_result moves the result out") {
  QueryClient q("SELECT 1", {});
  (void)q.start();
  REQUIRE(feed(q, concat({parse_complete(), bind_complete(), row_description({"x"}), data_row({"1"}),
                          command_complete("SELECT 1"), ready()})) == Status::done);
  auto r = q.take_result();
  CHECK(r.columns == std::vector<std::string>{"x"});
  CHECK(r.command_tag == "SELECT 1");
}

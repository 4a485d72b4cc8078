// Scripts of one SQL-over-HTTP statement on an upstream connection: the exact
// frontend bytes, the JSON written from the backend's answer, errors, COPY,
// protocol violations and the result-size limit.
#include <catch2/catch.hpp>

#include "proxy/http/sql_exchange.hpp"
#include "tests/common/pg_bytes.hpp"

using namespace tokengate;
using namespace tokengate::protocol;
using namespace tokengate::test;
using http::ResultWriter;
using http::SqlExchange;
using Status = SqlExchange::Status;

namespace {

// Feeds whole messages one by one; returns the last step's status and
// collects what the exchange asked to write.
Status feed(SqlExchange& x, const Bytes& bytes, Bytes* written = nullptr) {
  ByteView rest(bytes);
  Status st = x.status();
  while (!rest.empty()) {
    auto fr = read_frame(rest);
    REQUIRE(fr.status == FrameStatus::complete);
    auto step = x.on_message(fr.frame);
    st = step.status;
    if (written) written->insert(written->end(), step.to_upstream.begin(), step.to_upstream.end());
    rest = rest.subspan(fr.frame.size);
  }
  return st;
}

Bytes parse_complete() { return msg('1', {}); }
Bytes bind_complete() { return msg('2', {}); }
Bytes no_data() { return msg('n', {}); }
Bytes ready(char status = 'I') { return msg('Z', Bytes{std::uint8_t(status)}); }
Bytes command_complete(std::string_view tag) { return msg('C', body_cstrs({tag})); }

Bytes row_description(std::initializer_list<std::tuple<std::string_view, std::int32_t, std::int16_t, std::int32_t,
                                                       std::int16_t, std::int32_t>>
                          cols,
                      std::int16_t format = 0) {
  Bytes b;
  put_i16(b, std::int16_t(cols.size()));
  for (auto [name, table, column, type, size, mod] : cols) {
    put_cstr(b, name);
    put_i32(b, table);
    put_i16(b, column);
    put_i32(b, type);
    put_i16(b, size);
    put_i32(b, mod);
    put_i16(b, format);
  }
  return msg('T', b);
}

Bytes data_row(std::initializer_list<std::optional<std::string_view>> values) {
  Bytes b;
  put_i16(b, std::int16_t(values.size()));
  for (auto v : values) {
    if (!v) {
      put_i32(b, -1);
      continue;
    }
    put_i32(b, std::int32_t(v->size()));
    put_str(b, *v);
  }
  return msg('D', b);
}

}  // namespace

TEST_CASE("a statement's frontend messages: Parse, Bind with text values, Describe, Execute, Sync", "[sql_exchange]") {
  std::string out;
  ResultWriter w(out, 1 << 20);
  SqlExchange x(&w, true, true);
  auto bytes = x.start("select $1, $2", {std::string("a"), std::nullopt});
  Bytes bind_body;
  put_cstr(bind_body, "");
  put_cstr(bind_body, "");
  put_i16(bind_body, 0);
  put_i16(bind_body, 2);
  put_i32(bind_body, 1);
  put_str(bind_body, "a");
  put_i32(bind_body, -1);
  put_i16(bind_body, 0);
  Bytes parse_body = body_cstrs({"", "select $1, $2"});
  put_i16(parse_body, 0);
  Bytes execute_body = body_cstrs({""});
  put_i32(execute_body, 0);
  CHECK(bytes == concat({msg('P', parse_body), msg('B', bind_body), msg('D', Bytes{'P', 0}), msg('E', execute_body),
                         msg('S', {})}));
}

TEST_CASE("rows become JSON as they arrive", "[sql_exchange]") {
  std::string out;
  ResultWriter w(out, 1 << 20);
  SqlExchange x(&w, true, false);
  (void)x.start("select", {});
  CHECK(feed(x, concat({parse_complete(), bind_complete(),
                        row_description({{"n", 0, 0, 23, 4, -1}, {"t", 16390, 2, 25, -1, -1}}),
                        msg('N', Bytes{0}),  // a notice in between is dropped
                        data_row({"1", "a"}), data_row({std::nullopt, "b\"c"}), command_complete("SELECT 2")})) ==
        Status::in_progress);
  CHECK(feed(x, ready('I')) == Status::done);
  CHECK_FALSE(x.error());
  CHECK(x.tx_status() == 'I');
  CHECK(out == R"({"rowAsArray":true,"fields":[{"name":"n","dataTypeID":23,"tableID":0,"columnID":0,"dataTypeSize":4,)"
               R"("dataTypeModifier":-1,"format":"text"},{"name":"t","dataTypeID":25,"tableID":16390,"columnID":2,)"
               R"("dataTypeSize":-1,"dataTypeModifier":-1,"format":"text"}],"rows":[[1,"a"],[null,"b\"c"]],)"
               R"("command":"SELECT","rowCount":2})");
}

TEST_CASE("a statement without rows, and one inside a transaction", "[sql_exchange]") {
  std::string out;
  ResultWriter w(out, 1 << 20);
  SqlExchange x(&w, false, true);
  (void)x.start("insert", {});
  CHECK(feed(x, concat({parse_complete(), bind_complete(), no_data(), command_complete("INSERT 0 3"), ready('T')})) ==
        Status::done);
  CHECK(x.tx_status() == 'T');
  CHECK(out == R"({"rowAsArray":false,"fields":[],"rows":[],"command":"INSERT","rowCount":3})");
}

TEST_CASE("an error is the statement's answer and the connection stays usable", "[sql_exchange]") {
  SqlExchange x(nullptr, true, true);
  (void)x.start("select 1/0", {});
  CHECK(feed(x, concat({parse_complete(), bind_complete(), row_description({{"?column?", 0, 0, 23, 4, -1}}),
                        error_response("ERROR", "22012", "division by zero"), ready('E')})) == Status::done);
  REQUIRE(x.error());
  CHECK(x.error()->sqlstate() == "22012");
  CHECK(x.error()->message() == "division by zero");
  CHECK(x.tx_status() == 'E');

  SECTION("a parse error comes before ParseComplete") {
    SqlExchange y(nullptr, true, true);
    (void)y.start("selec", {});
    CHECK(feed(y, concat({error_response("ERROR", "42601", "syntax error at or near \"selec\""), ready()})) ==
          Status::done);
    REQUIRE(y.error());
    CHECK(y.error()->sqlstate() == "42601");
  }
}

TEST_CASE("FATAL ends the exchange: the connection goes", "[sql_exchange]") {
  SqlExchange x(nullptr, true, true);
  (void)x.start("select pg_sleep(1)", {});
  CHECK(feed(x, concat({parse_complete(), error_response("FATAL", "57P01", "terminating connection")})) ==
        Status::failed);
  CHECK(x.failure_reason() == "upstream ended the connection: 57P01 terminating connection");
}

TEST_CASE("COPY TO STDOUT is drained and refused; COPY FROM STDIN is failed upstream", "[sql_exchange]") {
  SECTION("to stdout") {
    SqlExchange x(nullptr, true, true);
    (void)x.start("copy t to stdout", {});
    Bytes copy_out_body{0};
    put_i16(copy_out_body, 0);
    CHECK(feed(x, concat({parse_complete(), bind_complete(), no_data(), msg('H', copy_out_body),
                          msg('d', Bytes{'1', '\n'}), msg('c', {}), command_complete("COPY 1"), ready()})) ==
          Status::done);
    REQUIRE(x.error());
    CHECK(x.error()->sqlstate() == "0A000");
    CHECK(x.error()->message() == "COPY TO STDOUT is not supported over HTTP");
  }
  SECTION("from stdin") {
    SqlExchange x(nullptr, true, true);
    (void)x.start("copy t from stdin", {});
    Bytes copy_in_body{0};
    put_i16(copy_in_body, 0);
    Bytes written;
    CHECK(feed(x, concat({parse_complete(), bind_complete(), no_data(), msg('G', copy_in_body)}), &written) ==
          Status::in_progress);
    CHECK(written == concat({msg('f', body_cstrs({"COPY FROM STDIN is not supported over HTTP"})), msg('S', {})}));
    CHECK(feed(x, concat({error_response("ERROR", "57014",
                                         "COPY from stdin failed: COPY FROM STDIN is not supported over HTTP"),
                          ready()})) == Status::done);
    REQUIRE(x.error());
    CHECK(x.error()->sqlstate() == "57014");
  }
}

TEST_CASE("protocol violations from the upstream end the exchange", "[sql_exchange]") {
  auto violation = [](const Bytes& answer) {
    SqlExchange x(nullptr, true, true);
    (void)x.start("select 1", {});
    return feed(x, answer);
  };
  CHECK(violation(concat({parse_complete(), ready()})) == Status::failed);
  CHECK(violation(concat({bind_complete()})) == Status::failed);
  CHECK(violation(concat({parse_complete(), bind_complete(), row_description({{"a", 0, 0, 23, 4, -1}}),
                          data_row({"1", "2"})})) == Status::failed);
  CHECK(violation(concat({parse_complete(), bind_complete(), row_description({{"a", 0, 0, 23, 4, -1}}, 1)})) ==
        Status::failed);
  CHECK(violation(concat({parse_complete(), bind_complete(), no_data(), msg('W', Bytes{0, 0, 0})})) == Status::failed);
  CHECK(violation(msg('E', Bytes{'C'})) == Status::failed);
}

TEST_CASE("a result past the limit ends the exchange (the statement may still run upstream)", "[sql_exchange]") {
  std::string out;
  ResultWriter w(out, 300);
  SqlExchange x(&w, true, true);
  (void)x.start("select repeat('x', 100) from generate_series(1, 10)", {});
  std::string v(100, 'x');
  Bytes answer = concat({parse_complete(), bind_complete(), row_description({{"repeat", 0, 0, 25, -1, -1}})});
  for (int i = 0; i < 10; ++i) answer = concat({answer, data_row({std::string_view(v)})});
  CHECK(feed(x, answer) == Status::failed);
  CHECK(x.too_large());
  CHECK(x.failure_reason() == "the result is larger than 300 bytes");
}

TEST_CASE("statements that cannot be sent", "[sql_exchange]") {
  SqlExchange x(nullptr, true, true);
  CHECK(x.start(std::string("select 1\0", 9), {}).empty());
  CHECK(x.status() == Status::failed);
}

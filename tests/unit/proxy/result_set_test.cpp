// Byte-level tests of tokengate's own result sets: value encodings (text and
// binary), format-code rules, and every message writer of result_set.hpp.
#include <catch2/catch.hpp>

#include "proxy/protocol/result_set.hpp"
#include "tests/common/pg_bytes.hpp"

using namespace tokengate::protocol;
using tokengate::test::msg;
using tokengate::test::put_cstr;
using tokengate::test::put_i16;
using tokengate::test::put_i32;
using tokengate::test::put_str;

namespace {

constexpr std::int64_t k2026_07_20_0900 = 1'784'538'000;  // 2026-07-20 09:00:00 UTC

// One RowDescription field as PostgreSQL sends it for a computed column.
void put_field(Bytes& b, std::string_view name, std::int32_t oid, std::int16_t len, std::int16_t format) {
  put_cstr(b, name);
  put_i32(b, 0);
  put_i16(b, 0);
  put_i32(b, oid);
  put_i16(b, len);
  put_i32(b, -1);
  put_i16(b, format);
}

void put_value(Bytes& b, std::string_view v) {
  put_i32(b, std::int32_t(v.size()));
  put_str(b, v);
}

std::string be64(std::int64_t v) {
  std::string s;
  for (int shift = 56; shift >= 0; shift -= 8) s.push_back(char(std::uint8_t(std::uint64_t(v) >> shift)));
  return s;
}

}  // namespace

TEST_CASE("timestamptz text is PostgreSQL's ISO output with TimeZone UTC") {
  CHECK(format_timestamptz(Timestamp::from_unix_seconds(k2026_07_20_0900)) == "2026-07-20 09:00:00+00");
  CHECK(format_timestamptz(Timestamp::from_unix_seconds(kPostgresEpochUnixSeconds)) == "2000-01-01 00:00:00+00");
  CHECK(format_timestamptz(Timestamp::from_unix_seconds(0)) == "1970-01-01 00:00:00+00");
  CHECK(format_timestamptz(Timestamp::from_unix_seconds(1'709'251'199)) == "2024-02-29 23:59:59+00");
  CHECK(format_timestamptz(Timestamp::from_unix_seconds(-1)) == "1969-12-31 23:59:59+00");
  CHECK(format_timestamptz(Timestamp::from_unix_seconds(4'940'179'200)) == "2126-07-20 00:00:00+00");
  SECTION("the fraction appears only when there is one, without trailing zeros") {
    const std::int64_t base = k2026_07_20_0900 * 1'000'000;
    CHECK(format_timestamptz(Timestamp{base + 123456}) == "2026-07-20 09:00:00.123456+00");
    CHECK(format_timestamptz(Timestamp{base + 500000}) == "2026-07-20 09:00:00.5+00");
    CHECK(format_timestamptz(Timestamp{base + 1}) == "2026-07-20 09:00:00.000001+00");
    CHECK(format_timestamptz(Timestamp{-1}) == "1969-12-31 23:59:59.999999+00");
  }
}

TEST_CASE("binary values: int8 big-endian, timestamptz microseconds since 2000-01-01") {
  CHECK(encode_value(Timestamp::from_unix_seconds(kPostgresEpochUnixSeconds), kBinaryFormat) == be64(0));
  CHECK(postgres_micros(Timestamp::from_unix_seconds(k2026_07_20_0900)) == 837'853'200'000'000);
  CHECK(encode_value(Timestamp::from_unix_seconds(k2026_07_20_0900), kBinaryFormat) ==
        std::string("\x00\x02\xfa\x05\xe6\x5c\x24\x00", 8));
  CHECK(encode_value(Timestamp::from_unix_seconds(0), kBinaryFormat) == be64(-946'684'800'000'000));
  CHECK(encode_value(std::int64_t{1}, kBinaryFormat) == std::string("\0\0\0\0\0\0\0\x01", 8));
  CHECK(encode_value(std::int64_t{-2}, kBinaryFormat) == std::string(7, '\xff') + "\xfe");
  CHECK(encode_value(std::string("héllo"), kBinaryFormat) == "héllo");
  CHECK(encode_value(Value{}, kBinaryFormat) == std::nullopt);
}

TEST_CASE("text values: int8 decimal, text unchanged, NULL absent") {
  CHECK(encode_value(std::int64_t{-9'223'372'036'854'775'807 - 1}, kTextFormat) == "-9223372036854775808");
  CHECK(encode_value(std::int64_t{42}, kTextFormat) == "42");
  CHECK(encode_value(std::string("Токен для CI"), kTextFormat) == "Токен для CI");
  CHECK(encode_value(std::string(), kTextFormat) == "");
  CHECK(encode_value(Value{}, kTextFormat) == std::nullopt);
}

TEST_CASE("result format codes follow Bind's rules") {
  const std::int16_t none[] = {0};
  SECTION("no codes: every column text") {
    auto r = resolve_result_formats({}, 3);
    CHECK_FALSE(r.error);
    CHECK(r.formats == std::vector<std::int16_t>{0, 0, 0});
  }
  SECTION("one code applies to every column") {
    const std::int16_t one[] = {1};
    auto r = resolve_result_formats(one, 3);
    CHECK_FALSE(r.error);
    CHECK(r.formats == std::vector<std::int16_t>{1, 1, 1});
    CHECK(resolve_result_formats(none, 0).formats.empty());
  }
  SECTION("one code per column") {
    const std::int16_t each[] = {0, 1, 1};
    auto r = resolve_result_formats(each, 3);
    CHECK_FALSE(r.error);
    CHECK(r.formats == std::vector<std::int16_t>{0, 1, 1});
  }
  SECTION("another count is a protocol violation") {
    const std::int16_t two[] = {0, 1};
    auto r = resolve_result_formats(two, 3);
    REQUIRE(r.error);
    CHECK(r.error->sqlstate == "08P01");
    CHECK(r.error->message == "bind message has 2 result formats but query has 3 columns");
    CHECK(resolve_result_formats(two, 0).error->message ==
          "bind message has 2 result formats but query has 0 columns");
  }
  SECTION("a code other than 0 or 1") {
    const std::int16_t bad[] = {2};
    auto r = resolve_result_formats(bad, 1);
    REQUIRE(r.error);
    CHECK(r.error->sqlstate == "22023");
    CHECK(r.error->message == "unsupported format code: 2");
    CHECK_FALSE(resolve_result_formats(bad, 0).error);  // no column to format
  }
}

TEST_CASE("RowDescription: table 0, attnum 0, typmod -1, a format per column") {
  const std::vector<Column> cols{Column::text("name"), Column::int8("n"), Column::timestamptz("expires_at")};
  CHECK(Column::text("x") == Column{"x", 25, -1});
  CHECK(Column::int8("x") == Column{"x", 20, 8});
  CHECK(Column::timestamptz("x") == Column{"x", 1184, 8});

  Bytes body;
  put_i16(body, 3);
  put_field(body, "name", 25, -1, 0);
  put_field(body, "n", 20, 8, 0);
  put_field(body, "expires_at", 1184, 8, 0);
  Bytes got;
  write_row_description(got, cols);
  CHECK(got == msg('T', body));

  SECTION("binary where asked") {
    const std::int16_t formats[] = {0, 1, 1};
    Bytes want_body;
    put_i16(want_body, 3);
    put_field(want_body, "name", 25, -1, 0);
    put_field(want_body, "n", 20, 8, 1);
    put_field(want_body, "expires_at", 1184, 8, 1);
    Bytes binary;
    write_row_description(binary, cols, formats);
    CHECK(binary == msg('T', want_body));
  }
}

TEST_CASE("DataRow in text and binary") {
  const std::vector<Value> row{std::string("ci"), std::int64_t{7},
                               Timestamp::from_unix_seconds(k2026_07_20_0900), Value{}};
  SECTION("text") {
    Bytes body;
    put_i16(body, 4);
    put_value(body, "ci");
    put_value(body, "7");
    put_value(body, "2026-07-20 09:00:00+00");
    put_i32(body, -1);
    Bytes got;
    write_data_row(got, row);
    CHECK(got == msg('D', body));
  }
  SECTION("binary") {
    const std::int16_t formats[] = {1, 1, 1, 1};
    Bytes body;
    put_i16(body, 4);
    put_value(body, "ci");
    put_value(body, be64(7));
    put_value(body, be64(837'853'200'000'000));
    put_i32(body, -1);
    Bytes got;
    write_data_row(got, row, formats);
    CHECK(got == msg('D', body));
  }
  SECTION("mixed, and an empty string is not NULL") {
    const std::vector<Value> r2{std::string(), std::int64_t{7}};
    const std::int16_t formats[] = {0, 1};
    Bytes body;
    put_i16(body, 2);
    put_i32(body, 0);
    put_value(body, be64(7));
    Bytes got;
    write_data_row(got, r2, formats);
    CHECK(got == msg('D', body));
  }
}

TEST_CASE("the small messages") {
  Bytes got;
  write_command_complete(got, "DROP API TOKENS 3");
  Bytes cc;
  put_cstr(cc, "DROP API TOKENS 3");
  CHECK(got == msg('C', cc));

  auto one = [](void (*w)(Bytes&)) {
    Bytes b;
    w(b);
    return b;
  };
  CHECK(one(write_empty_query_response) == msg('I', {}));
  CHECK(one(write_no_data) == msg('n', {}));
  CHECK(one(write_parse_complete) == msg('1', {}));
  CHECK(one(write_bind_complete) == msg('2', {}));
  CHECK(one(write_close_complete) == msg('3', {}));
  CHECK(one(write_portal_suspended) == msg('s', {}));
  CHECK(one(write_parameter_description_none) == msg('t', {0, 0}));

  SECTION("writers append: several messages leave in one write") {
    Bytes b;
    write_parse_complete(b);
    write_bind_complete(b);
    write_command_complete(b, "SHOW");
    Bytes show;
    put_cstr(show, "SHOW");
    CHECK(b == tokengate::test::concat({msg('1', {}), msg('2', {}), msg('C', show)}));
  }
}

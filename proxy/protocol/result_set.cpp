// Text and binary encodings of tokengate's own result sets, and the backend
// messages that carry them.
#include "proxy/protocol/result_set.hpp"

#include <cstdio>

namespace tokengate::protocol {

namespace {

// Floor division and modulo: timestamps before 1970 still print correctly.
constexpr std::int64_t floor_div(std::int64_t a, std::int64_t b) noexcept {
  return a / b - ((a % b != 0) && ((a < 0) != (b < 0)));
}

struct CivilDate {
  std::int64_t year;
  unsigned month;
  unsigned day;
};

// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's civil_from_days).
constexpr CivilDate civil_from_days(std::int64_t z) noexcept {
  z += 719468;
  const std::int64_t era = floor_div(z, 146097);
  const auto doe = unsigned(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const std::int64_t y = std::int64_t(yoe) + era * 400;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  return {y + (m <= 2), m, d};
}

void append_be64(std::string& s, std::int64_t v) {
  auto u = std::uint64_t(v);
  for (int shift = 56; shift >= 0; shift -= 8) s.push_back(char(std::uint8_t(u >> shift)));
}

std::int16_t format_at(std::span<const std::int16_t> formats, std::size_t i) noexcept {
  if (formats.empty()) return kTextFormat;
  if (formats.size() == 1) return formats[0];
  return i < formats.size() ? formats[i] : kTextFormat;
}

void write_empty(Bytes& out, char tag) { MessageWriter w(out, tag); }

}  // namespace

std::string format_timestamptz(Timestamp t) {
  constexpr std::int64_t micros_per_day = 86'400'000'000;
  const std::int64_t days = floor_div(t.unix_micros, micros_per_day);
  std::int64_t in_day = t.unix_micros - days * micros_per_day;
  const CivilDate date = civil_from_days(days);
  const auto micros = unsigned(in_day % 1'000'000);
  in_day /= 1'000'000;
  const auto sec = unsigned(in_day % 60);
  const auto min = unsigned(in_day / 60 % 60);
  const auto hour = unsigned(in_day / 3600);

  // PostgreSQL prints years before 1 AD as "YYYY-MM-DD … BC"; the token store
  // never holds such dates, so only the AD form (at least 4 digits) is needed.
  char buf[64];
  int n = std::snprintf(buf, sizeof buf, "%04lld-%02u-%02u %02u:%02u:%02u", static_cast<long long>(date.year),
                        date.month, date.day, hour, min, sec);
  std::string s(buf, std::size_t(n));
  if (micros != 0) {
    n = std::snprintf(buf, sizeof buf, ".%06u", micros);
    std::string frac(buf, std::size_t(n));
    while (frac.back() == '0') frac.pop_back();  // PostgreSQL trims trailing zeros
    s += frac;
  }
  s += "+00";
  return s;
}

ResolvedFormats resolve_result_formats(std::span<const std::int16_t> codes, std::size_t columns) {
  ResolvedFormats r;
  if (codes.size() > 1 && codes.size() != columns) {
    // exec_bind_message → PortalSetResultFormat in src/backend/tcop/pquery.c
    r.error = ErrorResponse::make("ERROR", "08P01",
                                  "bind message has " + std::to_string(codes.size()) +
                                      " result formats but query has " + std::to_string(columns) +
                                      " columns");
    return r;
  }
  r.formats.reserve(columns);
  for (std::size_t i = 0; i < columns; ++i) {
    std::int16_t f = format_at(codes, i);
    if (f != kTextFormat && f != kBinaryFormat) {
      // printtup_prepare_info in src/backend/access/common/printtup.c
      r.error = ErrorResponse::make("ERROR", "22023", "unsupported format code: " + std::to_string(f));
      r.formats.clear();
      return r;
    }
    r.formats.push_back(f);
  }
  return r;
}

std::optional<std::string> encode_value(const Value& v, std::int16_t format) {
  const bool binary = format == kBinaryFormat;
  if (std::holds_alternative<std::monostate>(v)) return std::nullopt;
  if (const auto* s = std::get_if<std::string>(&v)) return *s;  // text: same bytes in both formats
  std::string out;
  if (const auto* i = std::get_if<std::int64_t>(&v)) {
    if (binary)
      append_be64(out, *i);
    else
      out = std::to_string(*i);
    return out;
  }
  const auto& t = std::get<Timestamp>(v);
  if (binary)
    append_be64(out, postgres_micros(t));
  else
    out = format_timestamptz(t);
  return out;
}

void write_row_description(Bytes& out, std::span<const Column> columns,
                           std::span<const std::int16_t> formats) {
  MessageWriter w(out, backend_tag::RowDescription);
  w.i16(std::int16_t(columns.size()));
  for (std::size_t i = 0; i < columns.size(); ++i) {
    const Column& c = columns[i];
    w.cstr(c.name);
    w.i32(0);   // table OID: not a table column
    w.i16(0);   // attribute number
    w.i32(c.type_oid);
    w.i16(c.type_len);
    w.i32(-1);  // type modifier
    w.i16(format_at(formats, i));
  }
}

void write_data_row(Bytes& out, std::span<const Value> values, std::span<const std::int16_t> formats) {
  MessageWriter w(out, backend_tag::DataRow);
  w.i16(std::int16_t(values.size()));
  for (std::size_t i = 0; i < values.size(); ++i) {
    auto bytes = encode_value(values[i], format_at(formats, i));
    if (!bytes) {
      w.i32(-1);
      continue;
    }
    w.i32(std::int32_t(bytes->size()));
    w.raw(std::string_view(*bytes));
  }
}

void write_command_complete(Bytes& out, std::string_view tag) {
  MessageWriter w(out, backend_tag::CommandComplete);
  w.cstr(tag);
}

void write_empty_query_response(Bytes& out) { write_empty(out, backend_tag::EmptyQueryResponse); }
void write_no_data(Bytes& out) { write_empty(out, backend_tag::NoData); }
void write_parse_complete(Bytes& out) { write_empty(out, backend_tag::ParseComplete); }
void write_bind_complete(Bytes& out) { write_empty(out, backend_tag::BindComplete); }
void write_close_complete(Bytes& out) { write_empty(out, backend_tag::CloseComplete); }
void write_portal_suspended(Bytes& out) { write_empty(out, backend_tag::PortalSuspended); }

void write_parameter_description_none(Bytes& out) {
  MessageWriter w(out, backend_tag::ParameterDescription);
  w.i16(0);
}

}  // namespace tokengate::protocol

// Result sets answered by tokengate itself: column types, values and their
// text/binary encodings, and the backend messages around them (RowDescription,
// DataRow, CommandComplete, the extended-protocol completions).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "proxy/protocol/messages.hpp"
#include "proxy/protocol/wire.hpp"

namespace tokengate::protocol {

// Type OIDs and lengths as in PostgreSQL's pg_type (src/include/catalog/pg_type.dat).
namespace type_oid {
inline constexpr std::int32_t int8 = 20;
inline constexpr std::int32_t text = 25;
inline constexpr std::int32_t timestamptz = 1184;
}  // namespace type_oid

// One column of a RowDescription. The table OID and attribute number are 0
// and the type modifier -1 (a computed column, as for `SELECT 1`).
struct Column {
  std::string name;
  std::int32_t type_oid = type_oid::text;
  std::int16_t type_len = -1;  // pg_type.typlen: -1 = variable length

  static Column text(std::string name) { return {std::move(name), type_oid::text, -1}; }
  static Column int8(std::string name) { return {std::move(name), type_oid::int8, 8}; }
  static Column timestamptz(std::string name) { return {std::move(name), type_oid::timestamptz, 8}; }
  bool operator==(const Column&) const = default;
};

// A point in time as microseconds since the Unix epoch (UTC); PostgreSQL's
// timestamptz has microsecond resolution. Build one from unix seconds (what
// the token store keeps) with from_unix_seconds.
struct Timestamp {
  std::int64_t unix_micros = 0;

  static constexpr Timestamp from_unix_seconds(std::int64_t s) noexcept { return {s * 1'000'000}; }
  bool operator==(const Timestamp&) const = default;
};

// A field value; monostate is SQL NULL. The alternative must match the
// column's type: string for text, int64 for int8, Timestamp for timestamptz.
using Value = std::variant<std::monostate, std::string, std::int64_t, Timestamp>;

// PostgreSQL's epoch for binary timestamps: 2000-01-01 00:00:00 UTC in unix seconds.
inline constexpr std::int64_t kPostgresEpochUnixSeconds = 946'684'800;

// Format codes of Bind's result-column list.
inline constexpr std::int16_t kTextFormat = 0;
inline constexpr std::int16_t kBinaryFormat = 1;

// Text as PostgreSQL prints a timestamptz with DateStyle ISO and TimeZone UTC:
// `2026-07-20 09:00:00+00`, with the fraction only when it is not zero and
// without trailing zeros (`09:00:00.5+00`, `09:00:00.123456+00`).
[[nodiscard]] std::string format_timestamptz(Timestamp t);

// Binary timestamptz: microseconds since 2000-01-01 00:00:00 UTC.
[[nodiscard]] constexpr std::int64_t postgres_micros(Timestamp t) noexcept {
  return t.unix_micros - kPostgresEpochUnixSeconds * 1'000'000;
}

// The format code of each of `columns` columns from Bind's result-format list
// (PostgreSQL's rules: none = all text, one = applies to every column,
// otherwise exactly one per column). Codes other than 0 and 1 are refused too.
// On error, the ErrorResponse PostgreSQL sends: 08P01 `bind message has 2
// result formats but query has 3 columns`, or 22023 `unsupported format code: 7`.
struct ResolvedFormats {
  std::vector<std::int16_t> formats;      // one per column when ok
  std::optional<ErrorResponse> error;     // set when the list is unusable
};
[[nodiscard]] ResolvedFormats resolve_result_formats(std::span<const std::int16_t> codes,
                                                     std::size_t columns);

// ---- writers: each appends one whole message to `out` ------------------------

// RowDescription; `formats` holds one code per column (see resolve_result_formats)
// or is empty for all text.
void write_row_description(Bytes& out, std::span<const Column> columns,
                           std::span<const std::int16_t> formats = {});
// DataRow; `formats` as for write_row_description. Each value is encoded for
// its own alternative (the caller keeps values and column types consistent).
void write_data_row(Bytes& out, std::span<const Value> values,
                    std::span<const std::int16_t> formats = {});
void write_command_complete(Bytes& out, std::string_view tag);
void write_empty_query_response(Bytes& out);
void write_no_data(Bytes& out);
void write_parse_complete(Bytes& out);
void write_bind_complete(Bytes& out);
void write_close_complete(Bytes& out);
// ParameterDescription listing no parameters (API TOKEN statements take none).
void write_parameter_description_none(Bytes& out);
void write_portal_suspended(Bytes& out);

// One value's bytes in the given format, without the length prefix; nullopt
// for NULL. Exposed for tests and the HTTP gateway's JSON rendering.
[[nodiscard]] std::optional<std::string> encode_value(const Value& v, std::int16_t format);

}  // namespace tokengate::protocol

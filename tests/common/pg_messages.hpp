// Builders of whole protocol messages for byte-script tests: frontend
// (Query, Parse, Bind, …) and backend (ReadyForQuery, DataRow, …), on top of
// the byte builders of pg_bytes.hpp.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

#include "tests/common/pg_bytes.hpp"

namespace tokengate::test::pg {

// ---- frontend ----
inline Bytes query(std::string_view sql) { return msg('Q', body_cstrs({sql})); }
inline Bytes parse(std::string_view name, std::string_view sql) {
  Bytes b = body_cstrs({name, sql});
  put_i16(b, 0);
  return msg('P', b);
}
inline Bytes bind(std::string_view portal, std::string_view stmt,
                  std::initializer_list<std::optional<std::string_view>> params = {},
                  std::initializer_list<std::int16_t> result_formats = {}) {
  Bytes b = body_cstrs({portal, stmt});
  put_i16(b, 0);  // parameter formats: all text
  put_i16(b, std::int16_t(params.size()));
  for (const auto& p : params) {
    if (!p) {
      put_i32(b, -1);
      continue;
    }
    put_i32(b, std::int32_t(p->size()));
    put_str(b, *p);
  }
  put_i16(b, std::int16_t(result_formats.size()));
  for (auto f : result_formats) put_i16(b, f);
  return msg('B', b);
}
inline Bytes describe(char kind, std::string_view name) {
  Bytes b{std::uint8_t(kind)};
  put_cstr(b, name);
  return msg('D', b);
}
inline Bytes execute(std::string_view portal = "", std::int32_t max_rows = 0) {
  Bytes b = body_cstrs({portal});
  put_i32(b, max_rows);
  return msg('E', b);
}
inline Bytes close(char kind, std::string_view name) {
  Bytes b{std::uint8_t(kind)};
  put_cstr(b, name);
  return msg('C', b);
}
inline Bytes sync() { return msg('S', {}); }
inline Bytes flush() { return msg('H', {}); }
inline Bytes terminate() { return msg('X', {}); }
inline Bytes copy_data(std::string_view data) {
  Bytes b;
  put_str(b, data);
  return msg('d', b);
}
inline Bytes copy_done() { return msg('c', {}); }

// ---- backend ----
inline Bytes ready(char status = 'I') { return msg('Z', Bytes{std::uint8_t(status)}); }
inline Bytes command_complete(std::string_view tag) { return msg('C', body_cstrs({tag})); }
inline Bytes parse_complete() { return msg('1', {}); }
inline Bytes bind_complete() { return msg('2', {}); }
inline Bytes close_complete() { return msg('3', {}); }
inline Bytes no_data() { return msg('n', {}); }
inline Bytes portal_suspended() { return msg('s', {}); }
inline Bytes empty_query() { return msg('I', {}); }
// A RowDescription of text columns.
inline Bytes row_description(std::initializer_list<std::string_view> columns) {
  Bytes b;
  put_i16(b, std::int16_t(columns.size()));
  for (auto c : columns) {
    put_cstr(b, c);
    put_i32(b, 0);
    put_i16(b, 0);
    put_i32(b, 25);
    put_i16(b, -1);
    put_i32(b, -1);
    put_i16(b, 0);
  }
  return msg('T', b);
}
inline Bytes data_row(std::initializer_list<std::optional<std::string_view>> values) {
  Bytes b;
  put_i16(b, std::int16_t(values.size()));
  for (const auto& v : values) {
    if (!v) {
      put_i32(b, -1);
      continue;
    }
    put_i32(b, std::int32_t(v->size()));
    put_str(b, *v);
  }
  return msg('D', b);
}
inline Bytes error(std::string_view sqlstate, std::string_view message, std::string_view severity = "ERROR") {
  return error_response(severity, sqlstate, message, 'E');
}
inline Bytes notice(std::string_view message) { return error_response("NOTICE", "00000", message, 'N'); }
inline Bytes notification(std::int32_t pid, std::string_view channel, std::string_view payload) {
  Bytes b;
  put_i32(b, pid);
  put_cstr(b, channel);
  put_cstr(b, payload);
  return msg('A', b);
}
inline Bytes parameter_status(std::string_view name, std::string_view value) {
  return msg('S', body_cstrs({name, value}));
}
// CopyInResponse / CopyOutResponse / CopyBothResponse ('G', 'H', 'W'): text, n columns.
inline Bytes copy_response(char tag, std::int16_t columns) {
  Bytes b{0};
  put_i16(b, columns);
  for (int i = 0; i < columns; ++i) put_i16(b, 0);
  return msg(tag, b);
}

}  // namespace tokengate::test::pg

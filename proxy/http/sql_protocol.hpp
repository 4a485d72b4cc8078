// The SQL-over-HTTP protocol of the @neondatabase/serverless driver, sans-io:
// the request (connection string, Neon-* headers, JSON body with $n
// parameters) and the JSON answers (fields, rows, command, rowCount; errors
// with PostgreSQL's fields). No sockets here: unit-tested byte for byte.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "proxy/http/message.hpp"
#include "proxy/protocol/messages.hpp"

namespace tokengate::http {

// ---- the request -------------------------------------------------------------

// The headers the driver sends (names compare case-insensitively).
inline constexpr std::string_view kConnectionStringHeader = "Neon-Connection-String";
inline constexpr std::string_view kRawTextOutputHeader = "Neon-Raw-Text-Output";
inline constexpr std::string_view kArrayModeHeader = "Neon-Array-Mode";
inline constexpr std::string_view kIsolationLevelHeader = "Neon-Batch-Isolation-Level";
inline constexpr std::string_view kReadOnlyHeader = "Neon-Batch-Read-Only";
inline constexpr std::string_view kDeferrableHeader = "Neon-Batch-Deferrable";

// A libpq-style URI, postgres[ql]://user:password@host:port/database?params.
// Host and port are not used: tokengate always relays to its own upstream.
struct ConnectionString {
  std::string user;                     // empty when the URI names none
  std::optional<std::string> password;  // a password or a token; never logged
  std::string database;                 // empty when the URI names none
  // Startup parameters passed upstream as a wire client's would be, in this
  // order when present: options, application_name. Other URI parameters
  // (sslmode, connect_timeout, …) concern the client's own connection and
  // are ignored.
  std::vector<std::pair<std::string, std::string>> parameters;
};

// nullopt (with `error` set, for a 400 answer) when the text is not such a
// URI or a decoded part holds a NUL byte (a startup packet cannot carry it).
[[nodiscard]] std::optional<ConnectionString> parse_connection_string(std::string_view text, std::string& error);

enum class IsolationLevel { read_uncommitted, read_committed, repeatable_read, serializable };

struct SqlQuery {
  std::string text;
  std::vector<std::optional<std::string>> params;  // text values; nullopt is NULL
  std::optional<bool> array_mode;                  // "arrayMode" of this query
};

struct SqlRequest {
  std::optional<ConnectionString> connection;  // from Neon-Connection-String
  std::vector<SqlQuery> queries;
  bool batch = false;  // {"queries": [...]}: one transaction, answered {"results": [...]}
  // Neon-Raw-Text-Output: true: every value as PostgreSQL's text; otherwise
  // booleans, small integers, floats, json and arrays become JSON values.
  bool raw_text_output = false;
  bool array_mode = false;  // Neon-Array-Mode: true: rows as arrays, else objects
  std::optional<IsolationLevel> isolation;  // batches only
  bool read_only = false;
  bool deferrable = false;
};

struct SqlRequestError {
  int status = 400;
  std::string sqlstate;
  std::string message;
};

// PostgreSQL's limit on a Bind's parameter count (an int16 on the wire).
inline constexpr std::size_t kMaxSqlParams = 65535;
// Statements in one batch: a batch is one transaction held open upstream
// while it runs; this bounds the work one request can queue.
inline constexpr std::size_t kMaxBatchQueries = 1000;
// Parameters of all a batch's statements together. Each one held costs about
// 40 bytes beyond its text, while the request waits for its login and a pooled
// connection: without this bound a 1 MiB body of `0,` parameters held 20 MiB,
// and a few hundred such requests (before any credential was checked) ended
// the process. One Bind's worth keeps a request within a few MiB.
inline constexpr std::size_t kMaxRequestParams = kMaxSqlParams;

// Reads the headers and the JSON body as the driver sends them:
//   {"query": "select $1", "params": [1], "arrayMode": true}
//   {"queries": [{"query": …, "params": […]}, …]}
// Parameters: null → NULL, a string as it is, numbers, booleans and objects
// as their JSON text, arrays as PostgreSQL array literals ({1,"a b",NULL}).
// Only a header value of exactly "true" turns an option on.
[[nodiscard]] std::variant<SqlRequest, SqlRequestError> parse_sql_request(const HttpRequest& request);

// The statement that opens a batch's transaction: "BEGIN", or with
// ISOLATION LEVEL …, READ ONLY, DEFERRABLE as the headers ask.
[[nodiscard]] std::string begin_statement(const SqlRequest& request);

// A JSON value given as a parameter, as PostgreSQL text (see parse_sql_request).
// Exposed for tests.
[[nodiscard]] std::optional<std::string> json_parameter_text(std::string_view json, std::string& error);

// ---- the answer ----------------------------------------------------------------

// One column of a RowDescription, as the driver's `fields` list names it.
struct FieldDescription {
  std::string name;
  std::uint32_t table_oid = 0;      // tableID
  std::int16_t column_id = 0;       // columnID
  std::uint32_t type_oid = 0;       // dataTypeID
  std::int16_t type_size = -1;      // dataTypeSize
  std::int32_t type_modifier = -1;  // dataTypeModifier
  bool operator==(const FieldDescription&) const = default;
};

// The command and row count of a command tag, as the driver reports them:
// "INSERT 0 5" → INSERT, 5; "SELECT 3" → SELECT, 3; "CREATE TABLE" → CREATE, none.
struct CommandTag {
  std::string_view command;
  std::optional<std::int64_t> row_count;
};
[[nodiscard]] CommandTag parse_command_tag(std::string_view tag) noexcept;

// Writes the JSON answer into `out` as results arrive, so rows are never held
// twice: {"results":[ … ]} around a batch, and for each statement
//   {"rowAsArray":true,"fields":[…],"rows":[…],"command":"SELECT","rowCount":1}
// A row that would take `out` past `max_bytes` is refused (the answer is
// then replaced by an error): the limit bounds what one request can make
// tokengate hold.
class ResultWriter {
 public:
  ResultWriter(std::string& out, std::size_t max_bytes) : out_(out), max_bytes_(max_bytes) {}

  void begin_batch();
  void begin_result(bool array_mode, bool raw_text_output);
  void fields(std::span<const FieldDescription> fields);
  // One DataRow's values (nullopt: NULL), one per field. False when the
  // answer grew past max_bytes; nothing more may be written then.
  [[nodiscard]] bool row(std::span<const std::optional<std::string_view>> values);
  void end_result(std::string_view command_tag);
  void end_batch();

  [[nodiscard]] std::size_t max_bytes() const noexcept { return max_bytes_; }

 private:
  void value(const std::optional<std::string_view>& v, std::uint32_t type_oid);

  std::string& out_;
  std::size_t max_bytes_;
  std::vector<FieldDescription> fields_;
  bool array_mode_ = false;
  bool raw_ = false;
  bool first_result_ = true;
  bool first_row_ = true;
};

// PostgreSQL's text of a value as the JSON value the driver's typed mode
// gives: bool → true/false; int2, int4 → numbers; float4, float8 → numbers
// (NaN and ±Infinity as strings); json, jsonb → the JSON itself; arrays of
// built-in types → JSON arrays of their elements; anything else a string.
void append_typed_value(std::string& out, std::string_view text, std::uint32_t type_oid);

// Appends `text` as a JSON string. Bytes that are not UTF-8 (a SQL_ASCII
// database can send any) become U+FFFD, so the answer is always valid JSON.
void append_json_string(std::string& out, std::string_view text);

// The error answer the driver reads (status 400 and others): every field of
// the ErrorResponse under the driver's names: message, code, severity,
// detail, hint, position, internalPosition, internalQuery, where, schema,
// table, column, dataType, constraint, file, line, routine (absent fields
// are left out).
[[nodiscard]] std::string error_json(const protocol::ErrorFields& fields);
[[nodiscard]] std::string error_json(const protocol::ErrorResponse& error);
[[nodiscard]] std::string error_json(std::string_view sqlstate, std::string_view message,
                                     std::string_view detail = {}, std::string_view hint = {});

}  // namespace tokengate::http

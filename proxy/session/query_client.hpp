// Running one parameterized query on a logged-in upstream connection, as a
// sans-io state machine: writes Parse/Bind/Describe/Execute/Sync (extended
// protocol, unnamed statement and portal, text format) and collects the
// column names, rows, command tag or ErrorResponse until ReadyForQuery.
// tokengate's own catalog look-ups use it; the SQL is fixed
// text and every value travels as a parameter, never spliced into the SQL.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "proxy/protocol/frame.hpp"
#include "proxy/protocol/messages.hpp"

namespace tokengate::session {

// A bound text parameter; nullopt is SQL NULL.
using QueryParam = std::optional<std::string>;
// One column value in text format; nullopt is SQL NULL.
using QueryValue = std::optional<std::string>;
using QueryRow = std::vector<QueryValue>;

struct QueryResult {
  std::vector<std::string> columns;  // from RowDescription; empty with NoData
  std::vector<QueryRow> rows;        // each exactly columns.size() long
  std::string command_tag;           // "SELECT 1"; empty for an empty query or an error
  // Set when the upstream answered with an ErrorResponse (the query failed,
  // the connection is still usable unless the severity is FATAL or PANIC).
  std::optional<protocol::ErrorFields> error;
  char tx_status = protocol::tx_status::Idle;  // from ReadyForQuery
};

// Control queries return a handful of rows; a result larger than this is a
// misconfigured auth_query, not something to buffer (bytes of all values).
inline constexpr std::size_t kMaxQueryResultBytes = 16 * 1024 * 1024;
// Bind carries the parameter count as an int16 (PostgreSQL caps it at 65535).
inline constexpr std::size_t kMaxQueryParams = 65535;

class QueryClient {
 public:
  QueryClient(std::string sql, std::vector<QueryParam> params);

  // The messages to write first: Parse, Bind, Describe (portal), Execute, Sync.
  // Empty when the query cannot be sent (a NUL byte in the SQL, too many
  // parameters): then status() is already failed.
  protocol::Bytes start();

  enum class Status {
    in_progress,  // feed the next complete backend message
    done,         // ReadyForQuery arrived: result() is complete (rows or error)
    failed,       // protocol violation or unsendable query: close the connection
  };

  // Feeds one complete backend message.
  Status on_message(const protocol::Frame& frame);

  Status status() const noexcept { return status_; }
  // Valid after done; take_result() moves it out.
  const QueryResult& result() const noexcept { return result_; }
  QueryResult take_result() { return std::move(result_); }
  // Why the exchange failed, for the log (never contains parameter values).
  const std::string& failure_reason() const noexcept { return failure_reason_; }

 private:
  enum class State {
    await_parse,     // sent the batch; waiting for ParseComplete (or an error)
    await_bind,      // waiting for BindComplete
    await_describe,  // waiting for RowDescription or NoData (Describe portal)
    await_rows,      // DataRow* until CommandComplete or EmptyQueryResponse
    await_ready,     // done or errored: skipping to ReadyForQuery (Sync's answer)
    finished,
  };
  Status fail(std::string reason);
  Status on_row(const protocol::Frame& frame);
  Status on_row_description(const protocol::Frame& frame);

  std::string sql_;
  std::vector<QueryParam> params_;
  State state_ = State::await_parse;
  Status status_ = Status::in_progress;
  QueryResult result_;
  std::size_t result_bytes_ = 0;
  std::string failure_reason_;
};

}  // namespace tokengate::session

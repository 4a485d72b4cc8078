// One statement of an SQL-over-HTTP request on a logged-in upstream
// connection, as a sans-io state machine: writes Parse/Bind/Describe/Execute/
// Sync (unnamed statement and portal, text parameters and results) and feeds
// what comes back into a ResultWriter as it arrives, so rows are turned into
// JSON without being held as objects. The driver performs the I/O.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "proxy/http/sql_protocol.hpp"
#include "proxy/protocol/frame.hpp"
#include "proxy/protocol/messages.hpp"

namespace tokengate::http {

class SqlExchange {
 public:
  // `writer` (may be null: results are then dropped, for tokengate's own
  // statements such as BEGIN) must outlive the exchange. `query` is copied
  // into the messages by start() and not kept.
  SqlExchange(ResultWriter* writer, bool array_mode, bool raw_text_output)
      : writer_(writer), array_mode_(array_mode), raw_(raw_text_output) {}

  // The messages to write: Parse, Bind, Describe (portal), Execute, Sync.
  // The text must hold no NUL byte (parse_sql_request refuses one) and at
  // most kMaxSqlParams parameters; otherwise the exchange fails at once.
  protocol::Bytes start(const std::string& text, const std::vector<std::optional<std::string>>& params);

  enum class Status {
    in_progress,  // write to_upstream (if any), then feed the next message
    done,         // ReadyForQuery: the connection is idle again (see tx_status)
    failed,       // the connection cannot be used any more: close it
  };
  struct Step {
    Status status = Status::in_progress;
    protocol::Bytes to_upstream;  // CopyFail + Sync when the statement was COPY FROM STDIN
  };

  // Feeds one complete backend message.
  Step on_message(const protocol::Frame& frame);

  [[nodiscard]] Status status() const noexcept { return status_; }
  // After done: the statement's error (also a COPY refused here), if any.
  [[nodiscard]] const std::optional<protocol::ErrorFields>& error() const noexcept { return error_; }
  // After done: ReadyForQuery's transaction status.
  [[nodiscard]] char tx_status() const noexcept { return tx_status_; }
  // After failed: the result outgrew the writer's limit (the statement may
  // still be running upstream, so the connection goes).
  [[nodiscard]] bool too_large() const noexcept { return too_large_; }
  // Why the exchange failed, for the log (never parameter values).
  [[nodiscard]] const std::string& failure_reason() const noexcept { return failure_reason_; }

 private:
  enum class State {
    await_parse,     // ParseComplete (or an error, then ReadyForQuery)
    await_bind,      // BindComplete
    await_describe,  // RowDescription or NoData
    await_rows,      // DataRow* until CommandComplete or EmptyQueryResponse
    copy_out,        // CopyData* until CopyDone: dropped, the statement is refused
    copy_in,         // sent CopyFail + Sync: the ErrorResponse, then ReadyForQuery
    await_ready,     // done or errored: skipping to ReadyForQuery (Sync's answer)
    finished,
  };
  Step fail(std::string reason);
  Step on_row_description(const protocol::Frame& frame);
  Step on_row(const protocol::Frame& frame);
  void refuse(std::string message);

  ResultWriter* writer_;
  bool array_mode_;
  bool raw_;
  State state_ = State::await_parse;
  Status status_ = Status::in_progress;
  std::size_t columns_ = 0;
  std::vector<std::optional<std::string_view>> values_;  // reused for each DataRow
  std::optional<protocol::ErrorFields> error_;
  char tx_status_ = protocol::tx_status::Idle;
  bool too_large_ = false;
  std::string failure_reason_;
};

}  // namespace tokengate::http

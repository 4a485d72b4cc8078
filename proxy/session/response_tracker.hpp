// Follows which client message each upstream response belongs to, so that
// answers tokengate gives itself (API TOKEN statements) reach the client in
// the order of the client's messages, and are skipped after an upstream error
// exactly as PostgreSQL skips messages until Sync. Sans-io: the
// relay feeds it the messages it forwards and the bytes it receives.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <vector>

#include "proxy/protocol/wire.hpp"

namespace tokengate::session {

class ResponseTracker {
 public:
  // What a forwarded client message is answered with, and what ends it.
  enum class Expect : std::uint8_t {
    query,          // Query: everything up to and including ReadyForQuery
    function_call,  // FunctionCall: FunctionCallResponse/Error, then ReadyForQuery
    parse,          // ParseComplete or ErrorResponse
    bind,           // BindComplete or ErrorResponse
    describe,       // [ParameterDescription] RowDescription/NoData, or ErrorResponse
    execute,        // rows, then CommandComplete/EmptyQueryResponse/PortalSuspended/ErrorResponse
    close,          // CloseComplete or ErrorResponse
    sync,           // ReadyForQuery
  };
  // The expectation for a client message tag, or false for messages that get
  // no response of their own (Flush, CopyData/Done/Fail, Terminate).
  static bool expectation_for(char tag, Expect& out) noexcept;

  explicit ResponseTracker(char initial_tx_status = 'I') : tx_status_(initial_tx_status) {}

  // ---- client side --------------------------------------------------------
  // A message was forwarded upstream. With suppress_ready, the ReadyForQuery
  // ending a query is not passed to the client (one Query split in parts).
  void sent(Expect e, bool suppress_ready = false);
  // True when an error (upstream or local) occurred since the last Sync the
  // client sent: PostgreSQL ignores every message until the next Sync.
  bool skipping_until_sync() const noexcept { return failed_group_ == send_group_; }
  // A local answer failed: what follows until Sync must be skipped too.
  void fail_current_group() noexcept { failed_group_ = send_group_; }

  // ---- upstream side --------------------------------------------------------
  // Feeds a chunk of upstream bytes; appends the [begin, end) ranges of it to
  // pass to the client (all of it, except suppressed ReadyForQuery messages).
  // Returns false on an impossible message length.
  bool feed(protocol::ByteView chunk, std::vector<std::pair<std::size_t, std::size_t>>& forward);

  // No forwarded message is waiting for its response.
  bool idle() const noexcept { return queue_.empty(); }
  // Transaction status of the last ReadyForQuery seen (suppressed ones too).
  char tx_status() const noexcept { return tx_status_; }
  // Count of ErrorResponses seen; compare before/after to learn whether a
  // forwarded part failed.
  std::uint64_t errors_seen() const noexcept { return errors_seen_; }
  std::size_t outstanding() const noexcept { return queue_.size(); }

 private:
  struct Entry {
    Expect expect;
    bool suppress_ready;
    std::uint64_t group;  // Syncs sent before it
  };
  void on_message_start(char tag);
  void on_message_end(char tag);

  std::deque<Entry> queue_;
  std::uint64_t send_group_ = 0;
  std::uint64_t failed_group_ = UINT64_MAX;
  char tx_status_;
  std::uint64_t errors_seen_ = 0;

  // Upstream framing state.
  char tag_ = 0;
  std::uint8_t len_bytes_[4]{};
  std::size_t len_have_ = 0;
  bool in_header_ = false;  // tag seen, length incomplete
  std::uint64_t body_left_ = 0;
  bool dropping_ = false;   // current message is not passed on
};

}  // namespace tokengate::session

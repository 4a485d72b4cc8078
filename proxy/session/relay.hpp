// The relay phase of a client session as a sans-io state machine: it is fed
// the client's bytes, the upstream's bytes and the results of the API TOKEN
// statements it asked to run, and says what to write where. It owns the
// framing of both streams, skip-to-Sync, local prepared statements and
// portals, the order of local answers, and where in the client stream a local
// answer may go (only between two upstream messages). The driver
// (net/relay.cpp) performs what it says; unit tests drive it byte by byte.
//
// Zero copy: what goes through unchanged is handed back as ranges of the
// bytes just fed (DataRow, CopyData, most client messages), so the driver
// writes straight from its read buffer. The machine copies only what it must
// keep: a message split across reads that it has to inspect, client bytes
// that arrived while a local answer waits, and a header split across reads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "parser_ext/ast.hpp"
#include "parser_ext/lexer.hpp"
#include "parser_ext/split.hpp"
#include "proxy/protocol/messages.hpp"
#include "proxy/protocol/wire.hpp"
#include "proxy/session/memory.hpp"
#include "proxy/session/token_sql.hpp"

namespace tokengate::session {

struct RelayOptions {
  // The upstream's transaction status from the ReadyForQuery that ended the login.
  char tx_status = protocol::tx_status::Idle;
  // A Query, Parse (or Bind/Describe/Execute/Close that may concern a local
  // statement) up to this size is buffered whole and inspected; a longer one
  // streams through (see "Oversized messages" in relay.cpp).
  std::size_t max_inspected_message = kDefaultMaxInspectedMessage;
  std::size_t session_memory_limit = kDefaultSessionMemoryLimit;
  MemoryBudget* process_memory = nullptr;  // null: no process-wide limit
  // A token session that may not change passwords (the session was opened
  // with a token, and managing credentials from one is off): a Query or
  // Parse that holds CREATE/ALTER ROLE … PASSWORD
  // (parser_ext::changes_role_password) is answered with ERROR 42501 and
  // never reaches the upstream.
  bool refuse_password_changes = false;
  // Session settings the statement splitter depends on, as the upstream
  // reported them during the login; the machine follows later ParameterStatus.
  bool standard_conforming_strings = true;
  std::string client_encoding = "UTF8";
};

// An API TOKEN statement the driver must run (LocalSql), then hand the result
// to Relay::on_statement_result. `tx_status` is the upstream's transaction
// status at this point of the client's stream.
struct StatementRequest {
  parser_ext::Statement statement;
  char tx_status = protocol::tx_status::Idle;
};

class Relay {
 public:
  explicit Relay(RelayOptions options);
  ~Relay();
  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;

  // ---- inputs ----------------------------------------------------------------
  // Bytes read from the client / the upstream. Output slices may point into
  // `data`: write or copy every output before `data` goes away.
  void on_client_bytes(protocol::ByteView data);
  void on_upstream_bytes(protocol::ByteView data);
  // The result of the statement of the last take_statement_request().
  void on_statement_result(LocalResult result);
  // End of stream (or a read error) on either side.
  void on_client_eof();
  void on_upstream_eof();
  // Ends the session: nothing more goes upstream, the message the client is
  // receiving is completed, then `why` (FATAL) is sent and both sides close.
  void end(protocol::ErrorResponse why);

  // ---- outputs ---------------------------------------------------------------
  // Bytes to write, in order: slices of the bytes fed in this call, or of
  // bytes the machine owns (local answers, injected messages, copies).
  class Output {
   public:
    template <typename F>
    void for_each(F&& f) const {
      for (std::size_t i = 0; i < count_; ++i) {
        const Slice& s = i < kInline ? inline_[i] : more_[i - kInline];
        f(protocol::ByteView(s.ptr != nullptr ? s.ptr : owned_.data() + s.begin, s.size));
      }
    }
    bool empty() const noexcept { return count_ == 0; }
    std::size_t bytes() const noexcept { return bytes_; }
    std::size_t slices() const noexcept { return count_; }
    // Every slice in one vector (tests, slow paths).
    protocol::Bytes flatten() const;

   private:
    friend class Relay;
    struct Slice {
      const std::uint8_t* ptr;  // into the fed bytes; null: owned_[begin, begin + size)
      std::size_t begin;
      std::size_t size;
    };
    static constexpr std::size_t kInline = 2;
    Slice& at(std::size_t i) { return i < kInline ? inline_[i] : more_[i - kInline]; }
    void push(const Slice& s);
    void add_input(const std::uint8_t* p, std::size_t n);
    void add_owned(const std::uint8_t* p, std::size_t n);
    void clear();

    Slice inline_[kInline]{};
    std::vector<Slice> more_;
    std::size_t count_ = 0;
    std::size_t bytes_ = 0;
    protocol::Bytes owned_;
  };
  const Output& to_upstream() const noexcept { return to_upstream_; }
  const Output& to_client() const noexcept { return to_client_; }
  // The driver wrote or copied every slice of both outputs.
  void output_done();

  // A statement to run, handed out once.
  std::optional<StatementRequest> take_statement_request();

  // False while the machine holds client bytes (a local answer waits for the
  // upstream or a statement): the driver stops reading the client, which
  // bounds what is held.
  bool wants_client_bytes() const noexcept;
  bool wants_upstream_bytes() const noexcept { return !finished_; }
  // Write the output, then close both sides.
  bool finished() const noexcept { return finished_; }

  // Why the session ended, once finished().
  enum class Ending {
    none,
    client_terminated,    // Terminate
    client_closed,        // end of stream without Terminate
    upstream_closed,
    client_protocol_violation,    // impossible message length: closed silently, as PostgreSQL does
    upstream_protocol_violation,  // impossible length, or a message out of place
    ended,                // end(), a memory limit, or an oversized message that could not be checked
  };
  Ending ending() const noexcept { return ending_; }
  // A sentence for the log when ending() is not a normal one.
  const std::string& ending_detail() const noexcept { return ending_detail_; }

  // ---- observers (driver, tests) ------------------------------------------------
  char tx_status() const noexcept { return tx_; }
  bool standard_conforming_strings() const noexcept { return lex_.standard_conforming_strings; }
  // How statements are split: the session's settings as the upstream reported them.
  const parser_ext::LexOptions& lex_options() const noexcept { return lex_; }
  // No upstream message is partly received.
  bool upstream_at_boundary() const noexcept { return u_hdr_have_ == 0 && u_left_ == 0; }
  std::size_t outstanding() const noexcept { return q_.size() - q_head_; }
  const MemoryAccount& memory() const noexcept { return memory_; }
  MemoryAccount& memory() noexcept { return memory_; }

 private:
  // What a forwarded client message is answered with, and what ends it.
  enum class Expect : std::uint8_t { query, function_call, parse, bind, describe, execute, close, sync };
  struct Expectation {
    std::uint64_t group;  // Syncs sent before it
    Expect expect;
    bool suppress_ready;  // a part of a split Query: its ReadyForQuery is not the client's
    bool swallow;         // injected by tokengate: its answer does not reach the client
    bool keeps_block;     // execute of COMMIT/ROLLBACK … AND CHAIN or ROLLBACK TO
    bool named;           // parse or close of a named statement: name_fifo_ holds the name
  };
  struct LocalPortal {
    parser_ext::Statement statement;
    std::vector<std::int16_t> result_formats;
    std::optional<LocalResult> result;  // run at the first Execute
    ExecuteCursor cursor;
    std::uint64_t group;  // Syncs sent before its Bind
  };
  struct Job;  // a local answer in progress (relay.cpp)
  enum class CState : std::uint8_t { header, pass, inspect };
  enum class PassMode : std::uint8_t { forward, drop, scan };

  // ---- client side ----
  void consume_client(const std::uint8_t* p, std::size_t n);
  bool hold(const std::uint8_t* p, std::size_t n);
  void on_client_header(const std::uint8_t* hdr, bool hdr_in_input, const std::uint8_t* p, std::size_t n,
                        std::size_t& pos);
  void handle_whole(char tag, protocol::ByteView message);
  void handle_oversized(char tag, protocol::ByteView prefix);
  bool inspects(char tag) const noexcept;
  bool names_needed() const noexcept;
  void forward_message(char tag, protocol::ByteView message);
  void start_local(char tag, protocol::ByteView message);
  void sent(Expect e, bool suppress_ready = false, bool swallow = false, bool keeps_block = false,
            bool named = false);
  bool skipping_until_sync() const noexcept { return failed_group_ == send_group_; }
  void emit_upstream(const std::uint8_t* p, std::size_t n);
  void emit_upstream_owned(const protocol::Bytes& b);
  void scan_words(const std::uint8_t* p, std::size_t n);
  void finish_scanned_message();

  // ---- local answers ----
  void pump();
  void advance_job();
  bool can_answer_now() const noexcept;
  void run_query_job();
  void run_extended_job();
  void fail_query(const protocol::ErrorResponse& e);
  void fail_extended(const protocol::ErrorResponse& e);
  void inject_failure(bool with_sync);
  void emit_client(const protocol::Bytes& b);
  void ready_for_query();

  // ---- upstream side ----
  void consume_upstream(const std::uint8_t* p, std::size_t n);
  void upstream_message_start(char tag);
  void upstream_message_end();
  void complete_expectation(char tag);
  void apply_command_tag(std::string_view tag, const Expectation* execute);
  bool upstream_fatal_after(char tag) const noexcept;

  // ---- endings, memory ----
  void finish(Ending e, std::string detail = {});
  void try_finish_end();
  bool reserve(protocol::Bytes& b, std::size_t needed);
  void release(protocol::Bytes& b);
  void out_of_memory(MemoryAccount::Charge why);

  RelayOptions opt_;
  MemoryAccount memory_;
  Output to_upstream_, to_client_;
  const std::uint8_t* client_in_begin_ = nullptr;  // the bytes of the current on_client_bytes
  const std::uint8_t* client_in_end_ = nullptr;
  const std::uint8_t* upstream_in_begin_ = nullptr;
  const std::uint8_t* upstream_in_end_ = nullptr;

  // Client framing.
  CState cstate_ = CState::header;
  std::uint8_t c_hdr_[5]{};
  std::size_t c_hdr_have_ = 0;
  std::uint64_t c_left_ = 0;  // body bytes of the current passed message still to come
  PassMode c_mode_ = PassMode::forward;
  protocol::Bytes inspect_;     // a message being made whole (header included)
  std::size_t inspect_total_ = 0;
  protocol::Bytes held_;        // client bytes not processed while a local answer waits
  // Oversized Query/Parse streaming through: its last byte is held back until
  // the whole text was scanned for words that may start what must not pass.
  std::uint8_t scan_word_[9]{};
  std::size_t scan_word_len_ = 0;
  std::uint8_t scan_last_ = 0;
  bool scan_candidate_ = false;
  char scan_tag_ = 0;

  // Expected answers, oldest first (a ring in a vector).
  std::vector<Expectation> q_;
  std::size_t q_head_ = 0;
  // Statement names of `named` expectations, in order: the upstream's set of
  // names changes when their answers arrive.
  std::vector<std::string> name_fifo_;
  std::size_t name_fifo_head_ = 0;
  std::uint64_t send_group_ = 0;
  std::uint64_t failed_group_ = UINT64_MAX;
  bool unflushed_ = false;          // extended messages sent since the last Sync/Flush/Query
  bool forwarded_in_group_ = false;  // something went upstream since the last Sync
  std::uint64_t errors_seen_ = 0;
  char tx_ = protocol::tx_status::Idle;

  // Names: local statements and portals, statements prepared upstream (for
  // 42P05), and upstream statements/portals whose COMMIT/ROLLBACK tag does not
  // end the block.
  // Allocated on first use: most sessions never name anything.
  struct Names {
    std::unordered_map<std::string, parser_ext::Statement> statements;
    std::unordered_map<std::string, LocalPortal> portals;
    std::unordered_set<std::string> upstream;
    std::unordered_set<std::string> keeps_block_statements;
    std::unordered_set<std::string> keeps_block_portals;
  };
  std::unique_ptr<Names> names_;
  Names& names() {
    if (!names_) names_ = std::make_unique<Names>();
    return *names_;
  }
  // For looking only: allocates nothing.
  const Names& known() const {
    static const Names none;
    return names_ ? *names_ : none;
  }

  // Local answers.
  std::unique_ptr<Job> job_;
  std::unique_ptr<StatementRequest> request_;

  // Upstream framing.
  std::uint8_t u_hdr_[5]{};
  std::size_t u_hdr_have_ = 0;
  std::uint64_t u_left_ = 0;
  std::uint64_t u_len_ = 0;
  char u_tag_ = 0;
  bool u_forward_ = true;
  bool u_capture_ = false;
  std::string u_body_;  // captured body (ReadyForQuery, ParameterStatus, CommandComplete, ErrorResponse)
  bool upstream_fatal_ = false;

  parser_ext::LexOptions lex_;

  // Ending: after end(), the current upstream message is completed, then
  // end_error_ goes to the client.
  bool draining_ = false;
  std::unique_ptr<protocol::ErrorResponse> end_error_;
  bool finished_ = false;
  Ending ending_ = Ending::none;
  std::string ending_detail_;
};

// True for COMMIT/END/ROLLBACK/ABORT … AND CHAIN and ROLLBACK … TO [SAVEPOINT]:
// statements whose command tag (COMMIT, ROLLBACK) does not mean that the
// transaction block ended.
[[nodiscard]] bool keeps_transaction_block(std::string_view sql) noexcept;

}  // namespace tokengate::session

// The relay machine (see relay.hpp): client framing and routing, local
// answers in order, upstream framing and the expected-answer queue.
//
// Oversized messages. A Query or Parse longer than max_inspected_message is
// not buffered whole. Its first max_inspected_message bytes are, the rest
// streams through as it arrives, and the whole text is scanned on the way
// for the words that can start what tokengate must see whole: `api` (every
// API TOKEN statement has it) and, in a session that may not change
// passwords, `password`. The message's last byte is held back until the scan
// is done: when neither word occurs the byte follows and PostgreSQL runs the
// message; otherwise the session ends with FATAL 54000 and the upstream
// connection is closed without that byte, so PostgreSQL never sees a whole
// message and runs nothing of it. Memory stays bounded whatever the length.
#include "proxy/session/relay.hpp"

#include <algorithm>
#include <cstring>

#include "parser_ext/classifier.hpp"
#include "parser_ext/parser.hpp"
#include "parser_ext/role_password.hpp"
#include "proxy/protocol/frame.hpp"
#include "proxy/protocol/result_set.hpp"

namespace tokengate::session {

namespace ft = protocol::frontend_tag;
namespace bt = protocol::backend_tag;
using protocol::ByteView;
using protocol::Bytes;
using protocol::ErrorResponse;

namespace {

constexpr std::size_t kHeader = 5;
// The relay reads a few upstream message bodies: ReadyForQuery (1 byte),
// ParameterStatus (a reported setting; its longest value, application_name,
// is under 64 bytes), CommandComplete tags, and an ErrorResponse's severity.
// Longer bodies are passed on without being read past this.
constexpr std::size_t kMaxCapturedBody = 256;
// The smallest max_inspected_message accepted: room for any API TOKEN
// statement with a short comment.
constexpr std::size_t kMinInspectedMessage = 1024;
// Output and queue storage above these is freed once empty, so that an idle
// session holds (almost) no heap memory.
constexpr std::size_t kKeepOwnedCapacity = 512;
constexpr std::size_t kKeepQueueCapacity = 16;
// A pooled session records the settings the upstream reports. PostgreSQL 15
// reports 14 (GUC_REPORT); extensions may add a few. More names than this
// mean a backend tokengate cannot describe to the next client: it is not
// reused.
constexpr std::size_t kMaxRecordedParameters = 64;

// A Parse PostgreSQL refuses with a syntax error, sent to put the upstream's
// transaction into the failed state after a local error, as an error of the
// statement itself would have. Named: an unnamed Parse would first drop the
// client's unnamed statement, while a named one that fails to parse touches
// nothing. Its ErrorResponse never reaches the client. The text says in the
// server log what happened.
constexpr std::string_view kFailureStatementName = "tokengate_failed_api_token_statement";
constexpr std::string_view kFailureSql = "tokengate: an API TOKEN statement failed in this transaction";

ErrorResponse error(std::string sqlstate, std::string message) {
  return ErrorResponse::make("ERROR", std::move(sqlstate), std::move(message));
}

// PostgreSQL's answers to a name that does not exist (or no longer: a
// portal ends with its transaction, at the Sync before the message runs).
ErrorResponse no_such_statement(const std::string& name) {
  if (name.empty()) return error("26000", "unnamed prepared statement does not exist");
  return error("26000", "prepared statement \"" + name + "\" does not exist");
}
ErrorResponse no_such_portal(const std::string& name) {
  return error("34000", "portal \"" + name + "\" does not exist");
}

ErrorResponse parse_error_response(const parser_ext::ParseError& e) {
  auto out = error(std::string(parser_ext::sqlstate(e.code)), e.message);
  out.detail = e.detail;
  out.hint = e.hint;
  out.position = e.position;
  return out;
}

ErrorResponse create_in_transaction_block() {
  // As PostgreSQL refuses CREATE DATABASE: a token is a secret shown once, and
  // a ROLLBACK could not take it back.
  return error("25001", "CREATE API TOKEN cannot run inside a transaction block");
}

ErrorResponse password_change_refused() {
  auto e = error("42501", "a session opened with an API token cannot change passwords");
  e.hint = "Log in with the role's password to change it.";
  return e;
}

std::string_view text_of_query(ByteView body) {
  auto text = protocol::as_chars(body);
  if (!text.empty() && text.back() == '\0') text.remove_suffix(1);
  return text;
}

bool is_ident_byte(std::uint8_t c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c >= 0x80;
}

}  // namespace

// ---- keeps_transaction_block -----------------------------------------------------

bool keeps_transaction_block(std::string_view sql) noexcept {
  using parser_ext::TxControl;
  const TxControl t = parser_ext::classify_transaction_control(sql);
  return t == TxControl::commit_and_chain || t == TxControl::rollback_and_chain ||
         t == TxControl::rollback_to_savepoint;
}

// ---- Output ----------------------------------------------------------------------

void Relay::Output::push(const Slice& s) {
  if (count_ < kInline) inline_[count_] = s;
  else more_.push_back(s);
  ++count_;
  bytes_ += s.size;
}

void Relay::Output::add_input(const std::uint8_t* p, std::size_t n) {
  if (n == 0) return;
  if (count_ > 0) {
    Slice& last = at(count_ - 1);
    if (last.ptr != nullptr && last.ptr + last.size == p) {
      last.size += n;
      bytes_ += n;
      return;
    }
  }
  push({p, 0, n});
}

void Relay::Output::add_owned(const std::uint8_t* p, std::size_t n) {
  if (n == 0) return;
  const std::size_t begin = owned_.size();
  owned_.insert(owned_.end(), p, p + n);
  if (count_ > 0) {
    Slice& last = at(count_ - 1);
    if (last.ptr == nullptr && last.begin + last.size == begin) {
      last.size += n;
      bytes_ += n;
      return;
    }
  }
  push({nullptr, begin, n});
}

void Relay::Output::clear() {
  count_ = 0;
  bytes_ = 0;
  owned_.clear();
  more_.clear();
  if (owned_.capacity() > kKeepOwnedCapacity) Bytes().swap(owned_);
  if (more_.capacity() > kKeepQueueCapacity) std::vector<Slice>().swap(more_);
}

Bytes Relay::Output::flatten() const {
  Bytes out;
  out.reserve(bytes_);
  for_each([&](ByteView v) { out.insert(out.end(), v.begin(), v.end()); });
  return out;
}

// ---- a local answer in progress -------------------------------------------------------

struct Relay::Job {
  enum class Wait : std::uint8_t { none, idle, result };
  char tag = 0;
  Bytes message;  // the whole client message, header included
  Wait wait = Wait::idle;
  int phase = 0;
  std::optional<ErrorResponse> preset_error;  // decided when the message arrived
  // Query: the text is inside `message`; parts' spans refer to it.
  std::vector<parser_ext::QueryPart> parts;
  std::size_t next = 0;
  std::uint64_t errors_before = 0;
  std::optional<LocalResult> result;

  ByteView body() const { return ByteView(message).subspan(kHeader); }
  std::string_view text() const { return text_of_query(body()); }
};

Relay::Relay(RelayOptions options)
    : opt_(std::move(options)),
      memory_(opt_.session_memory_limit, opt_.process_memory),
      tx_(opt_.tx_status),
      lex_{opt_.standard_conforming_strings, parser_ext::client_encoding_from_name(opt_.client_encoding)} {
  opt_.max_inspected_message = std::max(opt_.max_inspected_message, kMinInspectedMessage);
}

Relay::~Relay() = default;

// ---- inputs --------------------------------------------------------------------------

void Relay::on_client_bytes(ByteView data) {
  if (finished_ || draining_ || data.empty()) return;
  client_in_begin_ = data.data();
  client_in_end_ = data.data() + data.size();
  if (job_ || !held_.empty()) {
    // The driver had a read in flight when the machine stopped wanting bytes.
    hold(data.data(), data.size());
  } else {
    consume_client(data.data(), data.size());
    pump();
  }
  client_in_begin_ = client_in_end_ = nullptr;
}

void Relay::on_upstream_bytes(ByteView data) {
  if (finished_ || data.empty()) return;
  upstream_in_begin_ = data.data();
  upstream_in_end_ = data.data() + data.size();
  consume_upstream(data.data(), data.size());
  upstream_in_begin_ = upstream_in_end_ = nullptr;
}

void Relay::on_statement_result(LocalResult result) {
  if (finished_ || draining_ || !job_ || job_->wait != Job::Wait::result) return;
  job_->result = std::move(result);
  // The answer still waits for an upstream message boundary.
  job_->wait = Job::Wait::idle;
  pump();
}

void Relay::on_client_eof() {
  if (finished_) return;
  // A client that goes away without Terminate leaves the backend as clean as
  // one that says goodbye, if nothing of its was left half-sent.
  if (opt_.pooled_upstream && upstream_idle()) upstream_reusable_ = true;
  finish(Ending::client_closed, "the client closed the connection");
}

void Relay::on_upstream_eof() {
  if (finished_) return;
  if (draining_ && upstream_at_boundary()) {
    try_finish_end();
    return;
  }
  finish(draining_ ? Ending::ended : Ending::upstream_closed, "the upstream server closed the connection");
}

void Relay::end(ErrorResponse why) {
  if (finished_ || draining_) return;
  draining_ = true;
  end_error_ = std::make_unique<ErrorResponse>(std::move(why));
  job_.reset();
  request_.reset();
  release(held_);
  release(inspect_);
  try_finish_end();
}

void Relay::try_finish_end() {
  if (!draining_ || finished_ || !upstream_at_boundary()) return;
  Bytes b;
  end_error_->serialize(b);
  emit_client(b);
  finish(Ending::ended, end_error_->message);
}

void Relay::finish(Ending e, std::string detail) {
  if (finished_) return;
  finished_ = true;
  ending_ = e;
  ending_detail_ = std::move(detail);
  job_.reset();
  request_.reset();
  release(held_);
  release(inspect_);
}

void Relay::output_done() {
  to_upstream_.clear();
  to_client_.clear();
}

std::optional<StatementRequest> Relay::take_statement_request() {
  if (!request_) return std::nullopt;
  auto r = std::move(*request_);
  request_.reset();
  return r;
}

bool Relay::upstream_idle() const noexcept {
  return !finished_ && !draining_ && cstate_ == CState::header && c_hdr_have_ == 0 && held_.empty() && !job_ &&
         !request_ && outstanding() == 0 && upstream_at_boundary() && !forwarded_in_group_ && !unflushed_ &&
         tx_ == protocol::tx_status::Idle && !upstream_fatal_ && !parameters_lost_;
}

void Relay::record_parameter(std::string_view name, std::string_view value) {
  for (auto& [n, v] : parameter_changes_) {
    if (n == name) {
      v.assign(value);
      return;
    }
  }
  if (parameter_changes_.size() >= kMaxRecordedParameters) {
    parameters_lost_ = true;
    return;
  }
  parameter_changes_.emplace_back(std::string(name), std::string(value));
}

bool Relay::wants_client_bytes() const noexcept { return !finished_ && !draining_ && !job_ && held_.empty(); }

// ---- memory --------------------------------------------------------------------------

bool Relay::reserve(Bytes& b, std::size_t needed) {
  if (needed <= b.capacity()) return true;
  // Grow with what arrived, geometrically, never to a length a peer announced.
  const std::size_t cap = std::max(needed, b.capacity() * 2);
  if (auto c = memory_.charge(cap - b.capacity()); c != MemoryAccount::Charge::ok) {
    out_of_memory(c);
    return false;
  }
  b.reserve(cap);
  return true;
}

void Relay::release(Bytes& b) {
  memory_.refund(b.capacity());
  Bytes().swap(b);
}

void Relay::out_of_memory(MemoryAccount::Charge why) {
  auto e = ErrorResponse::make("FATAL", "53200", "out of memory");
  if (why == MemoryAccount::Charge::session_limit)
    e.detail = "The session's buffers would exceed relay.session_memory_limit (" +
               std::to_string(memory_.limit()) + " bytes).";
  else
    e.detail = "tokengate's relay buffers would exceed relay.memory_limit (" +
               std::to_string(memory_.process()->limit()) + " bytes).";
  end(std::move(e));
}

// ---- client side -------------------------------------------------------------------

void Relay::emit_upstream(const std::uint8_t* p, std::size_t n) {
  if (p >= client_in_begin_ && p < client_in_end_) to_upstream_.add_input(p, n);
  else to_upstream_.add_owned(p, n);
}

void Relay::emit_upstream_owned(const Bytes& b) { to_upstream_.add_owned(b.data(), b.size()); }

void Relay::emit_client(const Bytes& b) { to_client_.add_owned(b.data(), b.size()); }

bool Relay::hold(const std::uint8_t* p, std::size_t n) {
  if (!reserve(held_, held_.size() + n)) return false;
  held_.insert(held_.end(), p, p + n);
  return true;
}

bool Relay::names_needed() const noexcept {
  return names_ && (!names_->statements.empty() || !names_->portals.empty() ||
                    !names_->keeps_block_statements.empty() || !names_->keeps_block_portals.empty());
}

bool Relay::inspects(char tag) const noexcept {
  switch (tag) {
    case ft::Query:
    case ft::Parse: return true;
    case ft::Bind:
    case ft::Describe:
    case ft::Execute: return names_needed();
    case ft::Close: return true;  // small and rare; its name leaves the upstream's set
    default: return false;
  }
}

void Relay::consume_client(const std::uint8_t* p, std::size_t n) {
  std::size_t pos = 0;
  while (pos < n && !finished_ && !draining_) {
    if (job_) {
      hold(p + pos, n - pos);
      return;
    }
    switch (cstate_) {
      case CState::pass: {
        const auto take = std::size_t(std::min<std::uint64_t>(c_left_, n - pos));
        const bool last = take == c_left_;
        if (c_mode_ == PassMode::scan) {
          scan_words(p + pos, take);
          emit_upstream(p + pos, last ? take - 1 : take);
          if (last) scan_last_ = p[pos + take - 1];
        } else if (c_mode_ == PassMode::forward) {
          emit_upstream(p + pos, take);
        }
        c_left_ -= take;
        pos += take;
        if (last) {
          cstate_ = CState::header;
          if (c_mode_ == PassMode::scan) finish_scanned_message();
        }
        break;
      }
      case CState::inspect: {
        const std::size_t goal = std::min(inspect_total_, opt_.max_inspected_message);
        const std::size_t take = std::min(goal - inspect_.size(), n - pos);
        if (!reserve(inspect_, inspect_.size() + take)) return;
        inspect_.insert(inspect_.end(), p + pos, p + pos + take);
        pos += take;
        if (inspect_.size() < goal) break;
        Bytes m;
        m.swap(inspect_);
        cstate_ = CState::header;
        const char tag = char(m[0]);
        if (m.size() == inspect_total_) handle_whole(tag, m);
        else handle_oversized(tag, m);
        release(m);
        break;
      }
      case CState::header: {
        const std::uint8_t* hdr;
        bool in_input;
        if (c_hdr_have_ == 0 && n - pos >= kHeader) {
          hdr = p + pos;
          in_input = true;
        } else {
          const std::size_t take = std::min(kHeader - c_hdr_have_, n - pos);
          std::memcpy(c_hdr_ + c_hdr_have_, p + pos, take);
          c_hdr_have_ += take;
          pos += take;
          if (c_hdr_have_ < kHeader) return;  // the rest of the header comes later
          c_hdr_have_ = 0;
          hdr = c_hdr_;
          in_input = false;
        }
        on_client_header(hdr, in_input, p, n, pos);
        break;
      }
    }
  }
}

// A client message header is complete: `hdr` points at it (into the input at
// p + pos when in_input, else at c_hdr_ with pos already past it).
void Relay::on_client_header(const std::uint8_t* hdr, bool in_input, const std::uint8_t* p, std::size_t n,
                             std::size_t& pos) {
  const char tag = char(hdr[0]);
  const std::uint32_t len = protocol::load_u32(hdr + 1);
  if (len < 4 || len > protocol::kMaxMessageLength) {
    // PostgreSQL logs "invalid message length" and closes without a word.
    finish(Ending::client_protocol_violation, "invalid message length from the client");
    return;
  }
  const std::size_t total = std::size_t(len) + 1;
  const std::size_t body = len - 4;

  // A pooled backend the client leaves idle goes back to the pool: it must
  // not see the Terminate. Otherwise the Terminate is forwarded (below), and
  // the backend exits as it would without tokengate.
  if (tag == ft::Terminate && len == 4 && opt_.pooled_upstream && upstream_idle()) {
    if (in_input) pos += kHeader;
    upstream_reusable_ = true;
    finish(Ending::client_terminated);
    return;
  }

  // After an error PostgreSQL ignores everything but Sync until Sync.
  if (skipping_until_sync() && tag != ft::Sync && tag != ft::Terminate) {
    if (in_input) pos += kHeader;
    c_left_ = body;
    c_mode_ = PassMode::drop;
    cstate_ = body > 0 ? CState::pass : CState::header;
    return;
  }

  if (inspects(tag)) {
    if (in_input && total <= opt_.max_inspected_message && n - pos >= total) {
      handle_whole(tag, ByteView(p + pos, total));  // the common case: no copy
      pos += total;
      return;
    }
    // Make it whole (or its first max_inspected_message bytes), growing the
    // buffer with the bytes that arrive.
    inspect_total_ = total;
    if (!reserve(inspect_, kHeader)) return;
    inspect_.assign(hdr, hdr + kHeader);
    if (in_input) pos += kHeader;
    if (total == kHeader) {
      Bytes m;
      m.swap(inspect_);
      handle_whole(tag, m);
      release(m);
      return;
    }
    cstate_ = CState::inspect;
    return;
  }

  forward_message(tag, ByteView(hdr, kHeader));
  if (in_input) pos += kHeader;
  if (finished_) return;
  c_left_ = body;
  c_mode_ = PassMode::forward;
  cstate_ = body > 0 ? CState::pass : CState::header;
}

// Sends `message` (whole, or only its header when the body streams after it)
// upstream and records what answers it.
void Relay::forward_message(char tag, ByteView message) {
  emit_upstream(message.data(), message.size());
  switch (tag) {
    case ft::Query:
      sent(Expect::query);
      unflushed_ = false;  // a ReadyForQuery flushes everything before it
      break;
    case ft::FunctionCall:
      sent(Expect::function_call);
      unflushed_ = false;
      break;
    case ft::Parse: sent(Expect::parse); break;
    case ft::Bind: sent(Expect::bind); break;
    case ft::Describe: sent(Expect::describe); break;
    case ft::Execute: sent(Expect::execute); break;
    case ft::Close: sent(Expect::close); break;
    case ft::Sync:
      sent(Expect::sync);
      unflushed_ = false;
      forwarded_in_group_ = false;
      break;
    case ft::Flush: unflushed_ = false; break;
    case ft::Terminate: finish(Ending::client_terminated); break;
    default: break;  // CopyData/CopyDone/CopyFail and unknown types: no answer of their own
  }
}

void Relay::sent(Expect e, bool suppress_ready, bool swallow, bool keeps_block, bool named) {
  if (e != Expect::sync && e != Expect::query && e != Expect::function_call) {
    unflushed_ = true;
    forwarded_in_group_ = true;
  }
  // Messages after an error, before Sync, get no answer: not waited for.
  if (e != Expect::sync && skipping_until_sync()) {
    if (named) name_fifo_.pop_back();
    return;
  }
  if (q_.size() == q_.capacity()) {
    const std::size_t grow = std::max<std::size_t>(8, q_.capacity()) * sizeof(Expectation);
    if (auto c = memory_.charge(grow); c != MemoryAccount::Charge::ok) {
      out_of_memory(c);
      return;
    }
    q_.reserve(std::max<std::size_t>(8, q_.capacity() * 2));
  }
  q_.push_back({send_group_, e, suppress_ready, swallow, keeps_block, named});
  if (e == Expect::sync) ++send_group_;
}

void Relay::handle_whole(char tag, ByteView message) {
  const ByteView body = message.subspan(kHeader);
  protocol::BodyReader r(body);
  switch (tag) {
    case ft::Query: {
      const std::string_view text = text_of_query(body);
      if (opt_.refuse_password_changes && parser_ext::changes_role_password(text, lex_)) {
        start_local(tag, message);
        job_->preset_error = password_change_refused();
        return;
      }
      if (!parser_ext::query_may_contain_api_token_statement(text)) break;
      auto plan = parser_ext::plan_query(text, lex_);
      if (auto* parts = std::get_if<std::vector<parser_ext::QueryPart>>(&plan)) {
        const bool all_ordinary =
            !parts->empty() && std::all_of(parts->begin(), parts->end(), [](const parser_ext::QueryPart& part) {
              return std::holds_alternative<parser_ext::OrdinarySql>(part);
            });
        if (all_ordinary) break;
        start_local(tag, message);
        job_->parts = std::move(*parts);
      } else {
        start_local(tag, message);
        job_->preset_error = parse_error_response(std::get<parser_ext::ParseError>(plan));
      }
      return;
    }
    case ft::Parse: {
      auto name = r.cstr();
      auto text = r.cstr();
      if (!name || !text) break;  // malformed: the upstream says so
      const bool refuse = opt_.refuse_password_changes && parser_ext::changes_role_password(*text, lex_);
      const bool local =
          refuse ||
          // Anywhere in the text, not only first: "SELECT 1; DROP API TOKEN x"
          // gets PostgreSQL's several-commands error from us, so the API TOKEN
          // statement never reaches the upstream or its log.
          (parser_ext::query_may_contain_api_token_statement(*text) &&
           !std::holds_alternative<parser_ext::NotApiTokenStatement>(parser_ext::parse_statement(*text, lex_))) ||
          (!name->empty() && known().statements.count(std::string(*name)) > 0);  // 42P05, answered locally
      if (local) {
        start_local(tag, message);
        if (refuse) job_->preset_error = password_change_refused();
        return;
      }
      // The upstream's unnamed statement replaces a local unnamed one.
      if (name->empty() && names_) names_->statements.erase(std::string());
      std::string n(*name);
      if (keeps_transaction_block(*text)) names().keeps_block_statements.insert(n);
      else if (names_) names_->keeps_block_statements.erase(n);
      emit_upstream(message.data(), message.size());
      const bool named = !n.empty();
      if (named) name_fifo_.push_back(std::move(n));
      sent(Expect::parse, false, false, false, named);
      return;
    }
    case ft::Bind: {
      auto portal = r.cstr();
      auto stmt = r.cstr();
      if (!portal || !stmt) break;
      if (known().statements.count(std::string(*stmt))) {
        start_local(tag, message);
        return;
      }
      std::string p(*portal);
      if (names_) names_->portals.erase(p);
      if (known().keeps_block_statements.count(std::string(*stmt))) names().keeps_block_portals.insert(p);
      else if (names_) names_->keeps_block_portals.erase(p);
      break;
    }
    case ft::Describe:
    case ft::Close: {
      auto kind = r.u8();
      auto name = r.cstr();
      if (!kind || !name) break;
      std::string n(*name);
      const bool local = *kind == 'S' ? known().statements.count(n) > 0 : known().portals.count(n) > 0;
      if (local) {
        start_local(tag, message);
        return;
      }
      if (tag == ft::Close) {
        if (*kind == 'S') {
          if (names_) names_->keeps_block_statements.erase(n);
          emit_upstream(message.data(), message.size());
          const bool named = !n.empty();
          if (named) name_fifo_.push_back(std::move(n));
          sent(Expect::close, false, false, false, named);
          return;
        }
        if (names_) names_->keeps_block_portals.erase(n);
      }
      break;
    }
    case ft::Execute: {
      auto portal = r.cstr();
      if (!portal) break;
      std::string p(*portal);
      if (known().portals.count(p)) {
        start_local(tag, message);
        return;
      }
      emit_upstream(message.data(), message.size());
      sent(Expect::execute, false, false, known().keeps_block_portals.count(p) > 0);
      return;
    }
    default: break;
  }
  forward_message(tag, message);
}

// The first max_inspected_message bytes of a longer message: decide from
// them, then let the rest stream (or drop it).
void Relay::handle_oversized(char tag, ByteView prefix) {
  const ByteView body = prefix.subspan(kHeader);
  protocol::BodyReader r(body);
  const std::size_t rest = inspect_total_ - prefix.size();
  auto stream_rest = [&](PassMode mode) {
    c_left_ = rest;
    c_mode_ = mode;
    cstate_ = CState::pass;
  };
  auto too_large = [&]() {
    auto e = ErrorResponse::make("FATAL", "54000", "message too long for tokengate to inspect");
    e.detail = "A message of type '" + std::string(1, tag) + "' and " + std::to_string(inspect_total_) +
               " bytes cannot be checked within relay.max_inspected_message (" +
               std::to_string(opt_.max_inspected_message) + " bytes).";
    end(std::move(e));
  };
  auto local_error = [&](ErrorResponse e) {
    stream_rest(PassMode::drop);  // the rest is held with what follows, then dropped
    start_local(tag, prefix);
    job_->preset_error = std::move(e);
  };
  switch (tag) {
    case ft::Query:
    case ft::Parse: {
      bool named = false;
      std::string n;
      if (tag == ft::Parse) {
        auto name = r.cstr();
        if (name && !name->empty() && known().statements.count(std::string(*name))) {
          local_error(error("42P05", "prepared statement \"" + std::string(*name) + "\" already exists"));
          return;
        }
        if (name) {
          n = std::string(*name);
          named = !n.empty();
          if (names_ && name->empty()) names_->statements.erase(std::string());
          if (names_) names_->keeps_block_statements.erase(n);
        }
      }
      scan_word_len_ = 0;
      scan_candidate_ = false;
      scan_tag_ = tag;
      scan_words(body.data(), body.size());
      emit_upstream(prefix.data(), prefix.size());
      if (tag == ft::Query) {
        sent(Expect::query);
        unflushed_ = false;
      } else {
        if (named) name_fifo_.push_back(std::move(n));
        sent(Expect::parse, false, false, false, named);
      }
      stream_rest(PassMode::scan);
      return;
    }
    case ft::Bind:
    case ft::Describe:
    case ft::Execute:
    case ft::Close: {
      std::optional<std::string_view> first, second;
      std::optional<std::uint8_t> kind;
      if (tag == ft::Describe || tag == ft::Close) kind = r.u8();
      first = r.cstr();
      if (tag == ft::Bind) second = r.cstr();
      if (!first || (tag == ft::Bind && !second) || ((tag == ft::Describe || tag == ft::Close) && !kind)) {
        too_large();
        return;
      }
      bool local = false;
      const Names& k = known();
      if (tag == ft::Bind) local = k.statements.count(std::string(*second)) > 0;
      else if (tag == ft::Execute) local = k.portals.count(std::string(*first)) > 0;
      else local = *kind == 'S' ? k.statements.count(std::string(*first)) > 0 : k.portals.count(std::string(*first)) > 0;
      if (local) {
        // A local statement takes no parameters; nothing this long fits it.
        if (tag == ft::Bind) {
          auto nformats = r.i16();
          for (int i = 0; nformats && i < *nformats; ++i) r.i16();
          auto nparams = r.i16();
          if (nparams && *nparams != 0) {
            local_error(error("08P01", "bind message supplies " + std::to_string(*nparams) +
                                           " parameters, but prepared statement \"" + std::string(*second) +
                                           "\" requires 0"));
            return;
          }
        }
        local_error(error("08P01", "invalid message format"));
        return;
      }
      if (tag == ft::Bind) {
        std::string p(*first);
        if (names_) {
          names_->portals.erase(p);
          names_->keeps_block_portals.erase(p);
        }
      }
      if (tag == ft::Close && *kind == 'S' && !first->empty()) {
        emit_upstream(prefix.data(), prefix.size());
        name_fifo_.push_back(std::string(*first));
        sent(Expect::close, false, false, false, true);
        stream_rest(PassMode::forward);
        return;
      }
      forward_message(tag, prefix);
      stream_rest(PassMode::forward);
      return;
    }
    default:
      forward_message(tag, prefix);
      stream_rest(PassMode::forward);
      return;
  }
}

// Whole words `api` (and `password` when password changes are refused) in the
// text of an oversized message, across chunks.
void Relay::scan_words(const std::uint8_t* p, std::size_t n) {
  auto check = [&]() {
    const std::size_t len = scan_word_len_;
    if (len == 3 && std::memcmp(scan_word_, "api", 3) == 0) scan_candidate_ = true;
    if (opt_.refuse_password_changes && len == 8 && std::memcmp(scan_word_, "password", 8) == 0)
      scan_candidate_ = true;
  };
  for (std::size_t i = 0; i < n; ++i) {
    std::uint8_t c = p[i];
    if (is_ident_byte(c)) {
      if (scan_word_len_ < sizeof scan_word_) {
        if (c >= 'A' && c <= 'Z') c = std::uint8_t(c - 'A' + 'a');
        scan_word_[scan_word_len_] = c;
      }
      if (scan_word_len_ <= sizeof scan_word_) ++scan_word_len_;
    } else {
      check();
      scan_word_len_ = 0;
    }
  }
}

void Relay::finish_scanned_message() {
  if (scan_word_len_ > 0) {
    // The text ended inside a word (a Query without its terminating zero byte).
    const std::size_t len = scan_word_len_;
    if ((len == 3 && std::memcmp(scan_word_, "api", 3) == 0) ||
        (opt_.refuse_password_changes && len == 8 && std::memcmp(scan_word_, "password", 8) == 0))
      scan_candidate_ = true;
    scan_word_len_ = 0;
  }
  if (!scan_candidate_) {
    to_upstream_.add_owned(&scan_last_, 1);
    return;
  }
  // Its last byte stays here: the upstream never gets the whole message.
  auto e = ErrorResponse::make("FATAL", "54000", "message too long for tokengate to inspect");
  e.detail = std::string(scan_tag_ == ft::Query ? "A Query" : "A Parse") + " message of " +
             std::to_string(inspect_total_) + " bytes is longer than relay.max_inspected_message (" +
             std::to_string(opt_.max_inspected_message) +
             " bytes) and may hold a statement tokengate must see whole (API TOKEN" +
             (opt_.refuse_password_changes ? ", or a password change" : "") + ").";
  e.hint = "Send it in shorter messages, or raise relay.max_inspected_message.";
  end(std::move(e));
}

void Relay::start_local(char tag, ByteView message) {
  job_ = std::make_unique<Job>();
  job_->tag = tag;
  job_->message.assign(message.begin(), message.end());
}

// ---- local answers -----------------------------------------------------------------

bool Relay::can_answer_now() const noexcept { return q_head_ == q_.size() && upstream_at_boundary(); }

void Relay::pump() {
  while (!finished_ && !draining_) {
    if (job_) {
      advance_job();
      if (job_) return;
      continue;
    }
    if (held_.empty()) return;
    Bytes chunk;
    chunk.swap(held_);
    consume_client(chunk.data(), chunk.size());
    release(chunk);
  }
}

void Relay::advance_job() {
  Job& j = *job_;
  const bool extended = j.tag != ft::Query;
  // Skipped without waiting when an error already started the skip.
  if (extended && j.phase == 0 && skipping_until_sync()) {
    job_.reset();
    return;
  }
  if (j.wait == Job::Wait::result) return;
  if (j.wait == Job::Wait::idle) {
    if (!can_answer_now()) {
      // The upstream holds extended-protocol answers until Sync or Flush.
      if (unflushed_ && q_head_ < q_.size()) {
        static constexpr std::uint8_t flush[] = {'H', 0, 0, 0, 4};
        to_upstream_.add_owned(flush, sizeof flush);
        unflushed_ = false;
      }
      return;
    }
    j.wait = Job::Wait::none;
  }
  if (extended) run_extended_job();
  else run_query_job();
}

void Relay::ready_for_query() {
  Bytes b;
  protocol::ReadyForQuery{tx_}.serialize(b);
  emit_client(b);
}

// Puts the upstream's transaction into the failed state (see kFailureSql).
void Relay::inject_failure(bool with_sync) {
  Bytes b;
  protocol::MessageWriter(b, ft::Parse).cstr(kFailureStatementName).cstr(kFailureSql).i16(0);
  sent(Expect::parse, false, /*swallow=*/true);
  if (with_sync) {
    protocol::MessageWriter(b, ft::Sync);
    sent(Expect::sync, false, /*swallow=*/true);
    unflushed_ = false;
    forwarded_in_group_ = false;
  }
  emit_upstream_owned(b);
}

// A simple-protocol Query with at least one API TOKEN statement: runs the
// parts in order, ordinary runs upstream as one Query each, and stops at the
// first error, with exactly one ReadyForQuery at the end.
void Relay::run_query_job() {
  Job& j = *job_;
  for (;;) {
    switch (j.phase) {
      case 0: {
        if (j.preset_error) {
          fail_query(*j.preset_error);
          return;
        }
        if (j.parts.empty()) {
          Bytes b;
          protocol::write_empty_query_response(b);
          emit_client(b);
          ready_for_query();
          job_.reset();
          return;
        }
        const bool has_create = std::any_of(j.parts.begin(), j.parts.end(), [](const parser_ext::QueryPart& p) {
          auto* api = std::get_if<parser_ext::ApiTokenSql>(&p);
          return api != nullptr && parser_ext::kind_of(api->statement) == parser_ext::StatementKind::create_api_token;
        });
        if (has_create && tx_ != protocol::tx_status::Failed &&
            (tx_ == protocol::tx_status::InBlock || j.parts.size() > 1)) {
          fail_query(create_in_transaction_block());
          return;
        }
        j.phase = 1;
        continue;
      }
      case 1: {
        const auto& part = j.parts[j.next];
        const bool last = j.next + 1 == j.parts.size();
        if (auto* ord = std::get_if<parser_ext::OrdinarySql>(&part)) {
          Bytes q;
          protocol::MessageWriter(q, ft::Query)
              .raw(j.text().substr(ord->span.begin, ord->span.end - ord->span.begin))
              .u8(0);
          emit_upstream_owned(q);
          j.errors_before = errors_seen_;
          sent(Expect::query, /*suppress_ready=*/!last);
          unflushed_ = false;
          j.phase = 2;
          j.wait = Job::Wait::idle;
          return;
        }
        request_ = std::make_unique<StatementRequest>(StatementRequest{std::get<parser_ext::ApiTokenSql>(part).statement, tx_});
        j.phase = 3;
        j.wait = Job::Wait::result;
        return;
      }
      case 2: {
        const bool last = j.next + 1 == j.parts.size();
        if (errors_seen_ != j.errors_before) {
          // The first error stops the rest, as in PostgreSQL.
          if (!last) ready_for_query();
          job_.reset();
          return;
        }
        if (last) {  // its ReadyForQuery went to the client
          job_.reset();
          return;
        }
        ++j.next;
        j.phase = 1;
        continue;
      }
      case 3: {
        const bool last = j.next + 1 == j.parts.size();
        LocalResult result = std::move(*j.result);
        j.result.reset();
        if (!result.ok()) {
          Bytes b;
          for (const auto& n : result.notices) n.serialize(b, bt::NoticeResponse);
          emit_client(b);
          fail_query(*result.error);
          return;
        }
        Bytes b;
        write_simple(b, result);
        emit_client(b);
        if (last) {
          ready_for_query();
          job_.reset();
          return;
        }
        ++j.next;
        j.phase = 1;
        continue;
      }
      case 4:  // the injected failure was answered: the status is the upstream's ('E')
        ready_for_query();
        job_.reset();
        return;
    }
  }
}

// An error ends a Query; inside a transaction block it also fails the
// block upstream, as an error of an ordinary statement would.
void Relay::fail_query(const ErrorResponse& e) {
  Bytes b;
  e.serialize(b);
  emit_client(b);
  if (tx_ == protocol::tx_status::InBlock) {
    inject_failure(/*with_sync=*/true);
    job_->phase = 4;
    job_->wait = Job::Wait::idle;
    return;
  }
  ready_for_query();
  job_.reset();
}

// An error of a local extended-protocol message: what follows is skipped
// until Sync, and the upstream's transaction (an explicit block, or the
// implicit one of this batch when something of it ran upstream) fails too,
// so that COMMIT answers ROLLBACK and earlier messages of the batch roll back.
void Relay::fail_extended(const ErrorResponse& e) {
  if (!e.severity.empty()) {
    Bytes b;
    e.serialize(b);
    emit_client(b);
  }
  const bool inject =
      tx_ == protocol::tx_status::InBlock || (tx_ == protocol::tx_status::Idle && forwarded_in_group_);
  if (inject) inject_failure(/*with_sync=*/false);
  if (tx_ == protocol::tx_status::InBlock) tx_ = protocol::tx_status::Failed;
  failed_group_ = send_group_;
}

// Parse/Bind/Describe/Execute/Close of a local statement or portal, after
// every earlier message was answered; not at all after an error until Sync.
void Relay::run_extended_job() {
  Job& j = *job_;
  protocol::BodyReader r(j.body());
  Bytes out;
  if (j.phase == 1) {  // Execute: the statement ran
    std::string name(*r.cstr());
    const std::int32_t max_rows = r.i32().value_or(0);
    auto it = names().portals.find(name);
    if (it == names().portals.end()) {  // closed meanwhile: cannot happen, client bytes were held
      job_.reset();
      return;
    }
    it->second.result = std::move(j.result);
    j.result.reset();
    auto& portal = it->second;
    if (write_execute(out, *portal.result, portal.result_formats, max_rows, portal.cursor) ==
        ExecuteOutcome::error) {
      emit_client(out);
      fail_extended(ErrorResponse{});  // already written
    } else {
      emit_client(out);
    }
    job_.reset();
    return;
  }
  if (j.preset_error) {
    fail_extended(*j.preset_error);
    job_.reset();
    return;
  }
  switch (j.tag) {
    case ft::Parse: {
      std::string name(*r.cstr());
      const auto text = *r.cstr();
      if (opt_.refuse_password_changes && parser_ext::changes_role_password(text, lex_)) {
        fail_extended(password_change_refused());
        break;
      }
      auto parsed = parser_ext::parse_statement(text, lex_);
      if (auto* err = std::get_if<parser_ext::ParseError>(&parsed)) {
        fail_extended(parse_error_response(*err));
        break;
      }
      // Names are shared with the upstream's statements, as in one server.
      if (!name.empty() && (known().statements.count(name) || known().upstream.count(name))) {
        fail_extended(error("42P05", "prepared statement \"" + name + "\" already exists"));
        break;
      }
      if (auto* stmt = std::get_if<parser_ext::Statement>(&parsed)) {
        names().statements.insert_or_assign(name, std::move(*stmt));
        protocol::write_parse_complete(out);
        emit_client(out);
      }
      break;
    }
    case ft::Bind: {
      std::string portal(*r.cstr());
      std::string stmt(*r.cstr());
      const auto source = names().statements.find(stmt);
      if (source == names().statements.end()) {
        fail_extended(no_such_statement(stmt));
        break;
      }
      auto nformats = r.i16();
      for (int i = 0; nformats && i < *nformats; ++i) r.i16();
      auto nparams = r.i16();
      if (!nparams) {
        fail_extended(error("08P01", "insufficient data left in message"));
        break;
      }
      if (*nparams != 0) {
        fail_extended(error("08P01", "bind message supplies " + std::to_string(*nparams) +
                                         " parameters, but prepared statement \"" + stmt + "\" requires 0"));
        break;
      }
      auto nresult = r.i16();
      std::vector<std::int16_t> formats;
      for (int i = 0; nresult && i < *nresult; ++i) formats.push_back(r.i16().value_or(0));
      names().portals.insert_or_assign(portal, LocalPortal{source->second, std::move(formats), {}, {}, send_group_});
      protocol::write_bind_complete(out);
      emit_client(out);
      break;
    }
    case ft::Describe: {
      const char kind = char(*r.u8());
      std::string name(*r.cstr());
      if (kind == 'S') {
        const auto it = names().statements.find(name);
        if (it == names().statements.end()) {
          fail_extended(no_such_statement(name));
          break;
        }
        write_describe_statement(out, it->second);
        emit_client(out);
      } else {
        const auto it = names().portals.find(name);
        if (it == names().portals.end()) {
          fail_extended(no_such_portal(name));
          break;
        }
        auto& p = it->second;
        const bool ok = write_describe_portal(out, p.statement, p.result_formats);
        emit_client(out);
        if (!ok) fail_extended(ErrorResponse{});
      }
      break;
    }
    case ft::Close: {
      const char kind = char(*r.u8());
      std::string name(*r.cstr());
      if (kind == 'S') names().statements.erase(name);
      else names().portals.erase(name);
      protocol::write_close_complete(out);
      emit_client(out);
      break;
    }
    case ft::Execute: {
      std::string name(*r.cstr());
      const auto it = names().portals.find(name);
      if (it == names().portals.end()) {
        fail_extended(no_such_portal(name));
        break;
      }
      auto& portal = it->second;
      if (!portal.result) {
        if (parser_ext::kind_of(portal.statement) == parser_ext::StatementKind::create_api_token &&
            tx_ == protocol::tx_status::InBlock) {
          fail_extended(create_in_transaction_block());
          break;
        }
        request_ = std::make_unique<StatementRequest>(StatementRequest{portal.statement, tx_});
        j.phase = 1;
        j.wait = Job::Wait::result;
        return;
      }
      const std::int32_t max_rows = r.i32().value_or(0);
      if (write_execute(out, *portal.result, portal.result_formats, max_rows, portal.cursor) ==
          ExecuteOutcome::error) {
        emit_client(out);
        fail_extended(ErrorResponse{});
      } else {
        emit_client(out);
      }
      break;
    }
    default: break;
  }
  job_.reset();
}

// ---- upstream side ------------------------------------------------------------------

void Relay::consume_upstream(const std::uint8_t* p, std::size_t n) {
  std::size_t pos = 0;
  std::size_t run = SIZE_MAX;  // start of the bytes being passed to the client
  auto cut = [&](std::size_t at) {
    if (run != SIZE_MAX && at > run) to_client_.add_input(p + run, at - run);
    run = SIZE_MAX;
  };
  auto pass = [&](std::size_t at) {
    if (run == SIZE_MAX) run = at;
  };
  while (pos < n && !finished_) {
    if (u_left_ > 0) {
      const auto take = std::size_t(std::min<std::uint64_t>(u_left_, n - pos));
      if (u_forward_) pass(pos);
      else cut(pos);
      if (u_capture_ && u_body_.size() < kMaxCapturedBody)
        u_body_.append(reinterpret_cast<const char*>(p + pos), std::min(take, kMaxCapturedBody - u_body_.size()));
      pos += take;
      u_left_ -= take;
      if (u_left_ > 0) continue;
    } else {
      const std::size_t start = pos;
      if (u_hdr_have_ == 0) upstream_message_start(char(p[pos]));
      if (u_forward_) pass(pos);
      else cut(pos);
      const std::size_t take = std::min(kHeader - u_hdr_have_, n - pos);
      std::memcpy(u_hdr_ + u_hdr_have_, p + pos, take);
      u_hdr_have_ += take;
      pos += take;
      if (u_hdr_have_ < kHeader) continue;
      u_hdr_have_ = 0;
      const std::uint32_t len = protocol::load_u32(u_hdr_ + 1);
      if (len < 4 || len > protocol::kMaxMessageLength) {
        cut(start);
        finish(Ending::upstream_protocol_violation, "impossible message length from the upstream server");
        return;
      }
      u_left_ = u_len_ = len - 4;
      if (u_left_ > 0) continue;
    }
    // A message ended at pos.
    if (!u_forward_ && upstream_fatal_after(u_tag_)) {
      // The answer to an injected message is swallowed, but a FATAL ends the
      // session: the client must see it.
      cut(pos);
      Bytes b;
      if (u_len_ <= kMaxCapturedBody) {
        b.push_back(std::uint8_t(u_tag_));
        b.resize(kHeader);
        protocol::store_u32(b.data() + 1, std::uint32_t(u_body_.size() + 4));
        b.insert(b.end(), u_body_.begin(), u_body_.end());
      } else {
        ErrorResponse::make("FATAL", "08006", "the upstream server ended the session").serialize(b);
      }
      emit_client(b);
    }
    upstream_message_end();
    u_forward_ = true;
    if (draining_) {
      cut(pos);
      try_finish_end();
      continue;
    }
    if (job_ && job_->wait == Job::Wait::idle && can_answer_now()) {
      cut(pos);
      pump();
    }
  }
  cut(pos);
}

void Relay::upstream_message_start(char tag) {
  u_tag_ = tag;
  u_body_.clear();
  const Expectation* head = q_head_ < q_.size() ? &q_[q_head_] : nullptr;
  // Asynchronous messages may come at any time; they are never part of an answer.
  const bool async = tag == bt::NoticeResponse || tag == bt::NotificationResponse || tag == bt::ParameterStatus;
  u_forward_ = true;
  if (head != nullptr && head->swallow && !async) u_forward_ = false;
  else if (tag == bt::ReadyForQuery && head != nullptr && head->expect == Expect::query && head->suppress_ready)
    u_forward_ = false;
  u_capture_ = tag == bt::ReadyForQuery || tag == bt::ParameterStatus || tag == bt::CommandComplete ||
               tag == bt::ErrorResponse;
}

void Relay::upstream_message_end() {
  const char tag = u_tag_;
  switch (tag) {
    case bt::ReadyForQuery:
      if (u_body_.size() == 1) tx_ = u_body_[0];
      break;
    case bt::ParameterStatus: {
      auto nul = u_body_.find('\0');
      if (nul != std::string::npos) {
        std::string_view name(u_body_.data(), nul);
        std::string_view value(u_body_.data() + nul + 1, u_body_.size() - nul - 1);
        if (!value.empty() && value.back() == '\0') value.remove_suffix(1);
        if (name == "standard_conforming_strings") lex_.standard_conforming_strings = value == "on";
        else if (name == "client_encoding") lex_.encoding = parser_ext::client_encoding_from_name(value);
        if (opt_.pooled_upstream) {
          // Only a whole value can be shown to the next client.
          if (u_len_ > kMaxCapturedBody) parameters_lost_ = true;
          else record_parameter(name, value);
        }
      } else if (opt_.pooled_upstream) {
        parameters_lost_ = true;
      }
      break;
    }
    case bt::ErrorResponse:
      ++errors_seen_;
      if (upstream_fatal_after(tag)) upstream_fatal_ = true;
      break;
    default: break;
  }
  complete_expectation(tag);
  if (u_body_.capacity() > 64) std::string().swap(u_body_);
}

// Whether the ErrorResponse just captured is FATAL or PANIC (the upstream
// closes after it).
bool Relay::upstream_fatal_after(char tag) const noexcept {
  if (tag != bt::ErrorResponse) return false;
  std::string_view body = u_body_;
  while (!body.empty() && body[0] != '\0') {
    const char code = body[0];
    auto nul = body.find('\0', 1);
    if (nul == std::string_view::npos) return false;
    std::string_view value = body.substr(1, nul - 1);
    if (code == 'V' || code == 'S') return value == "FATAL" || value == "PANIC";
    body.remove_prefix(nul + 1);
  }
  return false;
}

void Relay::complete_expectation(char tag) {
  if (q_head_ == q_.size()) {
    if (tag == bt::CommandComplete) apply_command_tag(text_of_query(protocol::as_bytes(u_body_)), nullptr);
    return;  // asynchronous messages, or an unsolicited FATAL
  }
  const Expectation head = q_[q_head_];
  if (tag == bt::CommandComplete)
    apply_command_tag(text_of_query(protocol::as_bytes(u_body_)), head.expect == Expect::execute ? &head : nullptr);
  bool done = false;
  switch (head.expect) {
    case Expect::query:
    case Expect::function_call:
    case Expect::sync: done = tag == bt::ReadyForQuery; break;
    case Expect::parse: done = tag == bt::ParseComplete || tag == bt::ErrorResponse; break;
    case Expect::bind: done = tag == bt::BindComplete || tag == bt::ErrorResponse; break;
    case Expect::describe:
      done = tag == bt::RowDescription || tag == bt::NoData || tag == bt::ErrorResponse;
      break;
    case Expect::execute:
      done = tag == bt::CommandComplete || tag == bt::EmptyQueryResponse || tag == bt::PortalSuspended ||
             tag == bt::ErrorResponse;
      break;
    case Expect::close: done = tag == bt::CloseComplete || tag == bt::ErrorResponse; break;
  }
  if (!done) return;
  auto pop = [&]() -> std::string {
    const bool named = q_[q_head_].named;
    ++q_head_;
    if (!named) return {};
    return std::move(name_fifo_[name_fifo_head_++]);
  };
  {
    std::string name = pop();
    if (head.named && tag == bt::ParseComplete) names().upstream.insert(std::move(name));
    else if (head.named && tag == bt::CloseComplete && names_) names_->upstream.erase(name);
  }
  if (tag == bt::ErrorResponse && head.expect != Expect::query && head.expect != Expect::function_call &&
      head.expect != Expect::sync) {
    // An extended-protocol error: the upstream skips the rest of this group.
    failed_group_ = head.group;
    if (tx_ == protocol::tx_status::InBlock) tx_ = protocol::tx_status::Failed;
    while (q_head_ < q_.size() && q_[q_head_].group == head.group && q_[q_head_].expect != Expect::sync) pop();
  }
  if (tag == bt::ReadyForQuery && head.expect == Expect::sync && tx_ == protocol::tx_status::Idle) {
    // Portals end with their transaction; outside a block that is at Sync.
    for (auto it = known().portals.begin(); names_ && it != names_->portals.end();) {
      if (it->second.group <= head.group) it = names_->portals.erase(it);
      else ++it;
    }
  }
  if (q_head_ == q_.size()) {
    q_.clear();
    q_head_ = 0;
    if (q_.capacity() > kKeepQueueCapacity) {
      memory_.refund(q_.capacity() * sizeof(Expectation));
      std::vector<Expectation>().swap(q_);
    }
  }
  if (name_fifo_head_ == name_fifo_.size()) {
    name_fifo_.clear();
    name_fifo_head_ = 0;
  }
}

// What a CommandComplete says about the transaction (inside an
// extended-protocol batch, before its ReadyForQuery) and about the
// statements prepared upstream.
void Relay::apply_command_tag(std::string_view tag, const Expectation* execute) {
  // Every prepared statement of the session goes, tokengate's own too, as
  // they would in one server (DISCARD ALL closes the portals as well).
  if (tag == "DEALLOCATE ALL" || tag == "DISCARD ALL") names_.reset();
  if (execute == nullptr) return;
  if (tag == "BEGIN" || tag == "START TRANSACTION") {
    if (tx_ == protocol::tx_status::Idle) tx_ = protocol::tx_status::InBlock;
  } else if (tag == "COMMIT" || tag == "ROLLBACK") {
    tx_ = execute->keeps_block ? protocol::tx_status::InBlock : protocol::tx_status::Idle;
  } else if (tag == "PREPARE TRANSACTION") {
    tx_ = protocol::tx_status::Idle;
  }
}

}  // namespace tokengate::session

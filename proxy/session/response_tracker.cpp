// Response tracking for ordering local answers (see response_tracker.hpp).
#include "proxy/session/response_tracker.hpp"

#include "proxy/protocol/frame.hpp"
#include "proxy/protocol/messages.hpp"

namespace tokengate::session {

namespace ft = protocol::frontend_tag;
namespace bt = protocol::backend_tag;

bool ResponseTracker::expectation_for(char tag, Expect& out) noexcept {
  switch (tag) {
    case ft::Query: out = Expect::query; return true;
    case ft::FunctionCall: out = Expect::function_call; return true;
    case ft::Parse: out = Expect::parse; return true;
    case ft::Bind: out = Expect::bind; return true;
    case ft::Describe: out = Expect::describe; return true;
    case ft::Execute: out = Expect::execute; return true;
    case ft::Close: out = Expect::close; return true;
    case ft::Sync: out = Expect::sync; return true;
    default: return false;
  }
}

void ResponseTracker::sent(Expect e, bool suppress_ready) {
  // After an error PostgreSQL discards everything but Sync until Sync; those
  // messages will never be answered, so they are not waited for.
  if (e != Expect::sync && skipping_until_sync()) return;
  queue_.push_back({e, suppress_ready, send_group_});
  if (e == Expect::sync) ++send_group_;
}

bool ResponseTracker::feed(protocol::ByteView chunk,
                           std::vector<std::pair<std::size_t, std::size_t>>& forward) {
  std::size_t i = 0, run_start = 0;
  bool running = !dropping_;  // bytes from run_start are being forwarded
  auto cut = [&](std::size_t at) {
    if (running && at > run_start) forward.emplace_back(run_start, at);
    running = false;
  };
  auto resume = [&](std::size_t at) {
    if (!running) {
      run_start = at;
      running = true;
    }
  };
  while (i < chunk.size()) {
    if (body_left_ > 0) {
      auto take = std::size_t(std::min<std::uint64_t>(body_left_, chunk.size() - i));
      // The status is the body's last byte, whichever read brings it (a
      // malformed, longer ReadyForQuery must not make it depend on chunking).
      if (tag_ == bt::ReadyForQuery && take == body_left_) tx_status_ = char(chunk[i + take - 1]);
      body_left_ -= take;
      i += take;
      if (body_left_ == 0) {
        on_message_end(tag_);
        if (dropping_) {
          dropping_ = false;
          resume(i);
        }
      }
      continue;
    }
    if (!in_header_) {
      tag_ = char(chunk[i]);
      on_message_start(tag_);
      if (dropping_) cut(i);
      in_header_ = true;
      len_have_ = 0;
      ++i;
      continue;
    }
    len_bytes_[len_have_++] = chunk[i++];
    if (len_have_ < 4) continue;
    in_header_ = false;
    std::uint32_t len = protocol::load_u32(len_bytes_);
    if (len < 4 || len > protocol::kMaxMessageLength) return false;
    body_left_ = len - 4;
    if (body_left_ == 0) {
      on_message_end(tag_);
      if (dropping_) {
        dropping_ = false;
        resume(i);
      }
    }
  }
  cut(chunk.size());
  return true;
}

void ResponseTracker::on_message_start(char tag) {
  dropping_ = tag == bt::ReadyForQuery && !queue_.empty() && queue_.front().expect == Expect::query &&
              queue_.front().suppress_ready;
}

void ResponseTracker::on_message_end(char tag) {
  if (tag == bt::ErrorResponse) ++errors_seen_;
  if (queue_.empty()) return;  // asynchronous messages, or an unsolicited FATAL
  const Entry head = queue_.front();
  bool done = false;
  switch (head.expect) {
    case Expect::query:
    case Expect::function_call:
    case Expect::sync:
      done = tag == bt::ReadyForQuery;
      break;
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
  queue_.pop_front();
  if (tag == bt::ErrorResponse) {
    // An extended-protocol error: the upstream skips the rest of this group.
    failed_group_ = head.group;
    while (!queue_.empty() && queue_.front().group == head.group && queue_.front().expect != Expect::sync)
      queue_.pop_front();
  }
}

}  // namespace tokengate::session

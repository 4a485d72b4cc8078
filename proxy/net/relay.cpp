// The relay phase (see relay.hpp): framing of client messages, local answers
// to API TOKEN statements in order, streaming of upstream responses.
#include "proxy/net/relay.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <chrono>
#include <cstring>
#include <algorithm>
#include <unordered_map>
#include <variant>

#include "parser_ext/classifier.hpp"
#include "parser_ext/parser.hpp"
#include "parser_ext/split.hpp"
#include "proxy/net/buffer_pool.hpp"
#include "proxy/net/local_sql.hpp"
#include "proxy/protocol/frame.hpp"
#include "proxy/protocol/result_set.hpp"
#include "proxy/session/response_tracker.hpp"
#include "proxy/session/token_sql.hpp"

namespace tokengate::net {

using namespace asio::experimental::awaitable_operators;
using protocol::ByteView;
using protocol::Bytes;
using session::ResponseTracker;
namespace ft = protocol::frontend_tag;

namespace {

// A wake-up for one coroutine of the session; both pumps run on one thread,
// so a flag checked before waiting cannot miss a notify.
class Event {
 public:
  explicit Event(asio::any_io_executor ex) : timer_(ex, std::chrono::steady_clock::time_point::max()) {}
  asio::awaitable<void> wait() { co_await timer_.async_wait(use_nothrow); }
  void notify() { timer_.cancel(); }

 private:
  asio::steady_timer timer_;
};

struct LocalPortal {
  parser_ext::Statement statement;
  std::vector<std::int16_t> result_formats;
  // Run at the first Execute; later Executes continue from the cursor
  // (Execute with a row limit suspends the portal, as PostgreSQL does).
  std::optional<session::LocalResult> result;
  session::ExecuteCursor cursor;
};

// The SQL text of a whole Query message (its body without the final NUL).
std::string_view query_text(const protocol::Frame& f) {
  auto body = protocol::as_chars(f.body);
  return body.empty() ? body : body.substr(0, body.size() - 1);
}

Bytes ready_for_query(char status) {
  Bytes out;
  protocol::ReadyForQuery{status}.serialize(out);
  return out;
}

}  // namespace

struct Relay::State {
  State(ByteStream& c, ByteStream& u, RelayServices svc, SessionInfo i, asio::any_io_executor ex)
      : client(c), upstream(u), services(svc), info(std::move(i)), tracker(info.tx_status),
        c2u_wake(ex), u2c_wake(ex) {}

  asio::awaitable<void> client_to_upstream(Bytes pending);
  asio::awaitable<void> upstream_to_client();

  // Decides, without waiting, whether tokengate answers one whole client
  // message itself; messages that go upstream are registered with the tracker.
  using Plan = std::variant<std::vector<parser_ext::QueryPart>, parser_ext::ParseError>;
  bool answer_locally(const protocol::Frame& f, std::optional<Plan>& plan);
  asio::awaitable<bool> handle_query(std::string_view text, const Plan& plan);
  asio::awaitable<bool> handle_extended(const protocol::Frame& f);
  asio::awaitable<bool> flush_upstream_and_wait();
  asio::awaitable<bool> wait_idle();
  asio::awaitable<bool> write_client(ByteView bytes);
  asio::awaitable<bool> write_upstream(ByteView bytes);
  bool has_local() const { return !statements.empty() || !portals.empty(); }
  void stop() {
    stopping = true;
    c2u_wake.notify();
    u2c_wake.notify();
  }

  ByteStream& client;
  ByteStream& upstream;
  RelayServices services;
  SessionInfo info;
  ResponseTracker tracker;
  LocalSql local{services, info};

  Event c2u_wake, u2c_wake;
  bool c2u_waiting = false, u2c_waiting = false;
  bool c2u_writing = false, u2c_writing = false;
  bool stopping = false;
  bool protocol_violation = false;
  std::optional<protocol::ErrorResponse> end_reason;

  std::unordered_map<std::string, parser_ext::Statement> statements;  // local prepared statements
  std::unordered_map<std::string, LocalPortal> portals;               // local portals
};

Relay::Relay(asio::any_io_executor ex, ByteStream& client, ByteStream& upstream, RelayServices services,
             SessionInfo info)
    : s_(std::make_unique<State>(client, upstream, services, std::move(info), ex)) {}
Relay::~Relay() = default;

void Relay::end(protocol::ErrorResponse reason) {
  s_->end_reason = std::move(reason);
  s_->stop();
  // Closing the upstream ends the upstream pump at once; the client gets the
  // reason once both pumps have stopped.
  s_->upstream.close();
}

asio::awaitable<void> Relay::run(Bytes pending) {
  auto& s = *s_;
  co_await (s.client_to_upstream(std::move(pending)) || s.upstream_to_client());
  if (s.protocol_violation && !s.end_reason)
    s.end_reason = protocol::ErrorResponse::make("FATAL", "08P01", "invalid message format");
  if (s.end_reason) {
    Bytes out;
    s.end_reason->serialize(out);
    co_await s.client.write(asio::buffer(out));
  }
}

// ---- writers shared by the two pumps ------------------------------------------

asio::awaitable<bool> Relay::State::write_client(ByteView bytes) {
  // Called by the client pump for local answers; the upstream pump may be in
  // the middle of a write to the same socket.
  while (u2c_writing) {
    if (stopping) co_return false;
    c2u_waiting = true;
    co_await c2u_wake.wait();
    c2u_waiting = false;
  }
  if (stopping) co_return false;
  c2u_writing = true;
  auto [ec, n] = co_await client.write(asio::buffer(bytes.data(), bytes.size()));
  c2u_writing = false;
  if (u2c_waiting) u2c_wake.notify();
  co_return !ec;
}

asio::awaitable<bool> Relay::State::write_upstream(ByteView bytes) {
  if (bytes.empty()) co_return true;
  auto [ec, n] = co_await upstream.write(asio::buffer(bytes.data(), bytes.size()));
  co_return !ec;
}

// Waits until every message forwarded so far has been answered and those
// answers have been written to the client.
asio::awaitable<bool> Relay::State::wait_idle() {
  while (!tracker.idle() || u2c_writing) {
    if (stopping) co_return false;
    c2u_waiting = true;
    co_await c2u_wake.wait();
    c2u_waiting = false;
  }
  co_return !stopping;
}

// The upstream holds extended-protocol responses until Sync or Flush; a
// Flush makes it send what it owes before we answer locally.
asio::awaitable<bool> Relay::State::flush_upstream_and_wait() {
  if (!tracker.idle()) {
    static constexpr std::uint8_t flush[] = {'H', 0, 0, 0, 4};
    if (!co_await write_upstream(ByteView(flush, sizeof flush))) co_return false;
  }
  co_return co_await wait_idle();
}

// ---- upstream → client ------------------------------------------------------------

asio::awaitable<void> Relay::State::upstream_to_client() {
  std::vector<std::pair<std::size_t, std::size_t>> ranges;
  for (;;) {
    if (auto ec = co_await upstream.wait_readable(); ec) break;
    Bytes buf = BufferPool::acquire();
    bool drained = false;
    while (!drained) {
      auto [ec, n] = co_await upstream.read_some(asio::buffer(buf));
      if (ec) {
        stop();
        co_return;
      }
      ranges.clear();
      if (!tracker.feed(ByteView(buf.data(), n), ranges)) {
        spdlog::error("session of \"{}\": malformed message from upstream", info.user);
        stop();
        co_return;
      }
      while (c2u_writing) {
        if (stopping) co_return;
        u2c_waiting = true;
        co_await u2c_wake.wait();
        u2c_waiting = false;
      }
      u2c_writing = true;
      bool ok = true;
      if (ranges.size() == 1 && ranges[0].first == 0 && ranges[0].second == n) {
        auto [wec, wn] = co_await client.write(asio::buffer(buf.data(), n));
        ok = !wec;
      } else {
        for (auto [b, e] : ranges) {
          auto [wec, wn] = co_await client.write(asio::buffer(buf.data() + b, e - b));
          if (wec) {
            ok = false;
            break;
          }
        }
      }
      u2c_writing = false;
      if (c2u_waiting) c2u_wake.notify();
      if (!ok) {
        stop();
        co_return;
      }
      // A short read means the socket is drained: wait again without a buffer.
      drained = n < buf.size();
    }
    BufferPool::release(std::move(buf));
  }
  stop();
}

// ---- client → upstream ------------------------------------------------------------

asio::awaitable<void> Relay::State::client_to_upstream(Bytes pending) {
  Bytes buf = std::move(pending);
  std::size_t have = buf.size();
  std::uint64_t passthrough_left = 0;  // bytes of a streamed message still to pass
  bool passthrough_drop = false;       // ... and whether they are dropped
  for (;;) {
    std::size_t pos = 0, run_start = 0, need = 0;
    bool terminate = false;
    auto flush_run = [&](std::size_t upto) -> asio::awaitable<bool> {
      bool ok = co_await write_upstream(ByteView(buf.data() + run_start, upto - run_start));
      run_start = upto;
      co_return ok;
    };
    while (pos < have && !terminate) {
      if (passthrough_left > 0) {
        auto take = std::size_t(std::min<std::uint64_t>(passthrough_left, have - pos));
        if (passthrough_drop) {
          if (!co_await flush_run(pos)) co_return stop();
          run_start = pos + take;
        }
        passthrough_left -= take;
        pos += take;
        continue;
      }
      if (have - pos < 5) break;
      char tag = char(buf[pos]);
      std::uint32_t len = protocol::load_u32(buf.data() + pos + 1);
      if (len < 4 || len > protocol::kMaxMessageLength) {
        protocol_violation = true;
        co_return stop();
      }
      std::size_t total = std::size_t(len) + 1;
      bool inspect = tag == ft::Query || tag == ft::Parse ||
                     (has_local() && (tag == ft::Bind || tag == ft::Describe || tag == ft::Execute ||
                                      tag == ft::Close));
      // PostgreSQL ignores everything but Sync after an error until Sync.
      bool drop = tracker.skipping_until_sync() && tag != ft::Sync && tag != ft::Terminate;
      if (inspect && !drop) {
        if (have - pos < total) {
          need = total;
          break;
        }
        protocol::Frame frame{tag, ByteView(buf.data() + pos + 5, len - 4), total};
        std::optional<Plan> plan;
        if (answer_locally(frame, plan)) {
          // Everything before it goes upstream first: the local answer waits
          // for the upstream's answers to those messages.
          if (run_start < pos && !co_await flush_run(pos)) co_return stop();
          bool ok = tag == ft::Query ? co_await handle_query(query_text(frame), *plan)
                                     : co_await handle_extended(frame);
          if (!ok) co_return stop();
          run_start = pos + total;  // the message itself never goes upstream
        }
        pos += total;
        continue;
      }
      ResponseTracker::Expect expect;
      if (!drop && ResponseTracker::expectation_for(tag, expect)) tracker.sent(expect);
      // Portals end with the transaction; outside a block that is this Sync.
      if (tag == ft::Sync && tracker.tx_status() == protocol::tx_status::Idle) portals.clear();
      if (tag == ft::Terminate) terminate = true;
      passthrough_left = total;
      passthrough_drop = drop;
    }
    if (!co_await flush_run(pos)) co_return stop();
    if (terminate) co_return stop();
    std::memmove(buf.data(), buf.data() + pos, have - pos);
    have -= pos;

    if (have == 0) {
      // Idle: give the buffer back and wait without one.
      if (!buf.empty()) BufferPool::release(std::move(buf));
      buf = Bytes();
      if (auto ec = co_await client.wait_readable(); ec) co_return stop();
      buf = BufferPool::acquire();
    }
    if (buf.size() < need) buf.resize(need);            // a whole message must fit
    if (buf.size() == have) buf.resize(buf.size() * 2);  // keep room to read
    auto [ec, n] = co_await client.read_some(asio::buffer(buf.data() + have, buf.size() - have));
    if (ec) co_return stop();
    have += n;
  }
}

// Decides what happens to one whole Query, Parse, Bind, Describe, Execute or
// Close, without waiting: true when tokengate answers it. Forwarded messages
// are registered with the tracker here, in order.
bool Relay::State::answer_locally(const protocol::Frame& f, std::optional<Plan>& plan) {
  protocol::BodyReader r(f.body);
  ResponseTracker::Expect expect;
  ResponseTracker::expectation_for(f.tag, expect);
  auto forward = [&]() {
    tracker.sent(expect);
    return false;
  };
  switch (f.tag) {
    case ft::Query: {
      auto text = r.cstr();
      if (!text) return forward();  // malformed: let the upstream say so
      if (!parser_ext::query_may_contain_api_token_statement(*text)) return forward();
      plan = parser_ext::plan_query(*text);
      if (auto* parts = std::get_if<std::vector<parser_ext::QueryPart>>(&*plan)) {
        bool all_ordinary = !parts->empty() && std::all_of(parts->begin(), parts->end(), [](const auto& p) {
          return std::holds_alternative<parser_ext::OrdinarySql>(p);
        });
        if (all_ordinary) return forward();
      }
      return true;
    }
    case ft::Parse: {
      auto name = r.cstr();
      auto text = r.cstr();
      if (!name || !text) return forward();
      if (!parser_ext::could_be_api_token_statement(*text) ||
          std::holds_alternative<parser_ext::NotApiTokenStatement>(parser_ext::parse_statement(*text))) {
        // The upstream owns this name now (the unnamed statement is replaced by every Parse).
        statements.erase(std::string(*name));
        return forward();
      }
      return true;
    }
    case ft::Bind: {
      auto portal = r.cstr();
      auto stmt = r.cstr();
      if (!portal || !stmt) return forward();
      if (!statements.count(std::string(*stmt))) {
        portals.erase(std::string(*portal));
        return forward();
      }
      return true;
    }
    case ft::Describe:
    case ft::Close: {
      auto kind = r.u8();
      auto name = r.cstr();
      if (!kind || !name) return forward();
      bool local = *kind == 'S' ? statements.count(std::string(*name)) > 0 : portals.count(std::string(*name)) > 0;
      return local ? true : forward();
    }
    case ft::Execute: {
      auto portal = r.cstr();
      if (!portal || !portals.count(std::string(*portal))) return forward();
      return true;
    }
    default:
      return forward();
  }
}

// A simple-protocol Query holding at least one API TOKEN statement: runs the
// parts in order, ordinary runs upstream as one Query each, and stops at the
// first error, with exactly one ReadyForQuery at the end.
asio::awaitable<bool> Relay::State::handle_query(std::string_view text, const Plan& plan) {
  if (!co_await wait_idle()) co_return false;
  if (auto* err = std::get_if<parser_ext::ParseError>(&plan)) {
    Bytes out;
    local_sql_error(*err).serialize(out);
    auto rfq = ready_for_query(tracker.tx_status());
    out.insert(out.end(), rfq.begin(), rfq.end());
    co_return co_await write_client(out);
  }
  const auto& parts = std::get<std::vector<parser_ext::QueryPart>>(plan);
  if (parts.empty()) {
    Bytes out;
    protocol::write_empty_query_response(out);
    auto rfq = ready_for_query(tracker.tx_status());
    out.insert(out.end(), rfq.begin(), rfq.end());
    co_return co_await write_client(out);
  }
  for (std::size_t i = 0; i < parts.size(); ++i) {
    bool last = i + 1 == parts.size();
    if (auto* ord = std::get_if<parser_ext::OrdinarySql>(&parts[i])) {
      Bytes q;
      protocol::MessageWriter(q, ft::Query).raw(text.substr(ord->span.begin, ord->span.end - ord->span.begin)).u8(0);
      auto errors = tracker.errors_seen();
      tracker.sent(ResponseTracker::Expect::query, /*suppress_ready=*/!last);
      if (!co_await write_upstream(q)) co_return false;
      if (!co_await wait_idle()) co_return false;
      if (tracker.errors_seen() != errors) {
        // The first error stops the rest, as in PostgreSQL.
        if (!last) co_return co_await write_client(ready_for_query(tracker.tx_status()));
        co_return true;
      }
      continue;
    }
    const auto& api = std::get<parser_ext::ApiTokenSql>(parts[i]);
    auto result = co_await local.run(api.statement, tracker.tx_status());
    Bytes out;
    session::write_simple(out, result);
    bool failed = result.error.has_value();
    if (failed || last) {
      auto rfq = ready_for_query(tracker.tx_status());
      out.insert(out.end(), rfq.begin(), rfq.end());
    }
    if (!co_await write_client(out)) co_return false;
    if (failed) co_return true;
  }
  co_return true;
}

// Parse/Bind/Describe/Execute/Close of a local statement or portal. Answered
// after every earlier message, and not at all after an error until Sync.
asio::awaitable<bool> Relay::State::handle_extended(const protocol::Frame& f) {
  if (!co_await flush_upstream_and_wait()) co_return false;
  if (tracker.skipping_until_sync()) co_return true;
  protocol::BodyReader r(f.body);
  Bytes out;
  bool failed = false;
  auto fail = [&](protocol::ErrorResponse e) {
    e.serialize(out);
    failed = true;
  };
  switch (f.tag) {
    case ft::Parse: {
      std::string name(*r.cstr());
      auto text = *r.cstr();
      auto parsed = parser_ext::parse_statement(text);
      if (auto* err = std::get_if<parser_ext::ParseError>(&parsed)) {
        fail(local_sql_error(*err));
        break;
      }
      if (!name.empty() && statements.count(name)) {
        fail(protocol::ErrorResponse::make("ERROR", "42P05", "prepared statement \"" + name + "\" already exists"));
        break;
      }
      statements.insert_or_assign(name, std::get<parser_ext::Statement>(parsed));
      protocol::write_parse_complete(out);
      break;
    }
    case ft::Bind: {
      std::string portal(*r.cstr());
      std::string stmt(*r.cstr());
      auto nformats = r.i16();
      std::vector<std::int16_t> param_formats;
      for (int i = 0; nformats && i < *nformats; ++i) r.i16();
      auto nparams = r.i16();
      if (!nparams) {
        protocol_violation = true;
        co_return false;
      }
      if (*nparams != 0) {
        fail(protocol::ErrorResponse::make("ERROR", "08P01",
                                           "bind message supplies " + std::to_string(*nparams) +
                                               " parameters, but prepared statement \"" + stmt +
                                               "\" requires 0"));
        break;
      }
      auto nresult = r.i16();
      std::vector<std::int16_t> formats;
      for (int i = 0; nresult && i < *nresult; ++i) formats.push_back(r.i16().value_or(0));
      portals.insert_or_assign(portal, LocalPortal{statements.at(stmt), std::move(formats), {}, {}});
      protocol::write_bind_complete(out);
      break;
    }
    case ft::Describe: {
      char kind = char(*r.u8());
      std::string name(*r.cstr());
      if (kind == 'S') {
        session::write_describe_statement(out, statements.at(name));
      } else {
        auto& p = portals.at(name);
        if (!session::write_describe_portal(out, p.statement, p.result_formats))
          fail(protocol::ErrorResponse::make("ERROR", "08P01", "invalid result format codes"));
      }
      break;
    }
    case ft::Execute: {
      std::string name(*r.cstr());
      std::int32_t max_rows = r.i32().value_or(0);
      auto& p = portals.at(name);
      if (!p.result) p.result = co_await local.run(p.statement, tracker.tx_status());
      auto outcome = session::write_execute(out, *p.result, p.result_formats, max_rows, p.cursor);
      if (outcome == session::ExecuteOutcome::error) failed = true;
      break;
    }
    case ft::Close: {
      char kind = char(*r.u8());
      std::string name(*r.cstr());
      if (kind == 'S') statements.erase(name);
      else portals.erase(name);
      protocol::write_close_complete(out);
      break;
    }
    default:
      break;
  }
  if (failed) tracker.fail_current_group();
  co_return co_await write_client(out);
}

}  // namespace tokengate::net

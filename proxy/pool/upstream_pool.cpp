// The HTTP endpoints' upstream connection pool (see upstream_pool.hpp).
#include "proxy/pool/upstream_pool.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <cstring>
#include <mutex>
#include <unistd.h>
#include <unordered_map>

#include "proxy/http/sql_exchange.hpp"
#include "proxy/log_text.hpp"
#include "proxy/net/connect.hpp"
#include "proxy/net/drive.hpp"
#include "proxy/protocol/input_buffer.hpp"
#include "proxy/session/machine.hpp"
#include "proxy/net/stream.hpp"
#include "proxy/protocol/frame.hpp"
#include "proxy/session/upstream_login.hpp"

// GCC 12 warns that Asio's coroutine frames are freed by a mismatched
// operator delete; a known false positive (GCC bug 109224).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace tokengate::pool {

namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;
using net::use_nothrow;
using protocol::ByteView;
using protocol::Bytes;
using error_code = boost::system::error_code;

namespace {

// Reads ask for at least this much room; large messages grow the buffer
// step by step as their bytes arrive, never by the announced length at once.
constexpr std::size_t kReadChunk = 16 * 1024;
constexpr std::size_t kMaxGrowthStep = 1024 * 1024;
// A connection keeps at most this much buffer while idle.
constexpr std::size_t kIdleBufferLimit = 64 * 1024;
// Login messages (ParameterStatus, errors) are small; as for wire sessions.
constexpr std::size_t kMaxLoginMessageLength = 1024 * 1024;
// How often idle connections are checked against pool.idle_timeout.
constexpr auto kExpiryTick = std::chrono::seconds(1);

void log_exception(std::exception_ptr e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    spdlog::error("upstream pool coroutine ended by an exception: {}", ex.what());
  }
}

}  // namespace

std::string PoolKey::text() const {
  std::string s = user;
  s += '\0';
  s += database;
  for (const auto& [k, v] : parameters) {
    s += '\0';
    s += k;
    s += '=';
    s += v;
  }
  // An empty field, which no user, database or parameter can make.
  if (wire) s += std::string_view("\0\0wire", 6);
  return s;
}

struct Lease::Connection {
  ConnectionId id = 0;
  asio::any_io_executor home;  // every read and write happens here
  std::unique_ptr<net::ByteStream> stream;
  Bytes buf;
  std::size_t have = 0;
  std::int32_t backend_pid = 0;
  protocol::BackendKeyData upstream_key;
  // What the backend reported (ParameterStatus), as it is now, in the order
  // first reported.
  std::vector<std::pair<std::string, std::string>> parameters;
  std::chrono::steady_clock::time_point opened_at{};
  std::uint64_t idle_generation = 0;  // under the pool's mutex: which idle period a watcher belongs to

  void close() noexcept {
    if (stream) stream->close();
  }
};

namespace {

using Connection = Lease::Connection;

// A backend reports at most a few dozen settings; a misbehaving one cannot
// grow the record past this.
constexpr std::size_t kMaxParameters = 64;

void record_parameter(Connection& c, ByteView body) {
  auto ps = protocol::ParameterStatus::parse(body);
  if (!ps) return;
  for (auto& [n, v] : c.parameters) {
    if (n == ps->name) {
      v = std::move(ps->value);
      return;
    }
  }
  if (c.parameters.size() < kMaxParameters) c.parameters.emplace_back(std::move(ps->name), std::move(ps->value));
}

void record_parameters(Connection& c, const std::vector<std::pair<std::string, std::string>>& changes) {
  for (const auto& change : changes) {
    const std::string& name = change.first;
    auto it = std::find_if(c.parameters.begin(), c.parameters.end(), [&](const auto& p) { return p.first == name; });
    if (it != c.parameters.end()) it->second = change.second;
    else if (c.parameters.size() < kMaxParameters) c.parameters.emplace_back(name, change.second);
  }
}

// A request waiting for a connection. Owned by its acquire() call (whose
// frame lives on the timer's io_context) and, while it waits, by the pool's
// map; handlers that cancel the timer are posted to the timer's executor.
struct Waiter {
  explicit Waiter(asio::any_io_executor ex) : timer(std::move(ex)) {}
  asio::steady_timer timer;        // cancelled when a grant comes
  std::optional<Decision> grant;   // under the pool's mutex
  bool refused = false;            // the pool closed meanwhile
};

// Reads until `exchange` is done or failed; runs on c.home.
asio::awaitable<Lease::Result> run_exchange(Connection& c, http::SqlExchange& exchange, const Bytes& first,
                                            std::size_t max_message) {
  using Outcome = Lease::Outcome;
  Lease::Result result;
  if (!first.empty()) {
    if (auto [ec, n] = co_await c.stream->write(asio::buffer(first)); ec) {
      result.reason = "writing to the upstream failed: " + ec.message();
      co_return result;
    }
  }
  for (;;) {
    std::size_t off = 0;
    bool finished = false;
    protocol::FrameResult fr{};
    while (!finished) {
      fr = protocol::read_frame(ByteView(c.buf.data() + off, c.have - off), max_message);
      if (fr.status != protocol::FrameStatus::complete) break;
      // A setting the backend reports is kept for the login of a wire
      // session that reuses it.
      if (fr.frame.tag == protocol::backend_tag::ParameterStatus) record_parameter(c, fr.frame.body);
      auto step = exchange.on_message(fr.frame);
      off += fr.frame.size;
      if (!step.to_upstream.empty()) {
        if (auto [ec, n] = co_await c.stream->write(asio::buffer(step.to_upstream)); ec) {
          result.reason = "writing to the upstream failed: " + ec.message();
          co_return result;
        }
      }
      finished = step.status != http::SqlExchange::Status::in_progress;
    }
    if (off > 0) {
      std::memmove(c.buf.data(), c.buf.data() + off, c.have - off);
      c.have -= off;
    }
    if (finished) {
      if (c.have == 0 && c.buf.size() > kIdleBufferLimit) Bytes().swap(c.buf);
      result.outcome = Outcome::done;
      co_return result;
    }
    if (fr.status == protocol::FrameStatus::bad_length) {
      const bool huge = c.have >= 5 && protocol::load_u32(c.buf.data() + 1) >= 4;
      result.outcome = huge ? Outcome::too_large : Outcome::io_error;
      result.reason = huge ? "an upstream message is larger than " + std::to_string(max_message) + " bytes"
                           : "invalid message length from the upstream";
      co_return result;
    }
    const std::size_t want = std::max(c.have + kReadChunk, std::min(fr.need, c.have + kMaxGrowthStep));
    if (c.buf.size() < want) c.buf.resize(want);
    auto [ec, n] = co_await c.stream->read_some(asio::buffer(c.buf.data() + c.have, c.buf.size() - c.have));
    if (ec) {
      result.reason = ec == asio::error::eof ? std::string("the upstream closed the connection")
                                             : "reading from the upstream failed: " + ec.message();
      co_return result;
    }
    c.have += n;
  }
}

// The ErrorResponse inside what UpstreamLogin meant for a client.
std::optional<protocol::ErrorFields> login_error(const Bytes& to_client) {
  ByteView rest(to_client);
  while (!rest.empty()) {
    auto fr = protocol::read_frame(rest);
    if (fr.status != protocol::FrameStatus::complete) break;
    if (fr.frame.tag == protocol::backend_tag::ErrorResponse) return protocol::ErrorFields::parse(fr.frame.body);
    rest = rest.subspan(fr.frame.size);
  }
  return std::nullopt;
}

struct Opened {
  std::shared_ptr<Connection> conn;  // null on failure
  AcquireError error;
};

AcquireError failure(std::string sqlstate, std::string message) {
  AcquireError e;
  e.sqlstate = std::move(sqlstate);
  e.message = std::move(message);
  return e;
}

}  // namespace

// ---- the pool's state --------------------------------------------------------------

// Who owns what, so that nothing touches an object of an io_context that is
// gone: Impl is shared by the UpstreamPool, Leases, acquire() calls and the
// resets in flight, which live on any I/O thread, so it may be destroyed on
// any of them, also while the io_contexts are torn down one after another.
// It therefore owns no timer: the expiry timer lives in expire_loop's frame
// on its own executor, a Waiter's timer in its acquire() call's frame (the
// map entry goes with that frame), and the background coroutines (expiry,
// idle watches) hold Impl weakly, so that they do not keep it alive past the
// pool.
struct Lease::Impl : std::enable_shared_from_this<Lease::Impl> {
  Impl(asio::any_io_executor timer_ex, UpstreamPoolSettings s)
      : settings(std::move(s)), core(settings.limits), timer_executor(std::move(timer_ex)) {}

  const UpstreamPoolSettings settings;
  mutable std::mutex m;
  // Under m:
  PoolCore core;
  std::unordered_map<ConnectionId, std::shared_ptr<Connection>> conns;  // open ones, idle or lent
  std::unordered_map<WaiterId, std::shared_ptr<Waiter>> waiters;
  bool closed = false;

  const asio::any_io_executor timer_executor;  // where expire_loop runs
  // expire_loop's timer while it runs: set, cleared and used only on
  // timer_executor (close() posts its cancel there).
  asio::steady_timer* expiry = nullptr;
  std::atomic<std::uint64_t> opened{0};
  std::atomic<std::uint64_t> reused{0};

  // ---- under m ----

  void deliver(std::vector<Grant> grants) {
    for (auto& g : grants) {
      auto it = waiters.find(g.waiter);
      if (it == waiters.end()) continue;  // cannot happen: waiters leave only after cancel_wait
      it->second->grant = std::move(g.decision);
      asio::post(it->second->timer.get_executor(), [w = it->second] { w->timer.cancel(); });
    }
  }

  std::vector<std::shared_ptr<Connection>> take(const std::vector<ConnectionId>& ids) {
    std::vector<std::shared_ptr<Connection>> out;
    for (auto id : ids) {
      auto it = conns.find(id);
      if (it == conns.end()) continue;
      out.push_back(std::move(it->second));
      conns.erase(it);
    }
    return out;
  }

  // ---- not under m ----

  static void close_at_home(const std::vector<std::shared_ptr<Connection>>& list) {
    for (const auto& c : list) asio::post(c->home, [c] { c->close(); });
  }

  // Logs in a new connection on the calling coroutine's executor.
  asio::awaitable<Opened> open(const PoolKey& key, const std::optional<std::string>& client_password,
                               ConnectionId id) {
    Opened out;
    auto exec = co_await asio::this_coro::executor;
    const auto deadline = std::chrono::steady_clock::now() + settings.connect_timeout;
    auto [ec, stream, detail] = co_await net::connect_upstream(settings.upstream, settings.tls, deadline);
    if (ec) {
      spdlog::error("HTTP pool: cannot connect to upstream {}: {} {}", settings.upstream.to_string(), ec.message(),
                    detail);
      out.error = failure("08006", "tokengate could not connect to the upstream server");
      co_return out;
    }
    auto conn = std::make_shared<Connection>();
    conn->id = id;
    conn->home = exec;
    conn->opened_at = std::chrono::steady_clock::now();
    conn->stream = std::move(stream);

    protocol::StartupMessage startup;
    startup.parameters.emplace_back("user", key.user);
    startup.parameters.emplace_back("database", key.database);
    if (!key.wire) startup.parameters.emplace_back("client_encoding", "UTF8");
    for (const auto& p : key.parameters) startup.parameters.push_back(p);
    std::optional<std::string> password;
    if (settings.password_mode) {
      if (settings.password_for) password = settings.password_for(key.user);
      if (!password) password = client_password;
    }
    std::optional<auth::SecretString> secret;
    if (password) secret = auth::SecretString::take(*password);
    session::UpstreamLogin login(std::move(startup), std::move(secret), protocol::BackendKeyData{},
                                 settings.upstream_methods);

    asio::steady_timer timer(exec, deadline);
    auto logged_in = co_await (log_in(*conn, login) || timer.async_wait(use_nothrow));
    if (logged_in.index() == 1) {
      conn->close();
      out.error = failure("08006", "logging in to the upstream server timed out");
      co_return out;
    }
    auto& error = std::get<0>(logged_in);
    if (error) {
      conn->close();
      out.error = std::move(*error);
      co_return out;
    }
    conn->backend_pid = login.upstream_key().process_id;
    conn->upstream_key = login.upstream_key();
    out.conn = std::move(conn);
    co_return out;
  }

  // The one driver of the login machines (net/drive.hpp), as for a session.
  asio::awaitable<std::optional<AcquireError>> log_in(Connection& c, session::UpstreamLogin& login) {
    Bytes first = login.start();
    if (auto [ec, n] = co_await c.stream->write(asio::buffer(first)); ec)
      co_return failure("08006", "connection to the upstream server was lost");
    protocol::InputBuffer in(kMaxLoginMessageLength + 5);
    session::FramedMachine<session::UpstreamLogin> machine(login, kMaxLoginMessageLength);
    auto r = co_await net::drive(*c.stream, in, machine);
    if (machine.finished()) {
      // The settings the backend reported, for a wire session's login.
      const Bytes shown = machine.take_client_bytes();
      for (ByteView rest(shown); !rest.empty();) {
        auto fr = protocol::read_frame(rest);
        if (fr.status != protocol::FrameStatus::complete) break;
        if (fr.frame.tag == protocol::backend_tag::ParameterStatus) record_parameter(c, fr.frame.body);
        rest = rest.subspan(fr.frame.size);
      }
      // Anything after ReadyForQuery belongs to the first statement.
      Bytes rest = in.take();
      if (c.buf.size() < rest.size()) c.buf.resize(rest.size());
      std::copy(rest.begin(), rest.end(), c.buf.begin());
      c.have = rest.size();
      co_return std::nullopt;
    }
    if (machine.error() && machine.error()->find("length") != std::string::npos)
      co_return failure("08P01", "invalid message from the upstream server");
    if (r.end != net::DriveResult::End::stopped || machine.error())
      co_return failure("08006", "connection to the upstream server was lost");
    spdlog::info("HTTP pool: upstream login refused: {}", log_text(login.failure_reason()));
    AcquireError e;
    e.upstream = login_error(machine.take_client_bytes());
    if (e.upstream) {
      e.sqlstate = std::string(e.upstream->sqlstate());
      e.message = std::string(e.upstream->message());
    } else {
      e.sqlstate = "08006";
      e.message = "the upstream server refused the login";
    }
    co_return e;
  }

  // One statement of tokengate's own (no result, no parameters): true when
  // it ran without error and left the connection idle.
  static asio::awaitable<bool> run_own(Connection& c, const char* sql) {
    http::SqlExchange x(nullptr, true, true);
    Bytes first = x.start(sql, {});
    auto r = co_await run_exchange(c, x, first, kMaxLoginMessageLength);
    co_return r.outcome == Lease::Outcome::done && x.status() == http::SqlExchange::Status::done && !x.error() &&
        x.tx_status() == protocol::tx_status::Idle;
  }

  // ROLLBACK if a transaction is open, then DISCARD ALL; then the connection
  // goes back to the pool (or is closed if either failed). Runs on conn->home.
  static asio::awaitable<void> reset_and_return(std::shared_ptr<Impl> self, std::shared_ptr<Connection> conn,
                                                char tx_status) {
    bool ok = true;
    if (tx_status != protocol::tx_status::Idle) ok = co_await run_own(*conn, "ROLLBACK");
    if (ok) ok = co_await run_own(*conn, "DISCARD ALL");
    // Nothing may follow the reset's ReadyForQuery: bytes left over would
    // reach the next user.
    if (ok && conn->have != 0) ok = false;
    if (!ok) spdlog::info("HTTP pool: resetting upstream backend {} failed; closing it", conn->backend_pid);
    self->give_back(conn, ok);
  }

  void give_back(const std::shared_ptr<Connection>& conn, bool reusable) {  // reusable: reset and idle upstream
    std::vector<std::shared_ptr<Connection>> to_close;
    std::optional<std::uint64_t> watch;
    const auto now = std::chrono::steady_clock::now();
    if (reusable && now - conn->opened_at >= settings.max_lifetime) reusable = false;
    {
      std::lock_guard lock(m);
      auto r = core.release(conn->id, reusable && !closed, now);
      const bool handed_over = std::any_of(r.grants.begin(), r.grants.end(), [&](const Grant& g) {
        return g.decision.kind == Decision::Kind::reuse && g.decision.id == conn->id;
      });
      if (r.close) {
        to_close = take({conn->id});
      } else if (!handed_over) {
        watch = ++conn->idle_generation;
      }
      deliver(std::move(r.grants));
    }
    close_at_home(to_close);
    if (watch)
      asio::co_spawn(conn->home, watch_idle(weak_from_this(), conn, *watch), log_exception);
  }

  // An idle connection whose upstream sends anything (a FATAL on
  // pg_terminate_backend, EOF on a restart) is dead: forget and close it
  // now rather than hand it to the next request.
  // The pool is held weakly: this waits as long as the connection is idle,
  // and its frame goes only with the connection's io_context, which may be
  // torn down after the others (the pool's state holds objects of those).
  static asio::awaitable<void> watch_idle(std::weak_ptr<Impl> pool, std::shared_ptr<Connection> conn,
                                          std::uint64_t generation) {
    {
      auto self = pool.lock();
      if (!self) co_return;
      // Lent again before this started: the connection is its borrower's,
      // and a wire session may have moved its socket to another thread.
      // (Once this waits, a move has to run here first, which ends the wait.)
      std::lock_guard lock(self->m);
      if (conn->idle_generation != generation) co_return;
    }
    co_await conn->stream->wait_readable();
    auto self = pool.lock();
    if (!self) {
      conn->close();  // the pool is gone; so are its idle connections
      co_return;
    }
    std::vector<Grant> grants;
    bool gone = false;
    {
      std::lock_guard lock(self->m);
      if (conn->idle_generation == generation && self->core.remove_idle(conn->id, grants)) {
        self->conns.erase(conn->id);
        gone = true;
      }
      self->deliver(std::move(grants));
    }
    if (gone) {
      spdlog::info("HTTP pool: idle upstream backend {} went away", conn->backend_pid);
      conn->close();
    }
  }

  // Runs on timer_executor until the pool closes. Its timer is its own
  // (destroyed with this frame, on that executor's io_context) and the pool
  // is held only between ticks.
  static asio::awaitable<void> expire_loop(std::weak_ptr<Impl> pool) {
    asio::steady_timer timer(co_await asio::this_coro::executor);
    std::chrono::steady_clock::duration tick{};
    {
      auto self = pool.lock();
      if (!self) co_return;
      tick = std::min<std::chrono::steady_clock::duration>(
          {kExpiryTick, self->settings.limits.idle_timeout, self->settings.max_lifetime});
      std::lock_guard lock(self->m);
      if (self->closed) co_return;
      self->expiry = &timer;
    }
    // Whichever way this frame ends (the pool closed, or the io_context
    // destroyed it while it waited), close() no longer finds the timer.
    struct Unhook {
      std::weak_ptr<Impl> pool;
      ~Unhook() {
        if (auto self = pool.lock()) self->expiry = nullptr;
      }
    } unhook{pool};
    for (;;) {
      timer.expires_after(tick);
      auto [ec] = co_await timer.async_wait(use_nothrow);
      auto self = pool.lock();
      if (!self) co_return;
      std::vector<std::shared_ptr<Connection>> gone;
      {
        std::lock_guard lock(self->m);
        if (self->closed) co_return;
        std::vector<Grant> grants;
        const auto now = std::chrono::steady_clock::now();
        gone = self->take(self->core.expire(now, grants));
        // Idle connections past pool.max_lifetime go too (lent ones when given back).
        std::vector<ConnectionId> old;
        for (const auto& [id, c] : self->conns)
          if (now - c->opened_at >= self->settings.max_lifetime) old.push_back(id);
        std::vector<ConnectionId> removed;
        for (auto id : old)
          if (self->core.remove_idle(id, grants)) removed.push_back(id);
        auto more = self->take(removed);
        gone.insert(gone.end(), more.begin(), more.end());
        self->deliver(std::move(grants));
      }
      close_at_home(gone);
    }
  }
};

// ---- Lease ---------------------------------------------------------------------------

Lease& Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    if (conn_) release(false, protocol::tx_status::Idle);
    pool_ = std::move(other.pool_);
    conn_ = std::move(other.conn_);
    reused_ = other.reused_;
  }
  return *this;
}

Lease::~Lease() {
  if (conn_) release(false, protocol::tx_status::Idle);
}

std::int32_t Lease::backend_pid() const noexcept { return conn_ ? conn_->backend_pid : 0; }

net::ByteStream& Lease::stream() noexcept { return *conn_->stream; }

const protocol::BackendKeyData& Lease::upstream_key() const noexcept { return conn_->upstream_key; }

const std::vector<std::pair<std::string, std::string>>& Lease::parameters() const noexcept {
  return conn_->parameters;
}

void Lease::update_parameters(const std::vector<std::pair<std::string, std::string>>& changes) {
  if (conn_) record_parameters(*conn_, changes);
}

Bytes Lease::take_leftover() {
  Bytes out(conn_->buf.begin(), conn_->buf.begin() + std::ptrdiff_t(conn_->have));
  conn_->have = 0;
  return out;
}

namespace {

// A plain socket's descriptor, taken out of its Asio socket on the socket's
// own thread. (No timer in here: this is shared with a handler on that other
// thread's io_context, which may be destroyed after the waiting one.)
struct Handoff {
  int fd = -1;
  bool v6 = false;
  bool unix_socket = false;
};

}  // namespace

asio::awaitable<bool> Lease::adopt() {
  auto exec = co_await asio::this_coro::executor;
  auto& here = asio::query(exec, asio::execution::context);
  if (&here == &asio::query(conn_->home, asio::execution::context)) co_return true;
  using tcp_stream = net::SocketStream<asio::ip::tcp::socket>;
  using unix_stream = net::SocketStream<asio::local::stream_protocol::socket>;
  auto* as_tcp = dynamic_cast<tcp_stream*>(conn_->stream.get());
  auto* as_unix = dynamic_cast<unix_stream*>(conn_->stream.get());
  if (as_tcp == nullptr && as_unix == nullptr) co_return false;  // TLS stays where it was opened
  // Released at home, where the idle watch may still wait on the socket:
  // that wait ends (aborted) and finds the connection lent.
  auto handoff = std::make_shared<Handoff>();
  // Cancelled once handoff->fd is set. The handler at home holds it weakly
  // and cancels it here, on its own executor: it is this frame's.
  auto done = std::make_shared<asio::steady_timer>(exec, std::chrono::steady_clock::time_point::max());
  asio::post(conn_->home, [handoff, as_tcp, as_unix, exec, wake = std::weak_ptr<asio::steady_timer>(done)] {
    error_code ec;
    if (as_tcp != nullptr) {
      handoff->v6 = as_tcp->socket().local_endpoint(ec).address().is_v6();
      handoff->fd = as_tcp->socket().release(ec);
    } else {
      handoff->unix_socket = true;
      handoff->fd = as_unix->socket().release(ec);
    }
    if (ec) handoff->fd = -1;
    asio::post(exec, [wake] {
      if (auto timer = wake.lock()) timer->cancel();
    });
  });
  co_await done->async_wait(use_nothrow);
  if (handoff->fd < 0) co_return false;
  // The old socket object goes at home, after the aborted wait's completion.
  asio::post(conn_->home, [old = std::move(conn_->stream)] {});
  error_code ec;
  if (handoff->unix_socket) {
    asio::local::stream_protocol::socket sock(exec);
    sock.assign(asio::local::stream_protocol(), handoff->fd, ec);
    if (!ec) conn_->stream = std::make_unique<unix_stream>(std::move(sock));
  } else {
    asio::ip::tcp::socket sock(exec);
    sock.assign(handoff->v6 ? asio::ip::tcp::v6() : asio::ip::tcp::v4(), handoff->fd, ec);
    if (!ec) conn_->stream = std::make_unique<tcp_stream>(std::move(sock));
  }
  if (ec) {
    ::close(handoff->fd);
    co_return false;
  }
  conn_->home = exec;
  co_return true;
}

// Not a coroutine: co_spawn(…, use_awaitable) returns the awaitable, and its
// lambda owns the captures until the coroutine on `home` ends, so
// run_exchange may take them by reference. (As a coroutine awaiting
// co_spawn's result, GCC 12 destroyed the lambda too early.)
asio::awaitable<Lease::Result> Lease::run(http::SqlExchange& exchange, const Bytes& first) {
  const std::size_t max = pool_->settings.max_message;
  return asio::co_spawn(
      conn_->home, [conn = conn_, &exchange, &first, max] { return run_exchange(*conn, exchange, first, max); },
      asio::use_awaitable);
}

void Lease::release(bool reusable, char tx_status) {
  auto pool = std::move(pool_);
  auto conn = std::move(conn_);
  if (!pool || !conn) return;
  if (!reusable || !conn->stream ||
      std::chrono::steady_clock::now() - conn->opened_at >= pool->settings.max_lifetime) {
    pool->give_back(conn, false);
    return;
  }
  {
    std::lock_guard lock(pool->m);
    pool->core.resetting(conn->id);
  }
  asio::co_spawn(conn->home, Impl::reset_and_return(pool, conn, tx_status), log_exception);
}

// ---- UpstreamPool ------------------------------------------------------------------------

UpstreamPool::UpstreamPool(asio::any_io_executor timer_executor, UpstreamPoolSettings settings)
    : impl_(std::make_shared<Lease::Impl>(timer_executor, std::move(settings))) {
  asio::co_spawn(timer_executor, Lease::Impl::expire_loop(impl_), log_exception);
}

UpstreamPool::~UpstreamPool() { close(); }

void UpstreamPool::close() {
  std::vector<std::shared_ptr<Connection>> gone;
  {
    std::lock_guard lock(impl_->m);
    if (impl_->closed) return;
    impl_->closed = true;
    gone = impl_->take(impl_->core.drain_idle());
    for (auto& [id, waiter] : impl_->waiters) {
      auto w = waiter;  // a copy to capture: clang before 16 cannot capture a structured binding
      w->refused = true;
      impl_->core.cancel_wait(id);
      asio::post(w->timer.get_executor(), [w] { w->timer.cancel(); });
    }
  }
  Lease::Impl::close_at_home(gone);
  // Weakly: this handler may be the last thing of the pool's, destroyed with
  // the timer's io_context.
  asio::post(impl_->timer_executor, [pool = std::weak_ptr<Lease::Impl>(impl_)] {
    if (auto impl = pool.lock(); impl && impl->expiry) impl->expiry->cancel();
  });
}

UpstreamPool::Stats UpstreamPool::stats() const {
  Stats s;
  std::lock_guard lock(impl_->m);
  s.size = impl_->core.size();
  s.idle = impl_->core.idle();
  s.waiting = impl_->core.waiting();
  s.opened = impl_->opened.load();
  s.reused = impl_->reused.load();
  return s;
}

asio::awaitable<AcquireResult> UpstreamPool::acquire(const PoolKey& key,
                                                     const std::optional<std::string>& client_password) {
  AcquireResult result;
  auto self = impl_;
  auto exec = co_await asio::this_coro::executor;
  const std::string k = key.text();
  const auto& limits = self->settings.limits;

  Decision d;
  std::shared_ptr<Waiter> waiter;
  std::vector<std::shared_ptr<Connection>> evicted;
  {
    std::lock_guard lock(self->m);
    if (self->closed) {
      result.error = failure("57P01", "tokengate is shutting down");
      co_return result;
    }
    // The caller's io_context tells its I/O thread apart from the others.
    d = self->core.acquire(k, reinterpret_cast<std::uintptr_t>(&asio::query(exec, asio::execution::context)));
    evicted = self->take(d.close);
    if (d.kind == Decision::Kind::wait) {
      waiter = std::make_shared<Waiter>(exec);
      waiter->timer.expires_after(self->settings.wait_timeout);
      self->waiters.emplace(d.waiter, waiter);
    }
  }
  Lease::Impl::close_at_home(evicted);

  if (d.kind == Decision::Kind::refuse) {
    result.error = failure("53300", "too many requests are waiting for an upstream connection");
    co_return result;
  }
  if (d.kind == Decision::Kind::wait) {
    // Were this frame destroyed while it waits (its io_context torn down at
    // exit), the pool's map must not keep the waiter: the pool may outlive
    // that io_context, and the waiter's timer belongs to it.
    struct Unqueue {
      std::shared_ptr<Lease::Impl> pool;
      WaiterId id;
      bool armed = true;
      ~Unqueue() {
        if (!armed) return;
        std::lock_guard lock(pool->m);
        pool->waiters.erase(id);
        pool->core.cancel_wait(id);
      }
    } unqueue{self, d.waiter};
    co_await waiter->timer.async_wait(use_nothrow);
    unqueue.armed = false;
    std::unique_lock lock(self->m);
    self->waiters.erase(d.waiter);
    if (waiter->grant) {
      d = std::move(*waiter->grant);
      evicted = self->take(d.close);
      lock.unlock();
      Lease::Impl::close_at_home(evicted);
    } else {
      if (!waiter->refused) self->core.cancel_wait(d.waiter);
      lock.unlock();
      result.error = waiter->refused
                         ? failure("57P01", "tokengate is shutting down")
                         : failure("53300", "no upstream connection became free within " +
                                                std::to_string(self->settings.wait_timeout.count()) +
                                                " ms: all " + std::to_string(limits.max_connections) +
                                                " (pool.max_connections), or " + std::to_string(limits.max_per_key) +
                                                " for this role and database (pool.max_connections_per_key), are "
                                                "in use");
      co_return result;
    }
  }

  if (d.kind == Decision::Kind::reuse) {
    std::shared_ptr<Connection> conn;
    {
      std::lock_guard lock(self->m);
      auto it = self->conns.find(d.id);
      if (it != self->conns.end()) {
        conn = it->second;
        ++conn->idle_generation;  // its idle watch, if not started yet, will not start
      }
    }
    if (conn && std::chrono::steady_clock::now() - conn->opened_at >= self->settings.max_lifetime) {
      // Idle past pool.max_lifetime (the expiry tick had not seen it yet):
      // closed instead, and the request asks again. Each retry closes one.
      self->give_back(conn, false);
      co_return co_await acquire(key, client_password);
    }
    if (conn) {
      ++self->reused;
      result.lease = Lease(self, std::move(conn), true);
      co_return result;
    }
    // Cannot happen (lent connections stay in conns); treat as a lost place.
    {
      std::lock_guard lock(self->m);
      self->deliver(self->core.open_failed(d.id));
    }
    result.error = failure("08006", "the pooled upstream connection was lost");
    co_return result;
  }

  // open
  Opened opened = co_await self->open(key, client_password, d.id);
  if (!opened.conn) {
    {
      std::lock_guard lock(self->m);
      self->deliver(self->core.open_failed(d.id));
    }
    result.error = std::move(opened.error);
    co_return result;
  }
  ++self->opened;
  {
    std::lock_guard lock(self->m);
    self->conns.emplace(d.id, opened.conn);
  }
  result.lease = Lease(self, std::move(opened.conn), false);
  co_return result;
}

}  // namespace tokengate::pool

// The relay driver (see relay.hpp): performs what session::Relay says.
//
// Plain sockets (TCP, Unix) take the fast path: they leave Asio's sockets and
// are watched in the thread's reactor, registered once, edge-triggered
// (edge_watch.hpp). When one is readable, it
// is read non-blocking into the thread's buffer, the machine decides, and
// the result is written non-blocking straight from that buffer: one read and
// one write per batch, no coroutine frame, no timer, no allocation, no
// epoll_ctl. An idle session holds no buffer. Only when a socket is full are
// the unwritten bytes copied into the session, and then neither side is read
// until they are written (backpressure). TLS streams are completion-based:
// they take a slower path with a reader and a writer coroutine and pooled
// buffers, through the same machine. Everything of a session runs on its
// io_context's one thread, so nothing here locks.
#include "proxy/net/relay.hpp"

#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <cerrno>
#include <unistd.h>
#include <chrono>

#include "proxy/metrics.hpp"
#include "proxy/net/buffer_pool.hpp"
#include "proxy/net/connect.hpp"
#include "proxy/net/control_pool.hpp"
#include "proxy/net/local_sql.hpp"
#include "proxy/net/edge_watch.hpp"
#include "proxy/session/relay.hpp"

namespace tokengate::net {

using namespace std::chrono_literals;
using protocol::ByteView;
using protocol::Bytes;
using tcp = asio::ip::tcp;
using unix_socket = asio::local::stream_protocol;

namespace {

// The thread's read buffer: one read takes a batch of messages (many DataRows
// of a result), and it is shared by every session of the thread, since bytes
// read are handled (written or copied) before the next read.
constexpr std::size_t kReadBufferSize = 64 * 1024;
// Reads of one side per readiness event before the other sessions of the
// thread get their turn (a fast producer must not starve them).
constexpr int kMaxReadsPerWakeup = 16;
// Slices written with one sendmsg; the machine rarely produces more than a few.
constexpr int kMaxIov = 64;
// An ended session: the CancelRequest gets this long to interrupt what runs
// upstream before the backend is terminated over a control connection...
constexpr auto kCancelGrace = 1s;
// ...and the backend this long to exit (its socket closes) before tokengate
// gives up waiting and only closes. Bounds a DROP API TOKEN too.
constexpr auto kBackendExitTimeout = 10s;
// An ended session's client that does not read gets this long for the FATAL
// before its connection is closed without it (as PostgreSQL's backend, ended
// while blocked writing to its client, exits without a message): a client
// that stopped reading must not keep an ended session, or its backend, alive.
constexpr auto kClientWriteGrace = 1s;
// How long a forwarded CancelRequest may take to be delivered.
constexpr auto kCancelTimeout = 5s;
// DROP API TOKEN waits at most kRevokedSessionsWait (session_registry.hpp)
// for the sessions it ended.

std::uint8_t* thread_read_buffer() {
  thread_local std::unique_ptr<std::uint8_t[]> buf(new std::uint8_t[kReadBufferSize]);
  return buf.get();
}

// A wake-up for the coroutines of the slow path: a flag checked before
// waiting cannot miss a notify, since everything runs on one thread.
class Event {
 public:
  explicit Event(asio::any_io_executor ex) : timer_(ex, std::chrono::steady_clock::time_point::max()) {}
  asio::awaitable<void> wait() { co_await timer_.async_wait(use_nothrow); }
  void notify() { timer_.cancel(); }

 private:
  asio::steady_timer timer_;
};

std::string_view ending_name(session::Relay::Ending e) {
  switch (e) {
    case session::Relay::Ending::none: return "open";
    case session::Relay::Ending::client_terminated: return "client terminated";
    case session::Relay::Ending::client_closed: return "client closed";
    case session::Relay::Ending::upstream_closed: return "upstream closed";
    case session::Relay::Ending::client_protocol_violation: return "client protocol violation";
    case session::Relay::Ending::upstream_protocol_violation: return "upstream protocol violation";
    case session::Relay::Ending::ended: return "ended";
  }
  return "?";
}

session::RelayOptions machine_options(const RelayServices& svc, const SessionInfo& info) {
  session::RelayOptions o;
  o.tx_status = info.tx_status;
  o.max_inspected_message = svc.max_inspected_message;
  o.session_memory_limit = svc.session_memory_limit;
  o.process_memory = svc.memory;
  o.refuse_password_changes = info.via_token && !svc.token_sessions_manage_credentials;
  o.standard_conforming_strings = info.standard_conforming_strings;
  o.client_encoding = info.client_encoding;
  o.pooled_upstream = info.pooled_upstream;
  return o;
}

// Sends a CancelRequest with the upstream's own key, as libpq does (in the
// clear, on a new connection), and waits (bounded) until the server read it.
asio::awaitable<void> send_cancel(Endpoint upstream, protocol::BackendKeyData key) {
  auto [ec, connected] = co_await connect_to(upstream);
  if (ec) {
    spdlog::warn("cannot send a cancel request to {}: {}", upstream.to_string(), ec.message());
    co_return;
  }
  std::shared_ptr<ByteStream> conn = std::move(connected);
  Bytes out;
  protocol::CancelRequest{key.process_id, key.secret_key}.serialize(out);
  co_await conn->write(asio::buffer(out));
  asio::steady_timer timer(co_await asio::this_coro::executor, kCancelTimeout);
  close_when_expired(timer, conn);
  std::uint8_t sink[64];
  for (;;) {
    auto [rec, n] = co_await conn->read_some(asio::buffer(sink));
    if (rec) break;
  }
  timer.cancel();
}

}  // namespace

struct Relay::State : std::enable_shared_from_this<State> {
  enum class Kind : std::uint8_t { polled, generic };
  struct Side {
    State* st = nullptr;
    std::unique_ptr<EdgeWatcher> watcher;  // polled
    ByteStream* stream = nullptr;
    Kind kind = Kind::generic;
    int fd = -1;  // polled: the socket, taken from Asio and owned here
    Bytes pending;  // output not yet written (the socket was full, or a TLS write runs)
    std::size_t pending_off = 0;
    bool may_have_input = true;  // polled: an edge came and the socket was not read dry since
    bool hung_up = false;        // polled: the peer closed; read on until end of stream
    bool read_armed = false;     // TLS: a read may start
    bool write_armed = false;    // TLS: a write runs
    bool eof = false;
    bool dead = false;           // writing failed: drop what goes there
    bool closed = false;
    bool half_closed = false;
    std::unique_ptr<Event> event;  // TLS: wakes its reader and writer
    bool blocked() const noexcept { return pending.size() > pending_off || (kind == Kind::generic && write_armed); }
  };
  static void side_events(void* side, std::uint32_t events) {
    auto* s = static_cast<Side*>(side);
    s->st->on_events(*s, events);
  }

  State(asio::any_io_executor e, ByteStream& client, ByteStream& upstream, const RelayServices& svc, SessionInfo i)
      : ex(e), services(svc), info(std::move(i)), machine(machine_options(services, info)) {
    init_side(c, client);
    init_side(u, upstream);
  }
  ~State() {
    // Normally both sides were closed when the session finished. Otherwise the
    // io_context is being torn down (SIGINT): its queue may still hold a
    // watcher and destroys it later, so the watcher is left alive.
    for (Side* s : {&c, &u}) {
      if (s->closed || s->kind != Kind::polled) continue;
      s->watcher->unwatch();
      ::close(s->fd);
      (void)s->watcher.release();
    }
  }

  // A plain socket leaves Asio's socket object and is watched in the
  // thread's reactor; anything else (TLS) stays a ByteStream.
  void init_side(Side& s, ByteStream& stream) {
    s.st = this;
    s.stream = &stream;
    int fd = -1;
    if (thread_reactor() >= 0) {
      error_code ec;
      if (auto* t = dynamic_cast<SocketStream<tcp::socket>*>(&stream)) fd = t->socket().release(ec);
      else if (auto* l = dynamic_cast<SocketStream<unix_socket::socket>*>(&stream)) fd = l->socket().release(ec);
      if (ec) fd = -1;
    }
    if (fd >= 0) {
      s.kind = Kind::polled;
      s.fd = fd;
      s.watcher = std::make_unique<EdgeWatcher>(&State::side_events, &s);
      if (!s.watcher->watch(fd)) s.eof = s.dead = true;  // cannot happen with a valid socket: the session ends
      return;
    }
    s.kind = Kind::generic;
    s.event = std::make_unique<Event>(ex);
  }

  void start(Bytes pending);
  void feed(Side& s, ByteView data);
  void after_machine();
  void write_out(Side& s, const session::Relay::Output& out);
  void flush_pending(Side& s);
  void update_reads();
  bool may_read(const Side& s) const;
  void on_events(Side& s, std::uint32_t events);
  bool read_polled(Side& s);
  void arm_write(Side& s);
  void on_eof(Side& s);
  void after_write(Side& s);
  void start_statement(session::StatementRequest req);
  void observe();
  void end(protocol::ErrorResponse why);
  void begin_close();
  void continue_close();
  void close_side(Side& s);
  bool keep_upstream();
  void finish();
  void maybe_done();
  void charge_pending(Side& s, std::size_t before);
  asio::awaitable<void> generic_reader(Side& s);
  asio::awaitable<void> generic_writer(Side& s);
  asio::awaitable<void> run_statement(session::StatementRequest req);
  asio::awaitable<void> end_backend();
  void spawn(asio::awaitable<void> a, const char* what, bool uses_streams = false);

  asio::any_io_executor ex;
  const RelayServices& services;  // the server's, which outlives every session
  SessionInfo info;
  LocalSql local{services, info};
  session::Relay machine;
  Side c, u;
  std::optional<SessionRegistry::Handle> handle;
  std::function<void()> on_done;  // posted once done and no coroutine can touch a stream
  bool done = false;
  bool closing = false;
  bool forced = false;  // ended by end() or a limit: the backend must go
  bool kept = false;    // the upstream stays open for the pool
  // Ended: the CancelRequest was delivered (or could not be), so the upstream
  // connection may now be half-closed. A pooler such as PgBouncer forgets a
  // client's cancel key once that client has gone, and drops the server
  // connection without stopping the backend: a statement running then would
  // go on, and an autocommit one would commit after DROP API TOKEN answered.
  bool cancel_done = false;
  bool in_after = false, again = false;
  // An API TOKEN statement runs (on the store worker, then waiting for the
  // sessions it ended). An end() meanwhile waits for its answer: a session
  // that drops its own token hears "DROP API TOKEN" before the FATAL, and the
  // upstream is idle meanwhile (a statement runs only once everything before
  // it was answered), so nothing more runs there for the session.
  bool statement_running = false;
  std::optional<protocol::ErrorResponse> deferred_end;
  int coroutines = 0;  // run() returns only once none of them can touch a stream
  std::unique_ptr<asio::steady_timer> close_timer;
  std::unique_ptr<asio::steady_timer> grace_timer;
  std::unique_ptr<asio::steady_timer> client_timer;  // kClientWriteGrace
  // end(): the machine writes the FATAL only at an upstream message boundary,
  // which a client that does not read may never let the relay reach.
  std::unique_ptr<asio::steady_timer> end_timer;
  bool end_forced = false;
  // A round trip: from the first request sent while none was outstanding
  // until every request is answered (tokengate_query_duration_seconds).
  bool round_trip = false;
  std::chrono::steady_clock::time_point round_trip_start;
  // A drain: end with this once idle outside a transaction block.
  std::optional<protocol::ErrorResponse> end_when_idle;
};

// ---- start, feeding the machine ----------------------------------------------------

void Relay::State::spawn(asio::awaitable<void> a, const char* what, bool uses_streams) {
  // Never detached without a handler: an exception is logged and ends the session.
  if (uses_streams) ++coroutines;
  asio::co_spawn(ex, std::move(a), [self = shared_from_this(), what, uses_streams](std::exception_ptr e) {
    if (uses_streams && --self->coroutines == 0) self->maybe_done();
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      spdlog::error("session of \"{}\" from {}: {} failed: {}", self->info.user, self->info.peer, what, x.what());
    }
    self->end(protocol::ErrorResponse::make("FATAL", "XX000", "internal error in tokengate"));
  });
}

void Relay::State::start(Bytes pending) {
  for (Side* s : {&c, &u}) {
    if (s->kind != Kind::generic) continue;
    spawn(generic_reader(*s), "reading", true);
    spawn(generic_writer(*s), "writing", true);
  }
  if (!pending.empty()) feed(c, pending);
  update_reads();
}

void Relay::State::feed(Side& s, ByteView data) {
  // Counted per read, not per message.
  if (&s == &c) {
    metrics::global().bytes_from_clients.inc(data.size());
    if (info.stats) info.stats->bytes_in.fetch_add(data.size(), std::memory_order_relaxed);
    machine.on_client_bytes(data);
  } else {
    metrics::global().bytes_from_upstream.inc(data.size());
    if (info.stats) info.stats->bytes_out.fetch_add(data.size(), std::memory_order_relaxed);
    machine.on_upstream_bytes(data);
  }
  after_machine();
}

// Performs what the machine says after an input: writes, a statement to run,
// the end of the session.
void Relay::State::after_machine() {
  if (in_after) {
    again = true;
    return;
  }
  in_after = true;
  do {
    again = false;
    write_out(u, machine.to_upstream());
    write_out(c, machine.to_client());
    machine.output_done();
    if (auto req = machine.take_statement_request()) start_statement(std::move(*req));
    if (machine.finished() && !closing) begin_close();
  } while (again);
  in_after = false;
  observe();
}

// After each batch: the round-trip clock, the state SHOW TOKENGATE SESSIONS
// shows, and a drain's end once the session is idle. Reads the clock only
// when a round trip starts or ends.
void Relay::State::observe() {
  if (done || closing) return;
  const bool busy = machine.outstanding() > 0 || !machine.wants_client_bytes();
  if (busy != round_trip) {
    const auto now = std::chrono::steady_clock::now();
    if (busy) round_trip_start = now;
    else metrics::global().query_seconds.observe(now - round_trip_start);
    round_trip = busy;
  }
  const char tx = machine.tx_status();
  if (info.stats) {
    using St = admin::SessionState;
    info.stats->state.store(busy                                     ? St::active
                            : tx == protocol::tx_status::InBlock     ? St::idle_in_transaction
                            : tx == protocol::tx_status::Failed      ? St::idle_in_failed_transaction
                                                                     : St::idle,
                            std::memory_order_relaxed);
  }
  if (end_when_idle && !busy && tx == protocol::tx_status::Idle) {
    auto why = std::move(*end_when_idle);
    end_when_idle.reset();
    end(std::move(why));
  }
}

void Relay::State::charge_pending(Side& s, std::size_t before) {
  if (s.pending.capacity() <= before) return;
  if (auto r = machine.memory().charge(s.pending.capacity() - before); r != session::MemoryAccount::Charge::ok) {
    // Too much is waiting for a slow peer: the session ends.
    s.dead = true;
    spdlog::warn("session of \"{}\" from {}: output buffers over the memory limit", info.user, info.peer);
    end(protocol::ErrorResponse::make("FATAL", "53200", "out of memory"));
  }
}

void Relay::State::write_out(Side& s, const session::Relay::Output& out) {
  if (out.empty() || s.dead || s.closed) return;
  const std::size_t cap_before = s.pending.capacity();
  if (s.kind == Kind::polled && !s.blocked()) {
    // Straight from the read buffer, in one system call.
    iovec iov[kMaxIov];
    int n = 0;
    std::size_t total = 0;
    bool all = true;
    out.for_each([&](ByteView v) {
      if (n == kMaxIov) {
        all = false;
        return;
      }
      iov[n].iov_base = const_cast<std::uint8_t*>(v.data());
      iov[n].iov_len = v.size();
      total += v.size();
      ++n;
    });
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = std::size_t(n);
    ssize_t sent;
    do {
      sent = ::sendmsg(s.fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        s.dead = true;
        return;
      }
      sent = 0;
    }
    if (std::size_t(sent) == total && all) return;
    // Keep what did not fit; the socket's next EPOLLOUT edge flushes it.
    std::size_t skip = std::size_t(sent);
    out.for_each([&](ByteView v) {
      if (skip >= v.size()) {
        skip -= v.size();
        return;
      }
      s.pending.insert(s.pending.end(), v.begin() + std::ptrdiff_t(skip), v.end());
      skip = 0;
    });
  } else {
    out.for_each([&](ByteView v) { s.pending.insert(s.pending.end(), v.begin(), v.end()); });
  }
  charge_pending(s, cap_before);
  arm_write(s);
}

// ---- reading --------------------------------------------------------------------------

bool Relay::State::may_read(const Side& s) const {
  if (done || s.eof || s.closed) return false;
  if (closing) return &s == &u && u.half_closed;  // draining the upstream until it closes
  // Backpressure: nothing is read while output waits for a slow peer.
  if (c.blocked() || u.blocked()) return false;
  return &s == &c ? machine.wants_client_bytes() : machine.wants_upstream_bytes();
}

// Starts what may start: reads of polled sockets that may have input, and
// TLS reads. Reading one side can make the other readable (a local answer
// waited for the upstream, and the client's next bytes are already there),
// so the sides are visited again while one of them read something.
void Relay::State::update_reads() {
  for (bool again = true; again && !done;) {
    again = false;
    for (Side* s : {&c, &u}) {
      if (s->kind == Kind::polled) {
        if (s->may_have_input && may_read(*s)) again |= read_polled(*s);
      } else if (!s->read_armed && may_read(*s)) {
        s->read_armed = true;
        s->event->notify();
      }
      if (done) return;
    }
  }
}

void Relay::State::on_events(Side& s, std::uint32_t events) {
  if (done || s.closed) return;
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) s.may_have_input = true;
  // The end of stream may have come with the last bytes, in the same edge.
  if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) s.hung_up = true;
  if ((events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) && s.blocked()) {
    flush_pending(s);
    after_write(s);
    if (done) return;
  }
  update_reads();
}

// Reads a polled socket until it is dry (edge-triggered: no new edge comes
// for bytes already there), or until the per-wakeup limit, then later.
// True when it read something.
bool Relay::State::read_polled(Side& s) {
  std::uint8_t* buf = thread_read_buffer();
  bool read = false;
  for (int i = 0; s.may_have_input && may_read(s); ++i) {
    if (i == kMaxReadsPerWakeup) {
      // The other sessions of the thread get their turn; no new edge would
      // announce what is left, so come back by ourselves.
      s.may_have_input = false;
      asio::post(ex, [self = shared_from_this(), side = &s] {
        side->may_have_input = true;
        self->on_events(*side, 0);
      });
      return read;
    }
    const ssize_t n = ::recv(s.fd, buf, kReadBufferSize, MSG_DONTWAIT);
    if (n > 0) {
      read = true;
      if (std::size_t(n) < kReadBufferSize && !s.hung_up) s.may_have_input = false;  // read dry
      if (!closing) feed(s, ByteView(buf, std::size_t(n)));  // when closing: draining an ended upstream
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    s.may_have_input = false;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return read;
    on_eof(s);  // end of stream, or an error
    return true;
  }
  return read;
}

void Relay::State::on_eof(Side& s) {
  if (s.eof) return;
  s.eof = true;
  if (closing) {
    continue_close();
    return;
  }
  if (&s == &c) machine.on_client_eof();
  else machine.on_upstream_eof();
  after_machine();
  update_reads();
}

// ---- writing ----------------------------------------------------------------------

void Relay::State::arm_write(Side& s) {
  if (s.kind == Kind::generic && s.blocked() && !s.dead && !s.closed) s.event->notify();
  // A polled socket is watched for room only while output waits (adding
  // EPOLLOUT reports at once if there is room already).
  if (s.kind == Kind::polled && s.blocked() && !s.dead && !s.closed) s.watcher->want_write(true);
}

void Relay::State::flush_pending(Side& s) {
  while (s.pending.size() > s.pending_off) {
    const ssize_t n = ::send(s.fd, s.pending.data() + s.pending_off, s.pending.size() - s.pending_off,
                             MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      s.pending_off += std::size_t(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    s.dead = true;
    break;
  }
  machine.memory().refund(s.pending.capacity());
  Bytes().swap(s.pending);
  s.pending_off = 0;
  s.watcher->want_write(false);
}

void Relay::State::after_write(Side& s) {
  if (s.dead && !s.blocked()) {
    // The peer is gone: the session is over for it.
    machine.memory().refund(s.pending.capacity());
    Bytes().swap(s.pending);
    s.pending_off = 0;
    if (!closing) {
      on_eof(s);
      return;
    }
  }
  if (closing) {
    continue_close();
    return;
  }
  update_reads();
}

// ---- TLS streams: the slow path --------------------------------------------------------

asio::awaitable<void> Relay::State::generic_reader(Side& s) {
  auto self = shared_from_this();
  for (;;) {
    while (!done && !(s.read_armed && may_read(s))) co_await s.event->wait();
    if (done) co_return;
    // Wait without a buffer: an idle session holds none.
    if (auto ec = co_await s.stream->wait_readable(); ec) {
      s.read_armed = false;
      if (!done) on_eof(s);
      if (s.eof) co_return;
      continue;
    }
    if (done) co_return;
    Bytes buf = BufferPool::acquire();
    auto [ec, n] = co_await s.stream->read_some(asio::buffer(buf));
    s.read_armed = false;
    if (done) co_return;
    if (ec) {
      BufferPool::release(std::move(buf));
      on_eof(s);
      co_return;
    }
    if (!closing) feed(s, ByteView(buf.data(), n));
    BufferPool::release(std::move(buf));
    update_reads();
  }
}

asio::awaitable<void> Relay::State::generic_writer(Side& s) {
  auto self = shared_from_this();
  for (;;) {
    while (!done && (s.pending.size() <= s.pending_off || s.dead || s.closed)) co_await s.event->wait();
    if (done) co_return;
    Bytes out;
    out.swap(s.pending);
    const std::size_t off = std::exchange(s.pending_off, 0);
    s.write_armed = true;
    auto [ec, n] = co_await s.stream->write(asio::buffer(out.data() + off, out.size() - off));
    s.write_armed = false;
    machine.memory().refund(out.capacity());
    if (done) co_return;
    if (ec) s.dead = true;
    after_write(s);
  }
}

// ---- API TOKEN statements ----------------------------------------------------------------

void Relay::State::start_statement(session::StatementRequest req) {
  statement_running = true;
  spawn(run_statement(std::move(req)), "an API TOKEN statement");
}

asio::awaitable<void> Relay::State::run_statement(session::StatementRequest req) {
  auto self = shared_from_this();
  // On every way out (an exception too), so that end() is never held back
  // by a statement that is over.
  struct Running {
    State& st;
    ~Running() { st.statement_running = false; }
  } running{*this};
  auto result = co_await local.run(req.statement, req.tx_status);
  if (!result.revoked.empty() && services.sessions != nullptr) {
    // DROP API TOKEN answers once the sessions it ended are gone, upstream
    // backends included: nothing they sent can commit after the answer.
    if (!co_await services.sessions->wait_ended(result.revoked, handle.value_or(0), kRevokedSessionsWait))
      spdlog::warn("session of \"{}\": sessions of revoked tokens were still open after {} s", info.user,
                   std::chrono::duration_cast<std::chrono::seconds>(kRevokedSessionsWait).count());
  }
  if (done || closing) co_return;
  statement_running = false;
  machine.on_statement_result(std::move(result));
  after_machine();
  if (deferred_end) {
    auto why = std::move(*deferred_end);
    deferred_end.reset();
    end(std::move(why));
    co_return;
  }
  update_reads();
}

// ---- ending -------------------------------------------------------------------------------

void Relay::State::end(protocol::ErrorResponse why) {
  if (done || closing) return;
  if (statement_running) {
    if (!deferred_end) deferred_end = std::move(why);
    return;
  }
  machine.end(std::move(why));
  after_machine();
  update_reads();
  if (done || closing) return;
  // Still waiting for a message boundary: the upstream is mid-message and
  // nothing more is read while the client does not take what it was sent. A
  // session told to end must not outlive its end on a client's whim: after
  // kClientWriteGrace it closes without the message (as PostgreSQL's backend,
  // ended while blocked writing to its client, exits without one), and its
  // backend is ended all the same.
  end_timer = std::make_unique<asio::steady_timer>(ex, kClientWriteGrace);
  end_timer->async_wait([self = shared_from_this()](error_code ec) {
    if (ec || self->done || self->closing) return;
    spdlog::info("session of \"{}\" from {}: ended while its client did not read; closing it without the message",
                 self->info.user, self->info.peer);
    self->end_forced = true;
    self->c.dead = true;
    self->begin_close();
  });
}

void Relay::State::begin_close() {
  closing = true;
  forced = end_forced || machine.ending() == session::Relay::Ending::ended;
  switch (machine.ending()) {
    case session::Relay::Ending::client_protocol_violation:
    case session::Relay::Ending::upstream_protocol_violation:
      spdlog::warn("session of \"{}\" from {}: {}", info.user, info.peer, machine.ending_detail());
      break;
    case session::Relay::Ending::ended:
      spdlog::info("session of \"{}\" from {} ended: {}", info.user, info.peer, machine.ending_detail());
      break;
    default:
      spdlog::debug("session of \"{}\" from {}: {}", info.user, info.peer, ending_name(machine.ending()));
      break;
  }
  if (!forced && machine.upstream_reusable()) kept = keep_upstream();
  if (forced) spawn(end_backend(), "ending the upstream backend");
  if (forced && c.blocked()) {
    client_timer = std::make_unique<asio::steady_timer>(ex, kClientWriteGrace);
    client_timer->async_wait([self = shared_from_this()](error_code ec) {
      if (ec || self->done || self->c.closed) return;
      spdlog::info("session of \"{}\" from {}: the client did not read its last messages; closing it",
                   self->info.user, self->info.peer);
      self->c.dead = true;
      self->continue_close();
    });
  }
  close_timer = std::make_unique<asio::steady_timer>(ex, kBackendExitTimeout);
  close_timer->async_wait([self = shared_from_this()](error_code ec) {
    if (ec || self->done) return;
    if (self->forced)
      spdlog::warn("session of \"{}\" from {}: the upstream backend (pid {}) did not exit within {} s", self->info.user,
                   self->info.peer, self->info.upstream_key.process_id,
                   std::chrono::duration_cast<std::chrono::seconds>(kBackendExitTimeout).count());
    self->close_side(self->c);
    self->close_side(self->u);
    self->finish();
  });
  continue_close();
}

// Cancels what the backend runs (it may be in the middle of a statement that
// would otherwise commit), then, if it has not exited after kCancelGrace,
// terminates it over a control connection. continue_close() half-closed the
// connection, so an idle backend exits at once; its socket closing tells us
// it is gone.
asio::awaitable<void> Relay::State::end_backend() {
  auto self = shared_from_this();
  if (info.upstream != nullptr && info.upstream_key.process_id != 0)
    co_await send_cancel(*info.upstream, info.upstream_key);
  if (done) co_return;
  cancel_done = true;
  continue_close();
  if (done) co_return;
  grace_timer = std::make_unique<asio::steady_timer>(ex, kCancelGrace);
  co_await grace_timer->async_wait(use_nothrow);
  if (done || u.eof || services.control == nullptr || info.upstream_key.process_id == 0) co_return;
  std::vector<session::QueryParam> params;
  params.emplace_back(std::to_string(info.upstream_key.process_id));
  params.emplace_back(info.user);
  // Behind a pooler the key's "process ID" is the pooler's own (PgBouncer's is
  // random) and may be some other backend's PID: terminate only a backend of
  // this session's role.
  std::string sql =
      "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity "
      "WHERE pid = $1::int AND usename = $2";
  auto r = co_await services.control->query(std::move(sql), std::move(params));
  if (!r) spdlog::warn("cannot terminate upstream backend {}: {}", info.upstream_key.process_id, r.error());
  else if (r->error)
    spdlog::warn("cannot terminate upstream backend {}: {}", info.upstream_key.process_id, r->error->message());
}

void Relay::State::continue_close() {
  if (done) return;
  // The client gets what is pending (the FATAL), then is closed.
  if (!c.closed && (!c.blocked() || c.dead)) close_side(c);
  if (!u.closed && (!u.blocked() || u.dead)) {
    if (!forced || u.eof || u.dead) {
      close_side(u);
    } else if (!u.half_closed && cancel_done) {
      // Ended: the backend sees end of input once it is done with what it
      // has (the cancel cuts that short) and exits; wait for its socket to close.
      u.half_closed = true;
      if (u.kind == Kind::polled) ::shutdown(u.fd, SHUT_WR);
      else u.stream->shutdown_send();
      update_reads();
    }
  }
  if (c.closed && u.closed) finish();
}

// The client left a pooled backend idle: its socket goes back, open and
// unread, into the ByteStream it came from (a plain socket leaves Asio's
// socket object for the relay), for the pool to reset and lend again. TLS
// streams, and a socket with anything unusual about it, are closed instead.
bool Relay::State::keep_upstream() {
  if (u.kind != Kind::polled || u.closed || u.eof || u.dead || u.hung_up || u.blocked()) return false;
  u.watcher->unwatch();
  asio::post(ex, [w = std::move(u.watcher)] {});
  u.closed = true;
  error_code ec;
  if (auto* t = dynamic_cast<SocketStream<tcp::socket>*>(u.stream)) {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    const bool v6 = ::getsockname(u.fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0 && addr.ss_family == AF_INET6;
    t->socket().assign(v6 ? tcp::v6() : tcp::v4(), u.fd, ec);
  } else if (auto* l = dynamic_cast<SocketStream<unix_socket::socket>*>(u.stream)) {
    l->socket().assign(unix_socket(), u.fd, ec);
  } else {
    ec = asio::error::operation_not_supported;
  }
  if (ec) {
    ::close(u.fd);
    return false;
  }
  return true;
}

void Relay::State::close_side(Side& s) {
  if (s.closed) return;
  s.closed = true;
  if (s.kind == Kind::polled) {
    s.watcher->unwatch();
    ::close(s.fd);
    // The scheduler may hold the watcher queued until its round ends.
    asio::post(ex, [w = std::move(s.watcher)] {});
  } else {
    s.stream->close();
  }
  if (s.event) s.event->notify();
}

void Relay::State::finish() {
  if (done) return;
  done = true;
  // Pending operations on the streams end now, so the coroutines using them return.
  close_side(c);
  close_side(u);
  machine.memory().refund(c.pending.capacity() + u.pending.capacity());
  Bytes().swap(c.pending);
  Bytes().swap(u.pending);
  if (close_timer) close_timer->cancel();
  if (grace_timer) grace_timer->cancel();
  if (client_timer) client_timer->cancel();
  if (end_timer) end_timer->cancel();
  if (c.event) c.event->notify();
  if (u.event) u.event->notify();
  maybe_done();
}

void Relay::State::maybe_done() {
  if (!done || coroutines > 0 || !on_done) return;
  asio::post(ex, std::move(on_done));
  on_done = nullptr;
}

// ---- Relay ------------------------------------------------------------------------------

Relay::Relay(asio::any_io_executor ex, ByteStream& client, ByteStream& upstream, const RelayServices& services,
             SessionInfo info)
    : s_(std::make_shared<State>(ex, client, upstream, services, std::move(info))) {}

Relay::~Relay() = default;

void Relay::set_registry_handle(SessionRegistry::Handle h) { s_->handle = h; }

void Relay::end(protocol::ErrorResponse reason) { s_->end(std::move(reason)); }

void Relay::end_when_idle(protocol::ErrorResponse reason) {
  if (s_->done || s_->closing) return;
  s_->end_when_idle = std::move(reason);
  s_->observe();
}

bool Relay::upstream_kept() const noexcept { return s_->kept; }

const std::vector<std::pair<std::string, std::string>>& Relay::parameter_changes() const noexcept {
  return s_->machine.parameter_changes();
}

void Relay::start(Bytes pending, std::function<void()> on_done) {
  s_->on_done = std::move(on_done);
  s_->start(std::move(pending));
}

}  // namespace tokengate::net

// The upstream pool's (Asio) lifetimes at exit: the pool, its coroutines and
// its waiters on several io_contexts torn down one after another, as the
// server tears down its I/O threads' contexts. Nothing of the pool may touch
// an object of a context that is gone; ASan and UBSan (./dev test runs this
// binary under both) report it when it does.
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <catch2/catch.hpp>

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <thread>

#include "proxy/net/stream.hpp"
#include "proxy/pool/upstream_pool.hpp"
#include "proxy/protocol/frame.hpp"
#include "tests/common/pg_bytes.hpp"

using namespace tokengate;
using namespace tokengate::test;
using namespace std::chrono_literals;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

// A minimal PostgreSQL on 127.0.0.1 (own thread): trust login, then every
// Sync is answered as for a statement without rows (DISCARD ALL, ROLLBACK).
class FakeUpstream {
 public:
  FakeUpstream() : acceptor_(io_, {asio::ip::make_address("127.0.0.1"), 0}) {
    asio::co_spawn(io_, accept_loop(), asio::detached);
    thread_ = std::thread([this] { io_.run(); });
  }
  ~FakeUpstream() {
    io_.stop();
    thread_.join();
  }
  net::Endpoint endpoint() const { return {"127.0.0.1", acceptor_.local_endpoint().port()}; }
  std::atomic<int> connections{0};

 private:
  asio::awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, sock] = co_await acceptor_.async_accept(net::use_nothrow);
      if (ec) co_return;
      ++connections;
      asio::co_spawn(io_, serve(std::move(sock)), asio::detached);
    }
  }

  static asio::awaitable<std::optional<protocol::Frame>> next(tcp::socket& s, Bytes& buf, std::size_t& have,
                                                             bool startup) {
    for (;;) {
      protocol::ByteView v(buf.data(), have);
      auto fr = startup ? protocol::read_startup_frame(v, 10000) : protocol::read_frame(v);
      if (fr.status == protocol::FrameStatus::complete) co_return fr.frame;
      if (fr.status == protocol::FrameStatus::bad_length) co_return std::nullopt;
      if (buf.size() < have + 4096) buf.resize(have + 4096);
      auto [ec, n] = co_await s.async_read_some(asio::buffer(buf.data() + have, buf.size() - have), net::use_nothrow);
      if (ec) co_return std::nullopt;
      have += n;
    }
  }

  asio::awaitable<void> serve(tcp::socket sock) {
    Bytes buf;
    std::size_t have = 0;
    auto consume = [&](std::size_t n) {
      buf.erase(buf.begin(), buf.begin() + std::ptrdiff_t(n));
      have -= n;
    };
    auto startup = co_await next(sock, buf, have, true);
    if (!startup) co_return;
    consume(startup->size);
    const Bytes ready = msg('Z', Bytes{'I'});
    const Bytes logged_in = concat({msg('R', body_i32s({0})), msg('S', body_cstrs({"server_version", "15.0"})),
                                    msg('K', body_i32s({4242, 7})), ready});
    const Bytes done = concat({msg('1', {}), msg('2', {}), msg('n', {}), msg('C', body_cstrs({"DISCARD ALL"})), ready});
    if (auto [ec, n] = co_await asio::async_write(sock, asio::buffer(logged_in), net::use_nothrow); ec) co_return;
    for (;;) {
      auto f = co_await next(sock, buf, have, false);
      if (!f || f->tag == 'X') co_return;
      const char tag = f->tag;
      consume(f->size);
      if (tag != 'S') continue;
      if (auto [ec, n] = co_await asio::async_write(sock, asio::buffer(done), net::use_nothrow); ec) co_return;
    }
  }

  asio::io_context io_;
  tcp::acceptor acceptor_;
  std::thread thread_;
};

pool::UpstreamPoolSettings settings_for(const FakeUpstream& up) {
  pool::UpstreamPoolSettings s;
  s.upstream = up.endpoint();
  s.connect_timeout = 5000ms;
  s.wait_timeout = 60000ms;  // longer than any test: a waiter here waits until torn down
  return s;
}

pool::PoolKey key() { return {"alice", "app", {{"application_name", "pool_test"}}, false}; }

// Runs `ctx` until `done()` holds (the fake upstream answers from its own
// thread), at most a few seconds.
void run_until(asio::io_context& ctx, const std::function<bool()>& done) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  ctx.restart();
  while (!done() && std::chrono::steady_clock::now() < deadline) ctx.run_one_for(50ms);
  REQUIRE(done());
}

// A lease taken on `ctx` (whose thread then is the connection's home).
pool::Lease acquire_on(asio::io_context& ctx, pool::UpstreamPool& p) {
  std::optional<pool::AcquireResult> got;
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        const auto k = key();
        const std::optional<std::string> no_password;
        got.emplace(co_await p.acquire(k, no_password));
      },
      asio::detached);
  run_until(ctx, [&] { return got.has_value(); });
  INFO(got->error.sqlstate << " " << got->error.message);
  REQUIRE(got->lease);
  return std::move(got->lease);
}

}  // namespace

// The reported case: the idle watch of a connection given back on one
// thread held the pool's state, which held the expiry timer of another
// thread's io_context; that context went first at exit, and the watch's
// frame, destroyed with its own context, destroyed the timer (UBSan: invalid
// vptr in ~basic_waitable_timer).
TEST_CASE("upstream pool: an idle connection's watch does not keep the pool past its timer's io_context",
          "[pool][lifetime]") {
  FakeUpstream up;
  auto timer_ctx = std::make_unique<asio::io_context>(1);
  auto home_ctx = std::make_unique<asio::io_context>(1);
  auto p = std::make_unique<pool::UpstreamPool>(timer_ctx->get_executor(), settings_for(up));
  timer_ctx->poll();  // the expiry loop starts

  auto lease = acquire_on(*home_ctx, *p);
  CHECK(lease.backend_pid() == 4242);
  lease.release(true, 'I');
  // Reset (DISCARD ALL) and idle again, with its watch waiting at home.
  run_until(*home_ctx, [&] { return p->stats().idle == 1; });
  home_ctx->poll();
  CHECK(up.connections == 1);

  // The server's order: the pool, then the contexts, the timer's first.
  p.reset();
  timer_ctx.reset();
  home_ctx.reset();
}

// A request waiting for a connection is destroyed with its io_context (exit);
// the connection it waited for comes back afterwards. The pool must not keep
// the waiter, whose timer belonged to the context that is gone, nor wake it.
TEST_CASE("upstream pool: a waiter destroyed with its io_context is not woken later", "[pool][lifetime]") {
  FakeUpstream up;
  auto timer_ctx = std::make_unique<asio::io_context>(1);
  auto home_ctx = std::make_unique<asio::io_context>(1);
  auto waiter_ctx = std::make_unique<asio::io_context>(1);
  auto s = settings_for(up);
  s.limits.max_connections = 1;
  auto p = std::make_unique<pool::UpstreamPool>(timer_ctx->get_executor(), std::move(s));

  auto lease = acquire_on(*home_ctx, *p);
  bool answered = false;
  asio::co_spawn(
      *waiter_ctx,
      [&]() -> asio::awaitable<void> {
        const auto k = key();
        const std::optional<std::string> no_password;
        auto r = co_await p->acquire(k, no_password);
        (void)r;
        answered = true;
      },
      asio::detached);
  run_until(*waiter_ctx, [&] { return p->stats().waiting == 1; });

  waiter_ctx.reset();  // the waiting request's frame goes with it
  CHECK_FALSE(answered);
  CHECK(p->stats().waiting == 0);
  // Given back as broken: its place would go to the first waiter.
  lease.release(false, 'I');
  CHECK(p->stats().size == 0);
  p.reset();
  timer_ctx.reset();
  home_ctx.reset();
}

// A pool destroyed first (the server destroys it before its contexts), with
// a connection given back to it afterwards: the reset of that connection,
// still waiting at home when the contexts go (the timer's first), held the
// pool's state last (UBSan: invalid vptr in ~basic_waitable_timer, from
// reset_and_return).
TEST_CASE("upstream pool: destroyed before its io_contexts, with a connection idle and one lent",
          "[pool][lifetime]") {
  FakeUpstream up;
  auto timer_ctx = std::make_unique<asio::io_context>(1);
  auto home_ctx = std::make_unique<asio::io_context>(1);
  auto p = std::make_unique<pool::UpstreamPool>(timer_ctx->get_executor(), settings_for(up));
  timer_ctx->poll();
  auto idle = acquire_on(*home_ctx, *p);
  auto lent = acquire_on(*home_ctx, *p);
  idle.release(true, 'I');
  run_until(*home_ctx, [&] { return p->stats().idle == 1; });
  p.reset();
  // The idle one's close and the stopped expiry loop run; the lent one is
  // given back to a pool that is gone.
  home_ctx->restart();
  home_ctx->poll();
  timer_ctx->restart();
  timer_ctx->poll();
  lent.release(true, 'I');
  home_ctx->restart();
  home_ctx->poll();  // the reset is sent; its answer is not read yet
  timer_ctx.reset();
  home_ctx.reset();
}

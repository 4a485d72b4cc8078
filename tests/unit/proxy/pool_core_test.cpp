// The upstream pool's decisions: reuse, limits per key and in total, the
// queue and who is served when a connection comes back, idle expiry.
#include <catch2/catch.hpp>

#include "proxy/pool/pool_core.hpp"

using namespace tokengate::pool;
using namespace std::chrono_literals;
using Kind = Decision::Kind;

namespace {

PoolSettings small(std::size_t total, std::size_t per_key) {
  PoolSettings s;
  s.max_connections = total;
  s.max_per_key = per_key;
  s.idle_timeout = 60s;
  s.max_waiters = 2;
  return s;
}

const Clock::time_point t0 = Clock::time_point{} + 1000h;

}  // namespace

TEST_CASE("a released connection serves the next request of its key, most recent first", "[pool]") {
  PoolCore p(small(10, 10));
  auto a = p.acquire("alice/db");
  auto b = p.acquire("alice/db");
  REQUIRE(a.kind == Kind::open);
  REQUIRE(b.kind == Kind::open);
  CHECK(a.id != b.id);
  CHECK(p.size() == 2);
  CHECK_FALSE(p.release(a.id, true, t0).close);
  CHECK_FALSE(p.release(b.id, true, t0 + 1s).close);
  CHECK(p.idle() == 2);
  auto c = p.acquire("alice/db");
  CHECK(c.kind == Kind::reuse);
  CHECK(c.id == b.id);
  auto other = p.acquire("bob/db");
  CHECK(other.kind == Kind::open);  // keys never share connections
  CHECK(p.size() == 3);
}

TEST_CASE("a connection that is not reusable is closed and its place freed", "[pool]") {
  PoolCore p(small(10, 10));
  auto a = p.acquire("k");
  auto r = p.release(a.id, false, t0);
  CHECK(r.close);
  CHECK(p.size() == 0);
  CHECK(p.size_of("k") == 0);
  auto f = p.acquire("k");
  CHECK(p.open_failed(f.id).empty());
  CHECK(p.size() == 0);
}

TEST_CASE("the per-key limit queues a key's requests; its released connection goes to the first", "[pool]") {
  PoolCore p(small(10, 1));
  auto a = p.acquire("k");
  auto w1 = p.acquire("k");
  auto w2 = p.acquire("k");
  REQUIRE(w1.kind == Kind::wait);
  REQUIRE(w2.kind == Kind::wait);
  CHECK(p.acquire("k").kind == Kind::refuse);  // max_waiters = 2
  CHECK(p.waiting() == 2);
  CHECK(p.acquire("other").kind == Kind::open);  // another key is not held back

  auto r = p.release(a.id, true, t0);
  CHECK_FALSE(r.close);
  REQUIRE(r.grants.size() == 1);
  CHECK(r.grants[0].waiter == w1.waiter);
  CHECK(r.grants[0].decision.kind == Kind::reuse);
  CHECK(r.grants[0].decision.id == a.id);

  // Not reusable: the next waiter opens a new one.
  auto r2 = p.release(a.id, false, t0);
  CHECK(r2.close);
  REQUIRE(r2.grants.size() == 1);
  CHECK(r2.grants[0].waiter == w2.waiter);
  CHECK(r2.grants[0].decision.kind == Kind::open);
  CHECK(p.waiting() == 0);
  CHECK(p.size_of("k") == 1);
}

TEST_CASE("the total limit: an idle connection of another key gives up its place", "[pool]") {
  PoolCore p(small(2, 2));
  auto a = p.acquire("a");
  auto b = p.acquire("b");
  (void)p.release(a.id, true, t0);
  (void)p.release(b.id, true, t0 + 5s);
  auto c = p.acquire("c");
  CHECK(c.kind == Kind::open);
  CHECK(c.close == std::vector<ConnectionId>{a.id});  // the longest idle
  CHECK(p.size() == 2);
  CHECK(p.size_of("a") == 0);
}

TEST_CASE("the total limit: a waiter of another key gets the place of a released connection", "[pool]") {
  PoolCore p(small(2, 2));
  auto a1 = p.acquire("a");
  auto a2 = p.acquire("a");
  auto w = p.acquire("b");
  REQUIRE(w.kind == Kind::wait);
  auto r = p.release(a1.id, true, t0);
  CHECK(r.close);  // closed so that b can open one
  REQUIRE(r.grants.size() == 1);
  CHECK(r.grants[0].waiter == w.waiter);
  CHECK(r.grants[0].decision.kind == Kind::open);
  CHECK(p.size_of("a") == 1);
  CHECK(p.size_of("b") == 1);
  (void)a2;
}

TEST_CASE("a waiter that gives up is not served", "[pool]") {
  PoolCore p(small(1, 1));
  auto a = p.acquire("k");
  auto w = p.acquire("k");
  p.cancel_wait(w.waiter);
  auto r = p.release(a.id, true, t0);
  CHECK(r.grants.empty());
  CHECK(p.idle() == 1);
}

TEST_CASE("idle connections expire; a dead idle one is removed", "[pool]") {
  PoolCore p(small(10, 10));
  auto a = p.acquire("k");
  auto b = p.acquire("k");
  (void)p.release(a.id, true, t0);
  (void)p.release(b.id, true, t0 + 30s);
  CHECK(p.next_expiry() == t0 + 60s);
  std::vector<Grant> grants;
  CHECK(p.expire(t0 + 59s, grants).empty());
  CHECK(p.expire(t0 + 60s, grants) == std::vector<ConnectionId>{a.id});
  CHECK(p.next_expiry() == t0 + 90s);
  CHECK(p.remove_idle(b.id, grants));
  CHECK_FALSE(p.remove_idle(b.id, grants));
  CHECK(p.size() == 0);
  CHECK_FALSE(p.next_expiry());
  CHECK(grants.empty());
}

TEST_CASE("a connection in use is not removed as idle, and drain takes only idle ones", "[pool]") {
  PoolCore p(small(10, 10));
  auto a = p.acquire("k");
  auto b = p.acquire("k");
  (void)p.release(b.id, true, t0);
  std::vector<Grant> grants;
  CHECK_FALSE(p.remove_idle(a.id, grants));
  CHECK(p.drain_idle() == std::vector<ConnectionId>{b.id});
  CHECK(p.size() == 1);
}

TEST_CASE("a request waits for its key's connection being reset rather than open another", "[pool]") {
  PoolCore p(small(10, 10));
  auto a = p.acquire("k");
  p.resetting(a.id);
  auto w = p.acquire("k");
  REQUIRE(w.kind == Kind::wait);
  // A second request is not promised the same connection: it opens one.
  CHECK(p.acquire("k").kind == Kind::open);
  CHECK(p.acquire("other").kind == Kind::open);
  auto r = p.release(a.id, true, t0);
  REQUIRE(r.grants.size() == 1);
  CHECK(r.grants[0].waiter == w.waiter);
  CHECK(r.grants[0].decision.kind == Kind::reuse);

  SECTION("a reset that fails frees the place for the waiter") {
    p.resetting(a.id);
    auto w2 = p.acquire("k");
    REQUIRE(w2.kind == Kind::wait);
    auto r2 = p.release(a.id, false, t0);
    CHECK(r2.close);
    REQUIRE(r2.grants.size() == 1);
    CHECK(r2.grants[0].waiter == w2.waiter);
    CHECK(r2.grants[0].decision.kind == Kind::open);
  }
}

TEST_CASE("an idle connection of the caller's thread is preferred", "[pool]") {
  PoolCore p(small(10, 10));
  auto a = p.acquire("k", 1);
  auto b = p.acquire("k", 2);
  (void)p.release(a.id, true, t0);
  (void)p.release(b.id, true, t0 + 1s);
  auto c = p.acquire("k", 1);
  CHECK(c.kind == Kind::reuse);
  CHECK(c.id == a.id);
  auto d = p.acquire("k", 3);  // none of thread 3: the most recent of any
  CHECK(d.kind == Kind::reuse);
  CHECK(d.id == b.id);
}

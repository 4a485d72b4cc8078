// The store worker: calls run on its thread, callers resume on their own, the I/O thread keeps running
// meanwhile, a full queue refuses at once, exceptions reach the caller.
#include "proxy/net/store_worker.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace tokengate;
using namespace std::chrono_literals;
namespace asio = boost::asio;

namespace {

// Rethrows what ended a coroutine, so a failed REQUIRE inside it fails the test.
void rethrow(std::exception_ptr e) {
  if (e) std::rethrow_exception(e);
}

}  // namespace

TEST_CASE("a store call runs on the worker and resumes the caller on its own thread", "[store_worker]") {
  asio::io_context io;
  net::StoreWorker worker;
  const auto io_thread = std::this_thread::get_id();
  std::thread::id ran_on, resumed_on;
  std::optional<std::string> got;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        got = co_await worker.run([&ran_on] {
          ran_on = std::this_thread::get_id();
          return std::string("done");
        });
        resumed_on = std::this_thread::get_id();
      },
      rethrow);
  io.run();  // returns only once the call came back: it counts as outstanding work
  REQUIRE(got == std::optional<std::string>("done"));
  CHECK(ran_on != io_thread);
  CHECK(resumed_on == io_thread);
}

TEST_CASE("the I/O thread serves others while a store call is slow", "[store_worker]") {
  asio::io_context io;
  net::StoreWorker worker;
  std::promise<void> release;
  auto released = release.get_future().share();
  std::vector<std::string> order;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        auto r = co_await worker.run([released] {
          released.wait();  // an fsync that takes as long as the test wants
          return 1;
        });
        REQUIRE(r == std::optional<int>(1));
        order.push_back("slow call answered");
      },
      rethrow);
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        asio::steady_timer t(io, 10ms);
        co_await t.async_wait(asio::use_awaitable);
        order.push_back("other session served");
        release.set_value();
      },
      rethrow);
  io.run();
  REQUIRE(order == std::vector<std::string>{"other session served", "slow call answered"});
}

TEST_CASE("a full queue refuses a call at once without running it", "[store_worker]") {
  asio::io_context io;
  net::StoreWorker worker(2);
  std::promise<void> release;
  auto released = release.get_future().share();
  std::promise<void> started;
  std::atomic<int> ran{0};
  std::vector<std::optional<int>> answers(4);
  // The first call occupies the thread; two wait in the queue; the fourth is refused.
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        answers[0] = co_await worker.run([&, released] {
          started.set_value();
          released.wait();
          return ++ran;
        });
      },
      rethrow);
  io.run_one();  // the first call is submitted
  started.get_future().wait();
  for (int i = 1; i < 4; ++i)
    asio::co_spawn(
        io,
        [&, i]() -> asio::awaitable<void> {
          answers[std::size_t(i)] = co_await worker.run([&] { return ++ran; });
          if (i == 3) release.set_value();  // refused at once, while the others still wait
        },
        rethrow);
  io.run();
  CHECK(answers[0].has_value());
  CHECK(answers[1].has_value());
  CHECK(answers[2].has_value());
  CHECK_FALSE(answers[3].has_value());
  CHECK(ran == 3);
}

TEST_CASE("an exception thrown by a store call reaches the caller", "[store_worker]") {
  asio::io_context io;
  net::StoreWorker worker;
  std::string caught;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        try {
          co_await worker.run([]() -> int { throw std::runtime_error("disk on fire"); });
        } catch (const std::runtime_error& e) {
          caught = e.what();
        }
      },
      rethrow);
  io.run();
  CHECK(caught == "disk on fire");
}

TEST_CASE("stopping the worker runs what is queued", "[store_worker]") {
  std::atomic<int> ran{0};
  {
    asio::io_context io;
    net::StoreWorker worker;
    for (int i = 0; i < 5; ++i)
      asio::co_spawn(
          io, [&]() -> asio::awaitable<void> { co_await worker.run([&] { return ++ran; }); }, rethrow);
    io.poll();  // submitted; the io_context is then dropped without resuming anyone
  }
  CHECK(ran == 5);
}

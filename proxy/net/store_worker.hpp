// One thread for the token store's slow calls, so that no I/O thread waits for a disk or a network.
//
// LMDB write transactions end with an fsync (milliseconds on a good disk,
// seconds on a busy one), and the PostgreSQL registry (`store.backend =
// postgres`) answers over the network. An I/O thread that made such a call
// would stall every session it serves, so API TOKEN statements, the token
// API's policy reads and a login's binding of a token to its owner's OID run
// here instead: a coroutine co_awaits StoreWorker::run, the call runs on the
// worker's thread, and the coroutine resumes on its own executor with the
// result. One thread is enough: LMDB runs one write transaction at a time
// anyway, and token statements are rare next to queries. Login verification
// (a read transaction of a few microseconds, or the registry's local copy)
// stays on the I/O thread. The queue is bounded: past kMaxPendingStoreCalls
// waiting calls a new one is refused at once (the caller answers 53400).
//
// Included only by Asio translation units.
#pragma once

#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>
#include <utility>

namespace tokengate::net {

// Calls that may wait for the worker at once. Each is one token statement, a
// policy read or an OID binding of someone logging in; 256 of them is far
// beyond what people and scripts issue together, and waiting behind more
// than that (at a few ms of fsync each) would exceed a client's patience
// anyway. It bounds the memory a flood of CREATE API TOKEN can take.
inline constexpr std::size_t kMaxPendingStoreCalls = 256;

// The SQLSTATE and message when the queue is full: 53400
// (configuration_limit_exceeded), as PostgreSQL answers when a fixed limit
// of the server, not the client's connection count (53300), is reached.
inline constexpr const char* kStoreBusySqlstate = "53400";
inline constexpr const char* kStoreBusyMessage = "too many pending token operations";

class StoreWorker {
 public:
  explicit StoreWorker(std::size_t max_pending = kMaxPendingStoreCalls);
  // Runs what is queued (each caller is resumed, or dropped with its stopped
  // io_context), then joins the thread. Destroy it before the io_contexts
  // and before what the calls use (the token service).
  ~StoreWorker();
  StoreWorker(const StoreWorker&) = delete;
  StoreWorker& operator=(const StoreWorker&) = delete;

  // Runs fn() on the worker thread and resumes the calling coroutine on its
  // own executor with fn's result. nullopt, without running fn, when
  // max_pending calls wait already. An exception thrown by fn is rethrown in
  // the caller. fn must own everything it uses (capture by value, or
  // pointers to what outlives the worker): if the caller's io_context is
  // stopped meanwhile, the caller's coroutine frame may be gone before fn
  // returns.
  template <typename F, typename R = std::invoke_result_t<F&>>
  boost::asio::awaitable<std::optional<R>> run(F fn);

  // Calls queued, not counting the one running.
  [[nodiscard]] std::size_t pending() const;

 private:
  struct Job {
    virtual ~Job() = default;
    virtual void run() noexcept = 0;
  };
  template <typename F, typename R, typename Handler>
  struct JobOf;
  struct Initiate;

  // Queues the job; false (the job left in place) when the queue is full or
  // the worker stops.
  bool submit(std::unique_ptr<Job>& job);
  void loop();

  const std::size_t max_pending_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::unique_ptr<Job>> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

// A call with the coroutine's completion handler. The executor it resumes on
// is tracked as outstanding work while the call waits or runs, so the
// io_context's run() does not return under it.
template <typename F, typename R, typename Handler>
struct StoreWorker::JobOf final : StoreWorker::Job {
  using Work = std::decay_t<decltype(boost::asio::prefer(boost::asio::get_associated_executor(std::declval<Handler&>()),
                                                         boost::asio::execution::outstanding_work.tracked))>;

  JobOf(F f, Handler h)
      : fn(std::move(f)),
        handler(std::move(h)),
        work(boost::asio::prefer(boost::asio::get_associated_executor(handler),
                                 boost::asio::execution::outstanding_work.tracked)) {}

  void run() noexcept override {
    std::exception_ptr error;
    std::optional<R> result;
    try {
      result.emplace(fn());
    } catch (...) {
      error = std::current_exception();
    }
    complete(error, std::move(result));
  }

  // Resumes the caller on its own executor, never on the worker's thread.
  void complete(std::exception_ptr error, std::optional<R> result) {
    boost::asio::post(
        work, [h = std::move(handler), error, r = std::move(result)]() mutable { std::move(h)(error, std::move(r)); });
  }

  F fn;
  Handler handler;
  Work work;
};

struct StoreWorker::Initiate {
  StoreWorker* worker;

  template <typename Handler, typename F>
  void operator()(Handler&& handler, F fn) const {
    using R = std::invoke_result_t<F&>;
    auto job = std::make_unique<JobOf<F, R, std::decay_t<Handler>>>(std::move(fn), std::forward<Handler>(handler));
    auto* refused = job.get();
    std::unique_ptr<Job> queued(std::move(job));
    if (!worker->submit(queued)) refused->complete(nullptr, std::nullopt);
  }
};

template <typename F, typename R>
boost::asio::awaitable<std::optional<R>> StoreWorker::run(F fn) {
  static_assert(!std::is_void_v<R>, "return a value (e.g. bool) from a store call");
  return boost::asio::async_initiate<const boost::asio::use_awaitable_t<>&, void(std::exception_ptr, std::optional<R>)>(
      Initiate{this}, boost::asio::use_awaitable, std::move(fn));
}

}  // namespace tokengate::net

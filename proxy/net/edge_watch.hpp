// Plain sockets registered once, edge-triggered, for reading and writing, in
// the epoll set of the calling thread's Asio reactor; their readiness comes
// back as an ordinary scheduler operation that calls the watcher. Asio itself
// re-arms a descriptor with epoll_ctl for every wait; a relay that waits
// for every message cannot afford that, and has nothing else to ask of Asio
// for these sockets. Everything else (logins, TLS, timers) stays Asio's.
//
// This leans on how Asio 1.26 (Boost 1.81) dispatches its epoll events:
// a registered pointer is taken as the reactor's per-descriptor operation,
// queued, and completed with the events as its result. EdgeWatcher is such
// an operation. Included only by relay.cpp (Asio detail headers).
#pragma once

#include <boost/asio/detail/scheduler.hpp>
#include <boost/asio/detail/scheduler_operation.hpp>
#include <boost/asio/io_context.hpp>
#include <cstdint>

namespace tokengate::net {

// The epoll descriptor of `ctx`'s reactor, which this call creates; call it
// on the thread that creates `ctx`, before anything uses it. -1 if it cannot
// be found (then relays use Asio's own waits).
int find_reactor_epoll(boost::asio::io_context& ctx);
// Each I/O thread says which reactor it runs before running it.
void bind_thread_reactor(int epoll_fd) noexcept;
int thread_reactor() noexcept;

class EdgeWatcher : public boost::asio::detail::scheduler_operation {
 public:
  // Called with the epoll events (EPOLLIN, EPOLLOUT, EPOLLRDHUP, EPOLLHUP, EPOLLERR).
  using Callback = void (*)(void* context, std::uint32_t events);

  EdgeWatcher(Callback callback, void* context) noexcept
      : scheduler_operation(&EdgeWatcher::complete), callback_(callback), context_(context) {}
  EdgeWatcher(const EdgeWatcher&) = delete;
  EdgeWatcher& operator=(const EdgeWatcher&) = delete;
  ~EdgeWatcher() { unwatch(); }

  // Registers `fd` (not owned) with the calling thread's reactor, for reading.
  bool watch(int fd) noexcept;
  // Also for writing, while output waits for room. Not registered otherwise:
  // a Unix socket reports room every time its peer reads, which would wake
  // the thread once more per message.
  void want_write(bool on) noexcept;
  // No callback after this. The scheduler may still hold the watcher queued
  // until its current round ends: destroy it from a handler posted after
  // unwatch() (see retire in relay.cpp), never right away.
  void unwatch() noexcept;

 private:
  static void complete(void* owner, scheduler_operation* base, const boost::system::error_code&,
                       std::size_t events);
  Callback callback_;
  void* context_;
  int fd_ = -1;
  int epoll_ = -1;
  bool writing_ = false;
};

}  // namespace tokengate::net

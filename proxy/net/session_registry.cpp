// Registry of live sessions (see session_registry.hpp).
#include "proxy/net/session_registry.hpp"

#include <algorithm>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

#include "proxy/net/stream.hpp"

namespace tokengate::net {

SessionRegistry::Handle SessionRegistry::add(std::optional<tokenstore::tid_t> tid, std::int64_t expires_at,
                                             EndFn end, std::shared_ptr<const admin::SessionStats> stats) {
  std::optional<protocol::ErrorResponse> drain;
  EndFn tell;
  Handle h;
  {
    std::lock_guard lock(mutex_);
    h = next_++;
    drain = draining_;
    if (drain) tell = end;
    entries_.emplace(h, Entry{tid, expires_at, std::move(end), std::move(stats), false});
  }
  if (drain) tell(*drain, true);  // outside the lock, as every ending
  return h;
}

void SessionRegistry::remove(Handle h) {
  std::vector<std::shared_ptr<Waiter>> wake;
  {
    std::lock_guard lock(mutex_);
    entries_.erase(h);
    for (auto it = waiters_.begin(); it != waiters_.end();) {
      if (!pending_locked(**it)) {
        wake.push_back(*it);
        it = waiters_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& w : wake) w->wake();
}

template <typename Pred>
std::size_t SessionRegistry::end_if(Pred pred, const protocol::ErrorResponse& why) {
  std::vector<EndFn> to_end;
  {
    std::lock_guard lock(mutex_);
    for (auto& [h, e] : entries_) {
      if (e.ending || !pred(e)) continue;
      e.ending = true;
      to_end.push_back(e.end);
    }
  }
  // Called outside the lock: ending posts to other threads.
  for (auto& f : to_end) f(why, false);
  return to_end.size();
}

std::size_t SessionRegistry::end_all_when_idle(const protocol::ErrorResponse& why) {
  std::vector<EndFn> to_tell;
  {
    std::lock_guard lock(mutex_);
    draining_ = why;
    // Not marked ending: a session still busy at the deadline gets end_all.
    for (auto& [h, e] : entries_)
      if (!e.ending) to_tell.push_back(e.end);
  }
  for (auto& f : to_tell) f(why, true);
  return to_tell.size();
}

std::vector<std::shared_ptr<const admin::SessionStats>> SessionRegistry::stats() const {
  std::vector<std::shared_ptr<const admin::SessionStats>> out;
  std::lock_guard lock(mutex_);
  out.reserve(entries_.size());
  for (const auto& [h, e] : entries_)
    if (e.stats) out.push_back(e.stats);
  return out;
}

std::size_t SessionRegistry::end_tokens(std::span<const tokenstore::tid_t> tids, const protocol::ErrorResponse& why) {
  return end_if([&](const Entry& e) { return e.tid && std::find(tids.begin(), tids.end(), *e.tid) != tids.end(); },
                why);
}

std::size_t SessionRegistry::end_expired(std::int64_t now, const protocol::ErrorResponse& why) {
  return end_if([&](const Entry& e) { return e.tid && e.expires_at <= now; }, why);
}

std::size_t SessionRegistry::end_all(const protocol::ErrorResponse& why) {
  return end_if([](const Entry&) { return true; }, why);
}

std::size_t SessionRegistry::size() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

bool SessionRegistry::pending_locked(const Waiter& w) const {
  for (const auto& [h, e] : entries_) {
    if (h == w.self || !e.ending || !e.tid) continue;
    if (std::find(w.tids.begin(), w.tids.end(), *e.tid) != w.tids.end()) return true;
  }
  return false;
}

boost::asio::awaitable<bool> SessionRegistry::wait_ended(std::vector<tokenstore::tid_t> tids, Handle self,
                                                         std::chrono::milliseconds timeout) {
  auto ex = co_await boost::asio::this_coro::executor;
  auto timer = std::make_shared<boost::asio::steady_timer>(ex, timeout);
  auto waiter = std::make_shared<Waiter>();
  waiter->tids = std::move(tids);
  waiter->self = self;
  // The wake-up is posted to this coroutine's executor, which runs nothing
  // else until the coroutine waits on the timer: it cannot be lost.
  waiter->wake = [ex, timer] { boost::asio::post(ex, [timer] { timer->cancel(); }); };
  {
    std::lock_guard lock(mutex_);
    if (!pending_locked(*waiter)) co_return true;
    waiters_.push_back(waiter);
  }
  // The entry leaves with this frame, also when the frame is destroyed while
  // it waits (its io_context torn down at exit): the entry holds the timer,
  // which belongs to that io_context, and the registry outlives them all.
  struct Unlist {
    SessionRegistry& registry;
    const std::shared_ptr<Waiter>& waiter;
    ~Unlist() {
      std::lock_guard lock(registry.mutex_);
      auto& list = registry.waiters_;
      list.erase(std::remove(list.begin(), list.end(), waiter), list.end());
    }
  } unlist{*this, waiter};
  co_await timer->async_wait(use_nothrow);
  std::lock_guard lock(mutex_);
  co_return !pending_locked(*waiter);
}

}  // namespace tokengate::net

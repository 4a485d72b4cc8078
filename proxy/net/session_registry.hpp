// Live logged-in sessions, so that revoking a token (here or from another
// process), its expiry, or a shutdown can end them, and so that DROP API
// TOKEN can wait until the sessions it ended are gone, upstream backends
// included.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <unordered_map>
#include <vector>

#include "proxy/protocol/messages.hpp"
#include "tokenstore/jwt.hpp"

namespace tokengate::net {

// How long a revocation waits, before answering, for the sessions it ended
// to be gone upstream (a backend the cancel cannot reach is terminated after
// a second; this leaves room for a slow control connection).
inline constexpr std::chrono::seconds kRevokedSessionsWait{12};

class SessionRegistry {
 public:
  // Ends one session with the given error; it must post to the session's own
  // executor (the registry calls it from whichever thread noticed).
  using EndFn = std::function<void(const protocol::ErrorResponse&)>;
  using Handle = std::uint64_t;

  // A session that logged in; `tid` for a token session (then `expires_at`
  // is its token's expiry).
  Handle add(std::optional<tokenstore::tid_t> tid, std::int64_t expires_at, EndFn end);
  // The session is over and its upstream backend is gone: wakes whoever
  // waits for it (wait_ended).
  void remove(Handle h);

  // Tells every session of these tokens to end; returns how many were told.
  std::size_t end_tokens(std::span<const tokenstore::tid_t> tids, const protocol::ErrorResponse& why);
  // Tells every token session whose token expired at or before `now` to end.
  std::size_t end_expired(std::int64_t now, const protocol::ErrorResponse& why);
  // Tells every session to end (shutdown).
  std::size_t end_all(const protocol::ErrorResponse& why);
  std::size_t size() const;

  // Waits until every session of `tids` that was told to end, except `self`,
  // has been removed, or until `timeout`; false on timeout. Call it on a
  // single-threaded executor (a session's io_context).
  boost::asio::awaitable<bool> wait_ended(std::vector<tokenstore::tid_t> tids, Handle self,
                                          std::chrono::milliseconds timeout);

 private:
  struct Entry {
    std::optional<tokenstore::tid_t> tid;
    std::int64_t expires_at;
    EndFn end;
    bool ending = false;
  };
  struct Waiter {
    std::vector<tokenstore::tid_t> tids;
    Handle self;
    std::function<void()> wake;
  };
  template <typename Pred>
  std::size_t end_if(Pred pred, const protocol::ErrorResponse& why);
  bool pending_locked(const Waiter& w) const;

  mutable std::mutex mutex_;
  Handle next_ = 1;
  std::unordered_map<Handle, Entry> entries_;
  std::vector<std::shared_ptr<Waiter>> waiters_;
};

}  // namespace tokengate::net

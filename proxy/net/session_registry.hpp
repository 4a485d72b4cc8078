// Live sessions that logged in with a token, by tid, so that revoking a
// token (here or from another process) or its expiry ends them.
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <span>
#include <unordered_map>

#include "proxy/protocol/messages.hpp"
#include "tokenstore/jwt.hpp"

namespace tokengate::net {

class SessionRegistry {
 public:
  // Ends one session with the given error; it must post to the session's own
  // executor (the registry calls it from whichever thread noticed).
  using EndFn = std::function<void(const protocol::ErrorResponse&)>;
  using Handle = std::uint64_t;

  Handle add(const tokenstore::tid_t& tid, std::int64_t expires_at, EndFn end);
  void remove(Handle h);

  // Ends every session of these tokens; returns how many.
  std::size_t end_tokens(std::span<const tokenstore::tid_t> tids, const protocol::ErrorResponse& why);
  // Ends every session whose token expired at or before `now`.
  std::size_t end_expired(std::int64_t now, const protocol::ErrorResponse& why);
  std::size_t size() const;

 private:
  struct Entry {
    tokenstore::tid_t tid;
    std::int64_t expires_at;
    EndFn end;
  };
  mutable std::mutex mutex_;
  Handle next_ = 1;
  std::unordered_map<Handle, Entry> entries_;
};

}  // namespace tokengate::net

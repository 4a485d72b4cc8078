// Registry of token sessions (see session_registry.hpp).
#include "proxy/net/session_registry.hpp"

#include <algorithm>
#include <vector>

namespace tokengate::net {

SessionRegistry::Handle SessionRegistry::add(const tokenstore::tid_t& tid, std::int64_t expires_at, EndFn end) {
  std::lock_guard lock(mutex_);
  Handle h = next_++;
  entries_.emplace(h, Entry{tid, expires_at, std::move(end)});
  return h;
}

void SessionRegistry::remove(Handle h) {
  std::lock_guard lock(mutex_);
  entries_.erase(h);
}

std::size_t SessionRegistry::end_tokens(std::span<const tokenstore::tid_t> tids,
                                        const protocol::ErrorResponse& why) {
  std::vector<EndFn> to_end;
  {
    std::lock_guard lock(mutex_);
    for (auto it = entries_.begin(); it != entries_.end();) {
      if (std::find(tids.begin(), tids.end(), it->second.tid) != tids.end()) {
        to_end.push_back(std::move(it->second.end));
        it = entries_.erase(it);
      } else {
        ++it;
      }
    }
  }
  // Called outside the lock: ending posts to other threads.
  for (auto& f : to_end) f(why);
  return to_end.size();
}

std::size_t SessionRegistry::end_expired(std::int64_t now, const protocol::ErrorResponse& why) {
  std::vector<EndFn> to_end;
  {
    std::lock_guard lock(mutex_);
    for (auto it = entries_.begin(); it != entries_.end();) {
      if (it->second.expires_at <= now) {
        to_end.push_back(std::move(it->second.end));
        it = entries_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& f : to_end) f(why);
  return to_end.size();
}

std::size_t SessionRegistry::size() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

}  // namespace tokengate::net

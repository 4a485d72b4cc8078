// The upstream pool's bookkeeping (see pool_core.hpp).
#include "proxy/pool/pool_core.hpp"

#include <algorithm>

namespace tokengate::pool {

ConnectionId PoolCore::reserve(const std::string& key, std::uintptr_t affinity) {
  const ConnectionId id = next_id_++;
  Connection c;
  c.key = key;
  c.affinity = affinity;
  connections_.emplace(id, std::move(c));
  ++keys_[key].total;
  ++total_;
  return id;
}

void PoolCore::forget(ConnectionId id) {
  auto it = connections_.find(id);
  if (it == connections_.end()) return;
  auto k = keys_.find(it->second.key);
  if (k != keys_.end()) {
    --k->second.total;
    if (k->second.total == 0) keys_.erase(k);
  }
  --total_;
  connections_.erase(it);
}

void PoolCore::take_idle(ConnectionId id) {
  auto& c = connections_.at(id);
  auto& idle = keys_.at(c.key).idle;
  idle.erase(std::find(idle.begin(), idle.end(), id));
  c.idle = false;
}

std::optional<ConnectionId> PoolCore::longest_idle_elsewhere(const std::string& key) const {
  std::optional<ConnectionId> best;
  Clock::time_point since{};
  for (const auto& [id, c] : connections_) {
    if (!c.idle || c.key == key) continue;
    if (!best || c.idle_since < since) best = id, since = c.idle_since;
  }
  return best;
}

Decision PoolCore::acquire(const std::string& key, std::uintptr_t affinity) {
  Decision d;
  if (auto k = keys_.find(key); k != keys_.end()) {
    const auto& idle = k->second.idle;
    if (!idle.empty()) {
      // The most recently used one of the caller's thread, else of any.
      auto same = std::find_if(idle.rbegin(), idle.rend(),
                               [&](ConnectionId id) { return connections_.at(id).affinity == affinity; });
      d.kind = Decision::Kind::reuse;
      d.id = same != idle.rend() ? *same : idle.back();
      take_idle(d.id);
      return d;
    }
  }
  if (auto k = keys_.find(key); k != keys_.end() && k->second.resetting > waiting_for(key)) {
    if (waiters_.size() >= settings_.max_waiters) {
      d.kind = Decision::Kind::refuse;
      return d;
    }
    d.kind = Decision::Kind::wait;
    d.waiter = next_waiter_++;
    waiters_.emplace(d.waiter, key);
    return d;
  }
  const std::size_t of_key = size_of(key);
  if (of_key < settings_.max_per_key) {
    if (total_ < settings_.max_connections) {
      d.kind = Decision::Kind::open;
      d.id = reserve(key, affinity);
      return d;
    }
    if (auto victim = longest_idle_elsewhere(key)) {
      take_idle(*victim);
      forget(*victim);
      d.close.push_back(*victim);
      d.kind = Decision::Kind::open;
      d.id = reserve(key, affinity);
      return d;
    }
  }
  if (waiters_.size() >= settings_.max_waiters) {
    d.kind = Decision::Kind::refuse;
    return d;
  }
  d.kind = Decision::Kind::wait;
  d.waiter = next_waiter_++;
  waiters_.emplace(d.waiter, key);
  return d;
}

std::vector<Grant> PoolCore::serve_waiters() {
  std::vector<Grant> grants;
  while (total_ < settings_.max_connections) {
    auto it = std::find_if(waiters_.begin(), waiters_.end(),
                           [&](const auto& w) { return size_of(w.second) < settings_.max_per_key; });
    if (it == waiters_.end()) break;
    Grant g;
    g.waiter = it->first;
    g.decision.kind = Decision::Kind::open;
    g.decision.id = reserve(it->second, 0);
    waiters_.erase(it);
    grants.push_back(std::move(g));
  }
  return grants;
}

std::vector<Grant> PoolCore::open_failed(ConnectionId id) {
  forget(id);
  return serve_waiters();
}

void PoolCore::resetting(ConnectionId id) {
  auto it = connections_.find(id);
  if (it == connections_.end() || it->second.idle || it->second.resetting) return;
  it->second.resetting = true;
  ++keys_.at(it->second.key).resetting;
}

std::size_t PoolCore::waiting_for(const std::string& key) const noexcept {
  return std::size_t(std::count_if(waiters_.begin(), waiters_.end(), [&](const auto& w) { return w.second == key; }));
}

PoolCore::Released PoolCore::release(ConnectionId id, bool reusable, Clock::time_point now) {
  Released r;
  auto it = connections_.find(id);
  if (it == connections_.end()) return r;
  if (it->second.resetting) {
    it->second.resetting = false;
    --keys_.at(it->second.key).resetting;
  }
  if (reusable) {
    const std::string& key = it->second.key;
    // The first request waiting for this key takes it over as it is.
    auto same = std::find_if(waiters_.begin(), waiters_.end(), [&](const auto& w) { return w.second == key; });
    if (same != waiters_.end()) {
      Grant g;
      g.waiter = same->first;
      g.decision.kind = Decision::Kind::reuse;
      g.decision.id = id;
      waiters_.erase(same);
      r.grants.push_back(std::move(g));
      return r;
    }
    // A request of another key that waits only because of the total limit
    // gets this connection's place.
    const bool other_waits = std::any_of(waiters_.begin(), waiters_.end(), [&](const auto& w) {
      return w.second != key && size_of(w.second) < settings_.max_per_key;
    });
    if (!other_waits) {
      it->second.idle = true;
      it->second.idle_since = now;
      keys_[key].idle.push_back(id);
      return r;
    }
  }
  forget(id);
  r.close = true;
  r.grants = serve_waiters();
  return r;
}

bool PoolCore::remove_idle(ConnectionId id, std::vector<Grant>& grants) {
  auto it = connections_.find(id);
  if (it == connections_.end() || !it->second.idle) return false;
  take_idle(id);
  forget(id);
  auto more = serve_waiters();
  grants.insert(grants.end(), std::make_move_iterator(more.begin()), std::make_move_iterator(more.end()));
  return true;
}

void PoolCore::cancel_wait(WaiterId waiter) { waiters_.erase(waiter); }

std::vector<ConnectionId> PoolCore::expire(Clock::time_point now, std::vector<Grant>& grants) {
  std::vector<ConnectionId> gone;
  for (const auto& [id, c] : connections_)
    if (c.idle && now - c.idle_since >= settings_.idle_timeout) gone.push_back(id);
  for (auto id : gone) {
    take_idle(id);
    forget(id);
  }
  if (!gone.empty()) {
    auto more = serve_waiters();
    grants.insert(grants.end(), std::make_move_iterator(more.begin()), std::make_move_iterator(more.end()));
  }
  return gone;
}

std::optional<Clock::time_point> PoolCore::next_expiry() const {
  std::optional<Clock::time_point> next;
  for (const auto& [id, c] : connections_)
    if (c.idle && (!next || c.idle_since + settings_.idle_timeout < *next)) next = c.idle_since + settings_.idle_timeout;
  return next;
}

std::vector<ConnectionId> PoolCore::drain_idle() {
  std::vector<ConnectionId> gone;
  for (const auto& [id, c] : connections_)
    if (c.idle) gone.push_back(id);
  for (auto id : gone) {
    take_idle(id);
    forget(id);
  }
  return gone;
}

std::size_t PoolCore::idle() const noexcept {
  std::size_t n = 0;
  for (const auto& [key, k] : keys_) n += k.idle.size();
  return n;
}

std::size_t PoolCore::size_of(const std::string& key) const noexcept {
  auto it = keys_.find(key);
  return it == keys_.end() ? 0 : it->second.total;
}

}  // namespace tokengate::pool

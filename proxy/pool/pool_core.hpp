// The upstream connection pool's bookkeeping, sans-io: which connection a
// request gets (an idle one of its key, a new one, or a place in the queue),
// the per-key and total limits, idle expiry, and who is served when a
// connection comes back. No sockets and no locks: the Asio pool
// (upstream_pool.cpp) holds a mutex around it and performs what it decides.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

namespace tokengate::pool {

struct PoolSettings {
  // Upstream connections of all keys together (`pool.max_connections`).
  // PostgreSQL's default max_connections is 100; the pool takes at most half.
  std::size_t max_connections = 50;
  // Connections of one key: one role, database and startup settings
  // (`pool.max_connections_per_key`), so one busy role cannot take all.
  std::size_t max_per_key = 10;
  // An idle connection is closed after this (`pool.idle_timeout`).
  std::chrono::milliseconds idle_timeout{std::chrono::seconds(60)};
  // Requests waiting for a connection at once; more are refused at once
  // rather than queued without bound.
  std::size_t max_waiters = 1024;
};

using ConnectionId = std::uint64_t;
using WaiterId = std::uint64_t;
using Clock = std::chrono::steady_clock;

// What a request is given, now (acquire) or later (a Grant).
struct Decision {
  enum class Kind {
    reuse,   // `id` is an idle connection of the key, now in use
    open,    // open a new connection; `id` is its reserved number
    wait,    // queued as `waiter`: a Grant comes later (or give up: cancel_wait)
    refuse,  // too many waiters: answer "too many connections"
  };
  Kind kind = Kind::refuse;
  ConnectionId id = 0;
  WaiterId waiter = 0;
  // Idle connections of other keys that were given up to make room for the
  // new one: the caller closes them.
  std::vector<ConnectionId> close;
};

// A queued request's turn: `decision` is reuse or open.
struct Grant {
  WaiterId waiter = 0;
  Decision decision;
};

class PoolCore {
 public:
  explicit PoolCore(PoolSettings settings) : settings_(settings) {}

  // A connection for `key`: the most recently used idle one (warm caches;
  // the others can expire); else, if one of the key is being reset for its
  // next user and not already promised to a waiter, a place in the queue for
  // it (a client that sends its next request as soon as it has the answer
  // would otherwise make the pool open a second backend each time); else a
  // new one if both limits allow, else a new one in place of the
  // longest-idle connection of another key, else a place in the queue.
  //
  // `affinity` names the caller's I/O thread: among idle connections of the
  // key, one opened on the same thread is preferred (its I/O then needs no
  // hop to another thread). A new connection is tagged with it.
  [[nodiscard]] Decision acquire(const std::string& key, std::uintptr_t affinity = 0);

  // The user of connection `id` is done and the caller resets it (DISCARD
  // ALL) before calling release(); meanwhile requests of its key wait for it.
  void resetting(ConnectionId id);

  // Opening connection `id` failed: its place is free again.
  [[nodiscard]] std::vector<Grant> open_failed(ConnectionId id);

  struct Released {
    bool close = false;  // the caller closes the connection (it is forgotten here)
    std::vector<Grant> grants;
  };
  // The user of connection `id` is done. `reusable`: it was reset and is
  // idle upstream, so it may serve the next request; otherwise it is gone.
  // Its key's first waiter gets it; else a waiter of another key that only
  // the total limit holds back gets its place (and it is closed); else it
  // waits, idle.
  [[nodiscard]] Released release(ConnectionId id, bool reusable, Clock::time_point now);
  // An idle connection stopped being usable (its backend went away): forget
  // it. False when `id` is not idle (in use: its user will find out).
  bool remove_idle(ConnectionId id, std::vector<Grant>& grants);
  // A waiter gave up before its Grant came.
  void cancel_wait(WaiterId waiter);

  // Idle connections past the idle timeout, forgotten here: the caller
  // closes them. Places they free go to waiters (`grants`).
  [[nodiscard]] std::vector<ConnectionId> expire(Clock::time_point now, std::vector<Grant>& grants);
  // When the next idle connection expires, if any is idle.
  [[nodiscard]] std::optional<Clock::time_point> next_expiry() const;
  // Every idle connection, forgotten (shutdown).
  [[nodiscard]] std::vector<ConnectionId> drain_idle();

  [[nodiscard]] std::size_t size() const noexcept { return total_; }  // opening + idle + in use
  [[nodiscard]] std::size_t idle() const noexcept;
  [[nodiscard]] std::size_t waiting() const noexcept { return waiters_.size(); }
  [[nodiscard]] std::size_t size_of(const std::string& key) const noexcept;
  [[nodiscard]] const PoolSettings& settings() const noexcept { return settings_; }

 private:
  struct Connection {
    std::string key;
    std::uintptr_t affinity = 0;
    bool idle = false;
    bool resetting = false;
    Clock::time_point idle_since{};
  };
  struct Key {
    std::size_t total = 0;              // opening + idle + in use
    std::size_t resetting = 0;          // in use, being reset for the next request
    std::vector<ConnectionId> idle;     // most recently used last
  };
  std::size_t waiting_for(const std::string& key) const noexcept;

  ConnectionId reserve(const std::string& key, std::uintptr_t affinity);
  void forget(ConnectionId id);
  std::optional<ConnectionId> longest_idle_elsewhere(const std::string& key) const;
  void take_idle(ConnectionId id);
  std::vector<Grant> serve_waiters();

  PoolSettings settings_;
  std::unordered_map<ConnectionId, Connection> connections_;
  std::unordered_map<std::string, Key> keys_;
  std::map<WaiterId, std::string> waiters_;  // in arrival order
  std::size_t total_ = 0;
  ConnectionId next_id_ = 1;
  WaiterId next_waiter_ = 1;
};

}  // namespace tokengate::pool

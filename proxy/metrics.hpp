// Process-wide metrics for GET /metrics: lock-free counters, gauges and
// fixed-bucket histograms (relaxed atomics, no allocation when they move),
// and their rendering in the Prometheus text format 0.0.4. Sans-io: no Asio.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tokengate::metrics {

class Counter {
 public:
  void inc(std::uint64_t n = 1) noexcept { v_.fetch_add(n, std::memory_order_relaxed); }
  [[nodiscard]] std::uint64_t value() const noexcept { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> v_{0};
};

class Gauge {
 public:
  void add(std::int64_t n = 1) noexcept { v_.fetch_add(n, std::memory_order_relaxed); }
  void sub(std::int64_t n = 1) noexcept { v_.fetch_sub(n, std::memory_order_relaxed); }
  void set(std::int64_t n) noexcept { v_.store(n, std::memory_order_relaxed); }
  [[nodiscard]] std::int64_t value() const noexcept { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::int64_t> v_{0};
};

// Upper bounds in seconds, ascending, in static storage; at most kMaxBuckets.
class Histogram {
 public:
  static constexpr std::size_t kMaxBuckets = 16;
  explicit Histogram(std::span<const double> bounds) noexcept;
  void observe(std::chrono::nanoseconds d) noexcept;

  struct Snapshot {
    std::vector<std::uint64_t> cumulative;  // one per bound, then +Inf
    double sum_seconds = 0;
  };
  [[nodiscard]] Snapshot snapshot() const;
  [[nodiscard]] std::span<const double> bounds() const noexcept { return bounds_; }

 private:
  std::span<const double> bounds_;
  std::array<std::int64_t, kMaxBuckets> bounds_ns_{};
  std::array<std::atomic<std::uint64_t>, kMaxBuckets + 1> counts_{};
  std::atomic<std::uint64_t> sum_ns_{0};
};

// ---- label values: fixed sets, so that a metric is an array ------------------

enum class Listener : std::uint8_t { wire, http, websocket };
inline constexpr std::size_t kListeners = 3;
enum class LoginMethod : std::uint8_t { password, token };
inline constexpr std::size_t kLoginMethods = 2;
enum class LoginOutcome : std::uint8_t { ok, denied, error };
inline constexpr std::size_t kLoginOutcomes = 3;
// The operations of the token API (SQL and REST), by the audit log's names.
enum class TokenOp : std::uint8_t {
  create, list, set_comment, revoke, revoke_all, set_policy, reset_policy, list_policies, other
};
inline constexpr std::size_t kTokenOps = 9;
enum class Refusal : std::uint8_t {
  login_limit,          // login.max_connections
  address_limit,        // login.max_connections_per_address
  startup,              // the startup packet or TLS negotiation was refused
  throttle_delayed,     // a login waited its turn (auth.max_failed_logins)
  throttle_refused,     // a login was refused unverified
};
inline constexpr std::size_t kRefusals = 5;

[[nodiscard]] LoginOutcome login_outcome(std::string_view audit_outcome) noexcept;  // "ok", "denied", else error
[[nodiscard]] TokenOp token_op(std::string_view audit_event) noexcept;              // "create_token", …

// Every metric of the process. One instance (global()); members are moved with
// one-line calls where things happen.
struct Registry {
  std::array<Counter, kListeners> client_connections_total;
  std::array<std::array<Gauge, 2>, kListeners> client_connections;  // [listener][tls]
  Counter upstream_connections_total;  // sessions' own upstream connections (the pool's are in ScrapeFacts)
  std::array<std::array<Counter, kLoginOutcomes>, kLoginMethods> logins;
  std::array<std::array<Counter, 2>, kTokenOps> token_operations;  // [op][ok=0, error=1]
  std::array<Counter, kRefusals> refusals;
  Counter bytes_from_clients, bytes_from_upstream;
  std::array<Histogram, kLoginMethods> login_seconds;
  Histogram query_seconds;
  Counter sessions_ended_by_revocation, sessions_ended_by_expiry;
  // Password checks taken from the verification queue: computed (PBKDF2 or
  // the dummy check), or skipped because the client hung up while the check
  // waited its turn.
  Counter password_checks_run, password_checks_skipped;

  Registry();
};

Registry& global() noexcept;

// Counts one client connection for its lifetime: accepted (total), open now
// by listener and TLS; set_tls() when a wire connection upgrades.
class ConnectionGauge {
 public:
  ConnectionGauge(Listener l, bool tls) noexcept : l_(std::size_t(l)), tls_(tls) {
    global().client_connections_total[l_].inc();
    global().client_connections[l_][tls_].add();
  }
  ~ConnectionGauge() { global().client_connections[l_][tls_].sub(); }
  ConnectionGauge(const ConnectionGauge&) = delete;
  ConnectionGauge& operator=(const ConnectionGauge&) = delete;
  void set_tls() noexcept {
    if (tls_) return;
    global().client_connections[l_][0].sub();
    global().client_connections[l_][1].add();
    tls_ = true;
  }

 private:
  std::size_t l_;
  bool tls_;
};

// Read at scrape time from the rest of the server (the caller fills it).
struct ScrapeFacts {
  std::string version, commit;
  double start_time_seconds = 0;  // unix
  std::int64_t sessions = 0;      // logged-in sessions
  bool draining = false;
  // The token store, counted at most once a minute (see Server::Impl::store_facts).
  bool store_counted = false;
  std::int64_t tokens_active = 0, tokens_expired = 0, tokens_revoked = 0, tokens_expiring_soon = 0;
  // A fleet's registry (store.backend = postgres).
  bool fleet = false;
  bool registry_connected = false;
  double registry_staleness_seconds = 0;  // since the change feed was last heard
  std::uint64_t registry_feed_position = 0;
  std::int64_t upstream_session_connections = 0;  // one per logged-in wire or WebSocket session
  std::int64_t pool_connections = 0, pool_idle = 0;  // POST /sql's upstream pool
};

// The whole exposition, Prometheus text format 0.0.4.
[[nodiscard]] std::string render(const Registry& r, const ScrapeFacts& facts);

// A label value escaped as the text format wants it (\\, \", \n).
[[nodiscard]] std::string escape_label_value(std::string_view v);

// The content type of render()'s output.
inline constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace tokengate::metrics

// Metrics and their Prometheus text exposition (see metrics.hpp).
#include "proxy/metrics.hpp"

#include <algorithm>
#include <cstdio>

namespace tokengate::metrics {

namespace {

// Logins take a control-connection round trip and, for passwords, PBKDF2
// (tens of milliseconds at 4096 rounds); a login slower than 10 s is stuck.
constexpr double kLoginBuckets[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
// Query round trips: from a fraction of a millisecond (a cached SELECT on a
// local server) to minutes (reports); 16 buckets, the histogram's maximum.
constexpr double kQueryBuckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                    0.25,   0.5,   1,      2.5,   5,    10,    30,    60};

constexpr std::string_view kListenerNames[kListeners] = {"wire", "http", "websocket"};
constexpr std::string_view kMethodNames[kLoginMethods] = {"password", "token"};
constexpr std::string_view kOutcomeNames[kLoginOutcomes] = {"ok", "denied", "error"};
constexpr std::string_view kTokenOpNames[kTokenOps] = {"create",     "list",         "set_comment",
                                                       "revoke",     "revoke_all",   "set_policy",
                                                       "reset_policy", "list_policies", "other"};

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

class Writer {
 public:
  explicit Writer(std::string& out) : out_(out) {}
  // # HELP and # TYPE lines, once per metric family.
  void family(std::string_view name, std::string_view type, std::string_view help) {
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    for (char c : help) {  // HELP escapes backslash and line feed only
      if (c == '\\') out_ += "\\\\";
      else if (c == '\n') out_ += "\\n";
      else out_ += c;
    }
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }
  // One sample; `labels` as name, value pairs.
  void sample(std::string_view name, std::initializer_list<std::pair<std::string_view, std::string_view>> labels,
              const std::string& value) {
    out_ += name;
    if (labels.size() != 0) {
      out_ += '{';
      bool first = true;
      for (const auto& [k, v] : labels) {
        if (!first) out_ += ',';
        first = false;
        out_ += k;
        out_ += "=\"";
        out_ += escape_label_value(v);
        out_ += '"';
      }
      out_ += '}';
    }
    out_ += ' ';
    out_ += value;
    out_ += '\n';
  }
  void sample(std::string_view name, std::initializer_list<std::pair<std::string_view, std::string_view>> labels,
              std::int64_t value) {
    sample(name, labels, std::to_string(value));
  }
  void sample_u(std::string_view name, std::initializer_list<std::pair<std::string_view, std::string_view>> labels,
                std::uint64_t value) {
    sample(name, labels, std::to_string(value));
  }
  void histogram(std::string_view name, std::string_view label, std::string_view label_value, const Histogram& h) {
    const auto snap = h.snapshot();
    const std::string bucket = std::string(name) + "_bucket";
    const auto bounds = h.bounds();
    for (std::size_t i = 0; i <= bounds.size(); ++i) {
      const std::string le = i < bounds.size() ? number(bounds[i]) : "+Inf";
      if (label.empty()) sample_u(bucket, {{"le", le}}, snap.cumulative[i]);
      else sample_u(bucket, {{label, label_value}, {"le", le}}, snap.cumulative[i]);
    }
    const std::string sum = std::string(name) + "_sum", count = std::string(name) + "_count";
    if (label.empty()) {
      sample(sum, {}, number(snap.sum_seconds));
      sample_u(count, {}, snap.cumulative.back());
    } else {
      sample(sum, {{label, label_value}}, number(snap.sum_seconds));
      sample_u(count, {{label, label_value}}, snap.cumulative.back());
    }
  }

 private:
  std::string& out_;
};

}  // namespace

Histogram::Histogram(std::span<const double> bounds) noexcept
    : bounds_(bounds.first(std::min(bounds.size(), kMaxBuckets))) {
  for (std::size_t i = 0; i < bounds_.size(); ++i) bounds_ns_[i] = std::int64_t(bounds_[i] * 1e9);
}

void Histogram::observe(std::chrono::nanoseconds d) noexcept {
  const std::int64_t ns = std::max<std::int64_t>(0, d.count());
  std::size_t i = 0;
  while (i < bounds_.size() && ns > bounds_ns_[i]) ++i;
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  sum_ns_.fetch_add(std::uint64_t(ns), std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.cumulative.resize(bounds_.size() + 1);
  std::uint64_t total = 0;
  for (std::size_t i = 0; i <= bounds_.size(); ++i) {
    total += counts_[i].load(std::memory_order_relaxed);
    s.cumulative[i] = total;
  }
  s.sum_seconds = double(sum_ns_.load(std::memory_order_relaxed)) / 1e9;
  return s;
}

LoginOutcome login_outcome(std::string_view o) noexcept {
  if (o == "ok") return LoginOutcome::ok;
  if (o == "denied") return LoginOutcome::denied;
  return LoginOutcome::error;
}

TokenOp token_op(std::string_view e) noexcept {
  if (e == "create_token") return TokenOp::create;
  if (e == "list_tokens") return TokenOp::list;
  if (e == "set_comment") return TokenOp::set_comment;
  if (e == "revoke_token") return TokenOp::revoke;
  if (e == "revoke_all_tokens") return TokenOp::revoke_all;
  if (e == "set_policy") return TokenOp::set_policy;
  if (e == "reset_policy") return TokenOp::reset_policy;
  if (e == "list_policies") return TokenOp::list_policies;
  return TokenOp::other;
}

Registry::Registry()
    : login_seconds{Histogram(kLoginBuckets), Histogram(kLoginBuckets)}, query_seconds(kQueryBuckets) {}

Registry& global() noexcept {
  static Registry r;
  return r;
}

std::string escape_label_value(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string render(const Registry& r, const ScrapeFacts& f) {
  std::string out;
  out.reserve(16 * 1024);
  Writer w(out);

  w.family("tokengate_build_info", "gauge", "Version and git commit of this tokengate binary (always 1).");
  w.sample("tokengate_build_info", {{"version", f.version}, {"commit", f.commit}}, 1);
  w.family("tokengate_start_time_seconds", "gauge", "When this process started, in seconds since the Unix epoch.");
  w.sample("tokengate_start_time_seconds", {}, number(f.start_time_seconds));
  w.family("tokengate_draining", "gauge", "1 while tokengate drains its sessions after SIGTERM, else 0.");
  w.sample("tokengate_draining", {}, f.draining ? 1 : 0);

  w.family("tokengate_client_connections_total", "counter", "Client connections accepted, by listener.");
  for (std::size_t l = 0; l < kListeners; ++l)
    w.sample_u("tokengate_client_connections_total", {{"listener", kListenerNames[l]}},
               r.client_connections_total[l].value());
  w.family("tokengate_client_connections_open", "gauge", "Client connections open now, by listener and TLS.");
  for (std::size_t l = 0; l < kListeners; ++l)
    for (int tls = 0; tls < 2; ++tls)
      w.sample("tokengate_client_connections_open", {{"listener", kListenerNames[l]}, {"tls", tls ? "true" : "false"}},
               r.client_connections[l][tls].value());
  w.family("tokengate_sessions", "gauge", "Logged-in sessions (wire and WebSocket) relaying to the upstream now.");
  w.sample("tokengate_sessions", {}, f.sessions);

  w.family("tokengate_upstream_connections_total", "counter",
           "Upstream connections opened for sessions' logins (the pool's are not counted here).");
  w.sample_u("tokengate_upstream_connections_total", {}, r.upstream_connections_total.value());
  w.family("tokengate_upstream_connections_open", "gauge",
           "Upstream connections open now: one per logged-in session, and POST /sql's pool.");
  w.sample("tokengate_upstream_connections_open", {{"kind", "session"}}, f.upstream_session_connections);
  w.sample("tokengate_upstream_connections_open", {{"kind", "pool"}}, f.pool_connections);
  w.family("tokengate_upstream_pool_idle_connections", "gauge", "Idle connections in POST /sql's upstream pool.");
  w.sample("tokengate_upstream_pool_idle_connections", {}, f.pool_idle);

  w.family("tokengate_logins_total", "counter",
           "Logins (wire, WebSocket and HTTP credentials) by method and outcome (ok, denied, error).");
  for (std::size_t m = 0; m < kLoginMethods; ++m)
    for (std::size_t o = 0; o < kLoginOutcomes; ++o)
      w.sample_u("tokengate_logins_total", {{"method", kMethodNames[m]}, {"outcome", kOutcomeNames[o]}},
                 r.logins[m][o].value());
  w.family("tokengate_login_duration_seconds", "histogram",
           "Successful wire logins, from the accepted connection to the first ReadyForQuery, by method.");
  for (std::size_t m = 0; m < kLoginMethods; ++m)
    w.histogram("tokengate_login_duration_seconds", "method", kMethodNames[m], r.login_seconds[m]);

  w.family("tokengate_token_operations_total", "counter",
           "API token operations (SQL statements and the REST API) by operation and outcome.");
  for (std::size_t op = 0; op < kTokenOps; ++op)
    for (int e = 0; e < 2; ++e)
      w.sample_u("tokengate_token_operations_total",
                 {{"operation", kTokenOpNames[op]}, {"outcome", e ? "error" : "ok"}}, r.token_operations[op][e].value());

  w.family("tokengate_refused_connections_total", "counter",
           "Connections refused before a password was checked, by reason.");
  w.sample_u("tokengate_refused_connections_total", {{"reason", "login_limit"}},
             r.refusals[std::size_t(Refusal::login_limit)].value());
  w.sample_u("tokengate_refused_connections_total", {{"reason", "address_limit"}},
             r.refusals[std::size_t(Refusal::address_limit)].value());
  w.sample_u("tokengate_refused_connections_total", {{"reason", "startup"}},
             r.refusals[std::size_t(Refusal::startup)].value());
  w.family("tokengate_throttled_logins_total", "counter",
           "Logins throttled after repeated failures: delayed (waited their turn) or refused unverified.");
  w.sample_u("tokengate_throttled_logins_total", {{"action", "delayed"}},
             r.refusals[std::size_t(Refusal::throttle_delayed)].value());
  w.sample_u("tokengate_throttled_logins_total", {{"action", "refused"}},
             r.refusals[std::size_t(Refusal::throttle_refused)].value());
  w.family("tokengate_password_checks_total", "counter",
           "Password checks taken from the verification queue: run, or skipped because the client hung up first.");
  w.sample_u("tokengate_password_checks_total", {{"outcome", "run"}}, r.password_checks_run.value());
  w.sample_u("tokengate_password_checks_total", {{"outcome", "skipped"}}, r.password_checks_skipped.value());
  w.family("tokengate_sessions_ended_total", "counter",
           "Sessions ended because their API token was revoked or expired.");
  w.sample_u("tokengate_sessions_ended_total", {{"reason", "revoked"}}, r.sessions_ended_by_revocation.value());
  w.sample_u("tokengate_sessions_ended_total", {{"reason", "expired"}}, r.sessions_ended_by_expiry.value());

  w.family("tokengate_relayed_bytes_total", "counter",
           "Bytes read from clients and from the upstream by logged-in sessions.");
  w.sample_u("tokengate_relayed_bytes_total", {{"from", "client"}}, r.bytes_from_clients.value());
  w.sample_u("tokengate_relayed_bytes_total", {{"from", "upstream"}}, r.bytes_from_upstream.value());
  w.family("tokengate_query_duration_seconds", "histogram",
           "Query round trips of sessions: from a request sent upstream while none was outstanding until every "
           "request was answered (ReadyForQuery).");
  w.histogram("tokengate_query_duration_seconds", {}, {}, r.query_seconds);

  if (f.store_counted) {
    w.family("tokengate_tokens", "gauge", "API tokens in the store by state (counted at most once a minute).");
    w.sample("tokengate_tokens", {{"state", "active"}}, f.tokens_active);
    w.sample("tokengate_tokens", {{"state", "expired"}}, f.tokens_expired);
    w.sample("tokengate_tokens", {{"state", "revoked"}}, f.tokens_revoked);
    w.family("tokengate_tokens_expiring_soon", "gauge", "Active API tokens that expire within 7 days.");
    w.sample("tokengate_tokens_expiring_soon", {}, f.tokens_expiring_soon);
  }
  if (f.fleet) {
    w.family("tokengate_registry_up", "gauge", "1 while the change feed holds a connection to the fleet's registry.");
    w.sample("tokengate_registry_up", {}, f.registry_connected ? 1 : 0);
    w.family("tokengate_registry_staleness_seconds", "gauge",
             "Age of the local copy of the registry: time since the change feed last caught up.");
    w.sample("tokengate_registry_staleness_seconds", {}, number(f.registry_staleness_seconds));
    w.family("tokengate_registry_feed_position", "gauge", "The last change feed position applied to the local copy.");
    w.sample_u("tokengate_registry_feed_position", {}, f.registry_feed_position);
  }
  return out;
}

}  // namespace tokengate::metrics

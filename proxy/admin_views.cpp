// SHOW TOKENGATE views from plain values (see admin_views.hpp).
#include "proxy/admin_views.hpp"

#include <algorithm>

namespace tokengate::admin {

namespace {

std::string seconds(std::chrono::seconds s) { return std::to_string(s.count()) + "s"; }
std::string boolean(bool b) { return b ? "true" : "false"; }
std::string endpoints(const std::vector<net::Endpoint>& eps) {
  if (eps.empty()) return "off";
  std::string out;
  for (const auto& e : eps) {
    if (!out.empty()) out += ',';
    out += e.to_string();
  }
  return out;
}

// Where a key of libpq's key=value form starts a password (case matters in
// libpq: keywords are lower case).
bool is_password_key(std::string_view dsn, std::size_t at) {
  constexpr std::string_view key = "password";
  if (dsn.substr(at, key.size()) != key) return false;
  if (at > 0 && dsn[at - 1] != ' ' && dsn[at - 1] != '\t' && dsn[at - 1] != '\n') return false;
  std::size_t i = at + key.size();
  while (i < dsn.size() && (dsn[i] == ' ' || dsn[i] == '\t')) ++i;
  return i < dsn.size() && dsn[i] == '=';
}

}  // namespace

std::string_view state_name(SessionState s) noexcept {
  switch (s) {
    case SessionState::idle: return "idle";
    case SessionState::active: return "active";
    case SessionState::idle_in_transaction: return "idle in transaction";
    case SessionState::idle_in_failed_transaction: return "idle in transaction (aborted)";
  }
  return "?";
}

std::vector<std::vector<protocol::Value>> session_rows(std::span<const std::shared_ptr<const SessionStats>> sessions) {
  std::vector<const SessionStats*> order;
  order.reserve(sessions.size());
  for (const auto& s : sessions)
    if (s) order.push_back(s.get());
  std::stable_sort(order.begin(), order.end(),
                   [](const SessionStats* a, const SessionStats* b) { return a->started_at < b->started_at; });
  std::vector<std::vector<protocol::Value>> rows;
  rows.reserve(order.size());
  for (const SessionStats* s : order) {
    protocol::Value token = s->token_name.empty() ? protocol::Value{} : protocol::Value{s->token_name};
    rows.push_back({s->backend_pid, s->client_address, s->user, s->database, s->application_name, s->login_method,
                    std::move(token), std::string(s->tls ? "on" : "off"),
                    protocol::Timestamp::from_unix_seconds(s->started_at),
                    std::string(state_name(s->state.load(std::memory_order_relaxed))),
                    std::int64_t(s->bytes_in.load(std::memory_order_relaxed)),
                    std::int64_t(s->bytes_out.load(std::memory_order_relaxed))});
  }
  return rows;
}

std::string mask_dsn(std::string_view dsn) {
  std::string out(dsn);
  // URI form: postgresql://user:password@host/db?password=…
  if (out.rfind("postgresql://", 0) == 0 || out.rfind("postgres://", 0) == 0) {
    const std::size_t start = out.find("://") + 3;
    const std::size_t at = out.find('@', start);
    const std::size_t slash = out.find('/', start);
    if (at != std::string::npos && (slash == std::string::npos || at < slash)) {
      const std::size_t colon = out.find(':', start);
      if (colon != std::string::npos && colon < at) out.replace(colon + 1, at - colon - 1, kMasked);
    }
    for (std::size_t q = out.find("password=", start); q != std::string::npos; q = out.find("password=", q + 1)) {
      if (q == 0 || (out[q - 1] != '?' && out[q - 1] != '&')) continue;
      const std::size_t v = q + 9;
      const std::size_t end = std::min(out.find('&', v), out.size());
      out.replace(v, end - v, kMasked);
    }
    return out;
  }
  // key=value form: password = 'quoted \' value' or password=bare
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (!is_password_key(out, i)) continue;
    std::size_t v = out.find('=', i) + 1;
    while (v < out.size() && (out[v] == ' ' || out[v] == '\t')) ++v;
    std::size_t end = v;
    if (end < out.size() && out[end] == '\'') {
      ++end;
      while (end < out.size() && out[end] != '\'') end += out[end] == '\\' ? 2 : 1;
      end = std::min(end + 1, out.size());
    } else {
      while (end < out.size() && out[end] != ' ' && out[end] != '\t' && out[end] != '\n') ++end;
    }
    out.replace(v, end - v, kMasked);
    i = v + kMasked.size();
  }
  return out;
}

std::vector<SettingRow> config_rows(const Config& c) {
  const Config d;
  std::vector<SettingRow> rows;
  auto add = [&](const char* key, std::string value, std::string default_value) {
    const bool is_default = value == default_value;
    rows.push_back({key, std::move(value), is_default ? "default" : "configured"});
  };
  auto upstream_auth = [](Config::UpstreamAuth a) { return a == Config::UpstreamAuth::trust ? "trust" : "password"; };
  add("listen", endpoints(c.listen), "127.0.0.1:6432");
  add("upstream.address", c.upstream.to_string(), "");
  rows.back().source = "configured";  // its default depends on PGHOST/PGPORT
  add("data_dir", c.data_dir, d.data_dir);
  add("threads", std::to_string(c.threads), std::to_string(d.threads));
  add("log_level", c.log_level, d.log_level);
  add("auth_timeout", seconds(c.auth_timeout), seconds(d.auth_timeout));
  add("shutdown_timeout", seconds(c.shutdown_timeout), seconds(d.shutdown_timeout));
  add("upstream.auth", upstream_auth(c.upstream_auth), upstream_auth(d.upstream_auth));
  add("auth.userlist", c.userlist, d.userlist);
  add("upstream.control_user", c.control_user, d.control_user);
  add("upstream.control_database", c.control_database, d.control_database);
  add("upstream.auth_query", c.auth_query, d.auth_query);
  add("admin_role", c.admin_role, d.admin_role);
  add("token_sessions.manage_credentials", boolean(c.token_sessions_manage_credentials),
      boolean(d.token_sessions_manage_credentials));
  add("max_tokens_per_user", std::to_string(c.max_tokens_per_user), std::to_string(d.max_tokens_per_user));
  add("revoke_ends_sessions", boolean(c.revoke_ends_sessions), boolean(d.revoke_ends_sessions));
  add("expiry_ends_sessions", boolean(c.expiry_ends_sessions), boolean(d.expiry_ends_sessions));
  add("expiry_warning", seconds(c.expiry_warning), seconds(d.expiry_warning));
  add("max_failed_logins", std::to_string(c.max_failed_logins), std::to_string(d.max_failed_logins));
  add("auth.allow_plaintext_passwords", boolean(c.allow_plaintext_passwords), boolean(d.allow_plaintext_passwords));
  add("auth.max_scram_iterations", std::to_string(c.max_scram_iterations), std::to_string(d.max_scram_iterations));
  add("auth.max_pending_verifications", std::to_string(c.max_pending_verifications),
      std::to_string(d.max_pending_verifications));
  add("audit_log", c.audit_log, d.audit_log);
  add("login.client_timeout", seconds(c.login_client_timeout), seconds(d.login_client_timeout));
  add("login.max_connections", std::to_string(c.login_max_connections), std::to_string(d.login_max_connections));
  add("login.max_connections_per_address", std::to_string(c.login_max_connections_per_address),
      std::to_string(d.login_max_connections_per_address));
  add("relay.max_inspected_message", std::to_string(c.relay_max_inspected_message),
      std::to_string(d.relay_max_inspected_message));
  add("relay.session_memory_limit", std::to_string(c.relay_session_memory_limit),
      std::to_string(d.relay_session_memory_limit));
  add("relay.memory_limit", std::to_string(c.relay_memory_limit), std::to_string(d.relay_memory_limit));
  add("store.backend", c.store_backend, d.store_backend);
  add("store.dsn", mask_dsn(c.store_dsn), d.store_dsn);
  add("store.kek_file", c.kek_file, d.kek_file);
  add("store.previous_kek_file", c.previous_kek_file, d.previous_kek_file);
  add("store.max_staleness", seconds(c.max_staleness), seconds(d.max_staleness));
  add("fleet.instance_id", std::to_string(c.instance_id), std::to_string(d.instance_id));
  add("fleet.advertise_address", c.advertise_address, d.advertise_address);
  add("fleet.peers", c.peers, d.peers);
  add("tls.cert", c.tls_cert, d.tls_cert);
  add("tls.key", c.tls_key, d.tls_key);
  add("tls.mode", c.tls_mode, d.tls_mode);
  add("upstream.sslmode", c.upstream_sslmode, d.upstream_sslmode);
  add("upstream.sslrootcert", c.upstream_sslrootcert, d.upstream_sslrootcert);
  add("upstream.require_auth", c.upstream_require_auth, d.upstream_require_auth);
  add("upstream.max_scram_iterations", std::to_string(c.upstream_max_scram_iterations),
      std::to_string(d.upstream_max_scram_iterations));
  add("http.listen", endpoints(c.http_listen), "127.0.0.1:8432");
  add("http.session_duration", seconds(c.http_session_duration), seconds(d.http_session_duration));
  add("http.max_connections", std::to_string(c.http_max_connections), std::to_string(d.http_max_connections));
  add("http.max_connections_per_address", std::to_string(c.http_max_connections_per_address),
      std::to_string(d.http_max_connections_per_address));
  add("http.max_header_size", std::to_string(c.http_max_header_size), std::to_string(d.http_max_header_size));
  add("http.max_body_size", std::to_string(c.http_max_body_size), std::to_string(d.http_max_body_size));
  add("http.request_timeout", seconds(c.http_request_timeout), seconds(d.http_request_timeout));
  add("http.idle_timeout", seconds(c.http_idle_timeout), seconds(d.http_idle_timeout));
  add("http.max_response_size", std::to_string(c.http_max_response_size), std::to_string(d.http_max_response_size));
  add("metrics.require_auth", boolean(c.metrics_require_auth), boolean(d.metrics_require_auth));
  add("pool.max_connections", std::to_string(c.pool_max_connections), std::to_string(d.pool_max_connections));
  add("pool.max_connections_per_key", std::to_string(c.pool_max_connections_per_key),
      std::to_string(d.pool_max_connections_per_key));
  add("pool.idle_timeout", seconds(c.pool_idle_timeout), seconds(d.pool_idle_timeout));
  add("pool.wait_timeout", seconds(c.pool_wait_timeout), seconds(d.pool_wait_timeout));
  add("pool.max_lifetime", seconds(c.pool_max_lifetime), seconds(d.pool_max_lifetime));
  return rows;
}

std::vector<std::vector<protocol::Value>> config_table(const Config& c) {
  std::vector<std::vector<protocol::Value>> out;
  for (auto& r : config_rows(c)) out.push_back({std::move(r.setting), std::move(r.value), std::move(r.source)});
  return out;
}

std::vector<std::vector<protocol::Value>> name_value_rows(std::span<const std::pair<std::string, std::string>> items) {
  std::vector<std::vector<protocol::Value>> out;
  out.reserve(items.size());
  for (const auto& [k, v] : items) out.push_back({k, v});
  return out;
}

}  // namespace tokengate::admin

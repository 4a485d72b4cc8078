// SHOW TOKENGATE views from plain values (see admin_views.hpp).
#include "proxy/admin_views.hpp"

#include <algorithm>

namespace tokengate::admin {

std::string endpoints_text(const std::vector<net::Endpoint>& eps) {
  if (eps.empty()) return "off";
  std::string out;
  for (const auto& e : eps) {
    if (!out.empty()) out += ',';
    out += e.to_string();
  }
  return out;
}

namespace {

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
  std::vector<SettingRow> rows;
  rows.reserve(c.resolved.size());
  // The only secret setting is store.dsn, a connection string: its password
  // is masked, the rest (host, user) helps an operator.
  for (const auto& r : c.resolved) rows.push_back({r.key, r.secret ? mask_dsn(r.value) : r.value, r.source});
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

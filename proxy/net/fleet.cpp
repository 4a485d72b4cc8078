// Fleet settings: the registry's DSN and KEK, this instance's address, configured peers, cancel forwarding limits.
#include "proxy/net/fleet.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>

#include "proxy/auth/userlist.hpp"
#include "tokenstore/kek.hpp"

namespace tokengate::net {

namespace {

// A conninfo value, quoted as libpq reads it: '…' with \ and ' escaped.
std::string conninfo_value(std::string_view v) {
  std::string out = "'";
  for (char c : v) {
    if (c == '\\' || c == '\'') out += '\\';
    out += c;
  }
  out += '\'';
  return out;
}

}  // namespace

std::string registry_dsn(const Config& config, const std::optional<std::string>& control_password) {
  if (!config.store_dsn.empty()) return config.store_dsn;
  const auto& up = config.upstream;
  std::string dsn = "host=" + conninfo_value(up.host) + " port=" + std::to_string(up.port) +
                    " user=" + conninfo_value(config.control_user) +
                    " dbname=" + conninfo_value(config.control_database);
  if (control_password) dsn += " password=" + conninfo_value(*control_password);
  if (!up.is_unix()) {
    dsn += " sslmode=" + conninfo_value(config.upstream_sslmode);
    if (!config.upstream_sslrootcert.empty()) dsn += " sslrootcert=" + conninfo_value(config.upstream_sslrootcert);
  }
  return dsn;
}

std::string advertise_address(const Config& config) {
  if (!config.advertise_address.empty()) return config.advertise_address;
  for (const auto& ep : config.listen) {
    if (ep.is_unix()) continue;
    std::string host = ep.host;
    if (host == "0.0.0.0" || host == "::" || host.empty()) {
      char name[256] = {};
      if (::gethostname(name, sizeof name - 1) == 0) host = name;
    }
    Endpoint out{host, ep.port};
    return out.to_string();
  }
  return "";
}

std::map<std::uint32_t, Endpoint> parse_peers(std::string_view text) {
  std::map<std::uint32_t, Endpoint> out;
  while (!text.empty()) {
    auto comma = text.find(',');
    std::string_view item = text.substr(0, comma);
    text = comma == std::string_view::npos ? std::string_view() : text.substr(comma + 1);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (item.empty()) continue;
    auto eq = item.find('=');
    std::uint32_t id = 0;
    auto id_text = item.substr(0, eq);
    auto [end, ec] = std::from_chars(id_text.data(), id_text.data() + id_text.size(), id);
    std::optional<Endpoint> ep;
    if (eq != std::string_view::npos) ep = parse_endpoint(item.substr(eq + 1), 6432);
    if (eq == std::string_view::npos || ec != std::errc() || end != id_text.data() + id_text.size() || id == 0 ||
        id >= (1u << kFleetInstanceBits) || !ep)
      throw ConfigError{"fleet.peers: expected ID=HOST:PORT,… with ids 1-255, got '" + std::string(item) + "'"};
    out[id] = *ep;
  }
  return out;
}

std::unique_ptr<tokenstore::pg_store> open_registry(const Config& config, tokenstore::keyring& keys) {
  tokenstore::pg_store_options o;
  if (!config.kek_file.empty()) {
    o.current = tokenstore::load_kek_file(config.kek_file);
  } else if (const char* env = std::getenv("TOKENGATE_KEK"); env && *env) {
    o.current = tokenstore::kek_from_text(env, "TOKENGATE_KEK");
  } else {
    throw tokenstore::kek_error(
        "store.backend = postgres needs the fleet's key-encryption key: store.kek_file or TOKENGATE_KEK "
        "(64 hex digits, e.g. from `openssl rand -hex 32`; the same on every instance, never in the database)");
  }
  if (!config.previous_kek_file.empty()) o.previous = tokenstore::load_kek_file(config.previous_kek_file);

  std::optional<std::string> password;
  if (config.store_dsn.empty() && config.upstream_auth == Config::UpstreamAuth::password &&
      !config.userlist.empty()) {
    auto loaded = auth::Userlist::load(config.userlist);
    if (auto* list = std::get_if<auth::Userlist>(&loaded)) password = list->password_for(config.control_user);
  }
  o.dsn = registry_dsn(config, password);
  o.max_staleness = config.max_staleness;
  o.instance_id = config.instance_id;
  o.max_instance_id = (1u << kFleetInstanceBits) - 1;
  o.address = advertise_address(config);
  o.version = TOKENGATE_VERSION;
  return std::make_unique<tokenstore::pg_store>(std::move(o), keys);
}

bool CancelForwarding::begin(const protocol::BackendKeyData& key) {
  const auto now = std::chrono::steady_clock::now();
  const std::uint64_t packed = (std::uint64_t(std::uint32_t(key.process_id)) << 32) | std::uint32_t(key.secret_key);
  std::lock_guard lock(mutex_);
  if (in_flight_ >= kMaxInFlight) return false;
  if (auto it = recent_.find(packed); it != recent_.end() && now - it->second < kRepeatWindow) return false;
  if (recent_.size() >= kMaxRemembered) {
    std::erase_if(recent_, [&](const auto& kv) { return now - kv.second >= kRepeatWindow; });
    if (recent_.size() >= kMaxRemembered) recent_.clear();
  }
  recent_[packed] = now;
  ++in_flight_;
  return true;
}

void CancelForwarding::done() {
  std::lock_guard lock(mutex_);
  --in_flight_;
}

}  // namespace tokengate::net

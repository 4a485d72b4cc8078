// Command line and configuration loading (see cli.hpp, config.hpp).
#include "proxy/cli.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>
#include <toml++/toml.h>

#include "proxy/audit.hpp"
#include "proxy/build_info.hpp"
#include "proxy/config.hpp"
#include "proxy/net/fleet.hpp"
#include "proxy/net/server.hpp"
#include "proxy/session/upstream_login.hpp"
#include "tokenstore/cli.hpp"

namespace tokengate {
namespace {

// One row per setting: its TOML key, flag and environment variable. Values
// are kept as text until every source has been applied, then validated once.
struct Setting {
  const char* key;
  const char* flag;
  const char* env;
  const char* help;
  std::string value;  // built-in default, replaced by file, env, flag in turn
};

std::vector<Setting> settings_table() {
  const char* pghost = std::getenv("PGHOST");
  const char* pgport = std::getenv("PGPORT");
  std::string upstream = std::string(pghost && *pghost ? pghost : "127.0.0.1") + ":" +
                         (pgport && *pgport ? pgport : "5432");
  return {
      {"listen", "--listen", "TOKENGATE_LISTEN",
       "HOST:PORT[,HOST:PORT…] to accept clients on; HOST may be a socket directory",
       "127.0.0.1:6432"},
      {"upstream.address", "--upstream", "TOKENGATE_UPSTREAM",
       "HOST:PORT of the PostgreSQL server; HOST may be a socket directory", upstream},
      {"data_dir", "--data-dir", "TOKENGATE_DATA_DIR", "directory of the token store",
       "./tokengate-data"},
      {"threads", "--threads", "TOKENGATE_THREADS", "I/O threads (0: one per core)", "0"},
      {"log_level", "--log-level", "TOKENGATE_LOG_LEVEL",
       "trace, debug, info, warn, error or off", "info"},
      {"auth_timeout", "--auth-timeout", "TOKENGATE_AUTH_TIMEOUT",
       "seconds a client has to log in", "30"},
      {"shutdown_timeout", "--shutdown-timeout", "TOKENGATE_SHUTDOWN_TIMEOUT",
       "seconds sessions get to finish after SIGTERM", "30"},
      {"upstream.auth", "--upstream-auth", "TOKENGATE_UPSTREAM_AUTH",
       "trust (tokengate checks passwords; the upstream trusts it) or password", "trust"},
      {"auth.userlist", "--userlist", "TOKENGATE_USERLIST",
       "file of \"user\" \"password\" lines: upstream passwords for token sessions (password mode)", ""},
      {"upstream.control_user", "--control-user", "TOKENGATE_CONTROL_USER",
       "role for catalog look-ups (admin status, memberships, password verifiers)", "postgres"},
      {"upstream.control_database", "--control-database", "TOKENGATE_CONTROL_DATABASE",
       "database the control connections use", "postgres"},
      {"upstream.auth_query", "--auth-query", "TOKENGATE_AUTH_QUERY",
       "query returning (verifier, valid-until epoch, can-login) for $1 (trust mode)",
       Config{}.auth_query},
      {"admin_role", "--admin-role", "TOKENGATE_ADMIN_ROLE",
       "members of this role (granted by a superuser) administer tokens, besides superusers",
       "tokengate_admin"},
      {"token_sessions.manage_credentials", "--token-sessions-manage-credentials",
       "TOKENGATE_TOKEN_SESSIONS_MANAGE_CREDENTIALS",
       "sessions that logged in with a token may create tokens and change passwords (true/false)", "false"},
      {"revoke_ends_sessions", "--revoke-ends-sessions", "TOKENGATE_REVOKE_ENDS_SESSIONS",
       "end live sessions of a revoked token (true/false)", "true"},
      {"expiry_ends_sessions", "--expiry-ends-sessions", "TOKENGATE_EXPIRY_ENDS_SESSIONS",
       "end live sessions when their token expires (true/false)", "true"},
      {"expiry_warning", "--expiry-warning", "TOKENGATE_EXPIRY_WARNING",
       "seconds before expiry from which a login gets a notice", "604800"},
      {"max_failed_logins", "--max-failed-logins", "TOKENGATE_MAX_FAILED_LOGINS",
       "failures per user or address within a minute before answers are delayed", "10"},
      {"auth.allow_plaintext_passwords", "--allow-plaintext-passwords",
       "TOKENGATE_ALLOW_PLAINTEXT_PASSWORDS",
       "accept passwords over unencrypted TCP from other hosts (true/false)", "false"},
      {"auth.max_scram_iterations", "--max-scram-iterations", "TOKENGATE_MAX_SCRAM_ITERATIONS",
       "PBKDF2 rounds of a role's SCRAM verifier beyond which its logins fail unchecked", "100000"},
      {"auth.max_pending_verifications", "--max-pending-verifications", "TOKENGATE_MAX_PENDING_VERIFICATIONS",
       "password checks that may wait for the verification thread", "128"},
      {"login.client_timeout", "--login-client-timeout", "TOKENGATE_LOGIN_CLIENT_TIMEOUT",
       "seconds a client has to send its startup packet and password", "10"},
      {"login.max_connections", "--login-max-connections", "TOKENGATE_LOGIN_MAX_CONNECTIONS",
       "connections still logging in, in total", "1000"},
      {"login.max_connections_per_address", "--login-max-connections-per-address",
       "TOKENGATE_LOGIN_MAX_CONNECTIONS_PER_ADDRESS", "connections still logging in, per client address", "50"},
      {"tls.cert", "--tls-cert", "TOKENGATE_TLS_CERT", "PEM certificate chain for client TLS", ""},
      {"tls.key", "--tls-key", "TOKENGATE_TLS_KEY", "PEM private key for client TLS", ""},
      {"tls.mode", "--tls-mode", "TOKENGATE_TLS_MODE",
       "client TLS: disable, allow (TLS when asked) or require", "allow"},
      {"upstream.sslmode", "--upstream-sslmode", "TOKENGATE_UPSTREAM_SSLMODE",
       "TLS to the upstream: disable, prefer, require or verify-full (default: prefer on loopback, "
       "verify-full otherwise)",
       ""},
      {"upstream.sslrootcert", "--upstream-sslrootcert", "TOKENGATE_UPSTREAM_SSLROOTCERT",
       "CA file to verify the upstream's certificate (verify-full), or 'system'", ""},
      {"upstream.require_auth", "--upstream-require-auth", "TOKENGATE_UPSTREAM_REQUIRE_AUTH",
       "authentication requests answered for the upstream: none, password, md5, scram-sha-256 (default: none "
       "with trust, scram-sha-256 with password)",
       ""},
      {"upstream.max_scram_iterations", "--upstream-max-scram-iterations", "TOKENGATE_UPSTREAM_MAX_SCRAM_ITERATIONS",
       "PBKDF2 rounds the upstream's SCRAM may demand", "100000"},
      {"relay.max_inspected_message", "--max-inspected-message", "TOKENGATE_MAX_INSPECTED_MESSAGE",
       "Query/Parse messages up to this size are checked whole for API TOKEN statements (e.g. 1MB)", "1MB"},
      {"relay.session_memory_limit", "--session-memory-limit", "TOKENGATE_SESSION_MEMORY_LIMIT",
       "relay buffers one session may hold (e.g. 4MB)", "4MB"},
      {"relay.memory_limit", "--memory-limit", "TOKENGATE_MEMORY_LIMIT",
       "relay buffers of all sessions together (e.g. 512MB; 0: no limit)", "512MB"},
      {"store.backend", "--store-backend", "TOKENGATE_STORE_BACKEND",
       "lmdb (in data_dir, one instance) or postgres (a registry shared by a fleet)", "lmdb"},
      {"store.dsn", "--store-dsn", "TOKENGATE_STORE_DSN",
       "libpq connection string of the registry (default: the upstream, as the control user)", ""},
      {"store.kek_file", "--kek-file", "TOKENGATE_KEK_FILE",
       "file with the key-encryption key, 64 hex digits (else the TOKENGATE_KEK variable)", ""},
      {"store.previous_kek_file", "--previous-kek-file", "TOKENGATE_PREVIOUS_KEK_FILE",
       "the key-encryption key being replaced, during a KEK rotation", ""},
      {"store.max_staleness", "--max-staleness", "TOKENGATE_MAX_STALENESS",
       "seconds known tokens keep logging in while the registry is unreachable", "60"},
      {"fleet.instance_id", "--instance-id", "TOKENGATE_INSTANCE_ID",
       "this instance's id in the fleet, 1-255 (0: claim a free one)", "0"},
      {"fleet.advertise_address", "--advertise-address", "TOKENGATE_ADVERTISE_ADDRESS",
       "HOST:PORT other instances forward cancel requests to (default: the first listen address)", ""},
      {"fleet.peers", "--peers", "TOKENGATE_PEERS",
       "ID=HOST:PORT,… of other instances, besides those in the registry's heartbeat table", ""},
      {"audit_log", "--audit-log", "TOKENGATE_AUDIT_LOG",
       "JSON-lines audit file (default DATA_DIR/audit.log; 'off' for none)", ""},
      {"http.listen", "--http-listen", "TOKENGATE_HTTP_LISTEN",
       "HOST:PORT[,HOST:PORT…] of the HTTP gateway (REST API, browser login); 'off' for none", "127.0.0.1:8432"},
      {"http.session_duration", "--http-session-duration", "TOKENGATE_HTTP_SESSION_DURATION",
       "seconds a browser login (POST /api/login) lasts", "43200"},
      {"http.max_connections", "--http-max-connections", "TOKENGATE_HTTP_MAX_CONNECTIONS",
       "HTTP connections open at once; more get 503", "256"},
      {"http.max_header_size", "--http-max-header-size", "TOKENGATE_HTTP_MAX_HEADER_SIZE",
       "bytes of request line and headers (431 beyond)", "16384"},
      {"http.max_body_size", "--http-max-body-size", "TOKENGATE_HTTP_MAX_BODY_SIZE",
       "bytes of a request body (413 beyond)", "1048576"},
      {"http.request_timeout", "--http-request-timeout", "TOKENGATE_HTTP_REQUEST_TIMEOUT",
       "seconds to read a request and write its answer", "30"},
      {"http.idle_timeout", "--http-idle-timeout", "TOKENGATE_HTTP_IDLE_TIMEOUT",
       "seconds a kept-alive HTTP connection may wait for its next request", "60"},
      {"http.max_response_size", "--http-max-response-size", "TOKENGATE_HTTP_MAX_RESPONSE_SIZE",
       "bytes of one POST /sql answer (507 beyond)", "10485760"},
      {"pool.max_connections", "--pool-max-connections", "TOKENGATE_POOL_MAX_CONNECTIONS",
       "upstream connections the HTTP endpoints' pool holds, all roles together", "50"},
      {"pool.max_connections_per_key", "--pool-max-connections-per-key", "TOKENGATE_POOL_MAX_CONNECTIONS_PER_KEY",
       "pooled upstream connections of one role, database and startup settings", "10"},
      {"pool.idle_timeout", "--pool-idle-timeout", "TOKENGATE_POOL_IDLE_TIMEOUT",
       "seconds an idle pooled upstream connection is kept", "60"},
      {"pool.wait_timeout", "--pool-wait-timeout", "TOKENGATE_POOL_WAIT_TIMEOUT",
       "seconds an HTTP query waits for a pooled connection (then 503)", "10"},
      {"pool.max_lifetime", "--pool-max-lifetime", "TOKENGATE_POOL_MAX_LIFETIME",
       "seconds after which a pooled upstream connection is closed once free", "3600"},
  };
}

// A configuration file is a page of settings. These bound what a wrong path
// (a log file, a device) can make tokengate read and parse: a thousand times
// a long real file, and a line far longer than the longest real value (an
// auth_query is a few hundred bytes).
constexpr std::size_t kMaxConfigBytes = std::size_t{1} << 20;
constexpr std::size_t kMaxConfigLineBytes = 16384;
// Every key is at most two levels deep (`upstream.address`); deeper tables
// are unknown keys, refused before they cost any recursion.
constexpr int kMaxConfigDepth = 4;

// Flattens a TOML table into dotted keys; non-scalar values are an error.
void flatten(const toml::table& table, const std::string& prefix,
             std::map<std::string, std::string>& out, int depth = 0) {
  for (const auto& [k, node] : table) {
    std::string key = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    if (const auto* t = node.as_table()) {
      if (depth + 1 >= kMaxConfigDepth) throw ConfigError{"unknown configuration key '" + key + "'"};
      flatten(*t, key, out, depth + 1);
    // The type is checked before the value is read: toml++'s value<int64_t>()
    // of a float such as 7e42 converts it out of range (undefined behaviour,
    // found by the config fuzz target).
    } else if (const auto* s = node.as_string()) {
      out[key] = s->get();
    } else if (const auto* i = node.as_integer()) {
      out[key] = std::to_string(i->get());
    } else if (const auto* b = node.as_boolean()) {
      out[key] = b->get() ? "true" : "false";
    } else {
      throw ConfigError{"configuration key '" + key + "' must be a string, integer or boolean"};
    }
  }
}

std::string find_config_path(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--config" && i + 1 < argc) return argv[i + 1];
    if (a.rfind("--config=", 0) == 0) return std::string(a.substr(9));
  }
  const char* env = std::getenv("TOKENGATE_CONFIG");
  return env ? env : "";
}

// Applies the TOML `text` (read from `source`, for messages) to the table.
void apply_toml(std::vector<Setting>& table, std::string_view text, const std::string& source) {
  std::size_t line = 1, line_start = 0;
  for (std::size_t i = 0; i <= text.size(); ++i) {
    if (i < text.size() && text[i] != '\n') continue;
    if (i - line_start > kMaxConfigLineBytes)
      throw ConfigError{"configuration file " + source + ", line " + std::to_string(line) + ": longer than " +
                        std::to_string(kMaxConfigLineBytes) + " bytes"};
    ++line;
    line_start = i + 1;
  }
  toml::table doc;
  try {
    doc = toml::parse(text, std::string_view(source));
  } catch (const toml::parse_error& e) {
    throw ConfigError{"cannot read configuration file " + source + ": " + std::string(e.description()) +
                      " (line " + std::to_string(e.source().begin.line) + ")"};
  }
  std::map<std::string, std::string> flat;
  flatten(doc, "", flat);
  for (const auto& entry : flat) {
    // Not a structured binding: clang before 16 cannot capture one in a lambda.
    const std::string& key = entry.first;
    auto it = std::find_if(table.begin(), table.end(), [&](const Setting& s) { return key == s.key; });
    if (it == table.end()) throw ConfigError{"unknown configuration key '" + key + "' in " + source};
    it->value = entry.second;
  }
}

// Reads the file at `path`, at most kMaxConfigBytes.
std::string read_config_file(const std::string& path) {
  auto fail = [&](std::string_view doing) {
    return ConfigError{"cannot " + std::string(doing) + " configuration file " + path + ": " + std::strerror(errno)};
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw fail("open");
  std::string text;
  char buf[65536];
  for (;;) {
    const auto n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      auto err = fail("read");
      ::close(fd);
      throw err;
    }
    if (n == 0) break;
    text.append(buf, static_cast<std::size_t>(n));
    if (text.size() > kMaxConfigBytes) {
      ::close(fd);
      throw ConfigError{"configuration file " + path + " is larger than " + std::to_string(kMaxConfigBytes >> 20) +
                        " MiB"};
    }
  }
  ::close(fd);
  return text;
}

void apply_file(std::vector<Setting>& table, const std::string& path) {
  if (path.empty()) return;
  apply_toml(table, read_config_file(path), path);
}

unsigned parse_unsigned(const Setting& s, unsigned max) {
  unsigned v = 0;
  auto [p, ec] = std::from_chars(s.value.data(), s.value.data() + s.value.size(), v);
  if (ec != std::errc{} || p != s.value.data() + s.value.size() || v > max)
    throw ConfigError{std::string(s.key) + ": expected a whole number up to " +
                      std::to_string(max) + ", got '" + s.value + "'"};
  return v;
}

// A size in bytes, with PostgreSQL's memory units: kB, MB, GB (powers of 1024).
std::size_t parse_size(const Setting& s) {
  std::uint64_t v = 0;
  const char* end = s.value.data() + s.value.size();
  auto [p, ec] = std::from_chars(s.value.data(), end, v);
  std::string_view unit(p, std::size_t(end - p));
  std::uint64_t mult = 1;
  if (unit == "kB") mult = 1024;
  else if (unit == "MB") mult = 1024 * 1024;
  else if (unit == "GB") mult = 1024ull * 1024 * 1024;
  else if (!unit.empty()) mult = 0;
  constexpr std::uint64_t kMax = 1ull << 40;  // 1 TB: anything above is a typo
  if (ec != std::errc{} || p == s.value.data() || mult == 0 || v > kMax / mult)
    throw ConfigError{std::string(s.key) + ": expected a size such as 1048576, 512kB, 4MB or 1GB, got '" +
                      s.value + "'"};
  return std::size_t(v * mult);
}

bool parse_bool(const Setting& s) {
  if (s.value == "true" || s.value == "on" || s.value == "1" || s.value == "yes") return true;
  if (s.value == "false" || s.value == "off" || s.value == "0" || s.value == "no") return false;
  throw ConfigError{std::string(s.key) + ": expected true or false, got '" + s.value + "'"};
}

Config build_config(const std::vector<Setting>& table) {
  Config c;
  auto get = [&](std::string_view key) -> const Setting& {
    return *std::find_if(table.begin(), table.end(), [&](const Setting& s) { return key == s.key; });
  };
  auto listen = net::parse_endpoint_list(get("listen").value, 6432);
  if (!listen) throw ConfigError{"listen: expected HOST:PORT[,HOST:PORT…], got '" + get("listen").value + "'"};
  c.listen = std::move(*listen);
  auto upstream = net::parse_endpoint(get("upstream.address").value, 5432);
  if (!upstream)
    throw ConfigError{"upstream.address: expected HOST:PORT, got '" + get("upstream.address").value + "'"};
  c.upstream = std::move(*upstream);
  c.data_dir = get("data_dir").value;
  c.threads = parse_unsigned(get("threads"), 256);
  c.log_level = get("log_level").value;
  if (spdlog::level::from_str(c.log_level) == spdlog::level::off && c.log_level != "off")
    throw ConfigError{"log_level: unknown level '" + c.log_level + "'"};
  c.auth_timeout = std::chrono::seconds(parse_unsigned(get("auth_timeout"), 3600));
  c.shutdown_timeout = std::chrono::seconds(parse_unsigned(get("shutdown_timeout"), 86400));
  const auto& mode = get("upstream.auth").value;
  if (mode == "trust") c.upstream_auth = Config::UpstreamAuth::trust;
  else if (mode == "password") c.upstream_auth = Config::UpstreamAuth::password;
  else throw ConfigError{"upstream.auth: expected trust or password, got '" + mode + "'"};
  c.userlist = get("auth.userlist").value;
  c.control_user = get("upstream.control_user").value;
  c.control_database = get("upstream.control_database").value;
  c.auth_query = get("upstream.auth_query").value;
  c.admin_role = get("admin_role").value;
  c.token_sessions_manage_credentials = parse_bool(get("token_sessions.manage_credentials"));
  c.revoke_ends_sessions = parse_bool(get("revoke_ends_sessions"));
  c.expiry_ends_sessions = parse_bool(get("expiry_ends_sessions"));
  c.expiry_warning = std::chrono::seconds(parse_unsigned(get("expiry_warning"), 100u * 366 * 86400));
  c.max_failed_logins = parse_unsigned(get("max_failed_logins"), 1000000);
  c.allow_plaintext_passwords = parse_bool(get("auth.allow_plaintext_passwords"));
  c.max_scram_iterations = parse_unsigned(get("auth.max_scram_iterations"), 10'000'000);
  if (c.max_scram_iterations == 0) throw ConfigError{"auth.max_scram_iterations: must be at least 1"};
  c.max_pending_verifications = parse_unsigned(get("auth.max_pending_verifications"), 1'000'000);
  c.login_client_timeout = std::chrono::seconds(parse_unsigned(get("login.client_timeout"), 3600));
  if (c.login_client_timeout.count() == 0) throw ConfigError{"login.client_timeout: must be at least 1"};
  c.login_max_connections = parse_unsigned(get("login.max_connections"), 1'000'000);
  c.login_max_connections_per_address = parse_unsigned(get("login.max_connections_per_address"), 1'000'000);
  c.upstream_require_auth = get("upstream.require_auth").value;
  if (!c.upstream_require_auth.empty()) {
    std::string error;
    if (!session::UpstreamAuthMethods::parse(c.upstream_require_auth, error))
      throw ConfigError{"upstream.require_auth: " + error};
  }
  c.upstream_max_scram_iterations = parse_unsigned(get("upstream.max_scram_iterations"), 10'000'000);
  c.tls_cert = get("tls.cert").value;
  c.tls_key = get("tls.key").value;
  c.tls_mode = get("tls.mode").value;
  c.upstream_sslmode = get("upstream.sslmode").value;
  c.upstream_sslrootcert = get("upstream.sslrootcert").value;
  c.relay_max_inspected_message = parse_size(get("relay.max_inspected_message"));
  c.relay_session_memory_limit = parse_size(get("relay.session_memory_limit"));
  c.relay_memory_limit = parse_size(get("relay.memory_limit"));
  if (c.relay_max_inspected_message < 1024)
    throw ConfigError{"relay.max_inspected_message: at least 1kB, so that any API TOKEN statement fits"};
  if (c.relay_session_memory_limit < 2 * c.relay_max_inspected_message)
    throw ConfigError{"relay.session_memory_limit must be at least twice relay.max_inspected_message"};
  if (c.relay_memory_limit != 0 && c.relay_memory_limit < c.relay_session_memory_limit)
    throw ConfigError{"relay.memory_limit must be at least relay.session_memory_limit (or 0 for no limit)"};
  c.store_backend = get("store.backend").value;
  if (c.store_backend != "lmdb" && c.store_backend != "postgres")
    throw ConfigError{"store.backend: expected lmdb or postgres, got '" + c.store_backend + "'"};
  c.store_dsn = get("store.dsn").value;
  c.kek_file = get("store.kek_file").value;
  c.previous_kek_file = get("store.previous_kek_file").value;
  c.max_staleness = std::chrono::seconds(parse_unsigned(get("store.max_staleness"), 86400));
  c.instance_id = parse_unsigned(get("fleet.instance_id"), 255);
  c.advertise_address = get("fleet.advertise_address").value;
  c.peers = get("fleet.peers").value;
  (void)net::parse_peers(c.peers);  // throws ConfigError when malformed
  c.audit_log = get("audit_log").value;
  if (const auto& http = get("http.listen").value; http != "off") {
    auto eps = net::parse_endpoint_list(http, 8432);
    if (!eps || std::any_of(eps->begin(), eps->end(), [](const net::Endpoint& e) { return e.is_unix(); }))
      throw ConfigError{"http.listen: expected HOST:PORT[,HOST:PORT…] or off, got '" + http + "'"};
    c.http_listen = std::move(*eps);
  }
  // Bounds: a session of at least a minute and at most the longest token;
  // limits that keep one connection's memory and time finite.
  c.http_session_duration = std::chrono::seconds(parse_unsigned(get("http.session_duration"), 100u * 365 * 86400));
  if (c.http_session_duration.count() < 60)
    throw ConfigError{"http.session_duration: expected at least 60 seconds, got '" +
                      get("http.session_duration").value + "'"};
  c.http_max_connections = parse_unsigned(get("http.max_connections"), 1000000);
  c.http_max_header_size = parse_unsigned(get("http.max_header_size"), 1024 * 1024);
  c.http_max_body_size = parse_unsigned(get("http.max_body_size"), 1024 * 1024 * 1024);
  c.http_request_timeout = std::chrono::seconds(parse_unsigned(get("http.request_timeout"), 3600));
  c.http_idle_timeout = std::chrono::seconds(parse_unsigned(get("http.idle_timeout"), 3600));
  if (c.http_max_connections == 0) throw ConfigError{"http.max_connections: must be at least 1"};
  if (c.http_request_timeout.count() == 0) throw ConfigError{"http.request_timeout: must be at least 1"};
  if (c.http_idle_timeout.count() == 0) throw ConfigError{"http.idle_timeout: must be at least 1"};
  if (c.http_max_header_size < 1024)  // a request line and a Bearer token need that much
    throw ConfigError{"http.max_header_size: expected at least 1024, got '" + get("http.max_header_size").value + "'"};
  c.http_max_response_size = parse_unsigned(get("http.max_response_size"), 1024 * 1024 * 1024);
  c.pool_max_connections = parse_unsigned(get("pool.max_connections"), 100000);
  c.pool_max_connections_per_key = parse_unsigned(get("pool.max_connections_per_key"), 100000);
  c.pool_idle_timeout = std::chrono::seconds(parse_unsigned(get("pool.idle_timeout"), 86400));
  c.pool_wait_timeout = std::chrono::seconds(parse_unsigned(get("pool.wait_timeout"), 3600));
  c.pool_max_lifetime = std::chrono::seconds(parse_unsigned(get("pool.max_lifetime"), 100u * 86400));
  if (c.http_max_response_size < 1024)  // an error answer or one small row must fit
    throw ConfigError{"http.max_response_size: expected at least 1024, got '" +
                      get("http.max_response_size").value + "'"};
  if (c.pool_max_connections == 0) throw ConfigError{"pool.max_connections: must be at least 1"};
  if (c.pool_max_connections_per_key == 0) throw ConfigError{"pool.max_connections_per_key: must be at least 1"};
  if (c.pool_idle_timeout.count() == 0) throw ConfigError{"pool.idle_timeout: must be at least 1"};
  if (c.pool_max_lifetime.count() == 0) throw ConfigError{"pool.max_lifetime: must be at least 1"};
  if (c.audit_log.empty()) c.audit_log = c.data_dir + "/audit.log";
  if (c.audit_log == "off") c.audit_log.clear();
  return c;
}

// `tokengate tokens create|revoke` change tokens from another process; they
// go to the same audit log as the server's operations (DATA_DIR/audit.log,
// or TOKENGATE_AUDIT_LOG). Arguments were already validated by cli_main.
void audit_cli_operation(int argc, char** argv, int rc) {
  if (argc < 4 || std::string_view(argv[1]) != "tokens") return;
  std::string_view op = argv[2];
  if (op != "create" && op != "revoke") return;
  std::string name, user, data_dir;
  if (const char* env = std::getenv("TOKENGATE_DATA_DIR")) data_dir = env;
  if (data_dir.empty()) data_dir = "./tokengate-data";
  for (int i = 3; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&](std::string_view flag, std::string& out) {
      if (a == flag && i + 1 < argc) {
        out = argv[++i];
        return true;
      }
      if (a.rfind(std::string(flag) + "=", 0) == 0) {
        out = std::string(a.substr(flag.size() + 1));
        return true;
      }
      return false;
    };
    std::string ignored;
    // --store-dsn may hold a password: consumed here, never taken for the name.
    if (value("--user", user) || value("--data-dir", data_dir) || value("--duration", ignored) ||
        value("--comment", ignored) || value("--store-dsn", ignored) || value("--kek-file", ignored))
      continue;
    if (name.empty() && !a.empty() && a.front() != '-') name = std::string(a);
  }
  std::string path = data_dir + "/audit.log";
  if (const char* env = std::getenv("TOKENGATE_AUDIT_LOG"); env && *env) path = env;
  if (path == "off") return;
  AuditLog audit(path);
  if (audit.open()) return;  // the command's own output already said what happened
  AuditEvent ev;
  ev.event = op == "create" ? "create_token" : "revoke_token";
  ev.actor = "(command line)";
  ev.owner = user;
  ev.token_name = name;
  ev.outcome = rc == 0 ? "ok" : "error";
  audit.write(ev);
}

}  // namespace

std::variant<Config, ConfigError> config_from_toml(std::string_view text, const std::string& source) {
  try {
    if (text.size() > kMaxConfigBytes)
      throw ConfigError{"configuration file " + source + " is larger than " + std::to_string(kMaxConfigBytes >> 20) +
                        " MiB"};
    std::vector<Setting> table = settings_table();
    apply_toml(table, text, source);
    return build_config(table);
  } catch (const ConfigError& e) {
    return e;
  }
}

int run_cli(int argc, char** argv) {
  // The store's own commands parse their arguments themselves.
  if (argc >= 2 && (std::string_view(argv[1]) == "tokens" || std::string_view(argv[1]) == "keys" ||
                    std::string_view(argv[1]) == "store")) {
    int rc = tokenstore::cli_main(argc, argv);
    audit_cli_operation(argc, argv, rc);
    return rc;
  }
  std::vector<Setting> table = settings_table();
  CLI::App app{"tokengate: API tokens for any PostgreSQL server"};
  app.set_version_flag("--version", TOKENGATE_VERSION);
  std::string config_path;
  app.add_option("--config", config_path, "TOML configuration file")->envname("TOKENGATE_CONFIG");
  try {
    apply_file(table, find_config_path(argc, argv));
  } catch (const ConfigError& e) {
    std::cerr << "tokengate: " << e.message << "\n";
    return 2;
  }
  for (auto& s : table) app.add_option(s.flag, s.value, s.help)->envname(s.env);

  auto* serve = app.add_subcommand("serve", "Run the proxy (the default)");
  serve->fallthrough();
  auto* version = app.add_subcommand("version", "Print the version, git commit and library versions");
  app.require_subcommand(0, 1);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (version->parsed()) {
    std::cout << version_report();
    return 0;
  }

  Config config;
  try {
    config = build_config(table);
  } catch (const ConfigError& e) {
    std::cerr << "tokengate: " << e.message << "\n";
    return 2;
  }
  // Logs go to stderr; stdout is for what a subcommand prints.
  spdlog::set_default_logger(spdlog::stderr_color_mt("tokengate"));
  spdlog::set_level(spdlog::level::from_str(config.log_level));
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
  return net::Server(std::move(config)).run();
}

}  // namespace tokengate

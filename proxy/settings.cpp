// The table of settings and everything made from it (see settings.hpp).
#include "proxy/settings.hpp"

#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <toml++/toml.h>

#include "proxy/net/fleet.hpp"
#include "proxy/net/tls.hpp"
#include "proxy/session/upstream_login.hpp"

namespace tokengate {
namespace {

// A configuration file is a page of settings. These bound what a wrong path
// (a log file, a device) can make tokengate read and parse: a thousand times
// a long real file, and a line far longer than the longest real value (an
// auth_query is a few hundred bytes).
constexpr std::size_t kMaxConfigBytes = std::size_t{1} << 20;
constexpr std::size_t kMaxConfigLineBytes = 16384;
// Every key is at most two levels deep (`upstream.address`); deeper tables
// are unknown keys, refused before they cost any recursion.
constexpr int kMaxConfigDepth = 4;

// A value's type: its description for people and the parser that stores it.
struct Type {
  std::string doc;
  std::function<void(Config&, const std::string&)> parse;
};

std::string with_thousands(std::uint64_t v) {
  const std::string digits = std::to_string(v);
  std::string out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::uint64_t parse_whole(const std::string& v, std::uint64_t min, std::uint64_t max) {
  std::uint64_t n = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc{} || p != v.data() + v.size() || v.empty() || n < min || n > max)
    throw ConfigError{"expected a whole number from " + std::to_string(min) + " to " + std::to_string(max) +
                      ", got '" + v + "'"};
  return n;
}

Type text(std::string Config::*field, std::string doc = "text") {
  return {std::move(doc), [field](Config& c, const std::string& v) { c.*field = v; }};
}

Type choice(std::string Config::*field, std::vector<std::string> choices, bool empty_ok = false) {
  std::string doc;
  for (const auto& s : choices) doc += (doc.empty() ? "" : ", ") + ("`" + s + "`");
  return {"one of " + doc,
          [field, choices, doc, empty_ok](Config& c, const std::string& v) {
            if (!(empty_ok && v.empty()) && std::find(choices.begin(), choices.end(), v) == choices.end())
              throw ConfigError{"expected one of " + doc + ", got '" + v + "'"};
            c.*field = v;
          }};
}

Type whole(unsigned Config::*field, unsigned min, unsigned max) {
  return {"integer, " + std::to_string(min) + " to " + with_thousands(max),
          [=](Config& c, const std::string& v) { c.*field = unsigned(parse_whole(v, min, max)); }};
}

Type seconds(std::chrono::seconds Config::*field, unsigned min, std::uint64_t max) {
  return {"seconds, " + std::to_string(min) + " to " + with_thousands(max),
          [=](Config& c, const std::string& v) { c.*field = std::chrono::seconds(parse_whole(v, min, max)); }};
}

// Bytes, with PostgreSQL's memory units: kB, MB, GB (powers of 1024).
std::size_t parse_size(const std::string& v, std::uint64_t min, std::uint64_t max) {
  std::uint64_t n = 0;
  const char* end = v.data() + v.size();
  auto [p, ec] = std::from_chars(v.data(), end, n);
  std::string_view unit(p, std::size_t(end - p));
  std::uint64_t mult = 1;
  if (unit == "kB") mult = 1024;
  else if (unit == "MB") mult = 1024 * 1024;
  else if (unit == "GB") mult = 1024ull * 1024 * 1024;
  else if (!unit.empty()) mult = 0;
  if (ec != std::errc{} || p == v.data() || mult == 0 || n > max / mult || n * mult < min)
    throw ConfigError{"expected a size from " + std::to_string(min) + " to " + std::to_string(max) +
                      " bytes such as 1048576, 512kB, 4MB or 1GB, got '" + v + "'"};
  return std::size_t(n * mult);
}

std::string size_doc(std::uint64_t v) {
  if (v >= (1ull << 30) && v % (1ull << 30) == 0) return std::to_string(v >> 30) + "GB";
  if (v >= (1ull << 20) && v % (1ull << 20) == 0) return std::to_string(v >> 20) + "MB";
  if (v >= 1024 && v % 1024 == 0) return std::to_string(v >> 10) + "kB";
  return std::to_string(v);
}

Type bytes(std::size_t Config::*field, std::uint64_t min, std::uint64_t max) {
  return {"size (bytes, or with kB, MB, GB), " + size_doc(min) + " to " + size_doc(max),
          [=](Config& c, const std::string& v) { c.*field = parse_size(v, min, max); }};
}

bool parse_bool(const std::string& v) {
  if (v == "true" || v == "on" || v == "1" || v == "yes") return true;
  if (v == "false" || v == "off" || v == "0" || v == "no") return false;
  throw ConfigError{"expected true or false, got '" + v + "'"};
}

Type boolean(bool Config::*field) {
  return {"boolean", [field](Config& c, const std::string& v) { c.*field = parse_bool(v); }};
}

Type custom(std::string doc, std::function<void(Config&, const std::string&)> parse) {
  return {std::move(doc), std::move(parse)};
}

struct Row {
  const char* key;
  const char* flag;
  const char* env;
  Type type;
  std::string default_value;
  bool live;
  const char* help;
  const char* default_doc = "";
  bool secret = false;
};

// Each row of the table. `live`: a SIGHUP applies a new value (the server
// reads it per login or per session); the others are read once at start.
std::vector<Row> rows() {
  constexpr unsigned kYear = 366 * 86400;
  constexpr bool live = true, restart = false;
  const char* pghost = std::getenv("PGHOST");
  const char* pgport = std::getenv("PGPORT");
  std::string upstream = std::string(pghost && *pghost ? pghost : "127.0.0.1") + ":" +
                         (pgport && *pgport ? pgport : "5432");
  return {
      {"listen", "--listen", "TOKENGATE_LISTEN",
       custom("addresses",
              [](Config& c, const std::string& v) {
                auto eps = net::parse_endpoint_list(v, 6432);
                if (!eps || eps->empty()) throw ConfigError{"expected HOST:PORT[,HOST:PORT…], got '" + v + "'"};
                c.listen = std::move(*eps);
              }),
       "127.0.0.1:6432", restart,
       "where clients connect: `HOST:PORT[,HOST:PORT…]`; `[v6]:PORT`; an absolute directory means the Unix "
       "socket `DIR/.s.PGSQL.PORT`"},
      {"upstream.address", "--upstream", "TOKENGATE_UPSTREAM",
       custom("address",
              [](Config& c, const std::string& v) {
                auto ep = net::parse_endpoint(v, 5432);
                if (!ep) throw ConfigError{"expected HOST:PORT, got '" + v + "'"};
                c.upstream = std::move(*ep);
              }),
       upstream, restart, "the PostgreSQL server: `HOST:PORT` or a socket directory",
       "`$PGHOST:$PGPORT`, else `127.0.0.1:5432`"},
      {"data_dir", "--data-dir", "TOKENGATE_DATA_DIR", text(&Config::data_dir, "path"), "./tokengate-data", restart,
       "signing keys, token store, audit log; use an absolute path in production"},
      {"threads", "--threads", "TOKENGATE_THREADS", whole(&Config::threads, 0, 256), "0", restart,
       "I/O threads; 0 = one per CPU core"},
      {"log_level", "--log-level", "TOKENGATE_LOG_LEVEL",
       choice(&Config::log_level, {"trace", "debug", "info", "warn", "error", "critical", "off"}), "info", live,
       "what the server log (stderr) shows"},
      {"auth_timeout", "--auth-timeout", "TOKENGATE_AUTH_TIMEOUT", seconds(&Config::auth_timeout, 0, 3600), "30",
       live, "seconds a client has to finish logging in, upstream login included"},
      {"shutdown_timeout", "--shutdown-timeout", "TOKENGATE_SHUTDOWN_TIMEOUT",
       seconds(&Config::shutdown_timeout, 0, 86400), "30", restart, "seconds sessions get to finish after SIGTERM"},
      {"upstream.auth", "--upstream-auth", "TOKENGATE_UPSTREAM_AUTH",
       custom("one of `trust`, `password`",
              [](Config& c, const std::string& v) {
                if (v == "trust") c.upstream_auth = Config::UpstreamAuth::trust;
                else if (v == "password") c.upstream_auth = Config::UpstreamAuth::password;
                else throw ConfigError{"expected trust or password, got '" + v + "'"};
              }),
       "trust", restart,
       "`trust`: the upstream trusts tokengate, which checks passwords itself; `password`: tokengate logs in "
       "with passwords from `auth.userlist` (see [deployment](deployment.md#upstream-login-modes-upstreamauth))"},
      {"auth.userlist", "--userlist", "TOKENGATE_USERLIST", text(&Config::userlist, "path"), "", restart,
       "file of `\"user\" \"password\"` lines; required with `upstream.auth = password`; its contents are "
       "read again on every SIGHUP",
       "(none)"},
      {"upstream.control_user", "--control-user", "TOKENGATE_CONTROL_USER", text(&Config::control_user, "role"),
       "postgres", restart, "role of the control connections (catalog look-ups)"},
      {"upstream.control_database", "--control-database", "TOKENGATE_CONTROL_DATABASE",
       text(&Config::control_database, "database"), "postgres", restart, "database of the control connections"},
      {"upstream.auth_query", "--auth-query", "TOKENGATE_AUTH_QUERY", text(&Config::auth_query, "SQL"),
       Config{}.auth_query, restart,
       "returns (verifier, valid-until epoch, can-login) for the role `$1` (trust mode)",
       "reads `pg_authid` ([deployment](deployment.md#the-control-user))"},
      {"admin_role", "--admin-role", "TOKENGATE_ADMIN_ROLE", text(&Config::admin_role, "role"), "tokengate_admin",
       live, "members (through memberships superusers granted) administer tokens, besides superusers"},
      {"token_sessions.manage_credentials", "--token-sessions-manage-credentials",
       "TOKENGATE_TOKEN_SESSIONS_MANAGE_CREDENTIALS", boolean(&Config::token_sessions_manage_credentials), "false",
       restart,
       "sessions that logged in with a token may create tokens and change passwords "
       "([deployment](deployment.md#sessions-that-logged-in-with-a-token))"},
      {"max_tokens_per_user", "--max-tokens-per-user", "TOKENGATE_MAX_TOKENS_PER_USER",
       whole(&Config::max_tokens_per_user, 0, 10'000'000), "1000", restart,
       "active API tokens one role may own (web page sessions included); more get `53400`; 0 = no limit"},
      {"revoke_ends_sessions", "--revoke-ends-sessions", "TOKENGATE_REVOKE_ENDS_SESSIONS",
       boolean(&Config::revoke_ends_sessions), "true", live, "end live sessions of a revoked token"},
      {"expiry_ends_sessions", "--expiry-ends-sessions", "TOKENGATE_EXPIRY_ENDS_SESSIONS",
       boolean(&Config::expiry_ends_sessions), "true", live, "end live sessions when their token expires"},
      {"expiry_warning", "--expiry-warning", "TOKENGATE_EXPIRY_WARNING",
       seconds(&Config::expiry_warning, 0, 100u * kYear), "604800", live,
       "a token login gets a NOTICE when its token expires within this many seconds and within the last "
       "fifth of its lifetime; 0 = never"},
      {"max_failed_logins", "--max-failed-logins", "TOKENGATE_MAX_FAILED_LOGINS",
       whole(&Config::max_failed_logins, 0, 1000000), "10", live,
       "failures per user or address within a minute before answers are delayed; 0 = off"},
      {"auth.allow_plaintext_passwords", "--allow-plaintext-passwords", "TOKENGATE_ALLOW_PLAINTEXT_PASSWORDS",
       boolean(&Config::allow_plaintext_passwords), "false", restart,
       "accept passwords over unencrypted TCP from other hosts (wire and HTTP)"},
      {"auth.max_scram_iterations", "--max-scram-iterations", "TOKENGATE_MAX_SCRAM_ITERATIONS",
       whole(&Config::max_scram_iterations, 1, 10'000'000), "100000", live,
       "PBKDF2 rounds of a role's SCRAM verifier beyond which its logins fail unchecked"},
      {"auth.max_pending_verifications", "--max-pending-verifications", "TOKENGATE_MAX_PENDING_VERIFICATIONS",
       whole(&Config::max_pending_verifications, 0, 1'000'000), "128", restart,
       "password checks waiting for the verification thread; more get `53300`"},
      {"login.client_timeout", "--login-client-timeout", "TOKENGATE_LOGIN_CLIENT_TIMEOUT",
       seconds(&Config::login_client_timeout, 1, 3600), "10", live,
       "seconds a client has to send its startup packet and password"},
      {"login.max_connections", "--login-max-connections", "TOKENGATE_LOGIN_MAX_CONNECTIONS",
       whole(&Config::login_max_connections, 0, 1'000'000), "1000", live,
       "connections still logging in, in total; 0 = no limit"},
      {"login.max_connections_per_address", "--login-max-connections-per-address",
       "TOKENGATE_LOGIN_MAX_CONNECTIONS_PER_ADDRESS", whole(&Config::login_max_connections_per_address, 0, 1'000'000),
       "50", live, "connections still logging in, per client address; 0 = no limit"},
      {"tls.cert", "--tls-cert", "TOKENGATE_TLS_CERT", text(&Config::tls_cert, "path"), "", restart,
       "PEM certificate chain for client TLS (wire and HTTP); the file is read again on every SIGHUP", "(none)"},
      {"tls.key", "--tls-key", "TOKENGATE_TLS_KEY", text(&Config::tls_key, "path"), "", restart,
       "PEM private key for client TLS; read again on every SIGHUP", "(none)"},
      {"tls.mode", "--tls-mode", "TOKENGATE_TLS_MODE", choice(&Config::tls_mode, {"disable", "allow", "require"}),
       "allow", restart, "client TLS: never, when the client asks, or always (`require` needs `tls.cert`)"},
      {"upstream.sslmode", "--upstream-sslmode", "TOKENGATE_UPSTREAM_SSLMODE",
       choice(&Config::upstream_sslmode, {"disable", "prefer", "require", "verify-full"}, true), "", restart,
       "TLS to the upstream, for sessions, control connections and the HTTP pool alike",
       "`prefer` for a socket or loopback address, else `verify-full`"},
      {"upstream.sslrootcert", "--upstream-sslrootcert", "TOKENGATE_UPSTREAM_SSLROOTCERT",
       text(&Config::upstream_sslrootcert, "path or `system`"), "", restart,
       "CA file for `verify-full`, or `system`; read again on every SIGHUP",
       "(none; `system` when `verify-full` is the default)"},
      {"upstream.require_auth", "--upstream-require-auth", "TOKENGATE_UPSTREAM_REQUIRE_AUTH",
       custom("list of `none`, `password`, `md5`, `scram-sha-256`",
              [](Config& c, const std::string& v) {
                std::string error;
                if (!v.empty() && !session::UpstreamAuthMethods::parse(v, error)) throw ConfigError{error};
                c.upstream_require_auth = v;
              }),
       "", restart, "authentication requests tokengate answers for the upstream",
       "`none` with `trust`, `scram-sha-256` with `password`"},
      {"upstream.max_scram_iterations", "--upstream-max-scram-iterations",
       "TOKENGATE_UPSTREAM_MAX_SCRAM_ITERATIONS", whole(&Config::upstream_max_scram_iterations, 1, 10'000'000),
       "100000", restart, "PBKDF2 rounds a SCRAM upstream may demand"},
      {"relay.max_inspected_message", "--max-inspected-message", "TOKENGATE_MAX_INSPECTED_MESSAGE",
       bytes(&Config::relay_max_inspected_message, 1024, 1ull << 30), "1MB", live,
       "Query/Parse messages up to this size are held whole and checked for API TOKEN statements; longer ones "
       "stream ([security](security.md#memory)); new sessions take a new value"},
      {"relay.session_memory_limit", "--session-memory-limit", "TOKENGATE_SESSION_MEMORY_LIMIT",
       bytes(&Config::relay_session_memory_limit, 2048, 1ull << 40), "4MB", live,
       "relay buffers of one session; at least twice `relay.max_inspected_message`; new sessions take a new "
       "value"},
      {"relay.memory_limit", "--memory-limit", "TOKENGATE_MEMORY_LIMIT",
       bytes(&Config::relay_memory_limit, 0, 1ull << 40), "512MB", live,
       "relay buffers of all sessions together; `0` = no limit"},
      {"store.backend", "--store-backend", "TOKENGATE_STORE_BACKEND",
       choice(&Config::store_backend, {"lmdb", "postgres"}), "lmdb", restart,
       "`lmdb` (in `data_dir`, one instance) or `postgres` (a registry shared by a fleet, [fleet.md](fleet.md))"},
      {"store.dsn", "--store-dsn", "TOKENGATE_STORE_DSN", text(&Config::store_dsn, "libpq connection string"), "",
       restart, "the registry's connection string; it may hold a password", "the upstream, as the control user",
       true},
      {"store.kek_file", "--kek-file", "TOKENGATE_KEK_FILE", text(&Config::kek_file, "path"), "", restart,
       "the fleet's key-encryption key, 64 hex digits, mode 0600", "(none; else `TOKENGATE_KEK`)"},
      {"store.previous_kek_file", "--previous-kek-file", "TOKENGATE_PREVIOUS_KEK_FILE",
       text(&Config::previous_kek_file, "path"), "", restart, "the KEK being replaced, during a KEK rotation",
       "(none)"},
      {"store.max_staleness", "--max-staleness", "TOKENGATE_MAX_STALENESS",
       seconds(&Config::max_staleness, 0, 86400), "60", live,
       "seconds known tokens keep logging in while the registry is unreachable"},
      {"fleet.instance_id", "--instance-id", "TOKENGATE_INSTANCE_ID", whole(&Config::instance_id, 0, 255), "0",
       restart, "this instance's id in the fleet; 0 claims a free one"},
      {"fleet.advertise_address", "--advertise-address", "TOKENGATE_ADVERTISE_ADDRESS",
       text(&Config::advertise_address, "address"), "", restart,
       "`HOST:PORT` other instances forward cancel requests to", "the first TCP listen address"},
      {"fleet.peers", "--peers", "TOKENGATE_PEERS",
       custom("list of `ID=HOST:PORT`",
              [](Config& c, const std::string& v) {
                (void)net::parse_peers(v);  // throws ConfigError when malformed
                c.peers = v;
              }),
       "", restart, "other instances, besides those in the registry's heartbeat table", "(none)"},
      {"audit_log", "--audit-log", "TOKENGATE_AUDIT_LOG", text(&Config::audit_log, "path or `off`"), "", restart,
       "JSON-lines audit file; `off` for none; reopened on every SIGHUP", "`<data_dir>/audit.log`"},
      {"http.listen", "--http-listen", "TOKENGATE_HTTP_LISTEN",
       custom("addresses or `off`",
              [](Config& c, const std::string& v) {
                c.http_listen.clear();
                if (v == "off") return;
                auto eps = net::parse_endpoint_list(v, 8432);
                if (!eps || eps->empty() ||
                    std::any_of(eps->begin(), eps->end(), [](const net::Endpoint& e) { return e.is_unix(); }))
                  throw ConfigError{"expected HOST:PORT[,HOST:PORT…] or off, got '" + v + "'"};
                c.http_listen = std::move(*eps);
              }),
       "127.0.0.1:8432", restart, "the [HTTP gateway](http.md): `HOST:PORT[,HOST:PORT…]`, or `off`"},
      // Bounds: a session of at least a minute and at most the longest
      // token; limits that keep one connection's memory and time finite.
      {"http.session_duration", "--http-session-duration", "TOKENGATE_HTTP_SESSION_DURATION",
       seconds(&Config::http_session_duration, 60, 100u * 365 * 86400), "43200", restart,
       "seconds a browser login lasts"},
      {"http.max_connections", "--http-max-connections", "TOKENGATE_HTTP_MAX_CONNECTIONS",
       whole(&Config::http_max_connections, 1, 1'000'000), "256", restart, "HTTP connections open at once; more get 503"},
      // A quarter of http.max_connections: one host (that sends nothing)
      // cannot hold every slot; a reverse proxy in front needs 0 or more.
      {"http.max_connections_per_address", "--http-max-connections-per-address",
       "TOKENGATE_HTTP_MAX_CONNECTIONS_PER_ADDRESS", whole(&Config::http_max_connections_per_address, 0, 1'000'000),
       "64", restart, "HTTP connections open at once from one client address; more get 503; `0` = no limit"},
      // A request line and a Bearer token need 1 kB.
      {"http.max_header_size", "--http-max-header-size", "TOKENGATE_HTTP_MAX_HEADER_SIZE",
       bytes(&Config::http_max_header_size, 1024, 1024 * 1024), "16384", restart,
       "bytes of request line and headers (431 beyond)"},
      {"http.max_body_size", "--http-max-body-size", "TOKENGATE_HTTP_MAX_BODY_SIZE",
       bytes(&Config::http_max_body_size, 0, 1024 * 1024 * 1024), "1048576", restart,
       "bytes of a request body (413 beyond)"},
      {"http.request_timeout", "--http-request-timeout", "TOKENGATE_HTTP_REQUEST_TIMEOUT",
       seconds(&Config::http_request_timeout, 1, 3600), "30", restart,
       "seconds to read a request and write its answer"},
      {"http.idle_timeout", "--http-idle-timeout", "TOKENGATE_HTTP_IDLE_TIMEOUT",
       seconds(&Config::http_idle_timeout, 1, 3600), "60", restart,
       "seconds a kept-alive HTTP connection may wait for its next request"},
      // An error answer or one small row must fit in 1 kB.
      {"http.max_response_size", "--http-max-response-size", "TOKENGATE_HTTP_MAX_RESPONSE_SIZE",
       bytes(&Config::http_max_response_size, 1024, 1024 * 1024 * 1024), "10485760", restart,
       "bytes of one `POST /sql` answer (507 beyond)"},
      {"metrics.require_auth", "--metrics-require-auth", "TOKENGATE_METRICS_REQUIRE_AUTH",
       boolean(&Config::metrics_require_auth), "false", restart,
       "`GET /metrics` needs an administrator's API token as a Bearer token"},
      {"pool.max_connections", "--pool-max-connections", "TOKENGATE_POOL_MAX_CONNECTIONS",
       whole(&Config::pool_max_connections, 1, 100000), "50", restart,
       "upstream connections the HTTP endpoints' pool holds, all roles together"},
      {"pool.max_connections_per_key", "--pool-max-connections-per-key", "TOKENGATE_POOL_MAX_CONNECTIONS_PER_KEY",
       whole(&Config::pool_max_connections_per_key, 1, 100000), "10", restart,
       "pooled upstream connections of one role, database and startup settings"},
      {"pool.idle_timeout", "--pool-idle-timeout", "TOKENGATE_POOL_IDLE_TIMEOUT",
       seconds(&Config::pool_idle_timeout, 1, 86400), "60", restart,
       "seconds an idle pooled upstream connection is kept"},
      {"pool.wait_timeout", "--pool-wait-timeout", "TOKENGATE_POOL_WAIT_TIMEOUT",
       seconds(&Config::pool_wait_timeout, 0, 3600), "10", restart,
       "seconds an HTTP query waits for a pooled connection (then 503)"},
      {"pool.max_lifetime", "--pool-max-lifetime", "TOKENGATE_POOL_MAX_LIFETIME",
       seconds(&Config::pool_max_lifetime, 1, 100u * 86400), "3600", restart,
       "seconds after which a pooled upstream connection is closed once free"},
      {"pool.wire_sessions", "--pool-wire-sessions", "TOKENGATE_POOL_WIRE_SESSIONS",
       boolean(&Config::pool_wire_sessions), "false", restart,
       "wire sessions take their upstream connection from the pool and give it back, reset, when they end idle"},
  };
}

// Settings that depend on each other, checked once every value is in; the
// first key names where the fault is reported.
struct CrossCheck {
  const char* key;
  std::string message;
};

std::optional<CrossCheck> cross_check(const Config& c) {
  if (c.relay_session_memory_limit < 2 * c.relay_max_inspected_message)
    return CrossCheck{"relay.session_memory_limit", "must be at least twice relay.max_inspected_message"};
  if (c.relay_memory_limit != 0 && c.relay_memory_limit < c.relay_session_memory_limit)
    return CrossCheck{"relay.memory_limit", "must be at least relay.session_memory_limit (or 0 for no limit)"};
  // The TLS checks the server makes at start, made here too so that a
  // configuration that cannot start is refused like any bad value.
  std::string err;
  if (auto mode = net::parse_client_tls_mode(c.tls_mode, err)) {
    if (auto problem = net::check_tls_settings(*mode, c.tls_cert, c.tls_key); !problem.empty())
      return CrossCheck{c.tls_cert.empty() && !c.tls_key.empty() ? "tls.key"
                        : c.tls_mode == "require"                 ? "tls.mode"
                                                                  : "tls.cert",
                        problem};
  }
  if (!c.upstream_sslmode.empty())
    if (auto mode = net::parse_upstream_sslmode(c.upstream_sslmode, err))
      if (auto problem = net::check_upstream_tls_settings(*mode, c.upstream_sslrootcert); !problem.empty())
        return CrossCheck{"upstream.sslmode", problem};
  if (c.upstream_auth == Config::UpstreamAuth::password && c.userlist.empty())
    return CrossCheck{"upstream.auth",
                      "upstream.auth = password needs auth.userlist (passwords for token sessions and the "
                      "control user)"};
  return std::nullopt;
}

// A flattened TOML value and the line it is on.
struct FileValue {
  std::string value;
  std::size_t line = 0;
};

std::string file_place(const std::string& source, std::size_t line) {
  return "configuration file " + source + (line ? ", line " + std::to_string(line) : std::string());
}

// Flattens a TOML table into dotted keys; a value that is not a string,
// integer or boolean is an error.
void flatten(const toml::table& table, const std::string& prefix, const std::string& source,
             std::map<std::string, FileValue>& out, int depth = 0) {
  for (const auto& [k, node] : table) {
    std::string key = prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    const std::size_t line = node.source().begin.line;
    if (const auto* t = node.as_table()) {
      if (depth + 1 >= kMaxConfigDepth)
        throw ConfigError{file_place(source, line) + ": unknown key '" + key + "'"};
      flatten(*t, key, source, out, depth + 1);
    // The type is checked before the value is read: toml++'s value<int64_t>()
    // of a float such as 7e42 converts it out of range (undefined behaviour,
    // found by the config fuzz target).
    } else if (const auto* s = node.as_string()) {
      out[key] = {s->get(), line};
    } else if (const auto* i = node.as_integer()) {
      out[key] = {std::to_string(i->get()), line};
    } else if (const auto* b = node.as_boolean()) {
      out[key] = {b->get() ? "true" : "false", line};
    } else {
      throw ConfigError{file_place(source, line) + ": " + key + ": expected a string, integer or boolean"};
    }
  }
}

std::map<std::string, FileValue> parse_toml(std::string_view text, const std::string& source) {
  if (text.size() > kMaxConfigBytes)
    throw ConfigError{"configuration file " + source + " is larger than " + std::to_string(kMaxConfigBytes >> 20) +
                      " MiB"};
  std::size_t line = 1, line_start = 0;
  for (std::size_t i = 0; i <= text.size(); ++i) {
    if (i < text.size() && text[i] != '\n') continue;
    if (i - line_start > kMaxConfigLineBytes)
      throw ConfigError{file_place(source, line) + ": longer than " + std::to_string(kMaxConfigLineBytes) +
                        " bytes"};
    ++line;
    line_start = i + 1;
  }
  toml::table doc;
  try {
    doc = toml::parse(text, std::string_view(source));
  } catch (const toml::parse_error& e) {
    throw ConfigError{file_place(source, e.source().begin.line) + ": " + std::string(e.description())};
  }
  std::map<std::string, FileValue> flat;
  flatten(doc, "", source, flat);
  return flat;
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

// "F, line N: key: problem", or "environment variable X: key: problem", …
std::string place_of(const SettingValue& v) { return v.origin.empty() ? "" : v.origin + ": "; }

// The parsers' messages do not name the setting; some older ones (parse_peers)
// already start with it.
std::string strip_key(const std::string& message, const std::string& key) {
  return message.rfind(key + ": ", 0) == 0 ? message.substr(key.size() + 2) : message;
}

// Builds the Config from every value; each is parsed exactly once here.
Config build(const std::vector<SettingSpec>& specs, const std::vector<SettingValue>& values) {
  Config c;
  for (std::size_t i = 0; i < specs.size(); ++i) {
    try {
      specs[i].parse(c, values[i].value);
    } catch (const ConfigError& e) {
      throw ConfigError{place_of(values[i]) + specs[i].key + ": " + strip_key(e.message, specs[i].key)};
    }
  }
  if (auto bad = cross_check(c)) {
    auto it = std::find_if(values.begin(), values.end(), [&](const SettingValue& v) { return v.key == bad->key; });
    throw ConfigError{place_of(*it) + bad->key + ": " + strip_key(bad->message, bad->key)};
  }
  if (c.audit_log.empty()) c.audit_log = c.data_dir + "/audit.log";
  if (c.audit_log == "off") c.audit_log.clear();
  c.resolved.reserve(specs.size());
  for (std::size_t i = 0; i < specs.size(); ++i)
    c.resolved.push_back({specs[i].key, values[i].value, std::string(to_string(values[i].source)), specs[i].secret});
  return c;
}

std::string md_escape(std::string s) {
  std::string out;
  for (char ch : s) {
    if (ch == '|') out += "\\|";
    else out += ch;
  }
  return out;
}

}  // namespace

std::vector<SettingSpec> settings_table() {
  std::vector<SettingSpec> out;
  for (auto& r : rows())
    out.push_back(SettingSpec{r.key, r.flag, r.env, std::move(r.type.doc), std::move(r.default_value), r.default_doc,
                              r.live, r.secret, r.help, std::move(r.type.parse)});
  return out;
}

std::string_view to_string(SettingSource s) {
  switch (s) {
    case SettingSource::built_in: return "default";
    case SettingSource::file: return "file";
    case SettingSource::environment: return "environment";
    case SettingSource::flag: return "flag";
  }
  return "?";
}

std::variant<LoadedConfig, ConfigError> load_config(const ConfigInputs& in) {
  try {
    const auto specs = settings_table();
    std::map<std::string, FileValue> file;
    if (!in.file.empty()) file = parse_toml(in.file_text ? *in.file_text : read_config_file(in.file), in.file);
    for (const auto& entry : file) {
      // Not a structured binding: clang before 16 cannot capture one in a lambda.
      const std::string& key = entry.first;
      if (std::none_of(specs.begin(), specs.end(), [&](const SettingSpec& s) { return s.key == key; }))
        throw ConfigError{file_place(in.file, entry.second.line) + ": unknown key '" + key + "'"};
    }
    LoadedConfig out;
    for (const auto& s : specs) {
      SettingValue v{s.key, s.default_value, SettingSource::built_in, ""};
      if (auto it = file.find(s.key); it != file.end())
        v = {s.key, it->second.value, SettingSource::file, file_place(in.file, it->second.line)};
      // An empty variable counts as unset, as CLI11 and libpq take it.
      if (const char* e = in.getenv ? in.getenv(s.env.c_str()) : nullptr; e && *e)
        v = {s.key, e, SettingSource::environment, "environment variable " + s.env};
      if (auto it = in.flags.find(s.key); it != in.flags.end())
        v = {s.key, it->second, SettingSource::flag, "flag " + s.flag};
      out.values.push_back(std::move(v));
    }
    out.config = build(specs, out.values);
    return out;
  } catch (const ConfigError& e) {
    return e;
  }
}

std::variant<ReloadPlan, ConfigError> plan_reload(const LoadedConfig& running, const LoadedConfig& fresh) {
  const auto specs = settings_table();
  ReloadPlan plan;
  plan.loaded.values = fresh.values;
  for (std::size_t i = 0; i < specs.size(); ++i) {
    auto& now = plan.loaded.values[i];
    const auto& old = running.values[i];
    if (now.value == old.value) continue;
    if (specs[i].live) {
      plan.changed.push_back(specs[i].key);
    } else {
      plan.needs_restart.push_back(specs[i].key);
      now = old;
    }
  }
  try {
    plan.loaded.config = build(specs, plan.loaded.values);
  } catch (const ConfigError& e) {
    return e;
  }
  return plan;
}

std::string describe_settings(const LoadedConfig& loaded) {
  const auto specs = settings_table();
  std::size_t width = 0;
  for (const auto& s : specs) width = std::max(width, s.key.size());
  std::string out;
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const auto& v = loaded.values[i];
    std::string shown;
    if (specs[i].secret && !v.value.empty()) shown = "(secret, " + std::to_string(v.value.size()) + " bytes)";
    else {
      shown = "\"";
      for (char ch : v.value) {
        if (ch == '"' || ch == '\\') shown += '\\';
        shown += ch;
      }
      shown += "\"";
    }
    out += specs[i].key + std::string(width - specs[i].key.size(), ' ') + " = " + shown + "  # " +
           std::string(to_string(v.source));
    if (v.source == SettingSource::file) out += ", " + v.origin.substr(v.origin.rfind("line "));
    if (v.source == SettingSource::environment) out += " " + specs[i].env;
    if (v.source == SettingSource::flag) out += " " + specs[i].flag;
    out += "\n";
  }
  return out;
}

std::string settings_markdown() {
  std::string out =
      "| TOML key | flag | environment variable | type | default | on SIGHUP | meaning |\n"
      "|---|---|---|---|---|---|---|\n";
  for (const auto& s : settings_table()) {
    std::string def = !s.default_doc.empty() ? s.default_doc
                      : s.default_value.empty() ? "(none)"
                                                : "`" + md_escape(s.default_value) + "`";
    std::string reload = s.live ? "applied" : "restart";
    std::string help = s.help;
    if (s.secret) help += " (secret: masked wherever tokengate shows it)";
    out += "| `" + s.key + "` | `" + s.flag + "` | `" + s.env + "` | " + md_escape(s.type) + " | " + def + " | " +
           reload + " | " + md_escape(help) + " |\n";
  }
  return out;
}

}  // namespace tokengate

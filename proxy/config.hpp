// tokengate's settings, typed and validated: defaults, then the TOML file,
// then TOKENGATE_* environment variables, then command-line flags. The table
// in proxy/settings.cpp describes and parses each field.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <variant>
#include <vector>

#include "proxy/net/endpoint.hpp"

namespace tokengate {

struct Config {
  std::vector<net::Endpoint> listen;  // `listen`, --listen, TOKENGATE_LISTEN
  net::Endpoint upstream;             // `upstream.address`, --upstream, TOKENGATE_UPSTREAM
  std::string data_dir = "./tokengate-data";
  unsigned threads = 0;               // 0: one I/O thread per core
  std::string log_level = "info";
  // A client that has not finished logging in by then is disconnected
  // (PostgreSQL's authentication_timeout defaults to 60 s; we are stricter).
  std::chrono::seconds auth_timeout{30};
  // On SIGTERM, sessions get this long to finish before they are closed.
  std::chrono::seconds shutdown_timeout{30};

  // ---- logging in ----
  // How sessions log in upstream: trust (the upstream trusts tokengate;
  // tokengate checks ordinary passwords itself) or password.
  enum class UpstreamAuth { trust, password };
  UpstreamAuth upstream_auth = UpstreamAuth::trust;
  std::string userlist;  // `auth.userlist`: "user" "password" lines (password mode)
  std::string control_user = "postgres";
  std::string control_database = "postgres";
  // Three columns: verifier, VALID UNTIL as epoch seconds (Infinity allowed),
  // can-login; see ControlPoolSettings::auth_query.
  std::string auth_query =
      "SELECT rolpassword, extract(epoch from rolvaliduntil), rolcanlogin "
      "FROM pg_catalog.pg_authid WHERE rolname = $1";
  std::string admin_role = "tokengate_admin";
  // `token_sessions.manage_credentials`: sessions that logged in with an API
  // token may create tokens (and, in the relay, change passwords). Off, a
  // stolen token cannot be turned into credentials that outlive its revocation.
  bool token_sessions_manage_credentials = false;
  bool revoke_ends_sessions = true;
  // A session must not outlive its token: on by default.
  bool expiry_ends_sessions = true;
  std::chrono::seconds expiry_warning{7 * 24 * 3600};
  unsigned max_failed_logins = 10;
  // Ask for cleartext passwords over plain TCP from non-loopback addresses.
  bool allow_plaintext_passwords = false;
  std::string audit_log;  // empty: <data_dir>/audit.log; "off": none

  // ---- bounds on login work (docs/security.md, "Logging in") ----
  // `login.client_timeout`: from accepting a connection until its password
  // has arrived; a slow client holds a descriptor no longer than this.
  std::chrono::seconds login_client_timeout{10};
  // `login.max_connections` / `login.max_connections_per_address`:
  // connections accepted and not yet logged in.
  unsigned login_max_connections = 1000;
  unsigned login_max_connections_per_address = 50;
  // `auth.max_pending_verifications`: password checks waiting for the
  // verification thread.
  unsigned max_pending_verifications = 128;
  // `auth.max_scram_iterations`: a role's SCRAM verifier with more PBKDF2
  // rounds than this is not computed; its logins fail.
  unsigned max_scram_iterations = 100000;
  // ---- relay buffers (see docs/security.md, "Memory") ----
  // A Query/Parse up to this size is buffered whole to look for API TOKEN
  // statements; longer ones stream through.
  std::size_t relay_max_inspected_message = 1024 * 1024;   // `relay.max_inspected_message`
  std::size_t relay_session_memory_limit = 4 * 1024 * 1024;  // `relay.session_memory_limit`
  std::size_t relay_memory_limit = 512 * 1024 * 1024;        // `relay.memory_limit`; 0: none
  // ---- token store and fleet (docs/fleet.md) ----
  std::string store_backend = "lmdb";  // `store.backend`: lmdb (data_dir) or postgres (a shared registry)
  // `store.dsn`: libpq connection string of the registry; empty: the
  // upstream, as the control user, with the control connections' settings.
  std::string store_dsn;
  std::string kek_file;           // `store.kek_file`; else the TOKENGATE_KEK environment variable
  std::string previous_kek_file;  // `store.previous_kek_file`: during a KEK rotation
  std::chrono::seconds max_staleness{60};  // `store.max_staleness`
  unsigned instance_id = 0;           // `fleet.instance_id`; 0: claim a free one
  std::string advertise_address;      // `fleet.advertise_address`: HOST:PORT peers reach this instance at
  std::string peers;                  // `fleet.peers`: "ID=HOST:PORT,…", besides the heartbeat table

  // ---- TLS (OpenSSL) ----
  std::string tls_cert, tls_key;  // `tls.cert`, `tls.key`: PEM files
  std::string tls_mode = "allow";  // disable | allow | require
  // disable | prefer | require | verify-full; empty: by address (prefer for
  // a loopback address, verify-full for any other host; chosen in
  // Server::Impl::open_services).
  std::string upstream_sslmode;
  std::string upstream_sslrootcert;  // CA file for verify-full; empty with verify-full by default: "system"
  // `upstream.require_auth`: the authentication requests tokengate answers
  // for the upstream (none, password, md5, scram-sha-256); empty: by mode
  // ("none" with trust, "scram-sha-256" with password).
  std::string upstream_require_auth;
  // `upstream.max_scram_iterations`: PBKDF2 rounds an upstream may demand.
  unsigned upstream_max_scram_iterations = 100000;

  // ---- HTTP gateway (proxy/http) ----
  std::vector<net::Endpoint> http_listen;  // `http.listen`; empty ("off"): no HTTP listener
  // Lifetime of the token behind a browser login's auth_token cookie.
  std::chrono::seconds http_session_duration{12 * 3600};
  unsigned http_max_connections = 256;
  unsigned http_max_connections_per_address = 64;  // 0: no per-address limit
  unsigned max_tokens_per_user = 1000;             // `max_tokens_per_user`: active tokens per owner; 0: no limit
  std::size_t http_max_header_size = 16 * 1024;
  std::size_t http_max_body_size = 1024 * 1024;
  std::chrono::seconds http_request_timeout{30};
  std::chrono::seconds http_idle_timeout{60};
  // `metrics.require_auth`: GET /metrics needs an administrator's token
  // (Bearer). Off by default: the HTTP listener is on loopback by default,
  // and metrics hold counts, never names or secrets.
  bool metrics_require_auth = false;

  // ---- SQL over HTTP and its upstream pool (proxy/http/sql_endpoint, proxy/pool) ----
  std::size_t http_max_response_size = 10 * 1024 * 1024;  // `http.max_response_size`
  unsigned pool_max_connections = 50;                      // `pool.max_connections`
  unsigned pool_max_connections_per_key = 10;              // `pool.max_connections_per_key`
  std::chrono::seconds pool_idle_timeout{60};              // `pool.idle_timeout`
  std::chrono::seconds pool_wait_timeout{10};              // `pool.wait_timeout`
  std::chrono::seconds pool_max_lifetime{3600};            // `pool.max_lifetime`
  // Wire sessions take their upstream connection from the same pool and give
  // it back when they end idle (`pool.wire_sessions`; docs/deployment.md).
  bool pool_wire_sessions = false;

  // Every setting as the loader resolved it, in the settings table's order:
  // what SHOW TOKENGATE CONFIG shows. Empty for a Config built in code.
  struct Resolved {
    std::string key;     // the TOML key
    std::string value;   // as given (or the default), before parsing
    std::string source;  // "default", "file", "environment" or "flag"
    bool secret = false;
  };
  std::vector<Resolved> resolved;
};

struct ConfigError {
  std::string message;
};

// What a SIGHUP brings: the configuration read again, with the settings that
// cannot change while running left at their old values (named in
// needs_restart), and the live ones that changed.
struct ConfigReload {
  Config config;
  std::vector<std::string> changed;
  std::vector<std::string> needs_restart;
};
using ConfigReloader = std::function<std::variant<ConfigReload, ConfigError>()>;

}  // namespace tokengate

// A small pool of control connections to the upstream, logged in as
// `upstream.control_user`, for tokengate's own catalog look-ups: role
// existence, membership and administrator status and the password
// verifier of `upstream.auth_query`. Every value is a bound
// parameter; nothing is ever spliced into SQL.
//
// Threads: one ControlPool serves every io_context. Its state (connections,
// waiters, role cache) lives on one strand of the executor given at
// construction; each call hops onto that strand and its result comes back on
// the caller's own executor, so coroutines on any I/O thread may call it
// concurrently. (One pool per io_context would multiply the upstream
// connections by the thread count and split the cache.)
//
// Asio stays in control_pool.cpp; this header only needs awaitable.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "proxy/net/endpoint.hpp"
#include "proxy/session/query_client.hpp"
#include "proxy/session/upstream_login.hpp"

namespace tokengate::net {

// PgBouncer's auth_query, adapted to return the expiry as epoch seconds so
// that no timestamptz text needs parsing. See ControlPoolSettings::auth_query.
inline constexpr const char* kDefaultAuthQuery =
    "SELECT rolpassword, extract(epoch from rolvaliduntil), rolcanlogin "
    "FROM pg_catalog.pg_authid WHERE rolname = $1";

class UpstreamTlsContext;

struct ControlPoolSettings {
  Endpoint upstream;                      // `upstream.address`
  std::string user = "postgres";          // `upstream.control_user`
  // The control user's password, for `upstream.auth = password` (SCRAM, MD5
  // or cleartext, as the upstream asks); nullopt with `trust`. Never logged.
  std::optional<std::string> password;
  std::string database = "postgres";      // `upstream.control_database`
  std::size_t size = 2;                   // `upstream.control_pool_size`; at least 1
  // Members of this role are tokengate administrators, as are superusers:
  // members through memberships every one of which a superuser granted (see
  // RoleInfo::is_admin). No role is an administrator by its name.
  std::string admin_role = "tokengate_admin";
  // How long role_info() answers from its cache; 0 disables the cache.
  std::chrono::milliseconds role_cache_ttl{5000};
  // Three columns for one parameter $1 (the user name), zero or one row:
  //   1. the password verifier, text ("SCRAM-SHA-256$…", "md5…") or NULL;
  //   2. VALID UNTIL as unix epoch seconds (integer or fractional text,
  //      "Infinity"/"-Infinity" accepted) or NULL for no limit;
  //   3. whether the role may log in, boolean ('t'/'f').
  // No row means no such role. Runs as `user` on `database`.
  std::string auth_query = kDefaultAuthQuery;
  // upstream.sslmode for control connections too (they read password
  // verifiers); null: plain. Must outlive the pool.
  const UpstreamTlsContext* tls = nullptr;
  // upstream.require_auth and upstream.max_scram_iterations, as for sessions.
  session::UpstreamAuthMethods upstream_methods = session::UpstreamAuthMethods::any();
  // Connecting and logging in one control connection.
  std::chrono::milliseconds connect_timeout{10000};
  // A whole call, waiting for a free connection included.
  std::chrono::milliseconds query_timeout{10000};
};

// The error text is for the log: it names the step that failed and the
// upstream's SQLSTATE/message, never a password or verifier. The caller maps
// it to 58030 (catalog look-up failed) or 08006 (upstream unreachable).
struct ControlError {
  std::string message;
};

// A value, or why there is none. Expected failures (upstream down, timeout,
// query error) are ControlError values, never exceptions.
template <typename T>
class [[nodiscard]] ControlResult {
 public:
  // An error; co_spawn needs result types to be default-constructible.
  ControlResult() : v_(std::in_place_index<1>, ControlError{"no result"}) {}
  template <typename U>
    requires std::is_constructible_v<T, U&&>
  ControlResult(U&& value) : v_(std::in_place_index<0>, std::forward<U>(value)) {}
  ControlResult(ControlError error) : v_(std::in_place_index<1>, std::move(error)) {}

  bool has_value() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  // Valid when !has_value().
  const std::string& error() const { return std::get<1>(v_).message; }

 private:
  std::variant<T, ControlError> v_;
};

struct RoleInfo {
  std::string name;
  std::uint32_t oid = 0;  // pg_roles.oid: a role dropped and created again has another
  bool can_login = false;
  bool is_superuser = false;
  bool replication = false;  // rolreplication
  bool bypassrls = false;    // rolbypassrls
  bool createrole = false;   // rolcreaterole
  // VALID UNTIL (rolvaliduntil) in unix seconds, rounded down; nullopt: no
  // limit (NULL or 'infinity'); INT64_MIN: '-infinity'.
  std::optional<std::int64_t> valid_until;
  // Every role this one is a member of, directly or through other roles
  // (pg_auth_members, recursively; not the role itself), sorted by name.
  std::vector<std::string> member_of;
  // A superuser, or a member of admin_role through a chain of memberships
  // each granted by a role that is a superuser now. Not counted: the admin
  // role itself, a membership its member granted itself (a CREATEROLE role in
  // PostgreSQL 15), and, from PostgreSQL 16 on, a membership WITH ADMIN
  // OPTION recorded as granted by the bootstrap superuser, which is how
  // PostgreSQL 16 records the membership a CREATEROLE role receives in every
  // role it creates (a superuser's GRANT without ADMIN OPTION still counts).
  bool is_admin = false;

  // Roles a non-superuser administrator may not act for.
  [[nodiscard]] bool is_protected() const noexcept {
    return is_superuser || replication || bypassrls || createrole || is_admin;
  }
};

struct LoginVerifier {
  std::optional<std::string> verifier;     // nullopt: the role has no password
  // VALID UNTIL in unix seconds (rounded down); nullopt: no limit.
  // "-Infinity" gives INT64_MIN (always expired).
  std::optional<std::int64_t> valid_until;
  bool can_login = false;
};

class ControlPool {
 public:
  // `executor` is where the pool's strand, sockets and timers live (any one
  // io_context of the server). Connections are opened on first use.
  ControlPool(boost::asio::any_io_executor executor, ControlPoolSettings settings);
  // Closes the connections (on the strand); calls still in flight finish first.
  // Destroy the pool before the io_context of `executor`.
  ~ControlPool();
  ControlPool(const ControlPool&) = delete;
  ControlPool& operator=(const ControlPool&) = delete;

  // The role named `role` (exact, case-sensitive: already folded), or nullopt
  // if it does not exist. Cached for role_cache_ttl (existing roles only, so a
  // role created a moment ago is seen at once).
  boost::asio::awaitable<ControlResult<std::optional<RoleInfo>>> role_info(std::string role);

  // Like role_info, but always asked upstream, never answered from the cache
  // (the answer refreshes the cache). For decisions that must see a role as
  // it is now: a token login, an administrator acting for another role.
  boost::asio::awaitable<ControlResult<std::optional<RoleInfo>>> role_info_fresh(std::string role);

  // The roles a non-superuser administrator may not act for, sorted (byte
  // order): superusers, roles with REPLICATION, BYPASSRLS or CREATEROLE, and
  // administrators (as RoleInfo::is_admin counts them). Never cached.
  boost::asio::awaitable<ControlResult<std::vector<std::string>>> protected_roles();

  // Runs auth_query for `user`: nullopt if there is no such role. Never
  // cached, so a password change or ALTER ROLE … NOLOGIN takes effect at once.
  boost::asio::awaitable<ControlResult<std::optional<LoginVerifier>>> login_verifier(std::string user);

  // Any one query with text parameters. An upstream ErrorResponse is part of
  // the QueryResult (result.error), not a ControlError.
  boost::asio::awaitable<ControlResult<session::QueryResult>> query(std::string sql,
                                                                    std::vector<session::QueryParam> params);

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace tokengate::net

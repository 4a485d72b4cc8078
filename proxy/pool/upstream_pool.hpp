// The upstream connection pool of the HTTP endpoints (Asio): connections
// logged in as a role, to a database, with given startup settings, lent to
// one request at a time and reset with DISCARD ALL before anyone else gets
// them, so an HTTP query does not start a PostgreSQL backend per request.
// PoolCore decides; this file connects, logs in, resets, watches idle
// connections for their backend going away, and hands connections over.
//
// Threads: one pool serves every I/O thread. Its bookkeeping is behind a
// mutex held only for PoolCore calls. Each connection's I/O runs on the
// executor it was opened on (its "home"): a request on another thread hops
// there for each statement, so a socket is never used from two threads.
//
// Included only by Asio translation units (it pulls in net/stream.hpp).
#pragma once

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "proxy/net/endpoint.hpp"
#include "proxy/pool/pool_core.hpp"
#include "proxy/protocol/messages.hpp"
#include "proxy/session/upstream_login.hpp"

namespace tokengate::net {
class ByteStream;
class UpstreamTlsContext;
}
namespace tokengate::http {
class SqlExchange;
}

namespace tokengate::pool {

// Who a pooled connection is logged in as, and with what.
struct PoolKey {
  std::string user;
  std::string database;
  // Startup parameters besides user and database, as rebuilt from what was
  // checked (StartupParameters::for_upstream). For HTTP requests, options
  // and application_name, and client_encoding is always UTF8 (answers are
  // JSON); for a wire session (`wire`), every setting the client sent,
  // application_name included, exactly as sent upstream without the pool.
  std::vector<std::pair<std::string, std::string>> parameters;
  // A wire session's connection (pool.wire_sessions): logged in with
  // `parameters` only. Wire and HTTP connections never share a key.
  bool wire = false;

  // The key PoolCore compares: the fields with NUL bytes between them (no
  // field can hold a NUL: the startup packet could not carry it).
  [[nodiscard]] std::string text() const;
};

struct UpstreamPoolSettings {
  PoolSettings limits;
  net::Endpoint upstream;
  const net::UpstreamTlsContext* tls = nullptr;  // upstream.sslmode; must outlive the pool
  // upstream.auth = password: log in with the role's auth.userlist password
  // (password_for), else with the password the request was authenticated
  // with. trust: never send a password.
  bool password_mode = false;
  std::function<std::optional<std::string>(const std::string& user)> password_for;
  // upstream.require_auth and upstream.max_scram_iterations, as for sessions.
  session::UpstreamAuthMethods upstream_methods = session::UpstreamAuthMethods::any();
  // Connecting and logging in one new connection.
  std::chrono::milliseconds connect_timeout{10000};
  // Waiting in the queue for a connection (`pool.wait_timeout`).
  std::chrono::milliseconds wait_timeout{10000};
  // A connection older than this is closed when given back rather than lent
  // again (`pool.max_lifetime`), so that role and database settings changed
  // with ALTER ROLE/DATABASE … SET, which a backend reads when it starts,
  // reach busy pools too. PgBouncer's server_lifetime has the same default.
  std::chrono::milliseconds max_lifetime{std::chrono::hours(1)};
  // The largest upstream message read while a statement runs (a DataRow
  // larger than the answer's limit could never be sent anyway).
  std::size_t max_message = 64 * 1024 * 1024;
};

// Why no connection could be had.
struct AcquireError {
  std::string sqlstate;  // 53300 (limits), 08006 (upstream unreachable), 57014 (timeout)
  std::string message;
  // The upstream's own ErrorResponse when it refused the login (3D000 no such
  // database, 28000 pg_hba, 53300 too many connections, …).
  std::optional<protocol::ErrorFields> upstream;
};

class UpstreamPool;

// A connection lent to one request. Give it back with release(); a Lease
// dropped without release() closes the connection (its state is unknown).
class Lease {
 public:
  Lease() = default;
  Lease(Lease&&) noexcept = default;
  Lease& operator=(Lease&& other) noexcept;
  ~Lease();

  enum class Outcome {
    done,       // the exchange reached ReadyForQuery (or failed by its own rules: see its status)
    io_error,   // the connection broke; `reason` says how
    too_large,  // an upstream message was larger than max_message
  };
  struct Result {
    Outcome outcome = Outcome::io_error;
    std::string reason;
  };
  // Writes `first` and feeds the answer to `exchange` until it is done or
  // failed, on the connection's own executor. Both must live until it returns.
  boost::asio::awaitable<Result> run(http::SqlExchange& exchange, const protocol::Bytes& first);

  // `reusable`: every exchange ended at ReadyForQuery and none failed. The
  // connection is then reset (ROLLBACK if a transaction is open, DISCARD
  // ALL) in the background and only then lent again; otherwise closed.
  void release(bool reusable, char tx_status);

  [[nodiscard]] explicit operator bool() const noexcept { return conn_ != nullptr; }
  // The upstream backend's process ID (BackendKeyData).
  [[nodiscard]] std::int32_t backend_pid() const noexcept;
  [[nodiscard]] bool reused() const noexcept { return reused_; }

  // ---- a wire session's connection (pool.wire_sessions) ----
  // Moves the connection's I/O to the calling coroutine's executor, where
  // the session relays (a plain socket leaves its io_context for the
  // caller's). False when it cannot (a TLS stream lives on the thread that
  // opened it): then release() it and log in without the pool.
  boost::asio::awaitable<bool> adopt();
  // The stream to relay over, once adopted. A relay may take a plain
  // socket's descriptor out of it; it must put it back (or leave it closed)
  // before release().
  [[nodiscard]] net::ByteStream& stream() noexcept;
  // The backend's own key (process ID and secret), for cancels.
  [[nodiscard]] const protocol::BackendKeyData& upstream_key() const noexcept;
  // The settings the backend reported (ParameterStatus), as they are now:
  // from its login, updated by every later ParameterStatus and by resets.
  [[nodiscard]] const std::vector<std::pair<std::string, std::string>>& parameters() const noexcept;
  // Records settings the backend reported while the session relayed.
  void update_parameters(const std::vector<std::pair<std::string, std::string>>& changes);
  // Bytes the upstream sent after the ReadyForQuery that ended its login
  // (normally none), for the session's client; empty for a reused one.
  [[nodiscard]] protocol::Bytes take_leftover();

  // Defined in upstream_pool.cpp.
  struct Connection;
  struct Impl;

 private:
  friend class UpstreamPool;
  Lease(std::shared_ptr<Impl> pool, std::shared_ptr<Connection> conn, bool reused)
      : pool_(std::move(pool)), conn_(std::move(conn)), reused_(reused) {}
  std::shared_ptr<Impl> pool_;
  std::shared_ptr<Connection> conn_;
  bool reused_ = false;
};

struct AcquireResult {
  Lease lease;  // set on success
  AcquireError error;
};

class UpstreamPool {
 public:
  // `timer_executor` runs the idle-expiry timer (any one I/O context).
  UpstreamPool(boost::asio::any_io_executor timer_executor, UpstreamPoolSettings settings);
  // Closes idle connections; lent ones close when given back. Leases,
  // acquire() calls and the pool's own coroutines may outlive this object;
  // they hold objects of the io_contexts they run on (a Lease, those of its
  // connection's), so their frames must all be destroyed before any of those
  // io_contexts is (the server destroys every context's handlers first).
  ~UpstreamPool();
  UpstreamPool(const UpstreamPool&) = delete;
  UpstreamPool& operator=(const UpstreamPool&) = delete;

  // A connection for `key`: an idle one, a new one, or one that comes free
  // within wait_timeout. `client_password` is used to log in only in
  // password mode for a role without a userlist entry (see settings).
  // Both arguments must live until the call returns.
  boost::asio::awaitable<AcquireResult> acquire(const PoolKey& key, const std::optional<std::string>& client_password);

  // Stops lending: idle connections close now, lent ones when given back,
  // and waiting requests are refused.
  void close();

  struct Stats {
    std::size_t size = 0;     // open (or opening) connections
    std::size_t idle = 0;
    std::size_t waiting = 0;
    std::uint64_t opened = 0;  // connections opened since start
    std::uint64_t reused = 0;  // requests served by a connection opened earlier
  };
  [[nodiscard]] Stats stats() const;

 private:
  std::shared_ptr<Lease::Impl> impl_;
};

}  // namespace tokengate::pool

// The control connection pool (see control_pool.hpp): lazily opened upstream
// connections, a FIFO of callers waiting for one, the role cache, and the two
// catalog look-ups built on QueryClient.
#include "proxy/net/control_pool.hpp"

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <charconv>
#include <cstring>
#include <deque>
#include <limits>
#include <unordered_map>

#include "proxy/net/connect.hpp"
#include "proxy/net/drive.hpp"
#include "proxy/net/stream.hpp"
#include "proxy/protocol/frame.hpp"
#include "proxy/session/upstream_login.hpp"

namespace tokengate::net {

using namespace asio::experimental::awaitable_operators;
using protocol::ByteView;
using protocol::Bytes;
using session::QueryClient;
using session::QueryParam;
using session::QueryResult;
using Clock = std::chrono::steady_clock;

namespace {

// Control results are a few short rows; a verifier is ~130 bytes. This bounds
// what one upstream message may make us buffer (QueryClient bounds the total).
constexpr std::size_t kMaxControlMessageLength = 1024 * 1024;
// The role cache forgets everything beyond this many roles rather than grow.
constexpr std::size_t kMaxCachedRoles = 10000;
constexpr std::size_t kReadChunk = 4096;

// A membership (pg_auth_members row `m`) that counts towards administrator
// status: granted by a role that is a superuser now (so not one a CREATEROLE
// role granted itself, as PostgreSQL 15 allows, nor one whose grantor was
// dropped or demoted) and, from PostgreSQL 16 on, not WITH ADMIN OPTION from
// the bootstrap superuser (OID 10): PostgreSQL 16 records every superuser's
// grant that way, and also the membership WITH ADMIN OPTION a CREATEROLE role
// receives in each role it creates, which must not make the creator of a
// missing admin role an administrator.
#define TG_ADMIN_EDGE                                                                                    \
  "EXISTS (SELECT 1 FROM pg_catalog.pg_roles s WHERE s.oid = m.grantor AND s.rolsuper)"              \
  " AND NOT (m.admin_option AND m.grantor = 10"                                                         \
  " AND pg_catalog.current_setting('server_version_num')::int >= 160000)"

// For role $1 (admin role $2): its attributes, whether it is an
// administrator, and every role it belongs to through pg_auth_members,
// transitively (UNION stops on repeats), one row per membership; a role
// without memberships gives one row with a NULL last column; a missing role
// gives no row.
constexpr const char* kRoleInfoQuery =
    "WITH RECURSIVE target AS ("
    " SELECT oid, rolname, rolcanlogin, rolsuper, rolreplication, rolbypassrls, rolcreaterole,"
    " extract(epoch from rolvaliduntil) AS valid_until"
    " FROM pg_catalog.pg_roles WHERE rolname = $1"
    "), member_of(roleid) AS ("
    " SELECT m.roleid FROM pg_catalog.pg_auth_members m JOIN target t ON m.member = t.oid"
    " UNION"
    " SELECT m.roleid FROM pg_catalog.pg_auth_members m JOIN member_of p ON m.member = p.roleid"
    "), granted(roleid) AS ("
    " SELECT m.roleid FROM pg_catalog.pg_auth_members m JOIN target t ON m.member = t.oid WHERE " TG_ADMIN_EDGE
    " UNION"
    " SELECT m.roleid FROM pg_catalog.pg_auth_members m JOIN granted p ON m.member = p.roleid WHERE " TG_ADMIN_EDGE
    ") "
    "SELECT t.oid, t.rolname, t.rolcanlogin, t.rolsuper, t.rolreplication, t.rolbypassrls, t.rolcreaterole,"
    " t.valid_until,"
    " t.rolsuper OR EXISTS (SELECT 1 FROM granted a JOIN pg_catalog.pg_roles r ON r.oid = a.roleid"
    " WHERE r.rolname = $2),"
    " g.rolname "
    "FROM target t LEFT JOIN member_of p ON true LEFT JOIN pg_catalog.pg_roles g ON g.oid = p.roleid "
    "ORDER BY g.rolname";
constexpr std::size_t kRoleInfoColumns = 10;

// The roles a non-superuser administrator may not act for (admin role $1):
// the same memberships as above, followed downwards from the admin role.
constexpr const char* kProtectedRolesQuery =
    "WITH RECURSIVE admins(member) AS ("
    " SELECT m.member FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles a ON a.oid = m.roleid"
    " WHERE a.rolname = $1 AND " TG_ADMIN_EDGE
    " UNION"
    " SELECT m.member FROM pg_catalog.pg_auth_members m JOIN admins p ON m.roleid = p.member WHERE " TG_ADMIN_EDGE
    ") "
    "SELECT rolname FROM pg_catalog.pg_roles WHERE rolsuper OR rolreplication OR rolbypassrls OR rolcreaterole "
    "UNION SELECT r.rolname FROM admins a JOIN pg_catalog.pg_roles r ON r.oid = a.member";
#undef TG_ADMIN_EDGE

struct Connection {
  std::unique_ptr<ByteStream> stream;  // null: not connected (opened on next use)
  Bytes buf;                           // bytes read and not yet framed
  std::size_t have = 0;
  bool busy = false;                   // one query at a time
  bool close_when_released = false;    // the pool is being destroyed

  void close() {
    if (stream) stream->close();
    stream.reset();
    have = 0;
    Bytes().swap(buf);
  }
};

// A caller waiting for a free connection; release() hands the slot over
// directly (no barging) and wakes it by cancelling its timer.
struct Waiter {
  asio::steady_timer timer;
  std::optional<std::size_t> slot;
};

struct CachedRole {
  RoleInfo info;
  Clock::time_point expires;
};

// A ControlError (a function: GCC 12 rejects braced string literals in co_return).
ControlError failure(std::string message) { return ControlError{std::move(message)}; }

std::string describe_error(const protocol::ErrorFields& e) {
  return std::string(e.sqlstate()) + " " + std::string(e.message());
}

bool is_fatal(const protocol::ErrorFields& e) {
  return e.severity() == "FATAL" || e.severity() == "PANIC";
}

std::optional<bool> parse_bool(const std::optional<std::string>& v) {
  if (!v) return std::nullopt;
  if (*v == "t" || *v == "true") return true;
  if (*v == "f" || *v == "false") return false;
  return std::nullopt;
}

// Epoch seconds as extract(epoch from …) prints them: "1767225600",
// "1767225600.250000", "-1.5", "Infinity", "-Infinity". Rounds down.
struct Epoch {
  bool ok = false;
  std::optional<std::int64_t> value;  // nullopt: +Infinity
};
Epoch parse_epoch(std::string_view s) {
  if (s == "Infinity" || s == "infinity") return {true, std::nullopt};
  if (s == "-Infinity" || s == "-infinity") return {true, std::numeric_limits<std::int64_t>::min()};
  auto dot = s.find('.');
  std::string_view whole = s.substr(0, dot);
  std::string_view frac = dot == std::string_view::npos ? std::string_view() : s.substr(dot + 1);
  if (whole.empty() || whole == "-" || whole.front() == '+') return {};
  std::int64_t v = 0;
  auto [end, ec] = std::from_chars(whole.data(), whole.data() + whole.size(), v);
  if (ec != std::errc() || end != whole.data() + whole.size()) return {};
  bool frac_nonzero = false;
  for (char c : frac) {
    if (c < '0' || c > '9') return {};
    frac_nonzero |= c != '0';
  }
  if (dot != std::string_view::npos && frac.empty()) return {};
  if (whole.front() == '-' && frac_nonzero) {
    if (v == std::numeric_limits<std::int64_t>::min()) return {};
    --v;
  }
  return {true, v};
}

std::optional<std::uint32_t> parse_oid(const std::optional<std::string>& v) {
  if (!v || v->empty()) return std::nullopt;
  std::uint32_t out = 0;
  auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), out);
  if (ec != std::errc() || end != v->data() + v->size() || out == 0) return std::nullopt;
  return out;
}

ControlResult<std::optional<RoleInfo>> parse_role_info(const ControlResult<QueryResult>& r) {
  if (!r) return failure("role look-up failed: " + r.error());
  const QueryResult& q = *r;
  if (q.error) return failure("role look-up failed: " + describe_error(*q.error));
  if (q.columns.size() != kRoleInfoColumns) return failure("role look-up returned an unexpected shape");
  if (q.rows.empty()) return std::optional<RoleInfo>();

  RoleInfo info;
  const auto& first = q.rows.front();
  auto oid = parse_oid(first[0]);
  auto can_login = parse_bool(first[2]);
  auto superuser = parse_bool(first[3]);
  auto replication = parse_bool(first[4]);
  auto bypassrls = parse_bool(first[5]);
  auto createrole = parse_bool(first[6]);
  auto is_admin = parse_bool(first[8]);
  if (!oid || !first[1] || !can_login || !superuser || !replication || !bypassrls || !createrole || !is_admin)
    return failure("role look-up returned unexpected values");
  info.oid = *oid;
  info.name = *first[1];
  info.can_login = *can_login;
  info.is_superuser = *superuser;
  info.replication = *replication;
  info.bypassrls = *bypassrls;
  info.createrole = *createrole;
  if (first[7]) {
    auto epoch = parse_epoch(*first[7]);
    if (!epoch.ok) return failure("role look-up returned an unexpected VALID UNTIL");
    info.valid_until = epoch.value;
  }
  info.is_admin = *is_admin;
  for (const auto& row : q.rows)
    if (row[9]) info.member_of.push_back(*row[9]);
  std::sort(info.member_of.begin(), info.member_of.end());
  return std::optional<RoleInfo>(std::move(info));
}

ControlResult<std::vector<std::string>> parse_protected_roles(const ControlResult<QueryResult>& r) {
  if (!r) return failure("protected roles look-up failed: " + r.error());
  const QueryResult& q = *r;
  if (q.error) return failure("protected roles look-up failed: " + describe_error(*q.error));
  if (q.columns.size() != 1) return failure("protected roles look-up returned an unexpected shape");
  std::vector<std::string> out;
  out.reserve(q.rows.size());
  for (const auto& row : q.rows) {
    if (!row[0]) return failure("protected roles look-up returned a NULL name");
    out.push_back(*row[0]);
  }
  // Byte order, for binary_search; the server's collation is irrelevant.
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

ControlResult<std::optional<LoginVerifier>> parse_login_verifier(const ControlResult<QueryResult>& r) {
  if (!r) return failure("auth_query failed: " + r.error());
  const QueryResult& q = *r;
  if (q.error) return failure("auth_query failed: " + describe_error(*q.error));
  if (q.columns.size() != 3)
    return failure("auth_query must return 3 columns (password, valid-until epoch, can-login); it returned " +
                   std::to_string(q.columns.size()));
  if (q.rows.empty()) return std::optional<LoginVerifier>();
  if (q.rows.size() > 1) return failure("auth_query returned " + std::to_string(q.rows.size()) + " rows for one user");

  // Values are never quoted in errors: column 1 is a password verifier.
  const auto& row = q.rows.front();
  LoginVerifier v;
  v.verifier = row[0];
  if (row[1]) {
    auto epoch = parse_epoch(*row[1]);
    if (!epoch.ok) return failure("auth_query column 2 (valid until) is not epoch seconds; use extract(epoch from …)");
    v.valid_until = epoch.value;
  }
  auto can_login = parse_bool(row[2]);
  if (!can_login) return failure("auth_query column 3 (can login) is not a boolean");
  v.can_login = *can_login;
  return std::optional<LoginVerifier>(std::move(v));
}

}  // namespace

struct ControlPool::Impl {
  Impl(asio::any_io_executor executor, ControlPoolSettings s)
      : strand(asio::make_strand(executor)), settings(std::move(s)),
        connections(std::max<std::size_t>(settings.size, 1)) {}

  asio::strand<asio::any_io_executor> strand;
  const ControlPoolSettings settings;
  // Everything below is touched only on `strand`.
  std::vector<Connection> connections;
  std::deque<Waiter*> waiters;
  std::unordered_map<std::string, CachedRole> role_cache;

  // ---- connections ------------------------------------------------------------

  // A free connection, preferring one already open; nullopt at the deadline.
  asio::awaitable<std::optional<std::size_t>> acquire(Clock::time_point deadline) {
    std::optional<std::size_t> pick;
    for (std::size_t i = 0; i < connections.size(); ++i) {
      if (connections[i].busy) continue;
      if (connections[i].stream) {
        pick = i;
        break;
      }
      if (!pick) pick = i;
    }
    if (pick) {
      connections[*pick].busy = true;
      co_return pick;
    }
    Waiter w{asio::steady_timer(strand, deadline), std::nullopt};
    waiters.push_back(&w);
    co_await w.timer.async_wait(use_nothrow);  // cancelled by release(), or the deadline
    if (w.slot) co_return w.slot;  // handed over even if the deadline fired meanwhile
    waiters.erase(std::find(waiters.begin(), waiters.end(), &w));
    co_return std::nullopt;
  }

  void release(std::size_t i) {
    Connection& c = connections[i];
    if (c.close_when_released) c.close();
    if (!waiters.empty()) {
      Waiter* w = waiters.front();
      waiters.pop_front();
      w->slot = i;  // stays busy: it belongs to the waiter now
      w->timer.cancel();
      return;
    }
    c.busy = false;
  }

  // Returns the slot however run() ends. If it ends by an exception (a
  // cancelled caller: asio throws at the next co_await), the exchange may be
  // half done, so the connection is closed rather than reused.
  struct Lease {
    Impl& pool;
    std::size_t slot;
    bool settled = false;  // run() has left the connection in a known state
    ~Lease() {
      if (!settled) pool.connections[slot].close();
      pool.release(slot);
    }
  };

  void close_all() {
    for (auto& c : connections) {
      if (c.busy)
        c.close_when_released = true;
      else
        c.close();
    }
    role_cache.clear();
  }

  // Reads until one whole message is framed at the front of c.buf; an error
  // text when the stream ends or breaks.
  asio::awaitable<std::optional<std::string>> next_frame(Connection& c, protocol::Frame& frame) {
    for (;;) {
      auto fr = protocol::read_frame(ByteView(c.buf.data(), c.have), kMaxControlMessageLength);
      if (fr.status == protocol::FrameStatus::complete) {
        frame = fr.frame;
        co_return std::nullopt;
      }
      if (fr.status == protocol::FrameStatus::bad_length)
        co_return std::string("invalid message length from the upstream");
      std::size_t want = std::max(fr.need, c.have + kReadChunk);
      if (c.buf.size() < want) c.buf.resize(want);
      auto [ec, n] = co_await c.stream->read_some(asio::buffer(c.buf.data() + c.have, c.buf.size() - c.have));
      if (ec) co_return ec == asio::error::eof ? std::string("the upstream closed the connection")
                                                : "reading from the upstream failed: " + ec.message();
      c.have += n;
    }
  }

  static void consume(Connection& c, std::size_t n) {
    std::memmove(c.buf.data(), c.buf.data() + n, c.have - n);
    c.have -= n;
  }

  // Connects and logs in as the control user; an error text on failure.
  asio::awaitable<std::optional<std::string>> open(Connection& c) {
    auto [ec, stream, detail] = co_await connect_upstream(settings.upstream, settings.tls,
                                                          Clock::now() + settings.connect_timeout);
    if (ec)
      co_return "connecting to " + settings.upstream.to_string() + " failed: " + ec.message() +
          (detail.empty() ? "" : " (" + detail + ")");
    c.stream = std::move(stream);
    c.have = 0;

    protocol::StartupMessage startup;
    startup.parameters.emplace_back("user", settings.user);
    startup.parameters.emplace_back("database", settings.database);
    startup.parameters.emplace_back("application_name", "tokengate-control");
    // The login's client-side output (ParameterStatus, key data) is for a
    // client we do not have: only to_upstream and the status matter here.
    std::optional<auth::SecretString> password;
    if (settings.password) password = auth::SecretString(*settings.password);
    session::UpstreamLogin login(std::move(startup), std::move(password), protocol::BackendKeyData{},
                                 settings.upstream_methods);
    Bytes first = login.start();
    if (auto [wec, wn] = co_await c.stream->write(asio::buffer(first)); wec)
      co_return "writing to the upstream failed: " + wec.message();
    // The same driver as a session's upstream login (net/drive.hpp).
    protocol::InputBuffer in(kMaxControlMessageLength + 5);
    session::FramedMachine<session::UpstreamLogin> machine(login, kMaxControlMessageLength);
    auto r = co_await drive(*c.stream, in, machine);
    if (machine.finished()) {
      // Anything after ReadyForQuery belongs to the first query.
      c.buf = in.take();
      c.have = c.buf.size();
      co_return std::nullopt;
    }
    if (r.end == DriveResult::End::io_error) co_return "writing to the upstream failed: " + r.ec.message();
    if (machine.error()) co_return "login as \"" + settings.user + "\": " + *machine.error();
    co_return "login as \"" + settings.user + "\" failed: " + login.failure_reason();
  }

  struct Exchange {
    std::optional<QueryResult> result;  // set on success
    std::string error;                  // otherwise
    bool connection_usable = false;
    bool retryable = false;  // the connection died under us (idle timeout, restart)
  };

  asio::awaitable<Exchange> exchange(Connection& c, const std::string& sql, const std::vector<QueryParam>& params) {
    Exchange x;
    QueryClient q(sql, params);
    Bytes out = q.start();
    if (q.status() == QueryClient::Status::failed) {
      x.error = q.failure_reason();
      x.connection_usable = true;  // nothing was sent
      co_return x;
    }
    if (auto [ec, n] = co_await c.stream->write(asio::buffer(out)); ec) {
      x.error = "writing to the upstream failed: " + ec.message();
      x.retryable = true;
      co_return x;
    }
    for (;;) {
      protocol::Frame frame;
      if (auto err = co_await next_frame(c, frame)) {
        // A backend that was terminated says why (FATAL) before it closes.
        const auto& e = q.result().error;
        x.error = e && is_fatal(*e) ? "the upstream ended the connection: " + describe_error(*e) : *err;
        x.retryable = true;
        co_return x;
      }
      auto st = q.on_message(frame);
      consume(c, frame.size);
      if (st == QueryClient::Status::failed) {
        x.error = "protocol error on the control connection: " + q.failure_reason();
        co_return x;
      }
      if (st == QueryClient::Status::done) break;
    }
    x.result = q.take_result();
    const auto& e = x.result->error;
    // Keep only connections left idle and healthy.
    x.connection_usable = !(e && is_fatal(*e)) && x.result->tx_status == protocol::tx_status::Idle;
    co_return x;
  }

  // Open-if-needed plus one exchange, as one unit raced against the deadline.
  asio::awaitable<Exchange> attempt(Connection& c, const std::string& sql, const std::vector<QueryParam>& params,
                                    Clock::time_point deadline) {
    if (!c.stream) {
      asio::steady_timer login_timer(strand, std::min(deadline, Clock::now() + settings.connect_timeout));
      auto opened = co_await (open(c) || login_timer.async_wait(use_nothrow));
      std::optional<std::string> err =
          opened.index() == 0 ? std::get<0>(opened)
                              : std::optional<std::string>("connecting and logging in to " +
                                                           settings.upstream.to_string() + " timed out");
      if (err) {
        c.close();
        Exchange x;
        x.error = std::move(*err);
        co_return x;
      }
    }
    co_return co_await exchange(c, sql, params);
  }

  // Runs one query on a pooled connection (on the strand).
  // sql and params are references: every caller awaits at once, and GCC 12
  // destroyed by-value vector parameters of this coroutine twice.
  asio::awaitable<ControlResult<QueryResult>> run(const std::string& sql, const std::vector<QueryParam>& params) {
    const auto deadline = Clock::now() + settings.query_timeout;
    auto slot = co_await acquire(deadline);
    if (!slot)
      co_return failure("no control connection became free within " +
                             std::to_string(settings.query_timeout.count()) + " ms");
    Lease lease{*this, *slot, true};
    Connection& c = connections[*slot];

    for (int tries = 0;; ++tries) {
      const bool reused = c.stream != nullptr;
      asio::steady_timer timer(strand, deadline);
      lease.settled = false;
      auto r = co_await (attempt(c, sql, params, deadline) || timer.async_wait(use_nothrow));
      lease.settled = true;
      if (r.index() == 1) {
        c.close();  // the exchange was cut off mid-way: its state is unknown
        co_return failure("control query to " + settings.upstream.to_string() + " timed out after " +
                               std::to_string(settings.query_timeout.count()) + " ms");
      }
      Exchange x = std::move(std::get<0>(r));
      if (!x.connection_usable) c.close();
      if (x.result) co_return std::move(*x.result);
      // A pooled connection may have been closed by the upstream while idle
      // (restart, idle_session_timeout, pg_terminate_backend): try once more
      // on a new one. Control queries only read, so repeating one is safe.
      auto cancelled = (co_await asio::this_coro::cancellation_state).cancelled();
      if (reused && x.retryable && tries == 0 && cancelled == asio::cancellation_type::none) continue;
      co_return failure("control connection to " + settings.upstream.to_string() + ": " + x.error);
    }
  }

  // ---- look-ups -----------------------------------------------------------------

  // The coroutines below only await and cache; the parsing is in plain
  // functions (GCC 12 mishandles some temporaries in coroutine bodies).
  asio::awaitable<ControlResult<std::optional<RoleInfo>>> role_info(const std::string& role, bool fresh) {
    std::optional<RoleInfo> hit = fresh ? std::nullopt : cached_role(role);
    std::string sql = kRoleInfoQuery;
    std::vector<QueryParam> params;
    params.emplace_back(role);
    params.emplace_back(settings.admin_role);
    ControlResult<QueryResult> r;
    if (!hit) r = co_await run(sql, params);
    ControlResult<std::optional<RoleInfo>> out = hit ? ControlResult<std::optional<RoleInfo>>(std::move(hit))
                                                     : parse_role_info(r);
    if (!hit && out) {
      if (*out)
        remember(role, **out);
      else
        role_cache.erase(role);  // gone now: a fresh answer replaces a cached one
    }
    co_return out;
  }

  asio::awaitable<ControlResult<std::vector<std::string>>> protected_roles() {
    std::string sql = kProtectedRolesQuery;
    std::vector<QueryParam> params;
    params.emplace_back(settings.admin_role);
    ControlResult<QueryResult> r = co_await run(sql, params);
    ControlResult<std::vector<std::string>> out = parse_protected_roles(r);
    co_return out;
  }

  std::optional<RoleInfo> cached_role(const std::string& role) {
    if (settings.role_cache_ttl.count() <= 0) return std::nullopt;
    auto it = role_cache.find(role);
    if (it == role_cache.end()) return std::nullopt;
    if (Clock::now() < it->second.expires) return it->second.info;
    role_cache.erase(it);
    return std::nullopt;
  }

  void remember(const std::string& role, const RoleInfo& info) {
    if (settings.role_cache_ttl.count() <= 0) return;
    if (role_cache.size() >= kMaxCachedRoles) {
      const auto now = Clock::now();
      std::erase_if(role_cache, [&](const auto& kv) { return kv.second.expires <= now; });
      if (role_cache.size() >= kMaxCachedRoles) role_cache.clear();
    }
    role_cache[role] = CachedRole{info, Clock::now() + settings.role_cache_ttl};
  }

  asio::awaitable<ControlResult<std::optional<LoginVerifier>>> login_verifier(const std::string& user) {
    std::string sql = settings.auth_query;
    std::vector<QueryParam> params;
    params.emplace_back(user);
    ControlResult<QueryResult> r = co_await run(sql, params);
    ControlResult<std::optional<LoginVerifier>> out = parse_login_verifier(r);
    co_return out;
  }
};

// ---- the public face: hop onto the strand, come back on the caller's executor --

ControlPool::ControlPool(asio::any_io_executor executor, ControlPoolSettings settings)
    : impl_(std::make_shared<Impl>(std::move(executor), std::move(settings))) {}

ControlPool::~ControlPool() {
  asio::post(impl_->strand, [impl = impl_] { impl->close_all(); });
}

// Not coroutines themselves: co_spawn(…, use_awaitable) returns the awaitable.
// The lambda owns the arguments and lives in co_spawn's frame until the
// strand-side coroutine ends, so Impl's coroutines may take them by
// reference; it also keeps the Impl alive if the pool is destroyed meanwhile.
asio::awaitable<ControlResult<std::optional<RoleInfo>>> ControlPool::role_info(std::string role) {
  return asio::co_spawn(
      impl_->strand, [impl = impl_, role = std::move(role)] { return impl->role_info(role, false); },
      asio::use_awaitable);
}

asio::awaitable<ControlResult<std::optional<RoleInfo>>> ControlPool::role_info_fresh(std::string role) {
  return asio::co_spawn(
      impl_->strand, [impl = impl_, role = std::move(role)] { return impl->role_info(role, true); },
      asio::use_awaitable);
}

asio::awaitable<ControlResult<std::vector<std::string>>> ControlPool::protected_roles() {
  return asio::co_spawn(
      impl_->strand, [impl = impl_] { return impl->protected_roles(); }, asio::use_awaitable);
}

asio::awaitable<ControlResult<std::optional<LoginVerifier>>> ControlPool::login_verifier(std::string user) {
  return asio::co_spawn(
      impl_->strand, [impl = impl_, user = std::move(user)] { return impl->login_verifier(user); },
      asio::use_awaitable);
}

asio::awaitable<ControlResult<QueryResult>> ControlPool::query(std::string sql, std::vector<QueryParam> params) {
  return asio::co_spawn(
      impl_->strand,
      [impl = impl_, sql = std::move(sql), params = std::move(params)] { return impl->run(sql, params); },
      asio::use_awaitable);
}

}  // namespace tokengate::net

// The Asio driver: listeners, I/O threads, and one coroutine per client
// session that performs what the sans-io state machines ask for. A session's
// login runs in phases (handshake, decision, upstream login, registration),
// each a function below; who may log in is decided by session/login_policy.
#include "proxy/net/server.hpp"

#include <spdlog/spdlog.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cmath>
#include <csignal>
#include <deque>
#include <filesystem>
#include <thread>
#include <unordered_map>
#include <variant>

#include "parser_ext/role_password.hpp"
#include "proxy/audit.hpp"
#include "proxy/build_info.hpp"
#include "proxy/auth/scram.hpp"
#include "proxy/auth/secret.hpp"
#include "proxy/auth/throttle.hpp"
#include "proxy/auth/userlist.hpp"
#include "proxy/auth/verifier_queue.hpp"
#include "proxy/http/gateway.hpp"
#include "proxy/http/sql_endpoint.hpp"
#include "proxy/http/token_api.hpp"
#include "proxy/http/upstream_check.hpp"
#include "proxy/http/websocket_stream.hpp"
#include "proxy/http/web_ui.hpp"
#include "proxy/log_text.hpp"
#include "proxy/metrics.hpp"
#include "proxy/net/buffer_pool.hpp"
#include "proxy/net/cancel_registry.hpp"
#include "proxy/net/connect.hpp"
#include "proxy/net/control_pool.hpp"
#include "proxy/net/drive.hpp"
#include "proxy/net/edge_watch.hpp"
#include "proxy/net/fleet.hpp"
#include "proxy/net/relay.hpp"
#include "proxy/net/session_registry.hpp"
#include "proxy/net/store_worker.hpp"
#include "proxy/net/systemd_notify.hpp"
#include "proxy/net/stream.hpp"
#include "proxy/net/tls.hpp"
#include "proxy/pool/upstream_pool.hpp"
#include "proxy/protocol/frame.hpp"
#include "proxy/protocol/input_buffer.hpp"
#include "proxy/session/client_handshake.hpp"
#include "proxy/session/login_policy.hpp"
#include "proxy/session/machine.hpp"
#include "proxy/session/token_sql.hpp"
#include "proxy/session/upstream_login.hpp"
#include "tokenstore/service.hpp"

namespace tokengate::net {

using namespace std::chrono_literals;
using namespace asio::experimental::awaitable_operators;
using unix_socket = asio::local::stream_protocol;
using protocol::ByteView;
using protocol::Bytes;
using Clock = std::chrono::steady_clock;
using auth::SecretString;
using session::LoginRefusal;

namespace {

// Upstream messages during login are small (ParameterStatus, errors); this
// bounds what a misbehaving upstream can make us buffer before relaying.
constexpr std::size_t kMaxLoginMessageLength = 1024 * 1024;
// What a client may have sent before it is logged in: a startup packet
// (10,004 bytes), a password message (65,535), and what a pipelining client
// sends after its password (kept for the relay). More is not a login.
constexpr std::size_t kMaxClientLoginBytes = 128 * 1024;
// How long a forwarded CancelRequest may take to be delivered.
constexpr auto kCancelTimeout = 5s;
// Sessions ended at shutdown get this long to cancel their upstream work and
// see their backends exit (the relay itself waits at most 10 s for that).
constexpr auto kSessionsEndTimeout = 11s;
// How often the store is asked which tokens were revoked by any process; the
// issue allows 2 s between a revocation and the end of its sessions.
constexpr auto kRevocationPoll = 500ms;
// Failing accept() (out of descriptors) is retried after this pause, and
// reported at most once per kAcceptReportInterval with a count: at 10 retries
// a second, a line each would bury the log.
constexpr auto kAcceptRetry = 100ms;
constexpr auto kAcceptReportInterval = 10s;
// An HTTP request is a token login, but asking the catalog afresh for every
// request would cap the gateway at the control pool's rate (about 300
// requests a second on a 2-core machine, bench/http_bench.py). A change to
// the owner role (NOLOGIN, VALID UNTIL, DROP) reaches HTTP requests within
// this time instead, as other processes' revocations reach sessions within
// kRevocationPoll. Revocation itself is checked on every request.
constexpr auto kHttpRoleRecheck = 1s;
// Bounds the table of recent checks (one entry per token owner).
constexpr std::size_t kHttpRoleChecksMax = 65536;
// Counting the token store walks every token: a scrape (every 15 s or so)
// reuses a count up to this old, so the walk costs at most one a minute.
constexpr auto kStoreCountInterval = 60s;
// "Expiring soon" for tokengate_tokens_expiring_soon: a week, the default
// expiry_warning, long enough to replace a token over a weekend.
constexpr std::int64_t kExpiringSoonSeconds = 7 * 24 * 3600;
// The store's list() leaves out tokens that ended longer ago than the
// retention it is given; a century counts every stored token (ended ones
// are purged after 30 days).
constexpr std::int64_t kCountEveryToken = std::int64_t(100) * 365 * 24 * 3600;

Bytes fatal(std::string sqlstate, std::string message, std::string detail = {}) {
  Bytes out;
  auto e = protocol::ErrorResponse::make("FATAL", std::move(sqlstate), std::move(message));
  e.detail = std::move(detail);
  e.serialize(out);
  return out;
}

// How often a waiting login over TLS or WebSocket looks whether its client
// hung up: the work a flood that hangs up can still cause is a few checks.
constexpr auto kHangUpPollInterval = std::chrono::milliseconds(50);

// The peer closed its side (FIN), reset the connection, or the socket broke.
// poll() tells without reading, even with unread bytes waiting.
bool peer_hung_up(int fd) noexcept {
  pollfd p{fd, POLLRDHUP, 0};
  return ::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

// Refusals built outside coroutines: GCC 12 miscompiles braced aggregates
// of strings inside them ("array used as initializer").
LoginRefusal client_hung_up(const char* when) {
  // No answer: nobody is there to read it.
  return LoginRefusal{{}, "denied", std::string("the client hung up ") + when, false};
}
LoginRefusal queue_full() {
  return LoginRefusal{fatal("53300", "too many logins in progress"), "error",
                      "the verification queue is full (auth.max_pending_verifications)", false};
}

// A host name or address that stays on this machine.
bool is_loopback_host(const std::string& host) {
  if (host == "localhost") return true;
  error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  if (ec) return false;
  return addr.is_loopback() ||
         (addr.is_v6() && addr.to_v6().is_v4_mapped() &&
          asio::ip::make_address_v4(asio::ip::v4_mapped, addr.to_v6()).is_loopback());
}

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Connections still logging in, in total and per client address
// (`login.max_connections`, `login.max_connections_per_address`). Shared by
// every I/O thread.
class LoginSlots {
 public:
  enum class Outcome { ok, total, address };
  Outcome acquire(const std::string& address, unsigned max_total, unsigned max_per_address) {
    std::lock_guard lock(mutex_);
    if (max_total != 0 && total_ >= max_total) return Outcome::total;
    auto& n = per_address_[address];
    if (max_per_address != 0 && n >= max_per_address) return Outcome::address;
    ++n;
    ++total_;
    return Outcome::ok;
  }
  void release(const std::string& address) {
    std::lock_guard lock(mutex_);
    auto it = per_address_.find(address);
    if (it == per_address_.end()) return;
    if (--it->second == 0) per_address_.erase(it);
    --total_;
  }

 private:
  std::mutex mutex_;
  unsigned total_ = 0;
  std::unordered_map<std::string, unsigned> per_address_;
};

// What the deadline timers of a login may close. The timers' handlers hold it
// by shared_ptr, never a coroutine's locals; the session points it at its
// streams and clears it when it leaves.
struct LoginCutoff {
  ByteStream* client = nullptr;
  ByteStream* upstream = nullptr;
  void close() {
    if (client) client->close();
    if (upstream) upstream->close();
  }
};

// Arms `timer` to close what `cut` points at when `at` passes.
void arm(asio::steady_timer& timer, Clock::time_point at, const std::shared_ptr<LoginCutoff>& cut) {
  timer.expires_at(at);
  timer.async_wait([cut](error_code ec) {
    if (!ec) cut->close();
  });
}

// A password check on the verification queue. Shared by the session and the
// worker: the session may leave (its client hung up) before the worker runs.
struct VerifyJob {
  explicit VerifyJob(asio::any_io_executor ex) : done(std::move(ex), Clock::time_point::max()) {}
  asio::steady_timer done;  // cancelled (on the session's executor) when `result` is set
  std::atomic<bool> abandoned{false};
  std::optional<auth::VerifierCheck> result;  // nullopt: did not run
  std::string user;
  std::string verifier;  // empty: a dummy check (no such role, no password)
  SecretString password;
  std::size_t max_iterations = 0;
};

// token_service::bind_owner_oid on the store worker. Not a coroutine: GCC 12
// miscompiles lambdas with captures built inside a coroutine, so the call is
// built here (see local_sql.cpp).
asio::awaitable<std::optional<bool>> bind_owner_oid_on(StoreWorker& worker, tokenstore::token_service& tokens,
                                                       tokenstore::tid_t tid, std::uint32_t oid) {
  return worker.run([svc = &tokens, tid, oid] { return svc->bind_owner_oid(tid, oid); });
}

// pg_store::find_peer on the store worker (it may query the registry).
asio::awaitable<std::optional<std::optional<std::string>>> find_peer_on(StoreWorker& worker,
                                                                       tokenstore::pg_store& registry,
                                                                       std::uint32_t id) {
  return worker.run([r = &registry, id] { return r->find_peer(id); });
}

}  // namespace

// The state of one client while it logs in.
struct LoginContext {
  std::unique_ptr<ByteStream>& client;
  std::string peer;                 // for the log
  std::string address;              // IP without the port, or "[local]": for limits, throttle, audit
  Clock::time_point auth_deadline;  // auth_timeout from accept
  Clock::time_point client_deadline = Clock::time_point::max();  // login.client_timeout from accept
  // How old a check of a token's owner role may be and still be used: 0 for
  // wire logins (always afresh), kHttpRoleRecheck for HTTP requests.
  std::chrono::milliseconds role_recheck{0};
  protocol::InputBuffer in{kMaxClientLoginBytes};
  // What the auth_timeout timer closes, and what the login.client_timeout
  // timer closes (cleared once the password is in).
  std::shared_ptr<LoginCutoff> cut = std::make_shared<LoginCutoff>();
  std::shared_ptr<LoginCutoff> client_cut = std::make_shared<LoginCutoff>();

  // Counts the connection (tokengate_client_connections) for a wire client;
  // null for WebSocket (the gateway counts those) and HTTP requests.
  metrics::ConnectionGauge* gauge = nullptr;
  bool tls = false;  // the client negotiated TLS on this connection
  Clock::time_point accepted = Clock::now();

  void set_client(ByteStream* s) {
    cut->client = s;
    client_cut->client = s;
  }
};

// What a client proved at login, and how to log in upstream for it.
struct LoginDecision {
  std::optional<LoginRefusal> refusal;  // set when the login is refused
  std::string method;                   // "token" or "password", for the audit log
  std::optional<SecretString> upstream_password;
  // For token sessions.
  std::optional<tokenstore::tid_t> tid;
  std::string token_name;
  std::string token_owner;  // the token's user claim, once its signature checked out
  std::int64_t token_expires_at = 0;
  Bytes notice;  // sent just before the first ReadyForQuery
  // password mode, ordinary password: the upstream's answer decides; the
  // session audits and throttles it.
  bool upstream_decides = false;
};

// A logged-in upstream connection.
struct UpstreamSession {
  std::unique_ptr<ByteStream> stream;
  protocol::BackendKeyData key;
  char tx_status = protocol::tx_status::Idle;
  Bytes to_client;  // ParameterStatus … ReadyForQuery, not yet written
  Bytes leftover;   // whatever the upstream sent after ReadyForQuery
  // The settings the relay's statement splitter lexes by, as the upstream
  // reported them at login (a client may set them in its startup packet).
  bool standard_conforming_strings = true;
  std::string client_encoding = "UTF8";
  // A pooled backend (pool.wire_sessions); `stream` is then null.
  pool::Lease lease;
};

// Where the registry's "end this session" goes: to the relay once it runs,
// kept until then (a revocation, an expiry or a shutdown may come while the
// session is still logging in).
struct SessionEnd {
  Relay* relay = nullptr;
  std::optional<protocol::ErrorResponse> pending;
  std::optional<protocol::ErrorResponse> pending_when_idle;  // a drain
};

// An io_context whose pending handlers and coroutine frames can be destroyed
// before the context itself is: see the end of Server::run.
class IoContext : public asio::io_context {
 public:
  using asio::io_context::io_context;
  void destroy_handlers() { shutdown(); }
};

struct Server::Impl {
  Impl(Config c, ConfigReloader r)
      : config(std::move(c)),
        reloader(std::move(r)),
        live_config(std::make_shared<const Config>(config)),
        relay_memory(config.relay_memory_limit),
        audit(config.audit_log) {}

  // The settings a SIGHUP may change, as they are now: read once per login or
  // session (an atomic load), never cached across a reload. `config` keeps
  // the values read at start, for everything else.
  std::shared_ptr<const Config> live() const { return live_config.load(std::memory_order_acquire); }
  const RelayServices& current_relay_services() const {
    return *relay_services_now.load(std::memory_order_acquire);
  }
  void apply_reload(const ConfigReload& r);

  asio::io_context& next_context() { return *contexts[next++ % contexts.size()]; }

  bool open_services();
  asio::awaitable<void> session(std::unique_ptr<ByteStream> client, std::string peer, bool peer_is_local);
  // The login phases.
  asio::awaitable<std::optional<session::ClientHandshake::LoggedIn>> handshake_phase(LoginContext& ctx,
                                                                                     bool peer_is_local);
  asio::awaitable<LoginDecision> decide_login(LoginContext& ctx, const session::StartupParameters& sp,
                                              const SecretString& password);
  asio::awaitable<void> decide_token(LoginContext& ctx, const session::StartupParameters& sp,
                                     const SecretString& token, LoginDecision& d);
  asio::awaitable<void> decide_password(LoginContext& ctx, const session::StartupParameters& sp,
                                        const SecretString& password, LoginDecision& d);
  asio::awaitable<std::optional<auth::VerifierCheck>> verify_off_thread(const std::string& user,
                                                                        const std::string& verifier,
                                                                        const SecretString& password);
  std::chrono::milliseconds record_refusal(LoginContext& ctx, const session::StartupParameters& sp, LoginDecision& d);
  asio::awaitable<void> refuse(LoginContext& ctx, const session::StartupParameters& sp, LoginDecision& d);
  asio::awaitable<std::optional<UpstreamSession>> login_upstream(LoginContext& ctx,
                                                                 const session::StartupParameters& sp,
                                                                 LoginDecision& d,
                                                                 const protocol::BackendKeyData& client_key);
  bool pools_session(const session::StartupParameters& sp, const LoginDecision& d) const;
  asio::awaitable<std::optional<UpstreamSession>> login_pooled(LoginContext& ctx,
                                                               const session::StartupParameters& sp,
                                                               LoginDecision& d,
                                                               const protocol::BackendKeyData& client_key);
  asio::awaitable<bool> client_stays(LoginContext& ctx);
  template <typename T>
  asio::awaitable<std::variant<T, bool>> unless_client_leaves(LoginContext& ctx, asio::awaitable<T> work);
  asio::awaitable<bool> wait_unless_client_leaves(LoginContext& ctx, Clock::time_point until);

  void start_relay(asio::any_io_executor exec, std::unique_ptr<ByteStream> client, std::unique_ptr<ByteStream> upstream,
                   SessionInfo info, protocol::BackendKeyData client_key, SessionRegistry::Handle handle,
                   std::shared_ptr<SessionEnd> ending, protocol::Bytes pending,
                   std::unique_ptr<metrics::ConnectionGauge> gauge, pool::Lease lease);
  // GET /metrics, SHOW TOKENGATE SESSIONS | STATUS | CONFIG, GET /readyz.
  metrics::ScrapeFacts scrape_facts();
  asio::awaitable<void> refresh_store_count();
  metrics::ScrapeFacts count_tokens();
  asio::awaitable<std::vector<std::vector<protocol::Value>>> admin_view(parser_ext::ShowTokengateView::View view);
  asio::awaitable<std::tuple<error_code, std::unique_ptr<ByteStream>, std::string>> connect_upstream(
      Clock::time_point deadline);
  asio::awaitable<void> forward_cancel(protocol::CancelRequest request);
  asio::awaitable<void> forward_cancel_to_peer(protocol::CancelRequest request);
  template <typename Acceptor>
  asio::awaitable<void> accept_loop(Acceptor& acceptor, std::string name);
  asio::awaitable<void> watch_tokens();
  asio::awaitable<void> drain_then_stop();
  // The completion of a server-wide coroutine (accept loops, the revocation
  // watcher, the shutdown drain): one that ends by an exception leaves
  // tokengate unable to do its job (accept clients, end revoked sessions,
  // stop), so the exception is logged and the server stops with an error
  // rather than run on without it.
  std::function<void(std::exception_ptr)> stop_on_exception(std::string what);
  std::atomic<bool> failed{false};  // stopped by stop_on_exception: run() returns 1
  void reload();
  void stop_all();
  // The HTTP gateway (proxy/http): its login check is the wire's.
  bool start_http();
  void open_pool();
  asio::awaitable<http::HttpLoginResult> http_login(http::HttpLoginRequest request);
  void audit_login(const std::string& user, const std::string& address, const std::string& app,
                   const std::string& method, const std::string& outcome, const std::string& reason,
                   const std::string& token_name = {}, const std::optional<tokenstore::tid_t>& tid = {},
                   const std::string& owner = {});

  Config config;
  ConfigReloader reloader;
  std::atomic<std::shared_ptr<const Config>> live_config;
  // Relays keep a reference to their services for life, so every version a
  // reload made stays (a few hundred bytes per SIGHUP); touched on the signal
  // thread only, read through relay_services_now.
  std::deque<RelayServices> relay_services_versions;
  std::atomic<const RelayServices*> relay_services_now{&relay_services};
  CancelRegistry cancels;
  SessionRegistry sessions;              // every logged-in session
  session::MemoryBudget relay_memory;    // relay buffers of all sessions (relay.memory_limit)
  RelayServices relay_services;          // what every relay uses; set by open_services
  std::vector<std::unique_ptr<IoContext>> contexts;
  std::vector<int> reactor_fds;  // each context's epoll set, where relays watch their sockets
  std::atomic<std::size_t> next{0};
  std::atomic<int> active_sessions{0};     // every client connection
  std::atomic<int> relaying_sessions{0};  // past login: what SIGTERM waits for
  std::atomic<bool> stopping{false};
  std::atomic<bool> draining{false};  // SIGTERM: /readyz answers 503
  const std::int64_t started_unix = unix_now();
  const Clock::time_point started = Clock::now();
  // The token store counted for metrics and STATUS, at most once per
  // kStoreCountInterval, on the store worker (one count at a time).
  std::mutex store_count_mutex;
  Clock::time_point store_counted_at{};
  bool store_counting = false;
  metrics::ScrapeFacts store_count;
  std::vector<std::unique_ptr<tcp::acceptor>> tcp_acceptors;
  std::vector<std::unique_ptr<unix_socket::acceptor>> unix_acceptors;
  std::vector<std::string> unix_paths;

  // Token store: LMDB, or the fleet's registry in PostgreSQL (then `registry`
  // is set). The keys are declared first so they outlive the registry, whose
  // feed thread adds keys until it is joined.
  std::unique_ptr<tokenstore::keyring> keys;
  std::unique_ptr<tokenstore::store_backend> store;
  tokenstore::pg_store* registry = nullptr;
  std::map<std::uint32_t, Endpoint> peers;  // fleet.peers
  CancelForwarding cancel_forwarding;
  std::unique_ptr<tokenstore::token_service> tokens;
  std::unique_ptr<tokenstore::maintenance_thread> maintenance;
  // The token service's writes and registry calls, off the I/O threads.
  // Declared after `tokens` and the contexts: it is destroyed (and its
  // thread joined) before them.
  std::unique_ptr<StoreWorker> store_worker;

  // Logging in.
  std::unique_ptr<ControlPool> control;
  auth::LoginThrottle throttle;
  LoginSlots login_slots;
  AuditLog audit;
  std::mutex userlist_mutex;
  auth::Userlist userlist;
  // What tokengate answers when the upstream asks it to authenticate.
  session::UpstreamAuthMethods upstream_methods;
  // PBKDF2 of SCRAM verifiers runs here, off the I/O threads (one thread:
  // password checks are rare next to queries, and one core stays free).
  std::unique_ptr<auth::VerifierQueue> verifiers;

  // TLS.
  ClientTlsMode tls_mode = ClientTlsMode::allow;
  std::unique_ptr<TlsServerContext> tls;
  std::unique_ptr<UpstreamTlsContext> upstream_tls;

  // POST /sql's upstream connections, and wire sessions' with
  // pool.wire_sessions; destroyed after the gateway that uses it.
  std::unique_ptr<pool::UpstreamPool> http_pool;
  std::unique_ptr<http::Gateway> http_gateway;
  // Owner roles as the catalog showed them to an HTTP request (see kHttpRoleRecheck).
  struct HttpRoleCheck {
    Clock::time_point at;
    session::RoleFacts role;
  };
  std::mutex http_roles_mutex;
  std::unordered_map<std::string, HttpRoleCheck> http_roles;
};

void Server::Impl::audit_login(const std::string& user, const std::string& address, const std::string& app,
                               const std::string& method, const std::string& outcome,
                               const std::string& reason, const std::string& token_name,
                               const std::optional<tokenstore::tid_t>& tid, const std::string& owner) {
  AuditEvent ev;
  ev.event = "login";
  ev.actor = user;
  ev.owner = !owner.empty() ? owner : (method == "token" && outcome == "ok" ? user : "");
  ev.token_name = token_name;
  if (tid) ev.tid = tokenstore::tid_to_hex(*tid);
  ev.client_address = address;
  ev.application_name = app;
  ev.method = method;
  ev.outcome = outcome;
  ev.reason = reason;
  audit.write(ev);
  metrics::global()
      .logins[method == "token" ? 1 : 0][std::size_t(metrics::login_outcome(outcome))]
      .inc();
}

template <typename Acceptor>
asio::awaitable<void> Server::Impl::accept_loop(Acceptor& acceptor, std::string name) {
  Clock::time_point last_report{};
  unsigned unreported = 0;
  for (;;) {
    auto& ctx = next_context();
    auto [ec, sock] = co_await acceptor.async_accept(ctx, use_nothrow);
    if (ec) {
      if (!acceptor.is_open()) co_return;
      // Out of descriptors or a connection reset before accept: keep serving,
      // and say so once per interval, not once per retry.
      ++unreported;
      if (Clock::now() - last_report >= kAcceptReportInterval) {
        if (unreported == 1)
          spdlog::warn("accept on {} failed: {}", name, ec.message());
        else
          spdlog::warn("accept on {} failed {} times in the last {} s: {}", name, unreported,
                       std::chrono::duration_cast<std::chrono::seconds>(kAcceptReportInterval).count(),
                       ec.message());
        last_report = Clock::now();
        unreported = 0;
      }
      asio::steady_timer backoff(co_await asio::this_coro::executor, kAcceptRetry);
      co_await backoff.async_wait(use_nothrow);
      continue;
    }
    std::string peer = name;
    bool local = true;
    if constexpr (std::is_same_v<Acceptor, tcp::acceptor>) {
      error_code ignored;
      sock.set_option(tcp::no_delay(true), ignored);
      auto remote = sock.remote_endpoint(ignored);
      if (!ignored) {
        auto addr = remote.address();
        peer = (addr.is_v6() ? "[" + addr.to_string() + "]" : addr.to_string()) + ":" +
               std::to_string(remote.port());
        local = addr.is_loopback() || (addr.is_v6() && addr.to_v6().is_v4_mapped() &&
                                       asio::ip::make_address_v4(asio::ip::v4_mapped, addr.to_v6()).is_loopback());
      }
    }
    // The accepted socket's type names the io_context's executor; the session
    // works with the any_io_executor socket types (TLS needs tcp::socket).
    using Socket = std::conditional_t<std::is_same_v<Acceptor, tcp::acceptor>, tcp::socket, unix_socket::socket>;
    asio::co_spawn(ctx, session(std::make_unique<SocketStream<Socket>>(Socket(std::move(sock))), std::move(peer), local),
                   [](std::exception_ptr e) {
                     if (!e) return;
                     try {
                       std::rethrow_exception(e);
                     } catch (const std::exception& ex) {
                       spdlog::error("a session ended with an unexpected error: {}", ex.what());
                     }
                   });
  }
}

asio::awaitable<std::tuple<error_code, std::unique_ptr<ByteStream>, std::string>> Server::Impl::connect_upstream(
    Clock::time_point deadline) {
  co_return co_await net::connect_upstream(config.upstream, upstream_tls.get(), deadline);
}

// ---- waiting while the client may hang up ----------------------------------------

// Reads what the client sends while its login is decided (kept for the relay)
// and returns when it hangs up; never returns while it stays (the caller
// races it against the work).
asio::awaitable<bool> Server::Impl::client_stays(LoginContext& ctx) {
  // A plain socket is watched by waiting for it to turn readable: that wait
  // can be cancelled without losing a byte.
  const bool plain = dynamic_cast<SocketStream<tcp::socket>*>(ctx.client.get()) != nullptr ||
                     dynamic_cast<SocketStream<unix_socket::socket>*>(ctx.client.get()) != nullptr;
  if (!plain) {
    // A TLS record or a WebSocket frame may be half read when the work ends
    // first, and cancelling that read would break the stream: the kernel
    // socket under it is looked at instead, without reading, a few times a
    // second. Nothing to look at (an HTTP request): wait until the work is done.
    const int fd = ctx.client ? ctx.client->transport_fd() : -1;
    asio::steady_timer tick(co_await asio::this_coro::executor);
    for (;;) {
      if (fd < 0) tick.expires_at(Clock::time_point::max());
      else tick.expires_after(kHangUpPollInterval);
      if (auto [ec] = co_await tick.async_wait(use_nothrow); ec) co_return false;  // the work is done
      if (peer_hung_up(fd)) co_return false;
    }
  }
  for (;;) {
    if (auto ec = co_await ctx.client->wait_readable(); ec) co_return false;
    auto room = ctx.in.prepare();
    if (room.empty()) {
      // A client that pipelines this much before it is logged in is not
      // waiting for an answer: treat it as gone.
      co_return false;
    }
    auto [ec, n] = co_await ctx.client->read_some(asio::buffer(room.data(), room.size()));
    if (ec) co_return false;
    ctx.in.commit(n);
  }
}

// `work` raced against the client hanging up: index 0 holds work's result,
// index 1 means the client left first (work is then cancelled). Not a
// coroutine itself: GCC 12 destroys by-value parameters of a coroutine
// twice when it is called inside a co_await expression.
template <typename T>
asio::awaitable<std::variant<T, bool>> Server::Impl::unless_client_leaves(LoginContext& ctx, asio::awaitable<T> work) {
  return std::move(work) || client_stays(ctx);
}

// Waits until `until`; false when the client hung up meanwhile.
asio::awaitable<bool> Server::Impl::wait_unless_client_leaves(LoginContext& ctx, Clock::time_point until) {
  if (until <= Clock::now()) co_return true;
  asio::steady_timer timer(co_await asio::this_coro::executor, until);
  auto r = co_await (timer.async_wait(use_nothrow) || client_stays(ctx));
  co_return r.index() == 0;
}

// ---- phase 1: the startup packet and the password -------------------------------

asio::awaitable<std::optional<session::ClientHandshake::LoggedIn>> Server::Impl::handshake_phase(
    LoginContext& ctx, bool peer_is_local) {
  using session::ClientHandshake;
  const bool is_tcp = dynamic_cast<SocketStream<tcp::socket>*>(ctx.client.get()) != nullptr;
  ClientHandshake handshake(ClientHandshake::Options{
      .tls_available = is_tcp && tls != nullptr && tls_mode != ClientTlsMode::disable,
      .require_tls = is_tcp && tls_mode == ClientTlsMode::require,
      .refuse_plaintext_password = is_tcp && !peer_is_local && !config.allow_plaintext_passwords,
  });
  session::HandshakeMachine machine(handshake);
  for (;;) {
    auto r = co_await drive(*ctx.client, ctx.in, machine);
    if (r.end == DriveResult::End::io_error) co_return std::nullopt;
    auto& action = machine.action();
    if (std::holds_alternative<ClientHandshake::StartTls>(action)) {
      // The 'S' is written; the TLS handshake follows on the same socket.
      auto& plain = static_cast<SocketStream<tcp::socket>&>(*ctx.client);
      tcp::socket raw = std::move(plain.socket());
      auto result = co_await accept_tls(*tls, std::move(raw), std::min(ctx.auth_deadline, ctx.client_deadline));
      if (result.ec) {
        spdlog::info("TLS handshake with {} failed: {} {}", ctx.peer, result.ec.message(), result.detail);
        ctx.set_client(nullptr);
        ctx.client.reset();
        co_return std::nullopt;
      }
      ctx.client = std::move(result.stream);
      ctx.set_client(ctx.client.get());
      ctx.tls = true;
      if (ctx.gauge) ctx.gauge->set_tls();
      handshake.tls_established();
      continue;
    }
    if (auto* reject = std::get_if<ClientHandshake::Reject>(&action)) {
      // Its bytes were written by drive().
      metrics::global().refusals[std::size_t(metrics::Refusal::startup)].inc();
      spdlog::info("rejected connection from {}: {}", ctx.peer, log_text(reject->reason));
      co_return std::nullopt;
    }
    if (auto* cancel = std::get_if<ClientHandshake::Cancel>(&action)) {
      co_await forward_cancel(cancel->request);
      co_return std::nullopt;
    }
    if (auto* closed = std::get_if<ClientHandshake::Closed>(&action)) {
      if (!closed->reason.empty()) spdlog::debug("closed connection from {}: {}", ctx.peer, closed->reason);
      co_return std::nullopt;
    }
    if (auto* in = std::get_if<ClientHandshake::LoggedIn>(&action)) co_return std::move(*in);
    co_return std::nullopt;  // not reached: drive() stops only on the actions above
  }
}

// ---- phase 2: who is it? --------------------------------------------------------

asio::awaitable<LoginDecision> Server::Impl::decide_login(LoginContext& ctx, const session::StartupParameters& sp,
                                                          const SecretString& password) {
  LoginDecision d;
  d.method = session::is_token_form(password.view()) ? "token" : "password";
  // The throttle first, before anything is verified: past the limit the
  // attempt waits for its turn or is refused unverified.
  auto admission = throttle.admit(sp.user, ctx.address, Clock::now(), ctx.auth_deadline);
  if (admission.kind == auth::LoginThrottle::Admission::Kind::refuse) {
    metrics::global().refusals[std::size_t(metrics::Refusal::throttle_refused)].inc();
    auto r = session::wrong_password(sp.user, "too many failed logins: refused without checking");
    r.counts_as_failure = false;  // nothing was verified
    d.refusal = std::move(r);
    co_return d;
  }
  if (admission.kind == auth::LoginThrottle::Admission::Kind::wait) {
    metrics::global().refusals[std::size_t(metrics::Refusal::throttle_delayed)].inc();
    if (!co_await wait_unless_client_leaves(ctx, admission.at)) {
      d.refusal = client_hung_up("while waiting for its turn");
      co_return d;
    }
  }

  if (d.method == "token") {
    co_await decide_token(ctx, sp, password, d);
  } else if (config.upstream_auth == Config::UpstreamAuth::password) {
    // The upstream checks the password; its answer reaches the client as is.
    d.upstream_decides = true;
    d.upstream_password = password.copy();
  } else {
    co_await decide_password(ctx, sp, password, d);
  }
  co_return d;
}

// Token path: the store's verdict, then the owner role as it is now.
asio::awaitable<void> Server::Impl::decide_token(LoginContext& ctx, const session::StartupParameters& sp,
                                                 const SecretString& token, LoginDecision& d) {
  if (!tokens) {
    auto r = session::wrong_password(sp.user, "token store unavailable");
    r.outcome = "error";
    r.counts_as_failure = false;
    d.refusal = std::move(r);
    co_return;
  }
  const auto now = unix_now();
  auto vr = tokens->verify(token.view(), sp.user, now);
  // Past the signature check, the token is known: the audit log names it.
  const bool identified =
      vr.status != tokenstore::verify_status::bad_format && vr.status != tokenstore::verify_status::bad_alg &&
      vr.status != tokenstore::verify_status::unknown_kid && vr.status != tokenstore::verify_status::bad_signature;
  if (identified) {
    d.tid = vr.tid;
    d.token_name = vr.name;
    d.token_owner = vr.owner;
  }
  if (auto refused = session::judge_token(sp.user, vr, live()->max_staleness.count())) {
    d.refusal = std::move(*refused);
    co_return;
  }

  // The role must still be the one the token was issued to, and may log in.
  if (!control) {
    d.refusal = session::cannot_check("tokengate could not check the token's role with the upstream server",
                                      "no control connection");
    co_return;
  }
  std::optional<session::RoleFacts> facts;
  bool known = false;  // facts come from a check recent enough (HTTP requests only)
  if (ctx.role_recheck.count() > 0) {
    std::lock_guard lock(http_roles_mutex);
    auto it = http_roles.find(sp.user);
    if (it != http_roles.end() && Clock::now() - it->second.at < ctx.role_recheck) {
      facts = it->second.role;
      known = true;
    }
  }
  if (!known) {
    std::vector<session::QueryParam> params;  // no braced list: GCC 12 breaks those in coroutines
    params.emplace_back(sp.user);
    auto raced = co_await unless_client_leaves(ctx, control->query(session::kRoleFactsQuery, std::move(params)));
    if (raced.index() != 0) {
      d.refusal = client_hung_up("during the login");
      co_return;
    }
    const auto& answer = std::get<0>(raced);
    session::RoleFactsAnswer role;
    if (answer)
      role = session::role_facts_from(*answer);
    else
      role.error = "role look-up failed: " + answer.error();
    if (!role.error.empty()) {
      d.refusal = session::cannot_check("tokengate could not check the token's role with the upstream server",
                                        role.error);
      co_return;
    }
    facts = role.facts;
    if (ctx.role_recheck.count() > 0 && facts) {
      std::lock_guard lock(http_roles_mutex);
      if (http_roles.size() >= kHttpRoleChecksMax) http_roles.clear();
      HttpRoleCheck check;
      check.at = Clock::now();
      check.role = *facts;
      http_roles[sp.user] = check;
    }
  }
  auto verdict = session::judge_token_role(sp.user, vr.owner_oid, facts, now);
  if (verdict.refusal) {
    d.refusal = std::move(verdict.refusal);
    co_return;
  }
  if (verdict.bind_oid) {
    // A write (and an fsync, or a registry round trip): on the store worker.
    auto bound = co_await bind_owner_oid_on(*store_worker, *tokens, vr.tid, facts->oid);
    if (!bound) {
      session::LoginRefusal busy;
      protocol::ErrorResponse::make("FATAL", kStoreBusySqlstate, kStoreBusyMessage).serialize(busy.to_client);
      busy.outcome = "error";
      busy.reason = "the token store's queue is full";
      busy.counts_as_failure = false;
      d.refusal = std::move(busy);
      co_return;
    }
    if (!*bound) {
      d.refusal = session::wrong_password(sp.user, "the token could not be bound to its owner role");
      co_return;
    }
  }
  if (config.upstream_auth == Config::UpstreamAuth::password) {
    std::lock_guard lock(userlist_mutex);
    auto pw = userlist.password_for(sp.user);
    if (!pw) {
      d.refusal = session::no_upstream_password(sp.user, userlist.why_no_password(sp.user));
      co_return;
    }
    d.upstream_password = SecretString::take(*pw);
  }
  d.token_expires_at = vr.expires_at;
  d.notice = session::expiry_notice(vr, now, live()->expiry_warning.count());
}

// Password path, `upstream.auth = trust`: tokengate checks the verifier.
asio::awaitable<void> Server::Impl::decide_password(LoginContext& ctx, const session::StartupParameters& sp,
                                                    const SecretString& password, LoginDecision& d) {
  if (!control) {
    d.refusal = session::cannot_check("tokengate cannot check passwords: no control connection",
                                      "no control connection");
    co_return;
  }
  auto raced = co_await unless_client_leaves(ctx, control->login_verifier(sp.user));
  if (raced.index() != 0) {
    d.refusal = client_hung_up("during the login");
    co_return;
  }
  const auto& lv = std::get<0>(raced);
  if (!lv) {
    d.refusal = session::cannot_check("tokengate could not check the password with the upstream server",
                                      lv.error());
    co_return;
  }
  std::optional<session::PasswordFacts> facts;
  if (const auto& v = *lv) facts = session::PasswordFacts{v->verifier, v->valid_until, v->can_login};
  auto plan = session::plan_password_check(facts);
  const std::string verifier = plan.dummy ? std::string() : std::string(plan.verifier);
  auto checked = co_await unless_client_leaves(ctx, verify_off_thread(sp.user, verifier, password));
  if (checked.index() != 0) {
    d.refusal = client_hung_up("during the login");
    co_return;
  }
  const auto& check = std::get<0>(checked);
  if (!check) {
    d.refusal = queue_full();
    co_return;
  }
  if (auto refused = session::judge_password(sp.user, facts, *check, unix_now(), live()->max_scram_iterations))
    d.refusal = std::move(*refused);
}

// One password check on the verification queue: nullopt when the queue is
// full. If the session stops waiting (its client hung up), the check is
// skipped unless it already started.
asio::awaitable<std::optional<auth::VerifierCheck>> Server::Impl::verify_off_thread(const std::string& user,
                                                                                      const std::string& verifier,
                                                                                      const SecretString& password) {
  auto exec = co_await asio::this_coro::executor;
  auto job = std::make_shared<VerifyJob>(exec);
  job->user = user;
  job->verifier = verifier;
  job->password = password.copy();
  job->max_iterations = live()->max_scram_iterations;
  const bool queued = verifiers->submit(user, [job, exec](bool stopping) {
    // An exception must not leave the verification thread (it would end the
    // process): the login is then refused, unchecked.
    // A check whose client hung up while it waited is not run (and counted,
    // so that operators, and the tests, see the work that was spared).
    const bool wanted = !stopping && !job->abandoned.load();
    if (!stopping && !wanted) metrics::global().password_checks_skipped.inc();
    if (wanted) try {
        metrics::global().password_checks_run.inc();
        if (job->verifier.empty()) {
          auth::dummy_verifier_check(job->user, job->password.view());
          job->result = auth::VerifierCheck::mismatch;
        } else {
          job->result = auth::check_password_verifier(job->verifier, job->user, job->password.view(),
                                                      job->max_iterations);
        }
      } catch (const std::exception& e) {
        spdlog::error("password check of \"{}\" failed: {}", log_name(job->user), log_text(e.what()));
        job->result = auth::VerifierCheck::unsupported;
      }
    job->password.wipe();
    asio::post(exec, [job] { job->done.cancel(); });
  });
  if (!queued) co_return std::nullopt;
  struct Abandon {
    VerifyJob& j;
    ~Abandon() { j.abandoned = true; }  // also when this coroutine is cancelled mid-wait
  } abandon{*job};
  co_await job->done.async_wait(use_nothrow);
  // A queue that stopped (shutdown) ran nothing: the password is not checked.
  co_return job->result ? job->result : std::optional<auth::VerifierCheck>(auth::VerifierCheck::unsupported);
}

// A refused login's bookkeeping: throttle, log, audit. Returns how long to
// wait before answering (a failure over the throttle's limit).
std::chrono::milliseconds Server::Impl::record_refusal(LoginContext& ctx, const session::StartupParameters& sp,
                                                       LoginDecision& d) {
  auto& r = *d.refusal;
  if (r.to_client.empty()) {
    // The client hung up before it was answered: nothing was decided.
    spdlog::debug("login of \"{}\" from {} abandoned: {}", log_name(sp.user), ctx.peer, r.reason);
    return std::chrono::milliseconds(0);
  }
  std::chrono::milliseconds delay{0};
  if (r.counts_as_failure) delay = throttle.record_failure(sp.user, ctx.address, Clock::now());
  spdlog::info("login of \"{}\" from {} refused ({}): {}", log_name(sp.user), ctx.peer, d.method, log_text(r.reason));
  audit_login(sp.user, ctx.address, sp.application_name(), d.method, r.outcome, r.reason, d.token_name, d.tid,
              d.token_owner);
  return delay;
}

// A refused wire login: the bookkeeping, then the answer.
asio::awaitable<void> Server::Impl::refuse(LoginContext& ctx, const session::StartupParameters& sp,
                                           LoginDecision& d) {
  const auto delay = record_refusal(ctx, sp, d);
  if (d.refusal->to_client.empty()) co_return;  // the client is gone
  if (delay.count() > 0 && !co_await wait_unless_client_leaves(ctx, Clock::now() + delay)) co_return;
  co_await ctx.client->write(asio::buffer(d.refusal->to_client));
}

// ---- phase 3: the upstream login ----------------------------------------------------

asio::awaitable<std::optional<UpstreamSession>> Server::Impl::login_upstream(
    LoginContext& ctx, const session::StartupParameters& sp, LoginDecision& d,
    const protocol::BackendKeyData& client_key) {
  auto [cec, upstream, cdetail] = co_await connect_upstream(ctx.auth_deadline);
  if (cec) {
    spdlog::error("cannot connect to upstream {} for user \"{}\" from {}: {} {}", config.upstream.to_string(),
                  log_name(sp.user), ctx.peer, cec.message(), cdetail);
    co_await ctx.client->write(asio::buffer(fatal("08006", "tokengate could not connect to the upstream server")));
    co_return std::nullopt;
  }
  ctx.cut->upstream = upstream.get();
  metrics::global().upstream_connections_total.inc();
  struct Forget {
    LoginCutoff& cut;
    ~Forget() { cut.upstream = nullptr; }
  } forget{*ctx.cut};
  // Identity is decided once: the upstream sees the role tokengate
  // authenticated and only the parameters it checked.
  session::UpstreamLogin login(sp.for_upstream(sp.user), std::move(d.upstream_password), client_key,
                               upstream_methods);
  protocol::InputBuffer up(kMaxLoginMessageLength + 5);
  session::FramedMachine<session::UpstreamLogin> machine(login, kMaxLoginMessageLength);
  DriveResult r;
  {
    auto first = login.start();
    if (auto [ec, n] = co_await upstream->write(asio::buffer(first)); ec)
      r = DriveResult{DriveResult::End::io_error, ec};
    else
      r = co_await drive(*upstream, up, machine);
  }
  Bytes to_client = machine.take_client_bytes();
  if (machine.finished()) {
    if (!d.notice.empty()) {
      // The expiry warning goes just before the first ReadyForQuery, which
      // is the last message the login produced (always 6 bytes).
      to_client.insert(to_client.end() - 6, d.notice.begin(), d.notice.end());
    }
    UpstreamSession s;
    s.stream = std::move(upstream);
    s.key = login.upstream_key();
    s.tx_status = login.tx_status();
    for (std::size_t at = 0; at < to_client.size();) {
      auto fr = protocol::read_frame(ByteView(to_client).subspan(at), kMaxLoginMessageLength);
      if (fr.status != protocol::FrameStatus::complete) break;
      if (fr.frame.tag == protocol::backend_tag::ParameterStatus) {
        if (auto ps = protocol::ParameterStatus::parse(fr.frame.body)) {
          if (ps->name == "standard_conforming_strings")
            s.standard_conforming_strings = ps->value == "on";
          else if (ps->name == "client_encoding")
            s.client_encoding = ps->value;
        }
      }
      at += fr.frame.size;
    }
    s.to_client = std::move(to_client);
    s.leftover = up.take();
    co_return s;
  }

  std::string reason = login.failure_reason();
  if (r.end == DriveResult::End::io_error || machine.error()) {
    reason = machine.error() ? *machine.error() : "writing to the upstream failed: " + r.ec.message();
    to_client = machine.error() && machine.error()->find("length") != std::string::npos
                    ? fatal("08P01", "invalid message from the upstream server")
                    : fatal("08006", "connection to the upstream server was lost");
  }
  if (d.upstream_decides) {
    // password mode: the upstream judged the password; count and audit it
    // like our own checks, and throttle before passing its answer on.
    const bool bad_password = login.failure_reason().rfind("28P01", 0) == 0;
    audit_login(sp.user, ctx.address, sp.application_name(), "password", bad_password ? "denied" : "error", reason);
    if (bad_password) {
      auto delay = throttle.record_failure(sp.user, ctx.address, Clock::now());
      if (delay.count() > 0 && !co_await wait_unless_client_leaves(ctx, Clock::now() + delay))
        co_return std::nullopt;
    }
  }
  spdlog::info("login of user \"{}\" to database \"{}\" from {} failed upstream: {}", log_name(sp.user),
               log_name(sp.database_or_user()), ctx.peer, log_text(reason));
  if (!to_client.empty()) co_await ctx.client->write(asio::buffer(to_client));
  co_return std::nullopt;
}

// ---- phase 3, pooled: a backend from the pool (pool.wire_sessions) ------------------

// Whether this login takes a pooled backend. Not a password that only the
// upstream can check (password mode): a pooled backend logged in long ago,
// and lending it would skip the check. Not a replication connection, which
// has no session state a reset could clear.
bool Server::Impl::pools_session(const session::StartupParameters& sp, const LoginDecision& d) const {
  return config.pool_wire_sessions && http_pool != nullptr && !d.upstream_decides && sp.replication.empty();
}

// The pool's connection for the role, database and every startup setting the
// client sent (application_name included: a pooled backend keeps the value
// it logged in with as its RESET value, so sessions with different names do
// not share). The client's login ends as PostgreSQL's would, from what the
// pool recorded of that backend (session::pooled_login_answer).
asio::awaitable<std::optional<UpstreamSession>> Server::Impl::login_pooled(
    LoginContext& ctx, const session::StartupParameters& sp, LoginDecision& d,
    const protocol::BackendKeyData& client_key) {
  pool::PoolKey key;
  key.wire = true;
  key.user = sp.user;
  key.database = sp.database_or_user();
  for (auto& kv : sp.for_upstream(sp.user).parameters)
    if (kv.first != "user" && kv.first != "database") key.parameters.push_back(std::move(kv));
  // The pool finds a token owner's password in auth.userlist itself (password mode).
  const std::optional<std::string> no_password;
  pool::AcquireResult acquired = co_await http_pool->acquire(key, no_password);
  if (!acquired.lease) {
    const auto& e = acquired.error;
    spdlog::info("login of user \"{}\" to database \"{}\" from {}: no pooled upstream connection: {} {}",
                 log_name(sp.user), log_name(sp.database_or_user()), ctx.peer, e.sqlstate, log_text(e.message));
    Bytes out;
    if (e.upstream) e.upstream->serialize(out, protocol::backend_tag::ErrorResponse);
    else out = fatal(e.sqlstate, e.message);
    co_await ctx.client->write(asio::buffer(out));
    co_return std::nullopt;
  }
  pool::Lease lease = std::move(acquired.lease);
  if (!co_await lease.adopt()) {
    // A TLS connection opened on another I/O thread cannot move here: it
    // goes back to the pool, and this session logs in on its own.
    lease.release(true, protocol::tx_status::Idle);
    co_return co_await login_upstream(ctx, sp, d, client_key);
  }
  UpstreamSession s;
  s.key = lease.upstream_key();
  s.tx_status = protocol::tx_status::Idle;
  protocol::BackendKeyData shown = client_key;
  shown.process_id = s.key.process_id;
  s.to_client = session::pooled_login_answer(lease.parameters(), shown, d.notice);
  for (const auto& [name, value] : lease.parameters()) {
    if (name == "standard_conforming_strings") s.standard_conforming_strings = value == "on";
    else if (name == "client_encoding") s.client_encoding = value;
  }
  s.leftover = lease.take_leftover();
  spdlog::debug("user \"{}\" from {}: {} upstream backend {}", log_name(sp.user), ctx.peer,
                lease.reused() ? "reusing pooled" : "new pooled", s.key.process_id);
  s.lease = std::move(lease);
  co_return s;
}

// ---- the session -------------------------------------------------------------------

asio::awaitable<void> Server::Impl::session(std::unique_ptr<ByteStream> client, std::string peer,
                                            bool peer_is_local) {
  ++active_sessions;
  struct Count {
    std::atomic<int>& n;
    ~Count() { --n; }
  } count{active_sessions};

  auto exec = co_await asio::this_coro::executor;
  const auto settings = live();
  LoginContext ctx{client, peer, client_address(peer), Clock::now() + settings->auth_timeout};
  // A wire connection (TCP or Unix socket); WebSocket sessions are counted by
  // the gateway, which knows whether their HTTP connection uses TLS.
  std::unique_ptr<metrics::ConnectionGauge> gauge;
  if (dynamic_cast<SocketStream<tcp::socket>*>(client.get()) != nullptr ||
      dynamic_cast<SocketStream<unix_socket::socket>*>(client.get()) != nullptr) {
    gauge = std::make_unique<metrics::ConnectionGauge>(metrics::Listener::wire, false);
    ctx.gauge = gauge.get();
  }

  // Connections still logging in are bounded, in total and per address.
  switch (login_slots.acquire(ctx.address, settings->login_max_connections,
                              settings->login_max_connections_per_address)) {
    case LoginSlots::Outcome::ok:
      break;
    case LoginSlots::Outcome::total:
      metrics::global().refusals[std::size_t(metrics::Refusal::login_limit)].inc();
      spdlog::warn("refused a connection from {}: login.max_connections ({}) are logging in", peer,
                   settings->login_max_connections);
      co_await client->write(asio::buffer(fatal("53300", "sorry, too many clients already")));
      client->close();
      co_return;
    case LoginSlots::Outcome::address:
      metrics::global().refusals[std::size_t(metrics::Refusal::address_limit)].inc();
      spdlog::info("refused a connection from {}: login.max_connections_per_address ({}) are logging in", peer,
                   settings->login_max_connections_per_address);
      co_await client->write(asio::buffer(fatal("53300", "too many connections from this address are logging in")));
      client->close();
      co_return;
  }
  struct Slot {
    LoginSlots& slots;
    std::string address;
    bool held = true;
    void release() {
      if (held) slots.release(address);
      held = false;
    }
    ~Slot() { release(); }
  } slot{login_slots, ctx.address};

  // The client's part of the login (startup packet, password) must arrive
  // within login.client_timeout, the whole login within auth_timeout; each
  // timer closes what the login is waiting on.
  ctx.set_client(client.get());
  struct Leave {
    LoginContext& ctx;
    ~Leave() {
      *ctx.cut = LoginCutoff{};
      *ctx.client_cut = LoginCutoff{};
    }
  } leave{ctx};
  asio::steady_timer auth_timer(exec), client_timer(exec);
  arm(auth_timer, ctx.auth_deadline, ctx.cut);
  ctx.client_deadline = std::min(ctx.auth_deadline, Clock::now() + settings->login_client_timeout);
  arm(client_timer, ctx.client_deadline, ctx.client_cut);

  // Phase 1: the startup packet and the password.
  auto request = co_await handshake_phase(ctx, peer_is_local);
  *ctx.client_cut = LoginCutoff{};
  client_timer.cancel();
  if (!request) co_return;
  const session::StartupParameters& sp = request->startup;

  // Phase 2: who is it?
  LoginDecision decision = co_await decide_login(ctx, sp, request->password);
  if (decision.refusal) {
    co_await refuse(ctx, sp, decision);
    co_return;
  }
  if (!decision.upstream_decides) {
    throttle.record_success(sp.user, ctx.address, Clock::now());
    audit_login(sp.user, ctx.address, sp.application_name(), decision.method, "ok", "", decision.token_name,
                decision.tid);
  }
  // A password is not needed any more (the upstream one is in `decision`); a
  // token is, for the check after registration.
  if (!decision.tid) request->password.wipe();

  // Phase 3: the upstream login. The client's key is the backend's real
  // process ID, known after the login, with a secret of tokengate's own.
  protocol::BackendKeyData client_key{0, cancels.issue_secret()};
  std::optional<UpstreamSession> up;
  if (pools_session(sp, decision)) up = co_await login_pooled(ctx, sp, decision, client_key);
  else up = co_await login_upstream(ctx, sp, decision, client_key);
  if (!up) co_return;
  if (decision.upstream_decides) {
    throttle.record_success(sp.user, ctx.address, Clock::now());
    audit_login(sp.user, ctx.address, sp.application_name(), "password", "ok", "");
  }
  client_key.process_id = up->key.process_id;
  cancels.bind(client_key, {&config.upstream, up->key});
  struct Release {  // until the relay phase takes the key over
    CancelRegistry& r;
    protocol::BackendKeyData k, upstream;
    bool armed = true;
    ~Release() {
      if (armed) r.release(k, upstream);
    }
  } release{cancels, client_key, up->key};

  // Phase 4: the session is registered (so that a revocation, an expiry or
  // a shutdown reaches it) before a token is checked once more: a revocation
  // is seen either by that check or by the registry.
  auto ending = std::make_shared<SessionEnd>();
  auto stats = std::make_shared<admin::SessionStats>();
  stats->backend_pid = up->key.process_id;
  stats->client_address = ctx.address;
  stats->user = sp.user;
  stats->database = sp.database_or_user();
  stats->application_name = sp.application_name();
  stats->login_method = decision.method;
  stats->token_name = decision.tid ? decision.token_name : std::string();
  stats->tls = ctx.tls;
  stats->listener = gauge ? "wire" : "websocket";
  stats->started_at = unix_now();
  struct Unregister {
    SessionRegistry& registry;
    SessionRegistry::Handle handle;
    bool armed = true;
    ~Unregister() {
      if (armed) registry.remove(handle);
    }
  } unregister{sessions, sessions.add(
                             decision.tid, decision.token_expires_at,
                             [exec, ending](const protocol::ErrorResponse& why, bool when_idle) {
                               asio::post(exec, [ending, why, when_idle] {
                                 if (ending->relay && when_idle)
                                   ending->relay->end_when_idle(why);
                                 else if (ending->relay)
                                   ending->relay->end(why);
                                 else if (when_idle)
                                   ending->pending_when_idle = why;
                                 else if (!ending->pending)
                                   ending->pending = why;
                               });
                             },
                             stats)};
  if (decision.tid) {
    auto again = tokens->verify(request->password.view(), sp.user, unix_now());
    request->password.wipe();
    if (again.status != tokenstore::verify_status::ok) {
      decision.refusal = session::judge_token(sp.user, again, live()->max_staleness.count());
      if (!decision.refusal) decision.refusal = session::wrong_password(sp.user, "token no longer valid");
      decision.refusal->reason += " (during login)";
      decision.refusal->counts_as_failure = false;
      co_await refuse(ctx, sp, decision);
      co_return;
    }
  }
  if (auto [ec, n] = co_await client->write(asio::buffer(up->to_client)); ec) co_return;
  if (ending->pending) {
    Bytes out;
    ending->pending->serialize(out);
    co_await client->write(asio::buffer(out));
    co_return;
  }
  auth_timer.cancel();
  *ctx.cut = LoginCutoff{};
  slot.release();  // no longer logging in
  spdlog::info("user \"{}\" logged in to database \"{}\" from {}{}", log_name(sp.user),
               log_name(sp.database_or_user()), peer, decision.tid ? " with an API token" : "");

  // Whatever the upstream sent after ReadyForQuery (it should be nothing).
  if (!up->leftover.empty()) {
    if (auto [ec, n] = co_await client->write(asio::buffer(up->leftover)); ec) co_return;
  }
  std::unique_ptr<ByteStream> upstream = std::move(up->stream);
  Bytes in = ctx.in.take();  // anything the client sent after its password is relayed

  // ---- relay ---------------------------------------------------------------
  SessionInfo info;
  info.user = sp.user;
  info.database = sp.database_or_user();
  info.application_name = sp.application_name();
  info.peer = peer;
  info.tx_status = up->tx_status;
  info.via_token = decision.tid.has_value();
  info.tid = decision.tid;
  info.upstream = &config.upstream;
  info.upstream_key = up->key;
  info.standard_conforming_strings = up->standard_conforming_strings;
  info.client_encoding = std::move(up->client_encoding);
  info.stats = std::move(stats);
  // Only a plain socket can go back to the pool after the relay (a TLS
  // stream is relayed by coroutines that cannot hand it back): for any other,
  // the relay passes the Terminate on and the backend exits as usual.
  info.pooled_upstream =
      up->lease && thread_reactor() >= 0 &&
      (dynamic_cast<SocketStream<tcp::socket>*>(&up->lease.stream()) != nullptr ||
       dynamic_cast<SocketStream<unix_socket::socket>*>(&up->lease.stream()) != nullptr);
  release.armed = false;
  unregister.armed = false;
  metrics::global().login_seconds[decision.tid ? 1 : 0].observe(Clock::now() - ctx.accepted);
  start_relay(exec, std::move(client), std::move(upstream), std::move(info), client_key, unregister.handle,
              std::move(ending), std::move(in), std::move(gauge),
              std::move(up->lease));
}

// The relay phase of a logged-in session. It runs outside the login's
// coroutine, whose frame (the handshake, the login's buffers and strings) ends
// here: an idle session costs only what the relay keeps.
void Server::Impl::start_relay(asio::any_io_executor exec, std::unique_ptr<ByteStream> client,
                               std::unique_ptr<ByteStream> upstream, SessionInfo info,
                               protocol::BackendKeyData client_key, SessionRegistry::Handle handle,
                               std::shared_ptr<SessionEnd> ending, Bytes pending,
                               std::unique_ptr<metrics::ConnectionGauge> gauge, pool::Lease lease) {
  // What a live session owns; it goes when the relay is done, upstream
  // backend included (or given back to the pool), and takes the session out
  // of the registries.
  struct Live {
    Live(Impl& i, asio::any_io_executor e, std::unique_ptr<ByteStream> c, std::unique_ptr<ByteStream> u,
         pool::Lease l, protocol::BackendKeyData ck, protocol::BackendKeyData uk)
        : impl(i), exec(std::move(e)), client(std::move(c)), upstream(std::move(u)), lease(std::move(l)),
          client_key(ck), upstream_key(uk) {}
    Impl& impl;
    asio::any_io_executor exec;
    std::unique_ptr<ByteStream> client, upstream;
    pool::Lease lease;  // a pooled backend: `upstream` is null
    protocol::BackendKeyData client_key, upstream_key;
    std::unique_ptr<Relay> relay;
    SessionRegistry::Handle handle = 0;
    std::shared_ptr<SessionEnd> ending;
    std::unique_ptr<metrics::ConnectionGauge> gauge;  // the client connection, until it closes
    ByteStream& upstream_stream() { return upstream ? *upstream : lease.stream(); }
    ~Live() {
      if (ending) ending->relay = nullptr;
      if (handle != 0) impl.sessions.remove(handle);
      // A key a CancelRequest used may still have a cancel on its way to the
      // backend: such a backend serves nobody else.
      const bool cancelled = impl.cancels.release(client_key, upstream_key);
      if (lease) {
        const bool reuse = relay && relay->upstream_kept() && !cancelled;
        if (relay) lease.update_parameters(relay->parameter_changes());
        relay.reset();
        if (!reuse) lease.stream().close();
        // Reset (DISCARD ALL) before anyone else gets it, or closed.
        lease.release(reuse, protocol::tx_status::Idle);
      } else {
        relay.reset();
        upstream->close();
      }
      client->close();
      --impl.relaying_sessions;  // only logged-in sessions hold up a SIGTERM drain
      --impl.active_sessions;
    }
  };
  ++relaying_sessions;
  ++active_sessions;  // the login's coroutine, which counted it, ends now
  auto live = std::make_shared<Live>(*this, exec, std::move(client), std::move(upstream), std::move(lease), client_key,
                                    info.upstream_key);
  live->relay =
      std::make_unique<Relay>(exec, *live->client, live->upstream_stream(), current_relay_services(), std::move(info));
  // Sessions end on revocation, expiry (if so set) and shutdown: the entry
  // made at login now reaches this relay.
  live->handle = handle;
  live->ending = ending;
  live->gauge = std::move(gauge);
  ending->relay = live->relay.get();
  live->relay->set_registry_handle(handle);
  Relay& relay = *live->relay;
  relay.start(std::move(pending), [live]() mutable { live.reset(); });
  if (ending->pending) relay.end(*ending->pending);  // told to end while its login finished
  else if (ending->pending_when_idle) relay.end_when_idle(*ending->pending_when_idle);
}

asio::awaitable<void> Server::Impl::forward_cancel(protocol::CancelRequest request) {
  auto target = cancels.find({request.process_id, request.secret_key});
  if (!target) {
    co_await forward_cancel_to_peer(request);
    co_return;
  }
  // Cancel requests go in the clear, as libpq sends them (PostgreSQL accepts
  // a CancelRequest without TLS even when it requires TLS for sessions).
  auto [ec, connected] = co_await connect_to(*target->upstream);
  if (ec) {
    spdlog::warn("cannot forward cancel request to {}: {}", target->upstream->to_string(), ec.message());
    co_return;
  }
  std::shared_ptr<ByteStream> upstream = std::move(connected);
  Bytes out;
  protocol::CancelRequest{target->upstream_key.process_id, target->upstream_key.secret_key}.serialize(out);
  co_await upstream->write(asio::buffer(out));
  // PostgreSQL closes once it has read the request; wait for that (bounded)
  // so the request is not lost to an early close.
  asio::steady_timer timer(co_await asio::this_coro::executor, kCancelTimeout);
  close_when_expired(timer, upstream);
  std::uint8_t sink[64];
  while (true) {
    auto [rec, n] = co_await upstream->read_some(asio::buffer(sink));
    if (rec) break;
  }
  timer.cancel();
}

// A key this instance did not issue but that names another instance of the
// fleet goes to that instance, which handles it as its own CancelRequest (or
// drops it if the key is unknown there too). Anything else is dropped.
asio::awaitable<void> Server::Impl::forward_cancel_to_peer(protocol::CancelRequest request) {
  const protocol::BackendKeyData key{request.process_id, request.secret_key};
  const std::uint32_t owner = cancels.instance_of(key);
  if (registry == nullptr || owner == 0 || owner == registry->instance_id()) {
    spdlog::debug("ignored a cancel request with an unknown key");
    co_return;
  }
  std::optional<Endpoint> peer;
  if (auto it = peers.find(owner); it != peers.end()) peer = it->second;
  else if (auto addr = registry->peer_address(owner)) peer = parse_endpoint(*addr, 6432);
  else if (auto found = co_await find_peer_on(*store_worker, *registry, owner); found && *found)
    peer = parse_endpoint(**found, 6432);  // started after our last heartbeat
  if (!peer || !cancel_forwarding.begin(key)) {
    spdlog::debug("ignored a cancel request for instance {}", owner);
    co_return;
  }
  struct Done {
    CancelForwarding& f;
    ~Done() { f.done(); }
  } done{cancel_forwarding};
  auto [ec, connected] = co_await connect_to(*peer);
  if (ec) {
    spdlog::warn("cannot forward a cancel request to instance {} at {}: {}", owner, peer->to_string(), ec.message());
    co_return;
  }
  std::shared_ptr<ByteStream> stream = std::move(connected);
  Bytes out;
  request.serialize(out);
  co_await stream->write(asio::buffer(out));
  // The peer closes once it has handled the request; wait for that (bounded).
  asio::steady_timer timer(co_await asio::this_coro::executor, kCancelTimeout);
  close_when_expired(timer, stream);
  std::uint8_t sink[64];
  while (true) {
    auto [rec, n] = co_await stream->read_some(asio::buffer(sink));
    if (rec) break;
  }
  timer.cancel();
  spdlog::debug("forwarded a cancel request to instance {}", owner);
}

// Ends sessions of tokens revoked by any process (the CLI included) and,
// with expiry_ends_sessions, of tokens that expired.
asio::awaitable<void> Server::Impl::watch_tokens() {
  asio::steady_timer tick(co_await asio::this_coro::executor);
  std::uint64_t seq = tokens->revocation_seq();
  const auto revoked = protocol::ErrorResponse::make("FATAL", "57P01", "API token revoked");
  const auto expired = protocol::ErrorResponse::make("FATAL", "57P01", "API token expired");
  while (!stopping) {
    tick.expires_after(kRevocationPoll);
    if (auto [ec] = co_await tick.async_wait(use_nothrow); ec) co_return;
    try {
      auto r = tokens->revocations_since(seq);
      seq = r.seq;
      if (live()->revoke_ends_sessions && !r.tids.empty()) {
        auto n = sessions.end_tokens(r.tids, revoked);
        metrics::global().sessions_ended_by_revocation.inc(n);
        if (n) spdlog::info("ended {} session(s) of revoked tokens", n);
      }
      if (live()->expiry_ends_sessions) {
        auto n = sessions.end_expired(unix_now(), expired);
        metrics::global().sessions_ended_by_expiry.inc(n);
        if (n) spdlog::info("ended {} session(s) of expired tokens", n);
      }
    } catch (const std::exception& e) {
      spdlog::error("cannot read revocations from the token store: {}", e.what());
    }
  }
}

asio::awaitable<void> Server::Impl::drain_then_stop() {
  auto deadline = Clock::now() + config.shutdown_timeout;
  draining = true;
  // Sessions idle outside a transaction block end at once (their clients
  // reconnect, to another instance); the others once they are, or at the
  // deadline. PostgreSQL's words for a shutdown.
  sessions.end_all_when_idle(
      protocol::ErrorResponse::make("FATAL", "57P01", "terminating connection due to administrator command"));
  asio::steady_timer tick(co_await asio::this_coro::executor);
  while (relaying_sessions.load() > 0 && Clock::now() < deadline) {
    tick.expires_after(100ms);
    co_await tick.async_wait(use_nothrow);
  }
  if (relaying_sessions.load() > 0) {
    // As PostgreSQL's fast shutdown: what they run upstream is cancelled and
    // their backends end, so nothing they sent commits after tokengate stops.
    spdlog::warn("ending {} session(s) still open after {} s", relaying_sessions.load(),
                 config.shutdown_timeout.count());
    sessions.end_all(
        protocol::ErrorResponse::make("FATAL", "57P01", "terminating connection due to administrator command"));
    const auto give_up = Clock::now() + kSessionsEndTimeout;
    while (relaying_sessions.load() > 0 && Clock::now() < give_up) {
      tick.expires_after(50ms);
      co_await tick.async_wait(use_nothrow);
    }
  }
  stop_all();
}

std::function<void(std::exception_ptr)> Server::Impl::stop_on_exception(std::string what) {
  return [this, what = std::move(what)](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      spdlog::critical("{} failed: {}; stopping", what, x.what());
    } catch (...) {
      spdlog::critical("{} failed with an unknown exception; stopping", what);
    }
    failed = true;
    stop_all();
  };
}

void Server::Impl::stop_all() {
  stopping = true;
  for (auto& c : contexts) c->stop();
}

// SIGHUP: the configuration file, certificates, the userlist and the audit
// file are read again.
void Server::Impl::reload() {
  if (reloader) {
    auto r = reloader();
    if (auto* e = std::get_if<ConfigError>(&r))
      spdlog::error("configuration not reloaded, the running one stays: {}", e->message);
    else
      apply_reload(std::get<ConfigReload>(r));
  }
  if (tls) {
    if (auto err = tls->reload()) spdlog::error("TLS certificate reload failed, keeping the old one: {}", *err);
    else spdlog::info("reloaded TLS certificate {}", tls->cert_file());
  }
  if (upstream_tls) {
    if (auto err = upstream_tls->reload()) spdlog::error("upstream TLS reload failed: {}", *err);
  }
  if (!config.userlist.empty()) {
    auto loaded = auth::Userlist::load(config.userlist);
    if (auto* err = std::get_if<auth::UserlistError>(&loaded)) {
      spdlog::error("userlist reload failed, keeping the old one: {}", err->message);
    } else {
      std::lock_guard lock(userlist_mutex);
      userlist = std::move(std::get<auth::Userlist>(loaded));
      spdlog::info("reloaded userlist {} ({} users)", config.userlist, userlist.size());
    }
  }
  if (auto err = audit.reopen()) spdlog::error("cannot reopen the audit log: {}", err->message);
}

// A new configuration in force: the live settings are read per login or per
// session from the snapshot; the services that keep their own copy are told.
// Runs on the signal thread (contexts[0]), as every reload.
void Server::Impl::apply_reload(const ConfigReload& r) {
  for (const auto& key : r.needs_restart)
    spdlog::warn("configuration: {} changed, but takes effect only at a restart; the old value stays", key);
  if (r.changed.empty()) {
    spdlog::info("configuration reloaded: no setting that can change live changed");
    return;
  }
  auto next = std::make_shared<const Config>(r.config);
  const auto before = live();
  if (next->log_level != before->log_level) spdlog::set_level(spdlog::level::from_str(next->log_level));
  if (next->max_failed_logins != before->max_failed_logins) {
    auth::ThrottleSettings ts;
    ts.max_failed_logins = next->max_failed_logins;
    throttle.reconfigure(ts);
  }
  if (next->admin_role != before->admin_role && control) control->set_admin_role(next->admin_role);
  if (next->relay_memory_limit != before->relay_memory_limit) relay_memory.set_limit(next->relay_memory_limit);
  if (next->relay_max_inspected_message != before->relay_max_inspected_message ||
      next->relay_session_memory_limit != before->relay_session_memory_limit) {
    RelayServices rs = current_relay_services();
    rs.max_inspected_message = next->relay_max_inspected_message;
    rs.session_memory_limit = next->relay_session_memory_limit;
    relay_services_versions.push_back(rs);
    relay_services_now.store(&relay_services_versions.back(), std::memory_order_release);
  }
  live_config.store(next, std::memory_order_release);
  std::string list;
  for (const auto& key : r.changed) list += (list.empty() ? "" : ", ") + key;
  spdlog::info("configuration reloaded: {} now in force", list);
}

// Opens the token store, TLS contexts, the userlist, the audit log and the
// control pool; false (after logging why) when tokengate must not start.
bool Server::Impl::open_services() {
  namespace fs = std::filesystem;
  try {
    std::error_code ec;
    fs::create_directories(config.data_dir, ec);
    ::chmod(config.data_dir.c_str(), 0700);
    if (config.store_backend == "postgres") {
      peers = parse_peers(config.peers);
      keys = std::make_unique<tokenstore::keyring>(tokenstore::keyring::in_memory_t{});
      auto pg = open_registry(config, *keys);
      registry = pg.get();
      registry->set_session_counter([this] { return std::uint32_t(std::max(0, relaying_sessions.load())); });
      cancels.set_instance(kFleetInstanceBits, registry->instance_id());
      store = std::move(pg);
    } else {
      keys = std::make_unique<tokenstore::keyring>(config.data_dir);
      store = std::make_unique<tokenstore::store>(config.data_dir);
    }
    tokenstore::service_config service_cfg;
    service_cfg.token_sessions_manage_credentials = config.token_sessions_manage_credentials;
    service_cfg.max_tokens_per_user = config.max_tokens_per_user;
    tokens = std::make_unique<tokenstore::token_service>(*store, *keys, service_cfg);
    tokens->on_revoked([this](std::span<const tokenstore::tid_t> tids) {
      if (!live()->revoke_ends_sessions) return;
      // Logged as when the revocation comes from another process (the CLI)
      // and watch_tokens ends the sessions; those already ending are not
      // counted twice.
      auto n = sessions.end_tokens(tids, protocol::ErrorResponse::make("FATAL", "57P01", "API token revoked"));
      metrics::global().sessions_ended_by_revocation.inc(n);
      if (n) spdlog::info("ended {} session(s) of revoked tokens", n);
    });
    maintenance = std::make_unique<tokenstore::maintenance_thread>(*tokens);
    store_worker = std::make_unique<StoreWorker>();
  } catch (const std::exception& e) {
    if (config.store_backend == "postgres")
      spdlog::critical("cannot open the token registry: {}", e.what());
    else
      spdlog::critical("cannot open the token store in {}: {}", config.data_dir, e.what());
    return false;
  }

  std::string err;
  auto mode = parse_client_tls_mode(config.tls_mode, err);
  if (!mode) {
    spdlog::critical("{}", err);
    return false;
  }
  tls_mode = *mode;
  if (auto problem = check_tls_settings(tls_mode, config.tls_cert, config.tls_key); !problem.empty()) {
    spdlog::critical("{}", problem);
    return false;
  }
  if (!config.tls_cert.empty()) {
    tls = TlsServerContext::load(config.tls_cert, config.tls_key, err);
    if (!tls) {
      spdlog::critical("cannot load the TLS certificate: {}", err);
      return false;
    }
  }
  // upstream.sslmode unset: a Unix socket or a loopback address never leaves
  // the host, so `prefer` there; any other host is verified (verify-full,
  // against the system's CAs unless upstream.sslrootcert names others): in
  // trust mode whoever sits between tokengate and the upstream could
  // otherwise read and change every session.
  std::string sslmode = config.upstream_sslmode;
  std::string rootcert = config.upstream_sslrootcert;
  if (sslmode.empty()) {
    sslmode = config.upstream.is_unix() || is_loopback_host(config.upstream.host) ? "prefer" : "verify-full";
    if (sslmode == "verify-full" && rootcert.empty()) rootcert = "system";
    spdlog::info("upstream.sslmode = {} (the default for {})", sslmode,
                 sslmode == "prefer" ? "a local upstream" : "an upstream on another host");
  }
  auto upmode = parse_upstream_sslmode(sslmode, err);
  if (!upmode) {
    spdlog::critical("{}", err);
    return false;
  }
  if (auto problem = check_upstream_tls_settings(*upmode, rootcert); !problem.empty()) {
    spdlog::critical("{}", problem);
    return false;
  }
  if (config.upstream.is_unix() &&
      (*upmode == UpstreamSslMode::require || *upmode == UpstreamSslMode::verify_full))
    spdlog::warn("upstream.sslmode = {} has no effect: the upstream is a Unix socket", sslmode);
  upstream_tls = UpstreamTlsContext::create(*upmode, rootcert, err);
  if (!upstream_tls) {
    spdlog::critical("upstream TLS: {}", err);
    return false;
  }

  std::optional<std::string> control_password;
  if (!config.userlist.empty()) {
    auto loaded = auth::Userlist::load(config.userlist);
    if (auto* e = std::get_if<auth::UserlistError>(&loaded)) {
      spdlog::critical("{}", e->message);
      return false;
    }
    userlist = std::move(std::get<auth::Userlist>(loaded));
  }
  if (config.upstream_auth == Config::UpstreamAuth::password) {
    if (config.userlist.empty()) {
      spdlog::critical("upstream.auth = password needs auth.userlist (passwords for token sessions and the "
                       "control user)");
      return false;
    }
    control_password = userlist.password_for(config.control_user);
    if (!control_password) {
      spdlog::critical("{}", userlist.why_no_password(config.control_user));
      return false;
    }
  }

  if (auto e = audit.open()) {
    spdlog::critical("cannot open the audit log: {}", e->message);
    return false;
  }
  auth::ThrottleSettings ts;
  ts.max_failed_logins = config.max_failed_logins;
  throttle.reconfigure(ts);
  verifiers = std::make_unique<auth::VerifierQueue>(config.max_pending_verifications, 1);

  // What tokengate answers when the upstream asks it to authenticate: in
  // trust mode nothing (it has no password to give), in password mode only
  // SCRAM unless the operator lists more.
  const std::string methods = !config.upstream_require_auth.empty() ? config.upstream_require_auth
                              : config.upstream_auth == Config::UpstreamAuth::trust ? "none"
                                                                                     : "scram-sha-256";
  auto parsed_methods = session::UpstreamAuthMethods::parse(methods, err);
  if (!parsed_methods) {
    spdlog::critical("upstream.require_auth: {}", err.empty() ? "empty list" : err);
    return false;
  }
  upstream_methods = *parsed_methods;
  upstream_methods.max_scram_iterations = config.upstream_max_scram_iterations;

  ControlPoolSettings cs;
  cs.upstream = config.upstream;
  cs.user = config.control_user;
  cs.password = control_password;
  cs.database = config.control_database;
  cs.admin_role = config.admin_role;
  cs.auth_query = config.auth_query;
  cs.tls = upstream_tls.get();
  cs.upstream_methods = upstream_methods;
  control = std::make_unique<ControlPool>(contexts[0]->get_executor(), std::move(cs));

  relay_services = RelayServices{tokens.get(), control.get(), audit.enabled() ? &audit : nullptr, &sessions,
                                 &relay_memory};
  relay_services.store = store_worker.get();
  relay_services.max_inspected_message = config.relay_max_inspected_message;
  relay_services.session_memory_limit = config.relay_session_memory_limit;
  relay_services.token_sessions_manage_credentials = config.token_sessions_manage_credentials;
  relay_services.admin_view = [this](parser_ext::ShowTokengateView::View v) { return admin_view(v); };
  return true;
}

// ---- metrics and SHOW TOKENGATE ------------------------------------------------

// Token counts by state: a walk over every token (see docs/operations.md),
// on the store worker.
metrics::ScrapeFacts Server::Impl::count_tokens() {
  metrics::ScrapeFacts c;
  const auto now = unix_now();
  for (const auto& t : store->list(std::nullopt, now, kCountEveryToken)) {
    if (t.revoked()) ++c.tokens_revoked;
    else if (!t.active(now)) ++c.tokens_expired;
    else {
      ++c.tokens_active;
      if (t.expires_at <= now + kExpiringSoonSeconds) ++c.tokens_expiring_soon;
    }
  }
  c.store_counted = true;
  return c;
}

namespace {
// Server::Impl::count_tokens on the store worker. Not a coroutine: GCC 12
// miscompiles lambdas with captures built inside a coroutine.
asio::awaitable<std::optional<metrics::ScrapeFacts>> count_tokens_on(StoreWorker& worker,
                                                                    std::function<metrics::ScrapeFacts()> count) {
  return worker.run(std::move(count));
}
}  // namespace

// Recounts the tokens if the last count is older than kStoreCountInterval,
// waiting for the store worker (the store may be a registry across the
// network: never on this I/O thread). If another caller is counting, the
// last count is used.
asio::awaitable<void> Server::Impl::refresh_store_count() {
  {
    std::lock_guard lock(store_count_mutex);
    const bool fresh = store_counted_at != Clock::time_point{} && Clock::now() - store_counted_at < kStoreCountInterval;
    if (!store || !store_worker || fresh || store_counting) co_return;
    store_counting = true;
    store_counted_at = Clock::now();
  }
  std::optional<metrics::ScrapeFacts> c;
  try {
    c = co_await count_tokens_on(*store_worker, [this] { return count_tokens(); });
  } catch (const std::exception& e) {
    spdlog::warn("metrics: cannot count the tokens in the store: {}", e.what());
  }
  std::lock_guard lock(store_count_mutex);
  store_counting = false;
  if (c) store_count = *c;
  else store_counted_at = Clock::time_point{};  // try again at the next scrape
}

metrics::ScrapeFacts Server::Impl::scrape_facts() {
  metrics::ScrapeFacts f;
  f.version = TOKENGATE_VERSION;
  f.commit = build_commit();
  f.start_time_seconds = double(started_unix);
  f.sessions = relaying_sessions.load();
  f.upstream_session_connections = f.sessions;
  f.draining = draining.load();
  if (http_pool) {
    const auto ps = http_pool->stats();
    f.pool_connections = std::int64_t(ps.size);
    f.pool_idle = std::int64_t(ps.idle);
  }
  {
    std::lock_guard lock(store_count_mutex);
    f.store_counted = store_count.store_counted;
    f.tokens_active = store_count.tokens_active;
    f.tokens_expired = store_count.tokens_expired;
    f.tokens_revoked = store_count.tokens_revoked;
    f.tokens_expiring_soon = store_count.tokens_expiring_soon;
  }
  if (registry != nullptr) {
    f.fleet = true;
    f.registry_connected = registry->feed_connected();
    f.registry_staleness_seconds = std::chrono::duration<double>(registry->staleness()).count();
    f.registry_feed_position = registry->feed_position();
  }
  return f;
}

asio::awaitable<std::vector<std::vector<protocol::Value>>> Server::Impl::admin_view(
    parser_ext::ShowTokengateView::View view) {
  using View = parser_ext::ShowTokengateView::View;
  if (view == View::sessions) {
    auto all = sessions.stats();
    co_return admin::session_rows(all);
  }
  // The settings in force: live() has a SIGHUP's changes, and the values of
  // restart-only settings as they were at start.
  const auto in_force = live();
  if (view == View::config) co_return admin::config_table(*in_force);
  co_await refresh_store_count();
  const auto f = scrape_facts();
  const auto& m = metrics::global();
  auto connections = [&](metrics::Listener l) {
    const auto& g = m.client_connections[std::size_t(l)];
    return std::to_string(g[0].value() + g[1].value());
  };
  const auto uptime = std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - started).count();
  std::vector<std::pair<std::string, std::string>> items = {
      {"version", TOKENGATE_VERSION},
      {"commit", build_commit()},
      {"started_at", protocol::format_timestamptz(protocol::Timestamp::from_unix_seconds(started_unix))},
      {"uptime", session::format_interval(uptime)},
      {"state", f.draining ? "draining" : "running"},
      {"sessions", std::to_string(f.sessions)},
      {"wire_connections", connections(metrics::Listener::wire)},
      {"http_connections", connections(metrics::Listener::http)},
      {"websocket_connections", connections(metrics::Listener::websocket)},
      {"pool_connections", std::to_string(f.pool_connections)},
      {"store_backend", config.store_backend},
  };
  if (f.store_counted) {
    items.emplace_back("tokens_active", std::to_string(f.tokens_active));
    items.emplace_back("tokens_expired", std::to_string(f.tokens_expired));
    items.emplace_back("tokens_revoked", std::to_string(f.tokens_revoked));
    items.emplace_back("tokens_expiring_within_7_days", std::to_string(f.tokens_expiring_soon));
  }
  if (f.fleet) {
    items.emplace_back("registry_connected", f.registry_connected ? "true" : "false");
    items.emplace_back("registry_staleness", std::to_string(std::llround(f.registry_staleness_seconds * 1000)) + " ms");
    items.emplace_back("registry_feed_position", std::to_string(f.registry_feed_position));
  }
  // Settings in force that shape what clients see.
  items.emplace_back("listen", admin::endpoints_text(config.listen));
  items.emplace_back("upstream", config.upstream.to_string());
  items.emplace_back("upstream.auth", config.upstream_auth == Config::UpstreamAuth::trust ? "trust" : "password");
  items.emplace_back("tls.mode", config.tls_mode);
  items.emplace_back("admin_role", in_force->admin_role);
  items.emplace_back("threads", std::to_string(contexts.size()));
  items.emplace_back("shutdown_timeout", std::to_string(config.shutdown_timeout.count()) + "s");
  co_return admin::name_value_rows(items);
}

// ---- HTTP gateway ------------------------------------------------------------

// A credential from the HTTP gateway, decided exactly as the same password
// or token in a wire login: decide_login with a startup packet for the
// control database, then what the session would learn upstream.
asio::awaitable<http::HttpLoginResult> Server::Impl::http_login(http::HttpLoginRequest r) {
  http::HttpLoginResult out;
  out.user = r.user;
  // The same rules as a wire login's startup packet (a name with a control
  // character is refused here too), for the control database.
  protocol::StartupMessage startup;
  startup.parameters.emplace_back("user", r.user);
  startup.parameters.emplace_back("database", config.control_database);
  if (!r.application_name.empty()) startup.parameters.emplace_back("application_name", r.application_name);
  auto checked = session::validate_startup(startup);
  if (auto* refused = std::get_if<session::StartupRefusal>(&checked)) {
    out.sqlstate = refused->sqlstate;
    out.message = refused->message;
    co_return out;
  }
  const session::StartupParameters& sp = std::get<session::StartupParameters>(checked);
  out.user = sp.user;
  std::unique_ptr<ByteStream> no_client;  // the gateway watches its own connection
  LoginContext ctx{no_client, r.peer, client_address(r.peer), Clock::now() + live()->auth_timeout};
  ctx.role_recheck = kHttpRoleRecheck;
  const SecretString secret = SecretString::take(r.secret);

  LoginDecision d = co_await decide_login(ctx, sp, secret);
  if (d.refusal) {
    out.delay = record_refusal(ctx, sp, d);
    auto text = http::error_text(d.refusal->to_client);
    out.sqlstate = std::move(text.sqlstate);
    out.message = std::move(text.message);
    out.detail = std::move(text.detail);
    co_return out;
  }
  if (d.upstream_decides) {
    // password mode: the upstream judges the password, audited and throttled
    // as the session does it.
    auto check = co_await http::check_password_upstream(config.upstream, upstream_tls.get(), sp.for_upstream(sp.user),
                                                         std::move(*d.upstream_password), upstream_methods,
                                                         ctx.auth_deadline);
    const bool bad_password = check.outcome == http::UpstreamCheck::Outcome::refused && check.sqlstate == "28P01";
    if (check.outcome != http::UpstreamCheck::Outcome::accepted) {
      audit_login(sp.user, ctx.address, sp.application_name(), "password", bad_password ? "denied" : "error",
                  check.reason);
      if (bad_password) out.delay = throttle.record_failure(sp.user, ctx.address, Clock::now());
      out.sqlstate = std::move(check.sqlstate);
      out.message = std::move(check.message);
      out.detail = std::move(check.detail);
      co_return out;
    }
  }
  throttle.record_success(sp.user, ctx.address, Clock::now());
  audit_login(sp.user, ctx.address, sp.application_name(), d.method, "ok", "", d.token_name, d.tid);
  out.ok = true;
  out.tid = d.tid;
  out.token_name = std::move(d.token_name);
  out.expires_at = d.token_expires_at;
  co_return out;
}

// Builds the HTTP gateway when http.listen is set; false (logged) when it cannot listen.
bool Server::Impl::start_http() {
  if (config.http_listen.empty()) return true;
  http::GatewaySettings gs;
  gs.listen = config.http_listen;
  gs.max_connections = config.http_max_connections;
  gs.max_connections_per_address = config.http_max_connections_per_address;
  gs.max_header_size = config.http_max_header_size;
  gs.max_body_size = config.http_max_body_size;
  gs.request_timeout = config.http_request_timeout;
  gs.idle_timeout = config.http_idle_timeout;
  gs.allow_plaintext_passwords = config.allow_plaintext_passwords;
  http::GatewayServices services;
  services.login = [this](http::HttpLoginRequest r) { return http_login(std::move(r)); };
  services.tls = tls.get();
  services.tls_mode = tls_mode;
  http_gateway = std::make_unique<http::Gateway>(std::move(gs), services,
                                                 [this]() -> asio::io_context& { return next_context(); });
  http::add_token_api(*http_gateway, {tokens.get(), control.get(), audit.enabled() ? &audit : nullptr,
                                      services.login, config.http_session_duration,
                                      config.token_sessions_manage_credentials, &sessions, store_worker.get()});
  // SQL over HTTP on pooled upstream connections, and the wire protocol over
  // WebSocket as one more kind of client stream for session().
  open_pool();
  http::add_sql_endpoint(*http_gateway, {http_pool.get(), tokens.get(), control.get(),
                                         audit.enabled() ? &audit : nullptr, services.login,
                                         config.http_max_response_size, config.token_sessions_manage_credentials,
                                         +[](std::string_view sql) { return parser_ext::changes_role_password(sql); },
                                         &sessions, store_worker.get(),
                                         [this](parser_ext::ShowTokengateView::View v) { return admin_view(v); }});
  http::add_websocket_endpoint(*http_gateway, [this](std::unique_ptr<ByteStream> s, std::string peer, bool local) {
    return session(std::move(s), std::move(peer), local);
  });
  http::add_web_ui(*http_gateway);

  // Operations: readiness (liveness is the gateway's /healthz) and metrics,
  // answered during a drain too, and over plain HTTP from other hosts (a
  // Prometheus server or a load balancer; no credential is sent unless
  // metrics.require_auth).
  http::RouteOptions ops;
  ops.auth = http::Auth::none;
  ops.max_body = 0;
  ops.plaintext_ok = true;
  ops.while_draining = true;
  http_gateway->add_route("GET", "/readyz", ops, [this](http::HttpRequest&) -> asio::awaitable<http::HttpResponse> {
    if (draining) co_return http::json_response(503, R"({"status":"draining"})");
    co_return http::json_response(200, R"({"status":"ready"})");
  });
  http::RouteOptions metrics_options = ops;
  if (config.metrics_require_auth) metrics_options.auth = http::Auth::required;
  metrics_options.plaintext_ok = !config.metrics_require_auth;  // a Bearer token follows the usual rules
  http_gateway->add_route("GET", "/metrics", metrics_options,
                          [this](http::HttpRequest& req) -> asio::awaitable<http::HttpResponse> {
                            if (config.metrics_require_auth) {
                              // The token's owner must be an administrator, read fresh.
                              auto me = co_await control->role_info_fresh(req.identity.user);
                              if (!me) co_return http::json_error(503, "58030", "could not read role information");
                              if (!me->has_value() || !(*me)->is_admin)
                                co_return http::json_error(403, "42501", "permission denied to read metrics");
                            }
                            http::HttpResponse r;
                            r.content_type = std::string(metrics::kContentType);
                            co_await refresh_store_count();
                            r.body = metrics::render(metrics::global(), scrape_facts());
                            co_return r;
                          });
  if (auto err = http_gateway->listen(*contexts[0])) {
    spdlog::critical("{}", *err);
    return false;
  }
  for (const auto& ep : config.http_listen) spdlog::info("HTTP gateway listening on {}", ep.to_string());
  return true;
}

// The upstream pool of POST /sql and, with pool.wire_sessions, of wire sessions.
void Server::Impl::open_pool() {
  if (http_pool) return;
  pool::UpstreamPoolSettings ps;
  ps.limits.max_connections = config.pool_max_connections;
  ps.limits.max_per_key = config.pool_max_connections_per_key;
  ps.limits.idle_timeout = config.pool_idle_timeout;
  ps.upstream = config.upstream;
  ps.tls = upstream_tls.get();
  ps.password_mode = config.upstream_auth == Config::UpstreamAuth::password;
  ps.password_for = [this](const std::string& user) {
    std::lock_guard lock(userlist_mutex);
    return userlist.password_for(user);
  };
  ps.upstream_methods = upstream_methods;
  ps.connect_timeout = config.auth_timeout;
  ps.wait_timeout = config.pool_wait_timeout;
  ps.max_lifetime = config.pool_max_lifetime;
  ps.max_message = config.http_max_response_size + 64 * 1024;
  http_pool = std::make_unique<pool::UpstreamPool>(contexts[0]->get_executor(), std::move(ps));
}

Server::Server(Config config, ConfigReloader reloader)
    : impl_(std::make_unique<Impl>(std::move(config), std::move(reloader))) {}
Server::~Server() = default;

int Server::run() {
  auto& im = *impl_;
  unsigned n = im.config.threads ? im.config.threads : std::max(1u, std::thread::hardware_concurrency());
  for (unsigned i = 0; i < n; ++i) {
    im.contexts.push_back(std::make_unique<IoContext>(1));
    im.reactor_fds.push_back(find_reactor_epoll(*im.contexts.back()));
  }
  auto& main_ctx = *im.contexts[0];
  if (!im.open_services()) return 1;
  // Before the wire listeners: once clients can connect there, HTTP works too.
  if (!im.start_http()) return 1;
  if (im.config.pool_wire_sessions) im.open_pool();

  for (const auto& ep : im.config.listen) {
    try {
      if (ep.is_unix()) {
        auto path = ep.unix_path();
        ::unlink(path.c_str());  // a stale socket from a previous run
        auto acc = std::make_unique<unix_socket::acceptor>(main_ctx, unix_socket::endpoint(path));
        im.unix_paths.push_back(path);
        asio::co_spawn(main_ctx, im.accept_loop(*acc, path), im.stop_on_exception("accepting on " + path));
        im.unix_acceptors.push_back(std::move(acc));
      } else {
        tcp::resolver resolver(main_ctx);
        for (const auto& entry : resolver.resolve(ep.host, std::to_string(ep.port))) {
          auto acc = std::make_unique<tcp::acceptor>(main_ctx);
          acc->open(entry.endpoint().protocol());
          acc->set_option(tcp::acceptor::reuse_address(true));
          acc->bind(entry.endpoint());
          acc->listen(asio::socket_base::max_listen_connections);
          asio::co_spawn(main_ctx, im.accept_loop(*acc, ep.to_string()),
                         im.stop_on_exception("accepting on " + ep.to_string()));
          im.tcp_acceptors.push_back(std::move(acc));
        }
      }
      spdlog::info("listening on {}", ep.to_string());
    } catch (const boost::system::system_error& e) {
      spdlog::critical("cannot listen on {}: {}", ep.to_string(), e.code().message());
      return 1;
    }
  }
  spdlog::info("tokengate {} relaying to {} (upstream.auth = {}) with {} I/O thread(s)", TOKENGATE_VERSION,
               im.config.upstream.to_string(),
               im.config.upstream_auth == Config::UpstreamAuth::trust ? "trust" : "password", n);
  asio::co_spawn(main_ctx, im.watch_tokens(), im.stop_on_exception("watching for revoked tokens"));

  asio::signal_set signals(main_ctx, SIGINT, SIGTERM, SIGHUP);
  std::function<void(error_code, int)> on_signal = [&](error_code ec, int sig) {
    if (ec) return;
    if (sig == SIGHUP) {
      spdlog::info("SIGHUP: reloading");
      systemd_notify("RELOADING=1");
      im.reload();
      systemd_notify("READY=1");
      signals.async_wait(on_signal);
      return;
    }
    systemd_notify("STOPPING=1");
    for (auto& a : im.tcp_acceptors) a->close();
    for (auto& a : im.unix_acceptors) a->close();
    // A drain keeps the HTTP listener for /readyz (503: a load balancer
    // stops sending clients), /healthz and /metrics; every other route
    // answers 503.
    if (im.http_gateway) {
      if (sig == SIGTERM) im.http_gateway->drain();
      else im.http_gateway->close();
    }
    if (im.http_pool) im.http_pool->close();
    if (sig == SIGTERM) {
      spdlog::info("SIGTERM: no new connections; waiting for {} session(s)", im.relaying_sessions.load());
      asio::co_spawn(main_ctx, im.drain_then_stop(), im.stop_on_exception("the shutdown"));
      signals.async_wait(on_signal);  // a second signal still works (SIGINT: at once)
    } else {
      spdlog::info("SIGINT: stopping");
      im.stop_all();
    }
  };
  signals.async_wait(on_signal);
  // Listeners are up and signals handled: a Type=notify unit is started.
  systemd_notify("READY=1");

  std::vector<std::thread> threads;
  for (unsigned i = 1; i < n; ++i) {
    threads.emplace_back([&, i] {
      bind_thread_reactor(im.reactor_fds[i]);
      auto guard = asio::make_work_guard(*im.contexts[i]);
      im.contexts[i]->run();
    });
  }
  {
    bind_thread_reactor(im.reactor_fds[0]);
    auto guard = asio::make_work_guard(main_ctx);
    main_ctx.run();
  }
  im.stop_all();
  for (auto& t : threads) t.join();
  for (const auto& p : im.unix_paths) ::unlink(p.c_str());
  // Before the io_contexts go: calls still queued for the store run, and
  // their callers' handlers are dropped with the contexts.
  im.store_worker.reset();
  // What still waits on any thread (sessions, HTTP requests, the pools'
  // coroutines) is destroyed now, every context's before any context goes:
  // a coroutine on one thread may hold objects of another thread's context
  // (a pooled connection, a co_spawn onto the pool's thread), which must
  // not be destroyed after that context is.
  for (auto& c : im.contexts) c->destroy_handlers();
  spdlog::info("stopped");
  return im.failed ? 1 : 0;
}

}  // namespace tokengate::net

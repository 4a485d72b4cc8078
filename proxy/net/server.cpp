// The Asio driver: listeners, I/O threads, and one coroutine per client
// session that performs what the sans-io state machines ask for.
#include "proxy/net/server.hpp"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <csignal>
#include <filesystem>
#include <thread>
#include <unordered_map>

#include "proxy/audit.hpp"
#include "proxy/auth/scram.hpp"
#include "proxy/auth/throttle.hpp"
#include "proxy/auth/userlist.hpp"
#include "proxy/http/gateway.hpp"
#include "proxy/http/sql_endpoint.hpp"
#include "proxy/http/token_api.hpp"
#include "proxy/http/upstream_check.hpp"
#include "proxy/http/websocket_stream.hpp"
#include "proxy/http/web_ui.hpp"
#include "proxy/net/buffer_pool.hpp"
#include "proxy/net/cancel_registry.hpp"
#include "proxy/net/connect.hpp"
#include "proxy/net/control_pool.hpp"
#include "proxy/net/relay.hpp"
#include "proxy/net/session_registry.hpp"
#include "proxy/net/stream.hpp"
#include "proxy/net/tls.hpp"
#include "proxy/pool/upstream_pool.hpp"
#include "proxy/protocol/frame.hpp"
#include "proxy/session/client_handshake.hpp"
#include "proxy/session/upstream_login.hpp"
#include "tokenstore/service.hpp"

namespace tokengate::net {

using namespace std::chrono_literals;
using unix_socket = asio::local::stream_protocol;
using protocol::ByteView;
using protocol::Bytes;
using Clock = std::chrono::steady_clock;

namespace {

// Upstream messages during login are small (ParameterStatus, errors); this
// bounds what a misbehaving upstream can make us buffer before relaying.
constexpr std::size_t kMaxLoginMessageLength = 1024 * 1024;
// How long a forwarded CancelRequest may take to be delivered.
constexpr auto kCancelTimeout = 5s;
// How often the store is asked which tokens were revoked by any process; the
// issue allows 2 s between a revocation and the end of its sessions.
constexpr auto kRevocationPoll = 500ms;
// An HTTP request is a token login, but asking the catalog afresh for every
// request would cap the gateway at the control pool's rate (about 300
// requests a second on a 2-core machine, bench/http_bench.py). A change to
// the owner role (NOLOGIN, VALID UNTIL, DROP) reaches HTTP requests within
// this time instead, as other processes' revocations reach sessions within
// kRevocationPoll. Revocation itself is checked on every request.
constexpr auto kHttpRoleRecheck = 1s;
// Bounds the table of recent checks (one entry per token owner).
constexpr std::size_t kHttpRoleChecksMax = 65536;

ByteView view(const Bytes& b, std::size_t n) { return ByteView(b.data(), n); }

Bytes fatal(std::string sqlstate, std::string message, std::string detail = {}) {
  Bytes out;
  auto e = protocol::ErrorResponse::make("FATAL", std::move(sqlstate), std::move(message));
  e.detail = std::move(detail);
  e.serialize(out);
  return out;
}

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string utc_text(std::int64_t t) {
  std::time_t tt = t;
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S+00", &tm);
  return buf;
}

// A named coroutine, not a capturing lambda: GCC 12 freed a lambda's
// captured strings from the caller's coroutine frame (found with valgrind).
asio::awaitable<auth::VerifierCheck> check_verifier(std::string verifier, std::string user, std::string password) {
  co_return auth::check_password_verifier(verifier, user, password);
}

}  // namespace

// What a client proved at login, and how to log in upstream for it.
struct LoginDecision {
  bool ok = false;
  Bytes reject;                        // FATAL for the client when !ok
  std::chrono::milliseconds delay{0};  // throttling: wait before sending `reject`
  std::optional<std::string> upstream_password;
  // For token sessions.
  std::optional<tokenstore::tid_t> tid;
  std::string token_name;
  std::uint32_t token_owner_oid = 0;  // verify_result::owner_oid
  std::int64_t token_expires_at = 0;
  Bytes notice;  // sent just before the first ReadyForQuery
  // password mode, ordinary password: the upstream's answer decides; the
  // session audits and throttles it.
  bool upstream_decides = false;
};

struct Server::Impl {
  explicit Impl(Config c) : config(std::move(c)), audit(config.audit_log) {}

  asio::io_context& next_context() { return *contexts[next++ % contexts.size()]; }

  bool open_services();
  asio::awaitable<void> session(std::unique_ptr<ByteStream> client, std::string peer, bool peer_is_local);
  asio::awaitable<LoginDecision> decide_login(const protocol::StartupMessage& startup, const std::string& password,
                                              const std::string& peer);
  asio::awaitable<std::tuple<error_code, std::unique_ptr<ByteStream>, std::string>> connect_upstream(
      Clock::time_point deadline);
  asio::awaitable<void> forward_cancel(protocol::CancelRequest request);
  template <typename Acceptor>
  asio::awaitable<void> accept_loop(Acceptor& acceptor, std::string name);
  asio::awaitable<void> watch_tokens();
  asio::awaitable<void> drain_then_stop();
  void reload();
  void stop_all();
  // The HTTP gateway (proxy/http): its login check is the wire's.
  bool start_http();
  asio::awaitable<http::HttpLoginResult> http_login(http::HttpLoginRequest request);
  void audit_login(const std::string& user, const std::string& peer, const std::string& app,
                   const std::string& method, const std::string& outcome, const std::string& reason,
                   const std::string& token_name = {}, const std::optional<tokenstore::tid_t>& tid = {},
                   const std::string& owner = {});

  Config config;
  CancelRegistry cancels;
  SessionRegistry token_sessions;
  std::vector<std::unique_ptr<asio::io_context>> contexts;
  std::atomic<std::size_t> next{0};
  std::atomic<int> active_sessions{0};     // every client connection
  std::atomic<int> relaying_sessions{0};  // past login: what SIGTERM waits for
  std::atomic<bool> stopping{false};
  std::vector<std::unique_ptr<tcp::acceptor>> tcp_acceptors;
  std::vector<std::unique_ptr<unix_socket::acceptor>> unix_acceptors;
  std::vector<std::string> unix_paths;

  // Token store.
  std::unique_ptr<tokenstore::store> store;
  std::unique_ptr<tokenstore::keyring> keys;
  std::unique_ptr<tokenstore::token_service> tokens;
  std::unique_ptr<tokenstore::maintenance_thread> maintenance;

  // Logging in.
  std::unique_ptr<ControlPool> control;
  auth::LoginThrottle throttle;
  AuditLog audit;
  std::mutex userlist_mutex;
  auth::Userlist userlist;
  // PBKDF2 of SCRAM verifiers runs here, off the I/O threads.
  asio::thread_pool crypto{1};

  // TLS.
  ClientTlsMode tls_mode = ClientTlsMode::allow;
  std::unique_ptr<TlsServerContext> tls;
  std::unique_ptr<UpstreamTlsContext> upstream_tls;

  // POST /sql's upstream connections; destroyed after the gateway that uses it.
  std::unique_ptr<pool::UpstreamPool> http_pool;
  std::unique_ptr<http::Gateway> http_gateway;
  // Owner roles as the catalog showed them to an HTTP request (see kHttpRoleRecheck).
  struct HttpRoleCheck {
    Clock::time_point at;
    RoleInfo role;
  };
  std::mutex http_roles_mutex;
  std::unordered_map<std::string, HttpRoleCheck> http_roles;
};

void Server::Impl::audit_login(const std::string& user, const std::string& peer, const std::string& app,
                               const std::string& method, const std::string& outcome,
                               const std::string& reason, const std::string& token_name,
                               const std::optional<tokenstore::tid_t>& tid, const std::string& owner) {
  AuditEvent ev;
  ev.event = "login";
  ev.actor = user;
  ev.owner = !owner.empty() ? owner : (method == "token" && outcome == "ok" ? user : "");
  ev.token_name = token_name;
  if (tid) ev.tid = tokenstore::tid_to_hex(*tid);
  ev.client_address = client_address(peer);
  ev.application_name = app;
  ev.method = method;
  ev.outcome = outcome;
  ev.reason = reason;
  audit.write(ev);
}

template <typename Acceptor>
asio::awaitable<void> Server::Impl::accept_loop(Acceptor& acceptor, std::string name) {
  for (;;) {
    auto& ctx = next_context();
    auto [ec, sock] = co_await acceptor.async_accept(ctx, use_nothrow);
    if (ec) {
      if (!acceptor.is_open()) co_return;
      // Out of descriptors or a connection reset before accept: keep serving.
      spdlog::warn("accept on {} failed: {}", name, ec.message());
      asio::steady_timer backoff(co_await asio::this_coro::executor, 100ms);
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
                   asio::detached);
  }
}

asio::awaitable<std::tuple<error_code, std::unique_ptr<ByteStream>, std::string>> Server::Impl::connect_upstream(
    Clock::time_point deadline) {
  co_return co_await net::connect_upstream(config.upstream, upstream_tls.get(), deadline);
}

// Decides whether the client proved who it is.
asio::awaitable<LoginDecision> Server::Impl::decide_login(const protocol::StartupMessage& startup,
                                                          const std::string& password, const std::string& peer) {
  LoginDecision d;
  const std::string user = startup.find("user") ? *startup.find("user") : "";
  const std::string app = startup.find("application_name") ? *startup.find("application_name") : "";
  const std::string address = client_address(peer);
  auto generic = [&](Bytes& out) {
    // PostgreSQL's own words; the real reason goes to the log and audit log only.
    out = fatal("28P01", "password authentication failed for user \"" + user + "\"");
  };
  auto deny = [&](const std::string& method, std::string reason, Bytes reject, std::string token_name = {},
                  std::optional<tokenstore::tid_t> tid = {}, std::string owner = {}) {
    spdlog::info("login of \"{}\" from {} refused ({}): {}", user, peer, method, reason);
    audit_login(user, peer, app, method, "denied", reason, token_name, tid, owner);
    d.ok = false;
    d.reject = std::move(reject);
    d.delay = throttle.record_failure(user, address, Clock::now());
  };

  // Anything shaped like a JWT (base64url of '{"' then a dot) is treated as a
  // token, malformed ones included ("alg":"none" with no signature): a
  // token-form password is never tried upstream as a password.
  const bool token_form = tokenstore::looks_like_token(password) ||
                          (password.rfind("eyJ", 0) == 0 && password.find('.') != std::string::npos);
  if (token_form) {
    // A token is never tried upstream as a password.
    if (!tokens) {
      Bytes out;
      generic(out);
      deny("token", "token store unavailable", std::move(out));
      co_return d;
    }
    auto now = unix_now();
    auto vr = tokens->verify(password, user, now);
    if (vr.status != tokenstore::verify_status::ok) {
      Bytes out;
      if (vr.status == tokenstore::verify_status::expired)
        out = fatal("28P01", "API token expired", "The token expired at " + utc_text(vr.expires_at) + ".");
      else
        generic(out);
      const bool known = vr.status != tokenstore::verify_status::bad_format &&
                         vr.status != tokenstore::verify_status::bad_alg &&
                         vr.status != tokenstore::verify_status::unknown_kid &&
                         vr.status != tokenstore::verify_status::bad_signature;
      deny("token", std::string(tokenstore::to_string(vr.status)), std::move(out), vr.name,
           known ? std::optional<tokenstore::tid_t>(vr.tid) : std::nullopt, known ? vr.owner : std::string());
      co_return d;
    }
    if (config.upstream_auth == Config::UpstreamAuth::password) {
      std::lock_guard lock(userlist_mutex);
      d.upstream_password = userlist.password_for(user);
      if (!d.upstream_password) {
        auto why = userlist.why_no_password(user);
        spdlog::error("token login of \"{}\": {}", user, why);
        audit_login(user, peer, app, "token", "error", why, vr.name, vr.tid);
        d.reject = fatal("28000", "tokengate cannot log in upstream as \"" + user + "\"",
                         "No password for this role in the auth.userlist file.");
        co_return d;
      }
    }
    d.ok = true;
    d.tid = vr.tid;
    d.token_name = vr.name;
    d.token_owner_oid = vr.owner_oid;
    d.token_expires_at = vr.expires_at;
    if (vr.expires_at - now <= config.expiry_warning.count()) {
      auto n = protocol::ErrorResponse::make("NOTICE", "01000",
                                             "API token \"" + vr.name + "\" expires at " +
                                                 utc_text(vr.expires_at));
      n.hint = "Create a new token with CREATE API TOKEN.";
      n.serialize(d.notice, protocol::backend_tag::NoticeResponse);
    }
    throttle.record_success(user, address, Clock::now());
    audit_login(user, peer, app, "token", "ok", "", vr.name, vr.tid);
    co_return d;
  }

  if (config.upstream_auth == Config::UpstreamAuth::password) {
    // The upstream checks the password; its answer reaches the client as is.
    d.ok = true;
    d.upstream_decides = true;
    d.upstream_password = password;
    co_return d;
  }

  // trust: the upstream would accept anything from us, so we check.
  if (!control) {
    d.reject = fatal("08006", "tokengate cannot check passwords: no control connection");
    co_return d;
  }
  auto lv = co_await control->login_verifier(user);
  if (!lv) {
    spdlog::error("password check for \"{}\" failed: {}", user, lv.error());
    audit_login(user, peer, app, "password", "error", lv.error());
    d.reject = fatal("08006", "tokengate could not check the password with the upstream server");
    co_return d;
  }
  Bytes failed;
  generic(failed);
  if (!lv->has_value()) {
    deny("password", "no such role", std::move(failed));
    co_return d;
  }
  const auto& v = **lv;
  if (!v.verifier) {
    deny("password", "role has no password", std::move(failed));
    co_return d;
  }
  // PBKDF2 costs milliseconds: not on an I/O thread.
  auto check = co_await asio::co_spawn(crypto, check_verifier(*v.verifier, user, password), asio::use_awaitable);
  if (check != auth::VerifierCheck::match) {
    deny("password", check == auth::VerifierCheck::mismatch ? "wrong password" : "unsupported verifier",
         std::move(failed));
    co_return d;
  }
  if (v.valid_until && *v.valid_until < unix_now()) {
    deny("password", "password expired (VALID UNTIL)", std::move(failed));
    co_return d;
  }
  if (!v.can_login) {
    deny("password", "role has NOLOGIN",
         fatal("28000", "role \"" + user + "\" is not permitted to log in"));
    co_return d;
  }
  throttle.record_success(user, address, Clock::now());
  audit_login(user, peer, app, "password", "ok", "");
  d.ok = true;
  co_return d;
}

asio::awaitable<void> Server::Impl::session(std::unique_ptr<ByteStream> client, std::string peer,
                                            bool peer_is_local) {
  ++active_sessions;
  struct Count {
    std::atomic<int>& n;
    ~Count() { --n; }
  } count{active_sessions};

  auto exec = co_await asio::this_coro::executor;
  const auto auth_deadline = Clock::now() + config.auth_timeout;
  // The whole login must finish within auth_timeout; the timer closes the
  // client socket, which fails whatever I/O is pending.
  asio::steady_timer auth_timer(exec, config.auth_timeout);
  auth_timer.async_wait([&client](error_code ec) {
    if (!ec && client) client->close();
  });

  // ---- startup phase: the sans-io handshake decides, we perform ----------
  const bool is_tcp = dynamic_cast<SocketStream<tcp::socket>*>(client.get()) != nullptr;
  session::ClientHandshake handshake(session::ClientHandshake::Options{
      .tls_available = is_tcp && tls != nullptr && tls_mode != ClientTlsMode::disable,
      .require_tls = is_tcp && tls_mode == ClientTlsMode::require,
      .refuse_plaintext_password = is_tcp && !peer_is_local && !config.allow_plaintext_passwords,
  });
  Bytes in;
  std::size_t have = 0;
  session::ClientHandshake::LoggedIn login_request;
  for (bool logged_in = false; !logged_in;) {
    std::size_t consumed = 0;
    auto action = handshake.next(view(in, have), consumed);
    if (consumed > 0) {
      in.erase(in.begin(), in.begin() + std::ptrdiff_t(consumed));
      have -= consumed;
    }
    if (std::holds_alternative<session::ClientHandshake::NeedMore>(action)) {
      if (in.size() < have + 4096) in.resize(have + 4096);
      auto [ec, n] = co_await client->read_some(asio::buffer(in.data() + have, in.size() - have));
      if (ec) {
        handshake.on_eof(view(in, have));
        co_return;
      }
      have += n;
    } else if (std::holds_alternative<session::ClientHandshake::StartTls>(action)) {
      static constexpr std::uint8_t yes[] = {'S'};
      if (auto [ec, n] = co_await client->write(asio::buffer(yes)); ec) co_return;
      auto& plain = static_cast<SocketStream<tcp::socket>&>(*client);
      tcp::socket raw = std::move(plain.socket());
      auto result = co_await accept_tls(*tls, std::move(raw), auth_deadline);
      if (result.ec) {
        spdlog::info("TLS handshake with {} failed: {} {}", peer, result.ec.message(), result.detail);
        client.reset();
        co_return;
      }
      client = std::move(result.stream);
      handshake.tls_established();
    } else if (auto* reply = std::get_if<session::ClientHandshake::Reply>(&action)) {
      auto [ec, n] = co_await client->write(asio::buffer(reply->bytes));
      if (ec) co_return;
    } else if (auto* reject = std::get_if<session::ClientHandshake::Reject>(&action)) {
      spdlog::info("rejected connection from {}: {}", peer, reject->reason);
      co_await client->write(asio::buffer(reject->bytes));
      co_return;
    } else if (auto* cancel = std::get_if<session::ClientHandshake::Cancel>(&action)) {
      co_await forward_cancel(cancel->request);
      co_return;
    } else if (std::holds_alternative<session::ClientHandshake::Closed>(action)) {
      co_return;
    } else {
      login_request = std::move(std::get<session::ClientHandshake::LoggedIn>(action));
      logged_in = true;
    }
  }
  in.resize(have);  // anything the client sent after its password is relayed later

  const std::string user = login_request.startup.find("user") ? *login_request.startup.find("user") : "";
  const std::string database =
      login_request.startup.find("database") ? *login_request.startup.find("database") : user;
  const std::string app =
      login_request.startup.find("application_name") ? *login_request.startup.find("application_name") : "";

  // ---- who is it? ------------------------------------------------------------
  LoginDecision decision = co_await decide_login(login_request.startup, login_request.password, peer);
  // The password is not needed any more (the upstream one is in `decision`).
  std::fill(login_request.password.begin(), login_request.password.end(), '\0');
  if (!decision.ok) {
    if (decision.delay.count() > 0) {
      asio::steady_timer wait(exec, decision.delay);
      co_await wait.async_wait(use_nothrow);
    }
    co_await client->write(asio::buffer(decision.reject));
    co_return;
  }

  // ---- upstream login ------------------------------------------------------
  auto [cec, upstream, cdetail] = co_await connect_upstream(auth_deadline);
  if (cec) {
    spdlog::error("cannot connect to upstream {} for user \"{}\" from {}: {} {}", config.upstream.to_string(),
                  user, peer, cec.message(), cdetail);
    co_await client->write(asio::buffer(fatal("08006", "tokengate could not connect to the upstream server")));
    co_return;
  }
  const protocol::BackendKeyData client_key = cancels.issue();
  struct Release {
    CancelRegistry& r;
    protocol::BackendKeyData k;
    ~Release() { r.release(k); }
  } release{cancels, client_key};

  session::UpstreamLogin login(std::move(login_request.startup), std::move(decision.upstream_password),
                               client_key);
  {
    auto first = login.start();
    if (auto [ec, n] = co_await upstream->write(asio::buffer(first)); ec) {
      co_await client->write(asio::buffer(fatal("08006", "connection to the upstream server was lost")));
      co_return;
    }
  }
  Bytes up;
  std::size_t up_have = 0;
  char tx_status = protocol::tx_status::Idle;
  for (bool done = false; !done;) {
    auto fr = protocol::read_frame(view(up, up_have), kMaxLoginMessageLength);
    if (fr.status == protocol::FrameStatus::bad_length) {
      spdlog::error("upstream sent a malformed message during login of \"{}\"", user);
      co_await client->write(asio::buffer(fatal("08P01", "invalid message from the upstream server")));
      co_return;
    }
    if (fr.status == protocol::FrameStatus::need_more) {
      if (up.size() < std::max(fr.need, up_have + 4096)) up.resize(std::max(fr.need, up_have + 4096));
      auto [ec, n] = co_await upstream->read_some(asio::buffer(up.data() + up_have, up.size() - up_have));
      if (ec) {
        spdlog::error("upstream closed during login of \"{}\": {}", user, ec.message());
        co_await client->write(asio::buffer(fatal("08006", "connection to the upstream server was lost")));
        co_return;
      }
      up_have += n;
      continue;
    }
    auto step = login.on_message(fr.frame);
    up.erase(up.begin(), up.begin() + std::ptrdiff_t(fr.frame.size));
    up_have -= fr.frame.size;
    if (!step.to_upstream.empty()) {
      if (auto [ec, n] = co_await upstream->write(asio::buffer(step.to_upstream)); ec) co_return;
    }
    done = step.status == session::UpstreamLogin::Status::done;
    if (done && !decision.notice.empty()) {
      // The expiry warning goes just before the first ReadyForQuery.
      step.to_client.insert(step.to_client.begin(), decision.notice.begin(), decision.notice.end());
    }
    const bool failed = step.status == session::UpstreamLogin::Status::failed;
    if (failed && decision.upstream_decides) {
      // password mode: the upstream judged the password; count and audit it
      // like our own checks, and throttle before passing its answer on.
      const bool bad_password = login.failure_reason().rfind("28P01", 0) == 0;
      audit_login(user, peer, app, "password", bad_password ? "denied" : "error", login.failure_reason());
      if (bad_password) {
        auto delay = throttle.record_failure(user, client_address(peer), Clock::now());
        if (delay.count() > 0) {
          asio::steady_timer wait(exec, delay);
          co_await wait.async_wait(use_nothrow);
        }
      }
    }
    if (!step.to_client.empty()) {
      if (auto [ec, n] = co_await client->write(asio::buffer(step.to_client)); ec) co_return;
    }
    if (failed) {
      spdlog::info("login of user \"{}\" to database \"{}\" from {} failed upstream: {}", user, database, peer,
                   login.failure_reason());
      co_return;
    }
    if (done && decision.upstream_decides) {
      throttle.record_success(user, client_address(peer), Clock::now());
      audit_login(user, peer, app, "password", "ok", "");
    }
    tx_status = login.tx_status();
  }
  auth_timer.cancel();
  cancels.bind(client_key, {config.upstream, login.upstream_key()});
  spdlog::info("user \"{}\" logged in to database \"{}\" from {}{}", user, database, peer,
               decision.tid ? " with an API token" : "");

  // Whatever the upstream sent after ReadyForQuery (it should be nothing).
  if (up_have > 0) {
    if (auto [ec, n] = co_await client->write(asio::buffer(up.data(), up_have)); ec) co_return;
  }
  Bytes().swap(up);

  // ---- relay ---------------------------------------------------------------
  // Only logged-in sessions hold up a SIGTERM drain; one still logging in
  // (or idle before its startup packet) is simply closed.
  ++relaying_sessions;
  struct Relaying {
    std::atomic<int>& n;
    ~Relaying() { --n; }
  } relaying{relaying_sessions};
  Relay relay(exec, *client, *upstream,
              RelayServices{tokens.get(), control.get(), audit.enabled() ? &audit : nullptr},
              SessionInfo{user, database, app, peer, tx_status, decision.tid.has_value()});
  // Token sessions end when their token is revoked (or expires, if so set).
  std::optional<SessionRegistry::Handle> registered;
  auto alive = std::make_shared<Relay*>(&relay);
  if (decision.tid) {
    registered = token_sessions.add(*decision.tid, decision.token_expires_at,
                                    [exec, alive](const protocol::ErrorResponse& why) {
                                      asio::post(exec, [alive, why] {
                                        if (*alive) (*alive)->end(why);
                                      });
                                    });
  }
  co_await relay.run(std::move(in));
  *alive = nullptr;
  if (registered) token_sessions.remove(*registered);
  upstream->close();
  client->close();
  spdlog::debug("session of \"{}\" from {} ended", user, peer);
}

asio::awaitable<void> Server::Impl::forward_cancel(protocol::CancelRequest request) {
  auto target = cancels.find({request.process_id, request.secret_key});
  if (!target) {
    spdlog::debug("ignored a cancel request with an unknown key");
    co_return;
  }
  // Cancel requests go in the clear, as libpq sends them (PostgreSQL accepts
  // a CancelRequest without TLS even when it requires TLS for sessions).
  auto [ec, upstream] = co_await connect_to(target->upstream);
  if (ec) {
    spdlog::warn("cannot forward cancel request to {}: {}", target->upstream.to_string(), ec.message());
    co_return;
  }
  Bytes out;
  protocol::CancelRequest{target->upstream_key.process_id, target->upstream_key.secret_key}.serialize(out);
  co_await upstream->write(asio::buffer(out));
  // PostgreSQL closes once it has read the request; wait for that (bounded)
  // so the request is not lost to an early close.
  asio::steady_timer timer(co_await asio::this_coro::executor, kCancelTimeout);
  timer.async_wait([u = upstream.get()](error_code e) {
    if (!e) u->close();
  });
  std::uint8_t sink[64];
  while (true) {
    auto [rec, n] = co_await upstream->read_some(asio::buffer(sink));
    if (rec) break;
  }
  timer.cancel();
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
      if (config.revoke_ends_sessions && !r.tids.empty()) {
        auto n = token_sessions.end_tokens(r.tids, revoked);
        if (n) spdlog::info("ended {} session(s) of revoked tokens", n);
      }
      if (config.expiry_ends_sessions) {
        auto n = token_sessions.end_expired(unix_now(), expired);
        if (n) spdlog::info("ended {} session(s) of expired tokens", n);
      }
    } catch (const std::exception& e) {
      spdlog::error("cannot read revocations from the token store: {}", e.what());
    }
  }
}

asio::awaitable<void> Server::Impl::drain_then_stop() {
  auto deadline = Clock::now() + config.shutdown_timeout;
  asio::steady_timer tick(co_await asio::this_coro::executor);
  while (relaying_sessions.load() > 0 && Clock::now() < deadline) {
    tick.expires_after(100ms);
    co_await tick.async_wait(use_nothrow);
  }
  if (relaying_sessions.load() > 0)
    spdlog::warn("closing {} session(s) still open after {} s", relaying_sessions.load(),
                 config.shutdown_timeout.count());
  stop_all();
}

void Server::Impl::stop_all() {
  stopping = true;
  for (auto& c : contexts) c->stop();
}

// SIGHUP: certificates, the userlist and the audit file are read again.
void Server::Impl::reload() {
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

// Opens the token store, TLS contexts, the userlist, the audit log and the
// control pool; false (after logging why) when tokengate must not start.
bool Server::Impl::open_services() {
  namespace fs = std::filesystem;
  try {
    std::error_code ec;
    fs::create_directories(config.data_dir, ec);
    ::chmod(config.data_dir.c_str(), 0700);
    keys = std::make_unique<tokenstore::keyring>(config.data_dir);
    store = std::make_unique<tokenstore::store>(config.data_dir);
    tokenstore::service_config service_cfg;
    service_cfg.token_sessions_manage_credentials = config.token_sessions_manage_credentials;
    tokens = std::make_unique<tokenstore::token_service>(*store, *keys, service_cfg);
    tokens->on_revoked([this](std::span<const tokenstore::tid_t> tids) {
      if (!config.revoke_ends_sessions) return;
      token_sessions.end_tokens(tids, protocol::ErrorResponse::make("FATAL", "57P01", "API token revoked"));
    });
    maintenance = std::make_unique<tokenstore::maintenance_thread>(*tokens);
  } catch (const std::exception& e) {
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
  auto upmode = parse_upstream_sslmode(config.upstream_sslmode, err);
  if (!upmode) {
    spdlog::critical("{}", err);
    return false;
  }
  if (auto problem = check_upstream_tls_settings(*upmode, config.upstream_sslrootcert); !problem.empty()) {
    spdlog::critical("{}", problem);
    return false;
  }
  if (config.upstream.is_unix() &&
      (*upmode == UpstreamSslMode::require || *upmode == UpstreamSslMode::verify_full))
    spdlog::warn("upstream.sslmode = {} has no effect: the upstream is a Unix socket", config.upstream_sslmode);
  upstream_tls = UpstreamTlsContext::create(*upmode, config.upstream_sslrootcert, err);
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

  ControlPoolSettings cs;
  cs.upstream = config.upstream;
  cs.user = config.control_user;
  cs.password = control_password;
  cs.database = config.control_database;
  cs.admin_role = config.admin_role;
  cs.auth_query = config.auth_query;
  cs.tls = upstream_tls.get();
  control = std::make_unique<ControlPool>(contexts[0]->get_executor(), std::move(cs));
  return true;
}

// ---- HTTP gateway ------------------------------------------------------------

// A credential from the HTTP gateway, decided exactly as the same password
// or token in a wire login: decide_login with a startup packet for the
// control database, then what the session would learn upstream.
asio::awaitable<http::HttpLoginResult> Server::Impl::http_login(http::HttpLoginRequest r) {
  protocol::StartupMessage startup;
  startup.parameters = {{"user", r.user}, {"database", config.control_database}, {"application_name", r.application_name}};
  http::HttpLoginResult out;
  out.user = r.user;
  LoginDecision d = co_await decide_login(startup, r.secret, r.peer);
  if (!d.ok) {
    auto text = http::error_text(d.reject);
    out.sqlstate = std::move(text.sqlstate);
    out.message = std::move(text.message);
    out.detail = std::move(text.detail);
    out.delay = d.delay;
    co_return out;
  }
  if (d.upstream_decides) {
    // password mode: the upstream judges the password, audited and throttled
    // as the session does it.
    auto check = co_await http::check_password_upstream(config.upstream, upstream_tls.get(), std::move(startup),
                                                         std::move(r.secret), Clock::now() + config.auth_timeout);
    const bool bad_password = check.outcome == http::UpstreamCheck::Outcome::refused && check.sqlstate == "28P01";
    if (check.outcome != http::UpstreamCheck::Outcome::accepted) {
      audit_login(r.user, r.peer, r.application_name, "password", bad_password ? "denied" : "error", check.reason);
      if (bad_password) out.delay = throttle.record_failure(r.user, client_address(r.peer), Clock::now());
      out.sqlstate = std::move(check.sqlstate);
      out.message = std::move(check.message);
      out.detail = std::move(check.detail);
      co_return out;
    }
    throttle.record_success(r.user, client_address(r.peer), Clock::now());
    audit_login(r.user, r.peer, r.application_name, "password", "ok", "");
  } else if (d.tid) {
    // What the token login checks after verify (tokenstore.hpp): the owner
    // role as it is now, not as a cache saw it — the OID the token is bound
    // to (a role dropped and created again under the name has another),
    // LOGIN and VALID UNTIL, which the upstream would not check for tokengate.
    // (No co_await inside ?: — GCC 12 destroys such temporaries twice.)
    ControlResult<std::optional<RoleInfo>> role(ControlError{"no control connection"});
    std::optional<RoleInfo> recent;
    {
      std::lock_guard lock(http_roles_mutex);
      auto it = http_roles.find(r.user);
      if (it != http_roles.end() && Clock::now() - it->second.at < kHttpRoleRecheck) recent = it->second.role;
    }
    if (recent) {
      role = std::optional<RoleInfo>(std::move(*recent));
    } else if (control) {
      role = co_await control->role_info_fresh(r.user);
      if (role && role->has_value()) {
        std::lock_guard lock(http_roles_mutex);
        if (http_roles.size() >= kHttpRoleChecksMax) http_roles.clear();
        http_roles[r.user] = {Clock::now(), **role};
      }
    }
    if (!role) {
      spdlog::error("HTTP token login of \"{}\": role look-up failed: {}", r.user, role.error());
      audit_login(r.user, r.peer, r.application_name, "token", "error", role.error(), d.token_name, d.tid);
      out.sqlstate = "08006";
      out.message = "tokengate could not check the role with the upstream server";
      co_return out;
    }
    std::string why;
    if (!role->has_value()) why = "role does not exist";
    else if (d.token_owner_oid != 0 && d.token_owner_oid != (*role)->oid) why = "role was dropped and created again";
    else if (d.token_owner_oid == 0 && !tokens->bind_owner_oid(*d.tid, (*role)->oid)) why = "token bound to another role";
    else if (!(*role)->can_login) why = "role has NOLOGIN";
    else if ((*role)->valid_until && *(*role)->valid_until < unix_now()) why = "role expired (VALID UNTIL)";
    if (!why.empty()) {
      spdlog::info("HTTP login of \"{}\" from {} refused (token): {}", r.user, r.peer, why);
      audit_login(r.user, r.peer, r.application_name, "token", "denied", why, d.token_name, d.tid);
      out.delay = throttle.record_failure(r.user, client_address(r.peer), Clock::now());
      out.sqlstate = why == "role has NOLOGIN" ? "28000" : "28P01";
      out.message = why == "role has NOLOGIN" ? "role \"" + r.user + "\" is not permitted to log in"
                                               : "password authentication failed for user \"" + r.user + "\"";
      co_return out;
    }
  }
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
                                      config.token_sessions_manage_credentials});
  // SQL over HTTP on pooled upstream connections, and the wire protocol over
  // WebSocket as one more kind of client stream for session().
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
  ps.connect_timeout = config.auth_timeout;
  ps.wait_timeout = config.pool_wait_timeout;
  ps.max_lifetime = config.pool_max_lifetime;
  ps.max_message = config.http_max_response_size + 64 * 1024;
  http_pool = std::make_unique<pool::UpstreamPool>(contexts[0]->get_executor(), std::move(ps));
  http::add_sql_endpoint(*http_gateway, {http_pool.get(), tokens.get(), control.get(),
                                         audit.enabled() ? &audit : nullptr, services.login,
                                         config.http_max_response_size, config.token_sessions_manage_credentials,
                                         nullptr /* the relay's password-change classifier, when it exists */});
  http::add_websocket_endpoint(*http_gateway, [this](std::unique_ptr<ByteStream> s, std::string peer, bool local) {
    return session(std::move(s), std::move(peer), local);
  });
  http::add_web_ui(*http_gateway);
  if (auto err = http_gateway->listen(*contexts[0])) {
    spdlog::critical("{}", *err);
    return false;
  }
  for (const auto& ep : config.http_listen) spdlog::info("HTTP gateway listening on {}", ep.to_string());
  return true;
}

Server::Server(Config config) : impl_(std::make_unique<Impl>(std::move(config))) {}
Server::~Server() = default;

int Server::run() {
  auto& im = *impl_;
  unsigned n = im.config.threads ? im.config.threads : std::max(1u, std::thread::hardware_concurrency());
  for (unsigned i = 0; i < n; ++i) im.contexts.push_back(std::make_unique<asio::io_context>(1));
  auto& main_ctx = *im.contexts[0];
  if (!im.open_services()) return 1;
  // Before the wire listeners: once clients can connect there, HTTP works too.
  if (!im.start_http()) return 1;

  for (const auto& ep : im.config.listen) {
    try {
      if (ep.is_unix()) {
        auto path = ep.unix_path();
        ::unlink(path.c_str());  // a stale socket from a previous run
        auto acc = std::make_unique<unix_socket::acceptor>(main_ctx, unix_socket::endpoint(path));
        im.unix_paths.push_back(path);
        asio::co_spawn(main_ctx, im.accept_loop(*acc, path), asio::detached);
        im.unix_acceptors.push_back(std::move(acc));
      } else {
        tcp::resolver resolver(main_ctx);
        for (const auto& entry : resolver.resolve(ep.host, std::to_string(ep.port))) {
          auto acc = std::make_unique<tcp::acceptor>(main_ctx);
          acc->open(entry.endpoint().protocol());
          acc->set_option(tcp::acceptor::reuse_address(true));
          acc->bind(entry.endpoint());
          acc->listen(asio::socket_base::max_listen_connections);
          asio::co_spawn(main_ctx, im.accept_loop(*acc, ep.to_string()), asio::detached);
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
  asio::co_spawn(main_ctx, im.watch_tokens(), asio::detached);

  asio::signal_set signals(main_ctx, SIGINT, SIGTERM, SIGHUP);
  std::function<void(error_code, int)> on_signal = [&](error_code ec, int sig) {
    if (ec) return;
    if (sig == SIGHUP) {
      spdlog::info("SIGHUP: reloading");
      im.reload();
      signals.async_wait(on_signal);
      return;
    }
    for (auto& a : im.tcp_acceptors) a->close();
    for (auto& a : im.unix_acceptors) a->close();
    if (im.http_gateway) im.http_gateway->close();
    if (im.http_pool) im.http_pool->close();
    if (sig == SIGTERM) {
      spdlog::info("SIGTERM: no new connections; waiting for {} session(s)", im.relaying_sessions.load());
      asio::co_spawn(main_ctx, im.drain_then_stop(), asio::detached);
      signals.async_wait(on_signal);  // a second signal still works (SIGINT: at once)
    } else {
      spdlog::info("SIGINT: stopping");
      im.stop_all();
    }
  };
  signals.async_wait(on_signal);

  std::vector<std::thread> threads;
  for (unsigned i = 1; i < n; ++i) {
    threads.emplace_back([&, i] {
      auto guard = asio::make_work_guard(*im.contexts[i]);
      im.contexts[i]->run();
    });
  }
  {
    auto guard = asio::make_work_guard(main_ctx);
    main_ctx.run();
  }
  im.stop_all();
  for (auto& t : threads) t.join();
  for (const auto& p : im.unix_paths) ::unlink(p.c_str());
  spdlog::info("stopped");
  return 0;
}

}  // namespace tokengate::net

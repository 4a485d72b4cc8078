// The HTTP gateway's listener and connections (Boost.Beast): limits, TLS,
// routing, authentication, JSON errors. See gateway.hpp.
#include "proxy/http/gateway.hpp"

#include <spdlog/spdlog.h>

#include <array>
#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/core/detect_ssl.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <mutex>
#include <unordered_map>
#include <variant>

#include "proxy/http/credentials.hpp"
#include "proxy/http/router.hpp"
#include "proxy/http/takeover.hpp"
#include "proxy/metrics.hpp"
#include "proxy/net/stream.hpp"
#include "proxy/net/tls.hpp"

namespace tokengate::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
namespace ssl = asio::ssl;
using namespace std::chrono_literals;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using net::use_nothrow;
using PlainStream = Takeover::PlainStream;
using TlsStream = Takeover::TlsStream;

namespace {

// Reads are asked for in chunks of this size; Beast's parser takes what it
// needs from the buffer and leaves the rest for the next request.
constexpr std::size_t kReadChunk = 16 * 1024;
// After an error answer the connection is closed once the client stops
// sending (or these bounds pass): closing with unread bytes would make the
// kernel send RST, and the client would lose the answer.
constexpr auto kLingerTimeout = 2s;
constexpr std::size_t kLingerBytes = 1024 * 1024;
// An over-the-limit connection gets its 503 within this time, or is dropped.
constexpr auto kRefuseTimeout = 2s;

std::string peer_text(const tcp::endpoint& ep) {
  const auto addr = ep.address();
  return (addr.is_v6() ? "[" + addr.to_string() + "]" : addr.to_string()) + ":" + std::to_string(ep.port());
}

bool is_loopback(const asio::ip::address& addr) {
  return addr.is_loopback() ||
         (addr.is_v6() && addr.to_v6().is_v4_mapped() &&
          asio::ip::make_address_v4(asio::ip::v4_mapped, addr.to_v6()).is_loopback());
}

// What a connection knows about its client before any request.
struct Peer {
  std::string peer;     // ip:port
  std::string address;  // ip
  bool local = false;
};

HttpResponse protocol_error(int status, std::string_view message, std::string_view detail = {}) {
  auto r = json_error(status, "08P01", message, detail);
  return r;
}

// The bytes of a response in HTTP/1.1 wire form.
bhttp::response<bhttp::string_body> to_beast(HttpResponse r, unsigned version, bool keep_alive) {
  bhttp::response<bhttp::string_body> res{bhttp::int_to_status(unsigned(r.status)), version};
  bool has_cache_control = false;
  for (auto& h : r.headers) {
    if (iequals(h.name, "Cache-Control")) has_cache_control = true;
    res.insert(h.name, h.value);
  }
  // 204 and 304 have no content (RFC 9110, sections 15.3.5 and 15.4.5): no Content-Type,
  // and for 304 no Content-Length either (it would have to be the 200's).
  const bool no_content = r.status == 204 || r.status == 304;
  if (!r.body.empty() || !no_content) res.set(bhttp::field::content_type, r.content_type);
  // Answers may hold a token (POST /api/tokens) or private lists: no cache
  // between the client and tokengate may keep them.
  if (!has_cache_control) res.set(bhttp::field::cache_control, "no-store");
  res.set("X-Content-Type-Options", "nosniff");
  res.body() = std::move(r.body);
  res.keep_alive(keep_alive && !r.close);
  if (r.status != 304) res.prepare_payload();
  return res;
}

template <typename Stream>
PlainStream& lowest(Stream& s) {
  return beast::get_lowest_layer(s);
}

// Half-closes, then reads and discards what the client still sends (bounded),
// then closes.
asio::awaitable<void> close_gracefully(PlainStream& s) {
  error_code ignored;
  s.socket().shutdown(tcp::socket::shutdown_send, ignored);
  s.expires_after(kLingerTimeout);
  std::array<char, 4096> sink;
  std::size_t total = 0;
  while (total < kLingerBytes) {
    auto [ec, n] = co_await s.async_read_some(asio::buffer(sink), use_nothrow);
    if (ec) break;
    total += n;
  }
  s.close();
}

asio::awaitable<void> close_gracefully(TlsStream& s) {
  // close_notify, then wait (bounded) for the client's.
  lowest(s).expires_after(kLingerTimeout);
  co_await s.async_shutdown(use_nothrow);
  lowest(s).close();
}

// Answers an error found before the request's end was read, then closes:
// what follows cannot be told apart from a next request.
template <typename Stream>
asio::awaitable<void> answer_and_close(Stream& stream, HttpResponse r, unsigned version) {
  r.close = true;
  auto res = to_beast(std::move(r), version, false);
  co_await bhttp::async_write(stream, res, use_nothrow);
  co_await close_gracefully(stream);
}

// Logs what ends a detached coroutine by an exception (none is expected:
// I/O errors are values), so that it cannot vanish unseen.
void log_exception(std::exception_ptr e) {
  if (!e) return;
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    spdlog::error("HTTP gateway coroutine ended by an exception: {}", ex.what());
  }
}

}  // namespace

// ---- shared state ---------------------------------------------------------------

struct Gateway::State : std::enable_shared_from_this<Gateway::State> {
  struct Route {
    RouteOptions options;
    Handler handler;          // set for ordinary routes
    UpgradeHandler upgrade;   // set for upgrade routes
  };

  GatewaySettings settings;
  GatewayServices services;
  std::function<asio::io_context&()> next_context;
  Router router;
  std::vector<Route> routes;
  std::atomic<std::size_t> connections{0};
  std::mutex per_address_mutex;
  std::unordered_map<std::string, std::size_t> per_address;  // open connections by client address
  std::atomic<bool> draining{false};
  std::vector<std::unique_ptr<tcp::acceptor>> acceptors;

  asio::awaitable<void> accept_loop(tcp::acceptor& acceptor, std::string name);
  asio::awaitable<void> connection(tcp::socket socket);
  asio::awaitable<void> refuse(PlainStream stream, Peer peer, bool per_address);
  // Counts a connection from `address`; false (nothing counted) when the
  // address has max_connections_per_address open already.
  bool enter_address(const std::string& address);
  void leave_address(const std::string& address);
  template <typename Stream>
  asio::awaitable<void> serve(Stream stream, beast::flat_buffer buffer, Peer peer,
                              std::shared_ptr<ssl::context> tls_context);
  asio::awaitable<std::optional<HttpResponse>> authenticate(HttpRequest& request, Credential credential);
  HttpResponse unauthorized(const HttpRequest& request, std::string_view sqlstate, std::string_view message,
                            std::string_view detail, std::string_view hint, bool token_presented,
                            bool from_cookie) const;
  bool tls_possible() const {
    return services.tls != nullptr && services.tls_mode != net::ClientTlsMode::disable;
  }
};

// ---- authentication ---------------------------------------------------------------

HttpResponse Gateway::State::unauthorized(const HttpRequest& request, std::string_view sqlstate,
                                          std::string_view message, std::string_view detail, std::string_view hint,
                                          bool token_presented, bool from_cookie) const {
  auto r = json_error(status_for_sqlstate(sqlstate), sqlstate, message, detail, hint);
  if (r.status == 401) {
    // RFC 6750 §3: the scheme, and invalid_token when one was presented.
    r.headers.push_back({"WWW-Authenticate", token_presented ? "Bearer realm=\"tokengate\", error=\"invalid_token\""
                                                             : "Bearer realm=\"tokengate\""});
    // A dead cookie would be sent again with every request: drop it.
    if (from_cookie) r.headers.push_back({"Set-Cookie", expired_session_cookie(request.tls)});
  }
  return r;
}

// The credential by value: a coroutine must not hold a reference to its
// caller's temporary.
asio::awaitable<std::optional<HttpResponse>> Gateway::State::authenticate(HttpRequest& request, Credential cred) {
  using Kind = Credential::Kind;
  if (cred.kind == Kind::none)
    co_return unauthorized(request, "28000", "authentication required", {},
                           "Send \"Authorization: Bearer <token>\", or log in with POST /api/login.", false, false);
  if (cred.kind == Kind::malformed)
    co_return unauthorized(request, "28000", cred.problem, {}, "Send \"Authorization: Bearer <token>\".", false,
                           false);
  const bool from_cookie = cred.kind == Kind::cookie;
  if (csrf_refused(request, cred.kind))
    co_return json_error(403, "42501", "missing " + std::string(kCsrfHeader) + " header",
                         "Requests authenticated by the auth_token cookie that change something must carry it.",
                         "Send the header \"" + std::string(kCsrfHeader) + ": 1\".");
  // Only a token is accepted here, and a Bearer value is never tried as a
  // password: anything without the token form is refused without a check.
  if (!has_token_form(cred.token))
    co_return unauthorized(request, "28P01", "invalid API token", {}, {}, true, from_cookie);
  if (!services.login)
    co_return json_error(503, "58030", "token verification is unavailable");

  HttpLoginRequest login;
  login.user = token_user_claim(cred.token).value_or("");
  login.secret = cred.token;
  login.peer = request.peer;
  login.application_name = application_name(request);
  auto result = co_await services.login(std::move(login));
  if (!result.ok || !result.tid) {
    if (result.delay.count() > 0) {
      asio::steady_timer wait(co_await asio::this_coro::executor, result.delay);
      co_await wait.async_wait(use_nothrow);
    }
    if (result.sqlstate.empty()) result.sqlstate = "28P01", result.message = "invalid API token";
    co_return unauthorized(request, result.sqlstate, result.message, result.detail, {}, true, from_cookie);
  }
  request.identity.via = from_cookie ? Identity::Via::cookie : Identity::Via::bearer;
  request.identity.user = std::move(result.user);
  request.identity.tid = *result.tid;
  request.identity.token_name = std::move(result.token_name);
  request.identity.expires_at = result.expires_at;
  request.identity.token = cred.token;
  co_return std::nullopt;
}

// ---- connections ------------------------------------------------------------------

asio::awaitable<void> Gateway::State::accept_loop(tcp::acceptor& acceptor, std::string name) {
  auto self = shared_from_this();  // the loop outlives nothing it needs
  for (;;) {
    auto& ctx = next_context();
    auto [ec, socket] = co_await acceptor.async_accept(ctx, use_nothrow);
    if (ec) {
      if (!acceptor.is_open()) co_return;
      // Out of descriptors, or a connection reset before accept: keep serving.
      spdlog::warn("HTTP accept on {} failed: {}", name, ec.message());
      asio::steady_timer backoff(co_await asio::this_coro::executor, 100ms);
      co_await backoff.async_wait(use_nothrow);
      continue;
    }
    asio::co_spawn(ctx, self->connection(std::move(socket)), log_exception);
  }
}

asio::awaitable<void> Gateway::State::connection(tcp::socket socket) {
  auto self = shared_from_this();
  Peer peer;
  {
    error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    auto remote = socket.remote_endpoint(ignored);
    if (ignored) co_return;  // already gone
    peer.peer = peer_text(remote);
    peer.address = net::client_address(peer.peer);
    peer.local = is_loopback(remote.address());
  }
  metrics::ConnectionGauge gauge(metrics::Listener::http, false);
  PlainStream stream(std::move(socket));
  // The address's share first: a connection refused for it is not counted
  // in `connections`, so a host flooding past its share cannot push the total
  // over max_connections for everyone else while its refusals are answered.
  if (!enter_address(peer.address)) {
    co_await refuse(std::move(stream), std::move(peer), true);
    co_return;
  }
  struct Leave {
    State& state;
    const std::string address;
    ~Leave() { state.leave_address(address); }
  } leave{*this, peer.address};
  ++connections;
  struct Count {
    std::atomic<std::size_t>& n;
    ~Count() { --n; }
  } count{connections};
  if (connections.load() > settings.max_connections) {
    co_await refuse(std::move(stream), std::move(peer), false);
    co_return;
  }

  beast::flat_buffer buffer;
  if (tls_possible()) {
    // One port serves both: a TLS ClientHello starts with a handshake record.
    stream.expires_after(settings.idle_timeout);
    auto [ec, is_tls] = co_await beast::async_detect_ssl(stream, buffer, use_nothrow);
    if (ec) co_return;
    if (is_tls) {
      auto ctx = services.tls->current();
      TlsStream tls(std::move(stream), *ctx);
      tls.next_layer().expires_after(settings.request_timeout);
      auto [hec, used] = co_await tls.async_handshake(ssl::stream_base::server, buffer.data(), use_nothrow);
      if (hec) {
        spdlog::info("HTTP TLS handshake with {} failed: {}", peer.peer, hec.message());
        co_return;
      }
      buffer.consume(used);
      gauge.set_tls();
      co_await serve(std::move(tls), std::move(buffer), std::move(peer), std::move(ctx));
      co_return;
    }
  }
  co_await serve(std::move(stream), std::move(buffer), std::move(peer), nullptr);
}

bool Gateway::State::enter_address(const std::string& address) {
  std::lock_guard lock(per_address_mutex);
  auto& n = per_address[address];
  if (settings.max_connections_per_address != 0 && n >= settings.max_connections_per_address) {
    if (n == 0) per_address.erase(address);
    return false;
  }
  ++n;
  return true;
}

void Gateway::State::leave_address(const std::string& address) {
  std::lock_guard lock(per_address_mutex);
  auto it = per_address.find(address);
  if (it == per_address.end()) return;
  if (--it->second == 0) per_address.erase(it);
}

// 503 for a connection over max_connections (or over max_connections_per_address
// from its address), without reading its request (plain HTTP only: a TLS
// client would need a handshake first, so it is closed).
asio::awaitable<void> Gateway::State::refuse(PlainStream stream, Peer peer, bool per_address) {
  if (per_address)
    spdlog::info("HTTP connection from {} refused: {} connections open from this address "
                 "(http.max_connections_per_address)",
                 peer.peer, settings.max_connections_per_address);
  else
    spdlog::warn("HTTP connection from {} refused: {} connections open (http.max_connections)", peer.peer,
                 settings.max_connections);
  beast::flat_buffer buffer;
  stream.expires_after(kRefuseTimeout);
  if (tls_possible()) {
    auto [ec, is_tls] = co_await beast::async_detect_ssl(stream, buffer, use_nothrow);
    if (ec || is_tls) co_return;
  }
  auto r = per_address
               ? json_error(503, "53300", "too many HTTP connections from this address",
                            "tokengate serves at most " + std::to_string(settings.max_connections_per_address) +
                                " at once from one address.")
               : json_error(503, "53300", "too many HTTP connections",
                            "tokengate serves at most " + std::to_string(settings.max_connections) + " at once.");
  r.headers.push_back({"Retry-After", "1"});
  auto res = to_beast(std::move(r), 11, false);
  co_await bhttp::async_write(stream, res, use_nothrow);
  co_await close_gracefully(stream);
}

template <typename Stream>
asio::awaitable<void> Gateway::State::serve(Stream stream, beast::flat_buffer buffer, Peer peer,
                                            std::shared_ptr<ssl::context> tls_context) {
  const bool is_tls = tls_context != nullptr;
  auto& low = lowest(stream);
  const auto limit_body = [&](std::size_t route_limit) { return std::min(route_limit, settings.max_body_size); };

  for (;;) {
    // ---- wait for a request (idle timeout), then read it (request timeout) ----
    if (buffer.size() == 0) {
      low.expires_after(settings.idle_timeout);
      auto [ec, n] = co_await stream.async_read_some(buffer.prepare(kReadChunk), use_nothrow);
      if (ec) break;  // closed, reset, or idle too long
      buffer.commit(n);
    }
    low.expires_after(settings.request_timeout);

    bhttp::request_parser<bhttp::empty_body> head;
    head.header_limit(std::uint32_t(std::min<std::size_t>(settings.max_header_size, UINT32_MAX)));
    head.body_limit(boost::none);  // the route decides, once it is known
    {
      auto [ec, n] = co_await bhttp::async_read_header(stream, buffer, head, use_nothrow);
      if (ec == bhttp::error::header_limit) {
        co_await answer_and_close(stream, json_error(431, "54000", "request header is too large",
                                 "At most " + std::to_string(settings.max_header_size) +
                                     " bytes of request line and headers are accepted (http.max_header_size)."),
                      11);
        co_return;
      }
      if (ec && ec.category() == bhttp::make_error_code(bhttp::error::bad_method).category() &&
          ec != bhttp::error::end_of_stream && ec != bhttp::error::partial_message) {
        co_await answer_and_close(stream, protocol_error(400, "malformed HTTP request", ec.message()), 11);
        co_return;
      }
      if (ec) break;  // closed or timed out mid-request: nobody to answer
    }
    const auto& h = head.get();
    const unsigned version = h.version();
    // Beast reads a request whose Transfer-Encoding does not end in chunked
    // (`gzip`, `chunked, identity`) as having no body, and what follows as the
    // next request: a proxy in front that frames it otherwise would smuggle a
    // request past itself. RFC 9112, section 6.3: answer 400 and close. So is
    // Transfer-Encoding in HTTP/1.0, which has none (section 6.1).
    if (h.find(bhttp::field::transfer_encoding) != h.end() && (!head.chunked() || version < 11)) {
      co_await answer_and_close(stream, protocol_error(400, "unsupported Transfer-Encoding",
                                                       "Only \"chunked\" is accepted, and only in HTTP/1.1."),
                                version);
      co_return;
    }
    HttpRequest req;
    req.method = std::string(h.method_string());
    req.target = std::string(h.target());
    req.headers.reserve(16);
    for (const auto& field : h) req.headers.push_back({std::string(field.name_string()), std::string(field.value())});
    req.peer = peer.peer;
    req.client_address = peer.address;
    req.tls = is_tls;
    req.peer_is_local = peer.local;
    const bool has_body = head.chunked() || head.content_length().value_or(0) > 0;

    // ---- route ----
    TargetError terr;
    auto target = parse_target(req.target, terr);
    if (!target) {
      co_await answer_and_close(stream, protocol_error(400, terr.message), version);
      co_return;
    }
    req.path = std::move(target->path);
    req.query = std::move(target->query);
    const auto match = router.match(req.method, req.path);
    if (match.status != Router::Match::Status::found) {
      HttpResponse r;
      if (match.status == Router::Match::Status::method_not_allowed) {
        r = protocol_error(405, "method " + req.method + " is not allowed here", "Allowed: " + match.allow + ".");
        r.headers.push_back({"Allow", match.allow});
      } else if (match.status == Router::Match::Status::bad_path) {
        r = protocol_error(400, "malformed percent-encoding in the path");
      } else {
        r = protocol_error(404, "no such endpoint: " + req.method + " " + req.path);
      }
      spdlog::debug("HTTP {} {} from {}: {}", req.method, req.path, peer.peer, r.status);
      if (has_body) {
        co_await answer_and_close(stream, std::move(r), version);
        co_return;
      }
      auto res = to_beast(std::move(r), version, h.keep_alive());
      auto [ec, n] = co_await bhttp::async_write(stream, res, use_nothrow);
      if (ec || !res.keep_alive()) break;
      continue;
    }
    req.params = match.params;
    const Route& route = routes[match.route];

    // ---- body ----
    const std::size_t body_limit = limit_body(route.options.max_body);
    if (head.content_length() && *head.content_length() > body_limit) {
      co_await answer_and_close(stream, json_error(413, "54000", "request body is too large",
                               "At most " + std::to_string(body_limit) + " bytes are accepted here."),
                    version);
      co_return;
    }
    if (auto expect = h[bhttp::field::expect]; has_body && iequals(expect, "100-continue")) {
      bhttp::response<bhttp::empty_body> cont{bhttp::status::continue_, version};
      if (auto [ec, n] = co_await bhttp::async_write(stream, cont, use_nothrow); ec) break;
    }
    bhttp::request_parser<bhttp::string_body> parser(std::move(head));
    parser.body_limit(body_limit);
    if (!parser.is_done()) {
      auto [ec, n] = co_await bhttp::async_read(stream, buffer, parser, use_nothrow);
      if (ec == bhttp::error::body_limit) {
        co_await answer_and_close(stream, json_error(413, "54000", "request body is too large",
                                 "At most " + std::to_string(body_limit) + " bytes are accepted here."),
                      version);
        co_return;
      }
      if (ec && ec.category() == bhttp::make_error_code(bhttp::error::bad_method).category() &&
          ec != bhttp::error::end_of_stream && ec != bhttp::error::partial_message) {
        co_await answer_and_close(stream, protocol_error(400, "malformed HTTP request body", ec.message()), version);
        co_return;
      }
      if (ec) break;
    }
    auto beast_request = parser.release();
    const bool keep_alive = beast_request.keep_alive();
    req.body = std::move(beast_request.body());

    // ---- checks every route gets ----
    HttpResponse response;
    bool answered = false;
    auto answer = [&](HttpResponse r) {
      response = std::move(r);
      answered = true;
    };
    if (draining.load() && !route.options.while_draining) {
      answer(json_error(503, "57P01", "tokengate is shutting down"));
      response.close = true;
    }
    if (!answered && !is_tls && !route.options.plaintext_ok) {
      if (services.tls_mode == net::ClientTlsMode::require && services.tls != nullptr) {
        answer(json_error(403, "28000", "tokengate requires an encrypted connection", {}, "Use https://."));
      } else if (!peer.local && !settings.allow_plaintext_passwords) {
        answer(json_error(403, "28000",
                          "tokengate does not accept credentials over an unencrypted connection from another host",
                          {}, "Use https://, or set auth.allow_plaintext_passwords = true."));
      }
    }
    if (!answered && route.options.json_body && !req.body.empty()) {
      const std::string* type = req.header("Content-Type");
      std::string_view t = type ? std::string_view(*type) : std::string_view{};
      t = t.substr(0, t.find(';'));
      while (!t.empty() && t.back() == ' ') t.remove_suffix(1);
      if (!iequals(t, "application/json"))
        answer(json_error(415, "08P01", "the request body must be JSON", {},
                          "Send it with \"Content-Type: application/json\"."));
    }
    if (!answered && route.options.auth == Auth::required) {
      if (auto refusal = co_await authenticate(req, find_credential(req))) answer(std::move(*refusal));
    }

    // ---- an upgrade takes the connection over ----
    if (!answered && route.upgrade) {
      low.expires_never();
      std::variant<PlainStream, TlsStream> s(std::in_place_type<Stream>, std::move(stream));
      auto takeover = std::make_unique<Takeover>(std::move(s), std::move(tls_context));
      takeover->buffer = std::move(buffer);
      takeover->request = std::move(beast_request);
      takeover->info = std::move(req);
      co_await route.upgrade(std::move(takeover));
      co_return;
    }

    if (!answered) {
      try {
        response = co_await route.handler(req);
      } catch (const std::exception& e) {
        spdlog::error("HTTP {} {}: {}", req.method, req.path, e.what());
        response = json_error(500, "XX000", "internal error");
      }
    }
    spdlog::debug("HTTP {} {} from {}: {}", req.method, req.path, peer.peer, response.status);
    auto res = to_beast(std::move(response), version, keep_alive);
    low.expires_after(settings.request_timeout);
    auto [ec, n] = co_await bhttp::async_write(stream, res, use_nothrow);
    if (ec) break;
    if (!res.keep_alive()) {
      co_await close_gracefully(stream);
      co_return;
    }
  }
  low.close();
}

// ---- Gateway ------------------------------------------------------------------------

Gateway::Gateway(GatewaySettings settings, GatewayServices services,
                 std::function<asio::io_context&()> next_context)
    : state_(std::make_shared<State>()) {
  state_->settings = std::move(settings);
  state_->services = std::move(services);
  state_->next_context = std::move(next_context);
  RouteOptions health;
  health.auth = Auth::none;
  health.max_body = 0;
  health.plaintext_ok = true;
  health.while_draining = true;
  add_route("GET", "/healthz", health, [](HttpRequest&) -> asio::awaitable<HttpResponse> {
    co_return json_response(200, R"({"status":"ok"})");
  });
}

Gateway::~Gateway() { close(); }

void Gateway::add_route(std::string_view method, std::string_view pattern, RouteOptions options, Handler handler) {
  state_->router.add(method, pattern);
  state_->routes.push_back({options, std::move(handler), {}});
}

void Gateway::add_upgrade_route(std::string_view method, std::string_view pattern, RouteOptions options,
                                UpgradeHandler handler) {
  state_->router.add(method, pattern);
  state_->routes.push_back({options, {}, std::move(handler)});
}

asio::awaitable<std::optional<HttpResponse>> Gateway::authenticate(HttpRequest& request) {
  auto state = state_;
  co_return co_await state->authenticate(request, find_credential(request));
}

std::optional<std::string> Gateway::listen(asio::io_context& ctx) {
  std::vector<std::unique_ptr<tcp::acceptor>> bound;
  std::vector<std::string> names;
  for (const auto& ep : state_->settings.listen) {
    if (ep.is_unix()) return "http.listen: " + ep.to_string() + " is a Unix socket; the HTTP listener takes HOST:PORT";
    error_code ec;
    tcp::resolver resolver(ctx);
    auto results = resolver.resolve(ep.host, std::to_string(ep.port), ec);
    if (ec) return "cannot resolve HTTP listen address " + ep.to_string() + ": " + ec.message();
    for (const auto& entry : results) {
      auto acc = std::make_unique<tcp::acceptor>(ctx);
      if (acc->open(entry.endpoint().protocol(), ec) ||
          acc->set_option(tcp::acceptor::reuse_address(true), ec) || acc->bind(entry.endpoint(), ec) ||
          acc->listen(asio::socket_base::max_listen_connections, ec))
        return "cannot listen for HTTP on " + ep.to_string() + ": " + ec.message();
      bound.push_back(std::move(acc));
      names.push_back(ep.to_string());
    }
  }
  for (std::size_t i = 0; i < bound.size(); ++i) {
    asio::co_spawn(ctx, state_->accept_loop(*bound[i], names[i]), log_exception);
    state_->acceptors.push_back(std::move(bound[i]));
  }
  return std::nullopt;
}

void Gateway::drain() { state_->draining = true; }

void Gateway::close() {
  for (auto& a : state_->acceptors) {
    error_code ignored;
    a->close(ignored);
  }
}

const GatewaySettings& Gateway::settings() const noexcept { return state_->settings; }

std::size_t Gateway::connections() const noexcept { return state_->connections.load(); }

std::vector<std::string> Gateway::local_endpoints() const {
  std::vector<std::string> out;
  for (const auto& a : state_->acceptors) {
    error_code ec;
    auto ep = a->local_endpoint(ec);
    if (!ec) out.push_back(peer_text(ep));
  }
  return out;
}

}  // namespace tokengate::http

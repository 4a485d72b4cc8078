// The HTTP gateway: one HTTP/1.1 listener (Boost.Beast, one coroutine per
// connection) with its own limits, TLS as the wire listener has it, a route
// table other parts extend, and authentication by Bearer token or the
// auth_token cookie through an injected login check. Beast stays in
// gateway.cpp; this header only needs Asio's awaitable.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proxy/http/message.hpp"
#include "proxy/net/endpoint.hpp"

namespace boost::asio {
class io_context;
}
namespace tokengate::net {
class TlsServerContext;
enum class ClientTlsMode;
}  // namespace tokengate::net

namespace tokengate::http {

// ---- the login check the server provides -----------------------------------

// One credential to check exactly as a wire login with it would be checked.
struct HttpLoginRequest {
  std::string user;    // the role to log in as; for a token, its user claim
  std::string secret;  // a password or a token; never logged
  std::string peer;    // "ip:port" of the HTTP client
  std::string application_name;
};

struct HttpLoginResult {
  bool ok = false;
  std::string user;  // the role the request then acts as
  // Set for token logins (a token-form secret is never tried as a password).
  std::optional<tokenstore::tid_t> tid;
  std::string token_name;
  std::int64_t expires_at = 0;
  // When !ok: what a wire client would have been told (28P01 "password
  // authentication failed for user …", 28P01 "API token expired", 08006, …).
  std::string sqlstate;
  std::string message;
  std::string detail;
  // Throttling: how long to wait before answering the failure.
  std::chrono::milliseconds delay{0};
};

// Provided by the server (net/server.cpp): the same decision, throttling and
// audit as a wire login.
using LoginCheck = std::function<boost::asio::awaitable<HttpLoginResult>(HttpLoginRequest)>;

// ---- settings ----------------------------------------------------------------

struct GatewaySettings {
  std::vector<net::Endpoint> listen;  // TCP endpoints; empty: no listener
  // Open connections at once; more are answered 503 and closed. Each may hold
  // up to max_header_size + max_body_size while its request is read.
  std::size_t max_connections = 256;
  // Of those, open at once from one client address (0: no such limit), so
  // that one host cannot take every slot by opening connections and sending
  // nothing.
  std::size_t max_connections_per_address = 64;
  std::size_t max_header_size = 16 * 1024;  // request line + headers (431 beyond)
  std::size_t max_body_size = 1024 * 1024;  // any route's body (413 beyond)
  // Reading one request (from its first byte) and writing its answer.
  std::chrono::seconds request_timeout{30};
  // A kept-alive connection with no request in flight is closed after this.
  std::chrono::seconds idle_timeout{60};
  // As for the wire: accept credentials over plain HTTP from other hosts.
  bool allow_plaintext_passwords = false;
};

struct GatewayServices {
  LoginCheck login;
  // The certificate the wire listener uses (reloaded on SIGHUP there); null
  // for plain HTTP only. Must outlive the gateway.
  const net::TlsServerContext* tls = nullptr;
  net::ClientTlsMode tls_mode{};  // disable, allow (TLS or plain on one port), require
};

// ---- routes --------------------------------------------------------------------

// The token API's bodies are a few hundred bytes (a comment is at most 4,096);
// 64 KiB leaves room without letting one request hold a megabyte.
inline constexpr std::size_t kMaxApiBodySize = 64 * 1024;

enum class Auth {
  none,      // anyone (the handler may call Gateway::authenticate itself)
  required,  // Bearer or cookie, verified before the handler runs (401 otherwise)
};

struct RouteOptions {
  Auth auth = Auth::required;
  // Largest body accepted (413 beyond); GatewaySettings::max_body_size caps it.
  std::size_t max_body = kMaxApiBodySize;
  // A non-empty body must be sent as Content-Type: application/json (415
  // otherwise): an HTML form on another site cannot send that type without a
  // CORS preflight, so it cannot post to these routes with a user's cookie.
  bool json_body = true;
  // Answered over plain HTTP from other hosts and under tls.mode = require too
  // (for health checks); every other route refuses such requests with 403.
  bool plaintext_ok = false;
  // Answered during a drain (health, readiness, metrics); every other route
  // answers 503 then.
  bool while_draining = false;
};

using Handler = std::function<boost::asio::awaitable<HttpResponse>(HttpRequest&)>;

// A route that takes the connection over (the WebSocket upgrade): the handler
// gets the stream, the bytes read past the request and the request itself;
// see takeover.hpp (which includes Beast).
struct Takeover;
using UpgradeHandler = std::function<boost::asio::awaitable<void>(std::unique_ptr<Takeover>)>;

class Gateway {
 public:
  // `next_context` picks the io_context for each accepted connection (the
  // server's round-robin over its I/O threads).
  Gateway(GatewaySettings settings, GatewayServices services,
          std::function<boost::asio::io_context&()> next_context);
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // Routes are added before listen(); a method+pattern added twice is a
  // programming error (std::invalid_argument). GET /healthz is built in.
  void add_route(std::string_view method, std::string_view pattern, RouteOptions options, Handler handler);
  void add_upgrade_route(std::string_view method, std::string_view pattern, RouteOptions options,
                         UpgradeHandler handler);

  // Verifies the request's Bearer token or auth_token cookie as a token
  // login and sets request.identity: nullopt on success, else the answer to
  // send (401, or 403 for a cookie request without the CSRF header, 503 when
  // the check could not be made). Routes with Auth::required get this before
  // their handler runs.
  boost::asio::awaitable<std::optional<HttpResponse>> authenticate(HttpRequest& request);

  // Binds every endpoint and starts accepting on `ctx`. On failure returns
  // why (naming the endpoint) and listens on none.
  [[nodiscard]] std::optional<std::string> listen(boost::asio::io_context& ctx);
  // Stops accepting (SIGINT); open connections finish their request.
  void close();
  // A drain (SIGTERM): keeps accepting, but only routes marked
  // while_draining are served; the others answer 503 57P01 and close.
  void drain();

  [[nodiscard]] const GatewaySettings& settings() const noexcept;
  // Connections open now (for metrics and tests).
  [[nodiscard]] std::size_t connections() const noexcept;
  // The bound addresses as "HOST:PORT" (a port 0 in http.listen shows the
  // one the kernel chose), after listen().
  [[nodiscard]] std::vector<std::string> local_endpoints() const;

  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace tokengate::http

// WebSocket connections as client byte streams (see websocket_stream.hpp).
#include "proxy/http/websocket_stream.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <cstring>
#include <vector>

#include "proxy/http/takeover.hpp"
#include "proxy/metrics.hpp"
#include "proxy/net/stream.hpp"

// GCC 12 warns that Asio's coroutine frames are freed by a mismatched
// operator delete; a known false positive (GCC bug 109224).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace tokengate::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace bhttp = beast::http;
using net::use_nothrow;
using error_code = boost::system::error_code;

namespace {

// wait_readable() reads up to this much of a message ahead, so that it can
// tell data from control frames; read_some() hands it out first.
constexpr std::size_t kReadAhead = 16 * 1024;
// Completing the opening handshake (writing the 101 answer).
constexpr auto kHandshakeTimeout = std::chrono::seconds(30);
// Waiting for the client's close frame after tokengate sent its own (a text
// message): a client answers at once, and a silent one must not hold the
// connection longer than a slow network needs.
constexpr auto kCloseTimeout = std::chrono::seconds(5);

template <typename Next>
class WebSocketStream final : public net::ByteStream {
 public:
  using Ws = websocket::stream<Next>;

  WebSocketStream(std::unique_ptr<Ws> ws, std::shared_ptr<asio::ssl::context> tls_context)
      : tls_context_(std::move(tls_context)), ws_(std::move(ws)) {}
  ~WebSocketStream() override { close(); }

  // A WebSocket connection turns readable for control frames (ping, pong)
  // too; reading a little of the next message tells data apart. The bytes
  // read wait in a small buffer for read_some().
  asio::awaitable<error_code> wait_readable() override {
    if (ahead_off_ < ahead_.size()) co_return error_code{};
    ahead_.resize(kReadAhead);
    ahead_off_ = 0;
    for (;;) {
      auto [ec, n] = co_await ws_->async_read_some(asio::buffer(ahead_), use_nothrow);
      if (!ec && !ws_->got_binary()) ec = co_await refuse_text();
      if (ec) {
        ahead_.clear();
        co_return ec;
      }
      if (n > 0) {
        ahead_.resize(n);
        co_return error_code{};
      }
    }
  }

  asio::awaitable<std::tuple<error_code, std::size_t>> read_some(asio::mutable_buffer b) override {
    if (ahead_off_ < ahead_.size()) {
      const std::size_t n = std::min(b.size(), ahead_.size() - ahead_off_);
      std::memcpy(b.data(), ahead_.data() + ahead_off_, n);
      ahead_off_ += n;
      if (ahead_off_ == ahead_.size()) {
        ahead_.clear();
        ahead_off_ = 0;
      }
      co_return std::make_tuple(error_code{}, n);
    }
    for (;;) {
      auto [ec, n] = co_await ws_->async_read_some(b, use_nothrow);
      if (!ec && !ws_->got_binary()) ec = co_await refuse_text();
      if (ec || n > 0 || b.size() == 0) co_return std::make_tuple(ec, n);
    }
  }

  // One binary message per write (the driver reads the stream, not messages).
  asio::awaitable<std::tuple<error_code, std::size_t>> write(asio::const_buffer b) override {
    co_return co_await ws_->async_write(b, use_nothrow);
  }

  // A WebSocket cannot half-close below the closing handshake, and the
  // closing handshake would race the reads in flight: the connection stays
  // open until close().
  void shutdown_send() noexcept override {}

  // Closes the TCP connection, which ends reads and writes in flight. The
  // driver's clients close the WebSocket themselves after Terminate; a
  // session tokengate ends (a FATAL error) reaches them as data first.
  void close() noexcept override {
    error_code ignored;
    beast::get_lowest_layer(*ws_).socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
    beast::get_lowest_layer(*ws_).socket().close(ignored);
  }
  int transport_fd() noexcept override {
    auto& socket = beast::get_lowest_layer(*ws_).socket();
    return socket.is_open() ? int(socket.native_handle()) : -1;
  }

 private:
  // A text message carries no protocol: the connection ends with a close
  // frame saying so (1003, unsupported data; RFC 6455, section 7.4.1), as
  // Beast ends it for malformed frames (1002) and messages over the limit
  // (1009). The bytes of the text message are discarded, never read as
  // protocol. Returns the error that ends the session.
  asio::awaitable<error_code> refuse_text() {
    websocket::stream_base::timeout t;
    t.handshake_timeout = kCloseTimeout;  // Beast's limit for the closing handshake too
    t.idle_timeout = websocket::stream_base::none();
    t.keep_alive_pings = false;
    ws_->set_option(t);
    co_await ws_->async_close(
        websocket::close_reason(websocket::close_code::unknown_data, "text messages carry no PostgreSQL protocol"),
        use_nothrow);
    co_return asio::error::invalid_argument;
  }

  std::shared_ptr<asio::ssl::context> tls_context_;  // outlives ws_ (TLS connections)
  std::unique_ptr<Ws> ws_;
  std::vector<std::uint8_t> ahead_;
  std::size_t ahead_off_ = 0;
};

// Answers a request that cannot be upgraded, then closes.
template <typename Stream>
asio::awaitable<void> refuse(Stream& stream, const bhttp::request<bhttp::string_body>& req, bhttp::status status,
                             std::string_view sqlstate, std::string_view message) {
  HttpResponse r = json_error(int(status), sqlstate, message);
  bhttp::response<bhttp::string_body> res{status, req.version()};
  res.set(bhttp::field::content_type, r.content_type);
  res.set(bhttp::field::cache_control, "no-store");
  if (status == bhttp::status::upgrade_required) {
    res.set(bhttp::field::upgrade, "websocket");
    res.set(bhttp::field::connection, "Upgrade");
  }
  res.body() = std::move(r.body);
  res.keep_alive(false);
  res.prepare_payload();
  beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(5));
  co_await bhttp::async_write(stream, res, use_nothrow);
  error_code ignored;
  beast::get_lowest_layer(stream).socket().shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
  beast::get_lowest_layer(stream).close();
}

template <typename Next>
asio::awaitable<void> upgrade(Next stream, std::unique_ptr<Takeover> t, const WireSession& session) {
  const auto& req = t->request;
  if (!websocket::is_upgrade(req)) {
    co_await refuse(stream, req, bhttp::status::upgrade_required, "08P01",
                    "this endpoint speaks the PostgreSQL protocol over WebSocket: send an Upgrade: websocket request");
    co_return;
  }
  // A client sends frames only after the 101 answer (RFC 6455, section 4.1); bytes
  // already here are not a WebSocket client's.
  if (t->buffer.size() != 0) {
    co_await refuse(stream, req, bhttp::status::bad_request, "08P01",
                    "data arrived before the WebSocket handshake completed");
    co_return;
  }
  auto ws = std::make_unique<websocket::stream<Next>>(std::move(stream));
  websocket::stream_base::timeout timeouts;
  timeouts.handshake_timeout = kHandshakeTimeout;
  timeouts.idle_timeout = websocket::stream_base::none();  // a session may idle, as on the wire
  timeouts.keep_alive_pings = false;
  ws->set_option(timeouts);
  ws->set_option(websocket::stream_base::decorator(
      [](websocket::response_type& res) { res.set(bhttp::field::server, "tokengate"); }));
  ws->read_message_max(kMaxWebSocketMessage);
  ws->auto_fragment(false);
  ws->binary(true);
  if (auto [ec] = co_await ws->async_accept(req, use_nothrow); ec) {
    spdlog::info("WebSocket handshake with {} failed: {}", t->info.peer, ec.message());
    co_return;
  }
  spdlog::debug("WebSocket session from {} ({})", t->info.peer, t->info.tls ? "TLS" : "plain");
  metrics::ConnectionGauge gauge(metrics::Listener::websocket, t->info.tls);
  std::unique_ptr<net::ByteStream> bytes =
      std::make_unique<WebSocketStream<Next>>(std::move(ws), std::move(t->tls_context));
  co_await session(std::move(bytes), t->info.peer, t->info.peer_is_local);
}

asio::awaitable<void> take_over(std::unique_ptr<Takeover> t, const WireSession& session) {
  if (auto* plain = std::get_if<Takeover::PlainStream>(&t->stream)) {
    Takeover::PlainStream s = std::move(*plain);
    co_await upgrade(std::move(s), std::move(t), session);
  } else {
    Takeover::TlsStream s = std::move(std::get<Takeover::TlsStream>(t->stream));
    co_await upgrade(std::move(s), std::move(t), session);
  }
}

}  // namespace

void add_websocket_endpoint(Gateway& gateway, WireSession session) {
  auto shared = std::make_shared<WireSession>(std::move(session));
  RouteOptions options;
  options.auth = Auth::none;  // the PostgreSQL login inside the connection decides
  options.max_body = 0;
  options.json_body = false;
  for (auto path : kWebSocketPaths)
    gateway.add_upgrade_route("GET", path, options,
                              [shared](std::unique_ptr<Takeover> t) { return take_over(std::move(t), *shared); });
}

}  // namespace tokengate::http

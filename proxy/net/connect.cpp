// Opening a byte stream to an upstream endpoint (see connect.hpp).
#include "proxy/net/connect.hpp"

#include "proxy/net/tls.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/this_coro.hpp>
#include <string>

namespace tokengate::net {

using tcp = asio::ip::tcp;
using unix_socket = asio::local::stream_protocol;

asio::awaitable<std::tuple<error_code, std::unique_ptr<ByteStream>>> connect_to(const Endpoint& ep) {
  auto exec = co_await asio::this_coro::executor;
  if (ep.is_unix()) {
    unix_socket::socket sock(exec);
    auto [ec] = co_await sock.async_connect(unix_socket::endpoint(ep.unix_path()), use_nothrow);
    if (ec) co_return std::make_tuple(ec, std::unique_ptr<ByteStream>());
    co_return std::make_tuple(ec, std::unique_ptr<ByteStream>(
                                      std::make_unique<SocketStream<unix_socket::socket>>(std::move(sock))));
  }
  tcp::resolver resolver(exec);
  auto [rec, results] = co_await resolver.async_resolve(ep.host, std::to_string(ep.port), use_nothrow);
  if (rec) co_return std::make_tuple(rec, std::unique_ptr<ByteStream>());
  tcp::socket sock(exec);
  auto [ec, connected] = co_await asio::async_connect(sock, results, use_nothrow);
  if (ec) co_return std::make_tuple(ec, std::unique_ptr<ByteStream>());
  error_code ignored;
  sock.set_option(tcp::no_delay(true), ignored);
  co_return std::make_tuple(ec, std::unique_ptr<ByteStream>(
                                    std::make_unique<SocketStream<tcp::socket>>(std::move(sock))));
}

asio::awaitable<std::tuple<error_code, std::unique_ptr<ByteStream>, std::string>> connect_upstream(
    const Endpoint& ep, const UpstreamTlsContext* tls, std::chrono::steady_clock::time_point deadline) {
  // TLS makes no sense over a Unix socket (PostgreSQL refuses it there).
  if (ep.is_unix() || tls == nullptr || tls->mode() == UpstreamSslMode::disable) {
    auto [ec, stream] = co_await connect_to(ep);
    co_return std::make_tuple(ec, std::move(stream), std::string());
  }
  auto exec = co_await asio::this_coro::executor;
  tcp::resolver resolver(exec);
  auto [rec, results] = co_await resolver.async_resolve(ep.host, std::to_string(ep.port), use_nothrow);
  if (rec) co_return std::make_tuple(rec, std::unique_ptr<ByteStream>(), std::string());
  tcp::socket sock(exec);
  auto [ec, connected] = co_await asio::async_connect(sock, results, use_nothrow);
  if (ec) co_return std::make_tuple(ec, std::unique_ptr<ByteStream>(), std::string());
  error_code ignored;
  sock.set_option(tcp::no_delay(true), ignored);
  auto result = co_await start_upstream_tls(std::move(sock), *tls, ep.host, deadline);
  co_return std::make_tuple(result.ec, std::move(result.stream), result.detail);
}

void close_when_expired(asio::steady_timer& timer, const std::shared_ptr<ByteStream>& stream) {
  timer.async_wait([weak = std::weak_ptr<ByteStream>(stream)](error_code ec) {
    if (auto s = weak.lock(); s && !ec) s->close();
  });
}

}  // namespace tokengate::net

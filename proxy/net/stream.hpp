// A byte stream over any Asio socket (TCP, Unix; TLS later), type-erased so
// that one session coroutine serves every kind of client and upstream.
// Included only by the driver's .cpp files: it pulls in Asio.
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cstddef>
#include <tuple>

namespace tokengate::net {

namespace asio = boost::asio;
using boost::system::error_code;

// I/O on the hot path reports errors as values, never as exceptions.
inline constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);

class ByteStream {
 public:
  virtual ~ByteStream() = default;
  // Waits until the peer sent something, without holding a buffer meanwhile
  // (an idle session costs no read buffer).
  virtual asio::awaitable<error_code> wait_readable() = 0;
  virtual asio::awaitable<std::tuple<error_code, std::size_t>> read_some(asio::mutable_buffer b) = 0;
  // Writes all of b.
  virtual asio::awaitable<std::tuple<error_code, std::size_t>> write(asio::const_buffer b) = 0;
  // Stops sending (FIN) so the peer sees end of stream; reading still works.
  virtual void shutdown_send() noexcept = 0;
  virtual void close() noexcept = 0;
  // The kernel socket under every layer (TLS, WebSocket), or -1. Lets a
  // waiting login notice that its client hung up without reading a byte of
  // a half-received TLS record or WebSocket frame.
  virtual int transport_fd() noexcept { return -1; }
};

template <typename Socket>
class SocketStream final : public ByteStream {
 public:
  explicit SocketStream(Socket socket) : socket_(std::move(socket)) {}

  asio::awaitable<error_code> wait_readable() override {
    auto [ec] = co_await socket_.async_wait(Socket::wait_read, use_nothrow);
    co_return ec;
  }
  asio::awaitable<std::tuple<error_code, std::size_t>> read_some(asio::mutable_buffer b) override {
    co_return co_await socket_.async_read_some(b, use_nothrow);
  }
  asio::awaitable<std::tuple<error_code, std::size_t>> write(asio::const_buffer b) override {
    co_return co_await asio::async_write(socket_, b, use_nothrow);
  }
  void shutdown_send() noexcept override {
    error_code ignored;
    socket_.shutdown(Socket::shutdown_send, ignored);
  }
  void close() noexcept override {
    error_code ignored;
    socket_.close(ignored);
  }
  int transport_fd() noexcept override { return socket_.is_open() ? int(socket_.native_handle()) : -1; }
  Socket& socket() noexcept { return socket_; }

 private:
  Socket socket_;
};

}  // namespace tokengate::net

// A ByteStream over asio::ssl::stream<Socket>: the TLS twin of SocketStream.
// Included by tls.cpp and its test only: <boost/asio/ssl.hpp> compiles slowly.
#pragma once

#include <openssl/bio.h>
#include <openssl/ssl.h>

#include <boost/asio/ssl.hpp>
#include <memory>

#include "proxy/net/stream.hpp"

namespace tokengate::net {

template <typename Socket>
class SslStream final : public ByteStream {
 public:
  using Stream = asio::ssl::stream<Socket>;

  // `ctx` is kept alive as long as the stream (asio's context owns callbacks
  // the connection may use).
  SslStream(Socket socket, std::shared_ptr<asio::ssl::context> ctx)
      : state_(std::make_shared<State>(std::move(socket), std::move(ctx))) {}

  // Ready at once when decrypted bytes wait in OpenSSL (SSL_pending) or
  // encrypted records wait, unprocessed, in asio's BIO pair (a peer's
  // Finished and first message often share one TCP segment): the socket
  // would not become readable again for those. Otherwise waits on the socket.
  // A readable socket may still hold only part of a record, or a TLS record
  // without data (a TLS 1.3 KeyUpdate); the read that follows then waits.
  asio::awaitable<error_code> wait_readable() override {
    if (has_buffered_input()) co_return error_code{};
    auto [ec] = co_await state_->stream.next_layer().async_wait(Socket::wait_read, use_nothrow);
    co_return ec;
  }
  asio::awaitable<std::tuple<error_code, std::size_t>> read_some(asio::mutable_buffer b) override {
    co_return co_await state_->stream.async_read_some(b, use_nothrow);
  }
  asio::awaitable<std::tuple<error_code, std::size_t>> write(asio::const_buffer b) override {
    co_return co_await asio::async_write(state_->stream, b, use_nothrow);
  }
  // Sends close_notify, best-effort and without waiting (a half-close: the
  // peer's data can still be read). asio's shutdown would wait for the peer's
  // close_notify, so OpenSSL is told it already arrived while the alert is
  // produced, and the truth is restored right after. The write completes in
  // the background; the state lives until it does, even if *this goes.
  void shutdown_send() noexcept override {
    SSL* ssl = state_->stream.native_handle();
    if (SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN) return;
    const int before = SSL_get_shutdown(ssl);
    SSL_set_shutdown(ssl, before | SSL_RECEIVED_SHUTDOWN);
    try {
      // A callback (not an awaitable) so that asio runs SSL_shutdown now,
      // inside this call, while the flag above is set.
      state_->stream.async_shutdown([keep = state_](error_code) {});
    } catch (...) {
      // Out of memory: the peer will see a TCP FIN without close_notify.
    }
    SSL_set_shutdown(ssl, (SSL_get_shutdown(ssl) & ~SSL_RECEIVED_SHUTDOWN) | (before & SSL_RECEIVED_SHUTDOWN));
  }
  void close() noexcept override {
    error_code ignored;
    state_->stream.lowest_layer().close(ignored);
  }

  int transport_fd() noexcept override {
    auto& socket = state_->stream.lowest_layer();
    return socket.is_open() ? int(socket.native_handle()) : -1;
  }
  Stream& stream() noexcept { return state_->stream; }
  SSL* native_handle() noexcept { return state_->stream.native_handle(); }

  // True when data can be read without waiting for the socket.
  bool has_buffered_input() noexcept {
    SSL* ssl = state_->stream.native_handle();
    if (SSL_pending(ssl) > 0 || SSL_has_pending(ssl)) return true;
    // asio gives OpenSSL one end of a BIO pair: what sits in it has been read
    // from the socket already but not yet decrypted.
    BIO* in = SSL_get_rbio(ssl);
    return in != nullptr && BIO_ctrl_pending(in) > 0;
  }

 private:
  struct State {
    State(Socket socket, std::shared_ptr<asio::ssl::context> c) : ctx(std::move(c)), stream(std::move(socket), *ctx) {}
    std::shared_ptr<asio::ssl::context> ctx;  // declared first: outlives the stream
    Stream stream;
  };
  std::shared_ptr<State> state_;
};

}  // namespace tokengate::net

// What an upgrade route (the WebSocket upgrade) receives when it takes over an
// HTTP connection: the Beast stream, plain or TLS, with the bytes already read
// past the request and the request itself. Includes Beast: only the gateway
// and upgrade handlers include it.
#pragma once

#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <memory>
#include <variant>

#include "proxy/http/message.hpp"

namespace tokengate::http {

struct Takeover {
  using PlainStream = boost::beast::tcp_stream;
  using TlsStream = boost::beast::ssl_stream<boost::beast::tcp_stream>;

  // Keeps the TLS stream's context alive (a SIGHUP reload swaps the server's
  // context for later connections only); null for plain connections.
  // Declared before the stream so that it is destroyed after it.
  std::shared_ptr<boost::asio::ssl::context> tls_context;
  std::variant<PlainStream, TlsStream> stream;
  // Bytes the client sent after the request (e.g. a first WebSocket frame).
  boost::beast::flat_buffer buffer;
  boost::beast::http::request<boost::beast::http::string_body> request;
  // The same request as routes see it; identity is set when the route
  // requires authentication. The stream's timeouts are off when handed over.
  HttpRequest info;

  Takeover(std::variant<PlainStream, TlsStream> s, std::shared_ptr<boost::asio::ssl::context> ctx)
      : tls_context(std::move(ctx)), stream(std::move(s)) {}
};

}  // namespace tokengate::http

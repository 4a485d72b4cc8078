// Opening a byte stream to an upstream endpoint (TCP or Unix socket), shared by
// the client sessions and the control connections. Pulls in Asio: include it
// only from the driver's .cpp files.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <tuple>

#include <boost/asio/steady_timer.hpp>

#include "proxy/net/endpoint.hpp"
#include "proxy/net/stream.hpp"

namespace tokengate::net {

// Resolves and connects on the calling coroutine's executor; TCP sockets get
// TCP_NODELAY. On error the stream is null.
asio::awaitable<std::tuple<error_code, std::unique_ptr<ByteStream>>> connect_to(const Endpoint& ep);

class UpstreamTlsContext;

// connect_to, then TLS as upstream.sslmode says (SSLRequest, handshake,
// verification) when `tls` is set and the endpoint is TCP; the string is a
// detail for the log (OpenSSL's reason). Used by sessions and control
// connections alike, so both honour upstream.sslmode.
asio::awaitable<std::tuple<error_code, std::unique_ptr<ByteStream>, std::string>> connect_upstream(
    const Endpoint& ep, const UpstreamTlsContext* tls, std::chrono::steady_clock::time_point deadline);

// Closes `stream` when `timer` expires (a deadline on the reads and writes of
// a coroutine). The handler holds a weak reference, never the coroutine's
// locals: a timer that expired has its handler queued already, and
// cancelling it then does not stop it, so it may run after the coroutine
// ended and the stream is gone.
void close_when_expired(asio::steady_timer& timer, const std::shared_ptr<ByteStream>& stream);

}  // namespace tokengate::net

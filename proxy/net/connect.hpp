// Opening a byte stream to an upstream endpoint (TCP or Unix socket), shared by
// the client sessions and the control connections. Pulls in Asio: include it
// only from the driver's .cpp files.
#pragma once

#include <memory>
#include <tuple>

#include "proxy/net/endpoint.hpp"
#include "proxy/net/stream.hpp"

namespace tokengate::net {

// Resolves and connects on the calling coroutine's executor; TCP sockets get
// TCP_NODELAY. On error the stream is null.
asio::awaitable<std::tuple<error_code, std::unique_ptr<ByteStream>>> connect_to(const Endpoint& ep);

}  // namespace tokengate::net

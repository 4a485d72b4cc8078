// The PostgreSQL wire protocol over WebSocket, as the @neondatabase/serverless
// driver's Pool and Client speak it (neonConfig.wsProxy): GET /v2 (or /v1)
// with an Upgrade, then binary messages carrying the protocol's bytes. The
// connection becomes one more kind of client ByteStream for the server's
// ordinary session: the same login rules, relay and API TOKEN statements.
// Beast stays in websocket_stream.cpp.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <functional>
#include <memory>
#include <string>

#include "proxy/http/gateway.hpp"

namespace tokengate::net {
class ByteStream;
}

namespace tokengate::http {

// The path the driver's default wsProxy setting produces (host + "/v2"), and
// the one of the earlier wsproxy ("/v1"). The query (?address=host:port) is
// not used: tokengate relays only to its own upstream.
inline constexpr std::string_view kWebSocketPaths[] = {"/v2", "/v1"};

// A WebSocket message (and so one PostgreSQL message sent in one) may be as
// large as PostgreSQL accepts a message (1 GiB); it is streamed, never held
// whole.
inline constexpr std::uint64_t kMaxWebSocketMessage = 0x40000000;

// Runs a wire session on `stream`: the server's session entry. `peer` is
// "ip:port", `peer_is_local` true for loopback.
using WireSession =
    std::function<boost::asio::awaitable<void>(std::unique_ptr<net::ByteStream> stream, std::string peer,
                                               bool peer_is_local)>;

// Registers the upgrade routes on `gateway`.
void add_websocket_endpoint(Gateway& gateway, WireSession session);

}  // namespace tokengate::http

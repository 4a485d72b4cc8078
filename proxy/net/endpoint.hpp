// Listen/upstream addresses as libpq spells them: HOST:PORT, [v6]:PORT, or an
// absolute directory meaning the Unix socket DIR/.s.PGSQL.PORT.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tokengate::net {

struct Endpoint {
  std::string host;  // hostname or IP; or a directory when is_unix()
  std::uint16_t port = 5432;

  bool is_unix() const noexcept { return !host.empty() && host.front() == '/'; }
  // DIR/.s.PGSQL.PORT for Unix sockets.
  std::string unix_path() const;
  // For logs: host:port, or the socket path.
  std::string to_string() const;
};

// The client address of a peer as the session names it ("1.2.3.4:5678",
// "[::1]:5678", or a socket path): the IP without the port, or "[local]" for
// Unix sockets, as PostgreSQL's logs say. Used by the audit log and throttle.
std::string client_address(const std::string& peer);

// Parses "HOST:PORT", "[V6]:PORT", "/dir:PORT", or HOST alone with default_port.
std::optional<Endpoint> parse_endpoint(std::string_view text, std::uint16_t default_port);

// Parses a comma-separated list; nullopt if any element is malformed.
std::optional<std::vector<Endpoint>> parse_endpoint_list(std::string_view text,
                                                         std::uint16_t default_port);

}  // namespace tokengate::net

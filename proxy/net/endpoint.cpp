// Parsing of HOST:PORT endpoints (see endpoint.hpp).
#include "proxy/net/endpoint.hpp"

#include <charconv>

namespace tokengate::net {

std::string Endpoint::unix_path() const {
  std::string dir = host;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  return dir + "/.s.PGSQL." + std::to_string(port);
}

std::string Endpoint::to_string() const {
  if (is_unix()) return unix_path();
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

std::string client_address(const std::string& peer) {
  if (peer.empty() || peer.front() == '/') return "[local]";
  auto colon = peer.rfind(':');
  std::string host = colon == std::string::npos ? peer : peer.substr(0, colon);
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  return host;
}

std::optional<Endpoint> parse_endpoint(std::string_view text, std::uint16_t default_port) {
  Endpoint ep;
  ep.port = default_port;
  std::string_view host = text, port;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    host = text.substr(1, close - 1);
    auto after = text.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return std::nullopt;
      port = after.substr(1);
    }
  } else if (auto colon = text.rfind(':'); colon != std::string_view::npos) {
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  if (host.empty()) return std::nullopt;
  if (!port.empty()) {
    unsigned value = 0;
    auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc{} || p != port.data() + port.size() || value == 0 || value > 65535)
      return std::nullopt;
    ep.port = std::uint16_t(value);
  }
  ep.host = std::string(host);
  return ep;
}

std::optional<std::vector<Endpoint>> parse_endpoint_list(std::string_view text,
                                                         std::uint16_t default_port) {
  std::vector<Endpoint> out;
  while (true) {
    auto comma = text.find(',');
    auto item = text.substr(0, comma);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    auto ep = parse_endpoint(item, default_port);
    if (!ep) return std::nullopt;
    out.push_back(std::move(*ep));
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return out;
}

}  // namespace tokengate::net

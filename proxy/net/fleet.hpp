// A fleet of tokengate instances: opening the shared registry from the settings, and where cancel requests go.
//
// Kept apart from server.cpp so the driver only calls these; nothing here
// includes Asio.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "proxy/config.hpp"
#include "proxy/net/endpoint.hpp"
#include "proxy/protocol/messages.hpp"
#include "tokenstore/keys.hpp"
#include "tokenstore/pg_store.hpp"

namespace tokengate::net {

// Bits of a cancel key's secret that name the instance in a fleet: 8 bits,
// so ids 1-255 (fleet.instance_id's range), leaving 24 random bits next to
// the process id. Single instances use none.
inline constexpr unsigned kFleetInstanceBits = 8;

// The libpq connection string for the registry: store.dsn, or else the
// upstream reached as the control user with the control connections'
// database, password (password mode, from auth.userlist) and TLS settings.
// Never logged: it may hold a password.
[[nodiscard]] std::string registry_dsn(const Config& config, const std::optional<std::string>& control_password);

// Where other instances reach this one: fleet.advertise_address, or the
// first TCP listen address (a wildcard host replaced by this host's name).
[[nodiscard]] std::string advertise_address(const Config& config);

// fleet.peers: "ID=HOST:PORT,…". Throws ConfigError when malformed.
[[nodiscard]] std::map<std::uint32_t, Endpoint> parse_peers(std::string_view text);

// Opens the registry for a serving instance: reads the KEK (store.kek_file,
// else TOKENGATE_KEK) and the previous one, builds the DSN, connects,
// migrates and loads. Throws (with an operator-readable message) when the
// instance must not start.
[[nodiscard]] std::unique_ptr<tokenstore::pg_store> open_registry(const Config& config,
                                                                  tokenstore::keyring& keys);

// Decides whether a CancelRequest this instance cannot serve goes to a peer,
// and bounds that work: a key sent on within the last few seconds is not
// sent again (two instances with stale views of each other cannot bounce a
// request forever), and only so many forwards run at once (a flood of
// forged keys naming another instance costs one connection each, no more).
class CancelForwarding {
 public:
  // How many forwards may be in flight at once.
  static constexpr int kMaxInFlight = 64;
  // A key forwarded within this window is dropped when it comes back.
  static constexpr std::chrono::seconds kRepeatWindow{5};
  // Keys remembered for kRepeatWindow; the memory is cleared beyond this.
  static constexpr std::size_t kMaxRemembered = 4096;

  // true: forward now (call done() afterwards).
  bool begin(const protocol::BackendKeyData& key);
  void done();

 private:
  std::mutex mutex_;
  int in_flight_ = 0;
  std::unordered_map<std::uint64_t, std::chrono::steady_clock::time_point> recent_;
};

}  // namespace tokengate::net

// The relay phase of a client session: two pumps (client → upstream framed,
// upstream → client streamed) that answer API TOKEN statements locally, in
// the order of the client's messages. Included only by server.cpp (Asio).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <boost/asio/any_io_executor.hpp>

#include "proxy/net/stream.hpp"
#include "proxy/protocol/messages.hpp"

namespace tokengate::tokenstore {
class token_service;
}
namespace tokengate {
class AuditLog;
}

namespace tokengate::net {

class ControlPool;

// What the relay needs from the rest of the server; every pointer may be
// null when that part is not configured (then API TOKEN statements fail with
// 58030 "token store unavailable").
struct RelayServices {
  tokenstore::token_service* tokens = nullptr;
  // Looks up upstream facts about roles (admin status, existence,
  // memberships) for API TOKEN statements.
  ControlPool* control = nullptr;
  AuditLog* audit = nullptr;
};

struct SessionInfo {
  std::string user;
  std::string database;
  std::string application_name;
  std::string peer;  // client address for logs
  char tx_status = 'I';
  bool via_token = false;
};

class Relay {
 public:
  Relay(asio::any_io_executor ex, ByteStream& client, ByteStream& upstream, RelayServices services,
        SessionInfo info);
  ~Relay();
  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;

  // Relays until either side closes, the client terminates, or end() is
  // called. `pending`: client bytes already read after the login.
  asio::awaitable<void> run(protocol::Bytes pending);

  // Ends the session with this error (e.g. FATAL 57P01 "API token revoked").
  // Must be called on the session's executor.
  void end(protocol::ErrorResponse reason);

 private:
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace tokengate::net

// Logging in to the upstream on a client's behalf, as a sans-io state machine:
// sends the client's StartupMessage, answers the upstream's authentication
// request (SCRAM-SHA-256, MD5 or cleartext), then passes the upstream's
// ParameterStatus/notices/ReadyForQuery to the client with tokengate's own
// BackendKeyData in place of the upstream's.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "proxy/protocol/frame.hpp"
#include "proxy/protocol/messages.hpp"

namespace tokengate::auth {
class ScramClient;
}

namespace tokengate::session {

class UpstreamLogin {
 public:
  // password: nullopt when the upstream is expected not to ask (trust).
  UpstreamLogin(protocol::StartupMessage startup, std::optional<std::string> password,
                protocol::BackendKeyData client_key);
  ~UpstreamLogin();
  UpstreamLogin(UpstreamLogin&&) noexcept;
  UpstreamLogin& operator=(UpstreamLogin&&) noexcept;

  // The StartupMessage to send upstream first.
  protocol::Bytes start() const;

  enum class Status {
    in_progress,  // write to_upstream/to_client, then feed the next message
    done,         // ReadyForQuery reached the client: start relaying
    failed,       // write to_client (an ErrorResponse), then close both sides
  };
  struct Step {
    Status status = Status::in_progress;
    protocol::Bytes to_upstream;
    protocol::Bytes to_client;
  };

  // Feeds one complete upstream message.
  Step on_message(const protocol::Frame& frame);

  // Valid after done.
  const protocol::BackendKeyData& upstream_key() const noexcept { return upstream_key_; }
  char tx_status() const noexcept { return tx_status_; }
  // Why the login failed, for the log (never contains the password).
  const std::string& failure_reason() const noexcept { return failure_reason_; }

 private:
  enum class State {
    await_auth,    // sent StartupMessage; waiting for 'R' requests until AuthenticationOk
    await_ready,   // authenticated; relaying 'S', 'K', 'N' until ReadyForQuery
    finished,
  };
  Step fail(Step step, std::string sqlstate, std::string message);
  Step on_auth(const protocol::Frame& frame);

  protocol::StartupMessage startup_;
  std::optional<std::string> password_;
  protocol::BackendKeyData client_key_;
  protocol::BackendKeyData upstream_key_;
  std::unique_ptr<auth::ScramClient> scram_;
  State state_ = State::await_auth;
  char tx_status_ = protocol::tx_status::Idle;
  std::string failure_reason_;
};

// Appends one message exactly as framed (tag, length, body).
void append_frame(protocol::Bytes& out, const protocol::Frame& frame);

}  // namespace tokengate::session

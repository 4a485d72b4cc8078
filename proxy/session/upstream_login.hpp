// Logging in to the upstream on a client's behalf, as a sans-io state machine:
// sends the StartupMessage tokengate built, answers the upstream's
// authentication request (SCRAM-SHA-256, MD5 or cleartext, as allowed), then
// passes the upstream's ParameterStatus/notices/ReadyForQuery to the client
// with tokengate's own BackendKeyData in place of the upstream's.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "proxy/auth/secret.hpp"
#include "proxy/protocol/frame.hpp"
#include "proxy/protocol/messages.hpp"

namespace tokengate::auth {
class ScramClient;
}

namespace tokengate::session {

// Which authentication requests tokengate answers for the upstream, like
// libpq's require_auth (setting `upstream.require_auth`): a cleartext
// password goes to whoever asks for one, and an MD5 answer can be cracked
// offline, so neither is sent to an upstream that was not expected to ask.
struct UpstreamAuthMethods {
  bool none = false;       // AuthenticationOk without any request (trust)
  bool password = false;   // AuthenticationCleartextPassword
  bool md5 = false;        // AuthenticationMD5Password
  bool scram = false;      // SASL with SCRAM-SHA-256 (never -PLUS)
  // PBKDF2 rounds a SCRAM server may demand (`upstream.max_scram_iterations`):
  // each costs the login that much CPU. PostgreSQL's default is 4096.
  std::size_t max_scram_iterations = 100'000;

  // "none", "password", "md5", "scram-sha-256", comma-separated (libpq's
  // names); nullopt with `error` set for anything else or an empty list.
  static std::optional<UpstreamAuthMethods> parse(std::string_view list, std::string& error);
  // The list in that form, for messages.
  [[nodiscard]] std::string to_string() const;
  // Every method: for tests.
  static UpstreamAuthMethods any() { return {true, true, true, true}; }
};

class UpstreamLogin {
 public:
  // password: nullopt when the upstream is expected not to ask (trust).
  UpstreamLogin(protocol::StartupMessage startup, std::optional<auth::SecretString> password,
                protocol::BackendKeyData client_key, UpstreamAuthMethods allowed);
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
  Step refuse_method(Step step, std::string_view method);
  Step on_auth(const protocol::Frame& frame);

  protocol::StartupMessage startup_;
  std::optional<auth::SecretString> password_;
  UpstreamAuthMethods allowed_;
  bool asked_ = false;          // the upstream sent an authentication request
  bool scram_verified_ = false;  // SASLFinal's server signature checked
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

// The client side of the startup phase as a sans-io state machine: SSL/GSSENC
// negotiation, the StartupMessage, CancelRequest, and the password exchange.
// It answers what PostgreSQL 15's ProcessStartupPacket() and
// recv_password_packet() answer, byte for byte (source file and line fields
// of errors aside), including the cases where PostgreSQL closes without a
// word; then tokengate's own checks of the parameters (startup_parameters.hpp).
#pragma once

#include <cstddef>
#include <string>
#include <variant>

#include "proxy/auth/secret.hpp"
#include "proxy/protocol/messages.hpp"
#include "proxy/session/startup_parameters.hpp"

namespace tokengate::session {

// Passwords (and tokens) are short; PostgreSQL caps authentication messages
// at PG_MAX_AUTH_TOKEN_LENGTH (65535) too, length word included: a longer one
// is dropped without an answer.
inline constexpr std::size_t kMaxPasswordMessageLength = 65535;

class ClientHandshake {
 public:
  struct Options {
    // SSLRequest is answered 'S' (StartTls) instead of 'N'.
    bool tls_available = false;
    // A client logging in without TLS is refused (tls.mode = require).
    bool require_tls = false;
    // Without TLS, the client is refused instead of asked for a cleartext
    // password (plain TCP from a non-loopback address, unless the operator
    // allows it).
    bool refuse_plaintext_password = false;
  };
  ClientHandshake() = default;
  explicit ClientHandshake(Options options) : options_(options) {}

  // The driver answered 'S' and finished the TLS handshake.
  void tls_established() noexcept { tls_active_ = true; }
  bool tls_active() const noexcept { return tls_active_; }

  // What the driver must do next.
  struct NeedMore {};  // read more bytes, then call next() again
  struct StartTls {};  // write 'S', do the TLS handshake, call tls_established(), then next()
  struct Reply {       // write these bytes, then call next() again
    protocol::Bytes bytes;
  };
  struct Reject {      // write these bytes (an ErrorResponse), then close
    protocol::Bytes bytes;
    std::string reason;  // for the log
  };
  struct Cancel {      // forward this cancel if the key is ours, then close
    protocol::CancelRequest request;
  };
  struct Closed {      // close without a word, as PostgreSQL does here
    std::string reason;  // for the log; empty when PostgreSQL would not log either
  };
  struct LoggedIn {    // startup and password received
    StartupParameters startup;
    auth::SecretString password;
  };
  using Action = std::variant<NeedMore, StartTls, Reply, Reject, Cancel, Closed, LoggedIn>;

  // Looks at the bytes received so far (the driver keeps them; `consumed` says
  // how many from the front this call used, to be dropped before the next).
  Action next(protocol::ByteView received, std::size_t& consumed);

  // The peer closed its side; returns what to do about bytes still pending.
  Action on_eof(protocol::ByteView received);

 private:
  enum class State {
    await_startup,   // waiting for SSLRequest/GSSENCRequest/CancelRequest/StartupMessage
    await_password,  // sent AuthenticationCleartextPassword, waiting for 'p'
    done,            // LoggedIn, Reject, Cancel or Closed was returned
  };
  Action reject(protocol::Bytes prefix, std::string sqlstate, std::string message, std::string hint = {},
                std::string detail = {});
  Action closed(std::string reason);
  Action on_startup(protocol::StartupMessage startup);
  void negotiate_down(const protocol::StartupMessage& startup, protocol::Bytes& out);

  Options options_;
  bool tls_active_ = false;
  // As ProcessStartupPacket() passes them to itself after each request: a
  // request that comes again while its flag is set is read as a protocol
  // version (and refused).
  bool ssl_done_ = false;
  bool gss_done_ = false;
  State state_ = State::await_startup;
  StartupParameters startup_;
};

}  // namespace tokengate::session

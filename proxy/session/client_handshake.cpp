// Startup-phase state machine for client connections (see client_handshake.hpp).
#include "proxy/session/client_handshake.hpp"

#include "proxy/protocol/frame.hpp"

namespace tokengate::session {

using namespace tokengate::protocol;

namespace {

// PostgreSQL's DETAIL when bytes follow an SSLRequest or GSSENCRequest before
// its answer (CVE-2021-23214).
constexpr const char* kUnencryptedDetail =
    "This could be either a client-software bug or evidence of an attempted man-in-the-middle attack.";

}  // namespace

ClientHandshake::Action ClientHandshake::reject(Bytes prefix, std::string sqlstate, std::string message,
                                                std::string hint, std::string detail) {
  state_ = State::done;
  auto e = ErrorResponse::make("FATAL", std::move(sqlstate), message);
  e.hint = std::move(hint);
  e.detail = std::move(detail);
  e.serialize(prefix);
  return Reject{std::move(prefix), std::move(message)};
}

ClientHandshake::Action ClientHandshake::closed(std::string reason) {
  state_ = State::done;
  return Closed{std::move(reason)};
}

// A client asking for a newer 3.x minor version or for protocol options
// (_pq_.*) is told what we speak, as PostgreSQL does; the upstream then only
// ever sees 3.0 without options.
void ClientHandshake::negotiate_down(const StartupMessage& startup, Bytes& out) {
  if ((startup.protocol_version & 0xffff) == 0 && startup.protocol_options.empty()) return;
  MessageWriter w(out, backend_tag::NegotiateProtocolVersion);
  // PostgreSQL sends the whole version number here (PG_PROTOCOL_LATEST).
  w.i32(kProtocolVersion3).i32(std::int32_t(startup.protocol_options.size()));
  for (const auto& name : startup.protocol_options) w.cstr(name);
}

ClientHandshake::Action ClientHandshake::on_startup(StartupMessage startup) {
  Bytes out;
  negotiate_down(startup, out);
  const std::string* user = startup.find("user");
  if (user == nullptr || user->empty())
    return reject(std::move(out), "28000", "no PostgreSQL user name specified in startup packet");
  if (!tls_active_ && (options_.require_tls || options_.refuse_plaintext_password)) {
    state_ = State::done;
    auto e = options_.require_tls
                 ? ErrorResponse::make("FATAL", "28000", "tokengate requires an encrypted connection")
                 : ErrorResponse::make("FATAL", "28000",
                                       "tokengate does not accept passwords over an unencrypted connection "
                                       "from another host");
    e.hint = options_.require_tls ? "Connect with sslmode=require or stronger."
                                  : "Connect with sslmode=require, or set auth.allow_plaintext_passwords = true.";
    e.serialize(out);
    return Reject{std::move(out), options_.require_tls ? "connection without TLS refused (tls.mode = require)"
                                                       : "plaintext password refused for a non-local client "
                                                         "without TLS"};
  }
  auto checked = validate_startup(startup);
  if (auto* refused = std::get_if<StartupRefusal>(&checked))
    return reject(std::move(out), refused->sqlstate, refused->message, refused->hint);
  startup_ = std::move(std::get<StartupParameters>(checked));
  state_ = State::await_password;
  AuthenticationRequest::of(auth_code::CleartextPassword).serialize(out);
  return Reply{std::move(out)};
}

ClientHandshake::Action ClientHandshake::next(ByteView received, std::size_t& consumed) {
  consumed = 0;
  switch (state_) {
    case State::await_startup: {
      auto fr = read_startup_frame(received, kMaxStartupPacketLength);
      if (fr.status == FrameStatus::need_more) return NeedMore{};
      // PostgreSQL drops the connection as soon as the length word is wrong
      // (a Terminate or an HTTP request read as a length ends up here).
      if (fr.status == FrameStatus::bad_length) return closed("invalid length of startup packet");
      consumed = fr.frame.size;
      auto packet = parse_startup_packet(fr.frame.body, ssl_done_, gss_done_);
      if (auto* err = std::get_if<StartupPacketError>(&packet)) {
        if (err->silent) return closed(err->message);
        state_ = State::done;
        return Reject{err->answer(), err->message};
      }
      if (std::holds_alternative<SSLRequest>(packet) || std::holds_alternative<GSSENCRequest>(packet)) {
        const bool ssl = std::holds_alternative<SSLRequest>(packet);
        // GSSAPI encryption is never offered.
        const bool yes = ssl && options_.tls_available && !tls_active_;
        if (ssl) {
          ssl_done_ = true;
          gss_done_ = yes;
        } else {
          gss_done_ = true;
          ssl_done_ = false;
        }
        // Bytes sent after the request but before our answer would be read
        // as if negotiated; PostgreSQL answers, then refuses them.
        if (received.size() > consumed) {
          Bytes answer{std::uint8_t(yes ? 'S' : 'N')};
          return reject(std::move(answer), "08P01",
                        ssl ? "received unencrypted data after SSL request"
                            : "received unencrypted data after GSSAPI encryption request",
                        {}, kUnencryptedDetail);
        }
        if (yes) return StartTls{};
        return Reply{Bytes{'N'}};
      }
      if (auto* cancel = std::get_if<CancelRequest>(&packet)) {
        state_ = State::done;
        return Cancel{*cancel};
      }
      return on_startup(std::move(std::get<StartupMessage>(packet)));
    }
    case State::await_password: {
      if (received.empty()) return NeedMore{};
      // recv_password_packet(): the type byte is judged before the length.
      if (received[0] != std::uint8_t(frontend_tag::PasswordMessage))
        return reject({}, "08P01", "expected password response, got message type " + std::to_string(int(received[0])));
      auto fr = read_frame(received, kMaxPasswordMessageLength);
      if (fr.status == FrameStatus::need_more) return NeedMore{};
      if (fr.status == FrameStatus::bad_length) return closed("invalid message length");
      consumed = fr.frame.size;
      auto pw = PasswordMessage::parse(fr.frame.body);
      if (!pw) return reject({}, "08P01", "invalid password packet size");
      state_ = State::done;
      return LoggedIn{std::move(startup_), auth::SecretString::take(pw->password)};
    }
    case State::done:
      break;
  }
  return Closed{};
}

ClientHandshake::Action ClientHandshake::on_eof(ByteView received) {
  // A client that asks for a password and then hangs up (psql does, to
  // prompt) is normal, and so is a connection closed before it sent anything
  // (monitoring probes); PostgreSQL logs neither. A half-sent packet it logs.
  const bool log = !received.empty() && (state_ != State::await_startup || received.size() >= 4 ||
                                         (!ssl_done_ && !gss_done_));
  const char* what = state_ == State::await_password ? "incomplete message from client" : "incomplete startup packet";
  return closed(log ? what : "");
}

}  // namespace tokengate::session

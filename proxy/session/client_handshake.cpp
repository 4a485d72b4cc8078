// Startup-phase state machine for client connections (see client_handshake.hpp).
#include "proxy/session/client_handshake.hpp"

#include "proxy/protocol/frame.hpp"

namespace tokengate::session {

using namespace tokengate::protocol;

ClientHandshake::Action ClientHandshake::reject(std::string sqlstate, std::string message) {
  state_ = State::done;
  Bytes out;
  ErrorResponse::make("FATAL", std::move(sqlstate), message).serialize(out);
  return Reject{std::move(out), std::move(message)};
}

// A client asking for a newer 3.x minor version or for protocol options
// (_pq_.*) is told what we speak, as PostgreSQL does; the upstream then only
// ever sees 3.0 without options.
void ClientHandshake::negotiate_down(Bytes& out) {
  std::vector<std::string> unsupported;
  auto& params = startup_.parameters;
  for (auto it = params.begin(); it != params.end();) {
    if (it->first.rfind("_pq_.", 0) == 0) {
      unsupported.push_back(it->first);
      it = params.erase(it);
    } else {
      ++it;
    }
  }
  if ((startup_.protocol_version & 0xffff) == 0 && unsupported.empty()) return;
  startup_.protocol_version = kProtocolVersion3;
  MessageWriter w(out, backend_tag::NegotiateProtocolVersion);
  // PostgreSQL sends the whole version number here (PG_PROTOCOL_LATEST).
  w.i32(kProtocolVersion3).i32(std::int32_t(unsupported.size()));
  for (const auto& name : unsupported) w.cstr(name);
}

ClientHandshake::Action ClientHandshake::next(ByteView received, std::size_t& consumed) {
  consumed = 0;
  switch (state_) {
    case State::await_startup: {
      auto fr = read_startup_frame(received, kMaxStartupPacketLength);
      if (fr.status == FrameStatus::need_more) return NeedMore{};
      if (fr.status == FrameStatus::bad_length)
        return reject("08P01", "invalid length of startup packet");
      consumed = fr.frame.size;
      auto packet = parse_startup_packet(fr.frame.body);
      if (auto* err = std::get_if<StartupPacketError>(&packet)) return reject("08P01", err->message);
      if (std::holds_alternative<SSLRequest>(packet) ||
          std::holds_alternative<GSSENCRequest>(packet)) {
        // Each request may come once (after TLS, neither may): PostgreSQL
        // then reads the code as a protocol version and refuses it.
        bool ssl = std::holds_alternative<SSLRequest>(packet);
        if (ssl ? ssl_done_ : gss_done_)
          return reject("08P01", std::string("unsupported frontend protocol ") +
                                     (ssl ? "1234.5679" : "1234.5680") + ": server supports 3.0 to 3.0");
        // Bytes sent after the request but before our answer would be read
        // as if negotiated; PostgreSQL refuses them too (CVE-2021-23214).
        if (received.size() > consumed)
          return reject("08P01", "received unencrypted data after SSL request");
        if (ssl) {
          ssl_done_ = true;
          if (options_.tls_available && !tls_active_) {
            gss_done_ = true;
            return StartTls{};
          }
        } else {
          gss_done_ = true;
        }
        return Reply{Bytes{'N'}};
      }
      if (auto* cancel = std::get_if<CancelRequest>(&packet)) {
        state_ = State::done;
        return Cancel{*cancel};
      }
      startup_ = std::move(std::get<StartupMessage>(packet));
      if (!tls_active_ && (options_.require_tls || options_.refuse_plaintext_password)) {
        state_ = State::done;
        Bytes out;
        auto e = options_.require_tls
                     ? ErrorResponse::make("FATAL", "28000", "tokengate requires an encrypted connection")
                     : ErrorResponse::make("FATAL", "28000",
                                           "tokengate does not accept passwords over an unencrypted connection "
                                           "from another host");
        e.hint = options_.require_tls
                     ? "Connect with sslmode=require or stronger."
                     : "Connect with sslmode=require, or set auth.allow_plaintext_passwords = true.";
        e.serialize(out);
        return Reject{std::move(out), options_.require_tls ? "connection without TLS refused (tls.mode = require)"
                                                           : "plaintext password refused for a non-local client "
                                                             "without TLS"};
      }
      state_ = State::await_password;
      Bytes out;
      negotiate_down(out);
      AuthenticationRequest::of(auth_code::CleartextPassword).serialize(out);
      return Reply{std::move(out)};
    }
    case State::await_password: {
      auto fr = read_frame(received, kMaxPasswordMessageLength);
      if (fr.status == FrameStatus::need_more) return NeedMore{};
      if (fr.status == FrameStatus::bad_length)
        return reject("08P01", "invalid message length");
      consumed = fr.frame.size;
      if (fr.frame.tag != frontend_tag::PasswordMessage)
        return reject("08P01", "expected password response, got message type " +
                                   std::to_string(int(std::uint8_t(fr.frame.tag))));
      auto pw = PasswordMessage::parse(fr.frame.body);
      if (!pw) return reject("08P01", "invalid password packet size");
      state_ = State::done;
      return LoggedIn{std::move(startup_), std::move(pw->password)};
    }
    case State::done:
      break;
  }
  return Closed{};
}

ClientHandshake::Action ClientHandshake::on_eof(ByteView received) {
  // A client that asks for a password and then hangs up (psql does, to prompt)
  // is normal; a half-sent startup packet is not, but there is nobody to tell.
  state_ = State::done;
  (void)received;
  return Closed{};
}

}  // namespace tokengate::session

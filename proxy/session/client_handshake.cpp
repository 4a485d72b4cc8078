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
        // Bytes sent after the request but before our answer would be read
        // as if negotiated; PostgreSQL refuses them too (CVE-2021-23214).
        if (received.size() > consumed)
          return reject("08P01", "received unencrypted data after SSL request");
        return Reply{Bytes{'N'}};
      }
      if (auto* cancel = std::get_if<CancelRequest>(&packet)) {
        state_ = State::done;
        return Cancel{*cancel};
      }
      startup_ = std::move(std::get<StartupMessage>(packet));
      state_ = State::await_password;
      Bytes out;
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

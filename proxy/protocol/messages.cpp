// parse() and serialize() for the protocol messages in messages.hpp.
#include "proxy/protocol/messages.hpp"

#include <string>

namespace tokengate::protocol {

// ---- startup phase ------------------------------------------------------------

const std::string* StartupMessage::find(std::string_view name) const noexcept {
  for (const auto& [k, v] : parameters)
    if (k == name) return &v;
  return nullptr;
}

void StartupMessage::serialize(Bytes& out) const {
  MessageWriter w(out, 0);
  w.i32(protocol_version);
  for (const auto& [k, v] : parameters) w.cstr(k).cstr(v);
  w.u8(0);
}

void CancelRequest::serialize(Bytes& out) const {
  MessageWriter w(out, 0);
  w.i32(kCancelRequestCode).i32(process_id).i32(secret_key);
}

StartupPacket parse_startup_packet(ByteView packet) {
  BodyReader r(packet);
  auto length = r.i32();
  auto code = r.i32();
  if (!length || !code || std::size_t(*length) != packet.size())
    return StartupPacketError{"invalid length of startup packet"};

  switch (*code) {
    case kSSLRequestCode:
      if (!r.at_end()) return StartupPacketError{"invalid length of SSL request"};
      return SSLRequest{};
    case kGSSENCRequestCode:
      if (!r.at_end()) return StartupPacketError{"invalid length of GSSENC request"};
      return GSSENCRequest{};
    case kCancelRequestCode: {
      auto pid = r.i32();
      auto key = r.i32();
      if (!pid || !key || !r.at_end())
        return StartupPacketError{"invalid length of cancel request"};
      return CancelRequest{*pid, *key};
    }
    default:
      break;
  }

  // Same wording as PostgreSQL's ProcessStartupPacket().
  int major = *code >> 16, minor = *code & 0xffff;
  // 3.x with x > 0 is accepted and negotiated down to 3.0 (as PostgreSQL does
  // with NegotiateProtocolVersion); other majors are refused.
  if (major != 3)
    return StartupPacketError{"unsupported frontend protocol " + std::to_string(major) + "." +
                              std::to_string(minor) +
                              ": server supports 3.0 to 3.0"};

  StartupMessage msg;
  msg.protocol_version = *code;
  for (;;) {
    auto name = r.cstr();
    if (!name) return StartupPacketError{"invalid startup packet layout: expected terminator as last byte"};
    if (name->empty()) break;
    auto value = r.cstr();
    if (!value) return StartupPacketError{"invalid startup packet layout: expected terminator as last byte"};
    msg.parameters.emplace_back(std::string(*name), std::string(*value));
  }
  if (!r.at_end())
    return StartupPacketError{"invalid startup packet layout: expected terminator as last byte"};
  if (msg.find("user") == nullptr || msg.find("user")->empty())
    return StartupPacketError{"no PostgreSQL user name specified in startup packet"};
  return msg;
}

// ---- errors and notices ---------------------------------------------------------

const std::string* ErrorFields::find(char code) const noexcept {
  for (const auto& [c, v] : fields)
    if (c == code) return &v;
  return nullptr;
}
std::string_view ErrorFields::severity() const noexcept {
  // 'V' is the non-localized severity (9.6+); prefer it when present.
  if (auto* v = find('V')) return *v;
  if (auto* s = find('S')) return *s;
  return {};
}
std::string_view ErrorFields::sqlstate() const noexcept {
  auto* c = find('C');
  return c ? std::string_view(*c) : std::string_view{};
}
std::string_view ErrorFields::message() const noexcept {
  auto* m = find('M');
  return m ? std::string_view(*m) : std::string_view{};
}

std::optional<ErrorFields> ErrorFields::parse(ByteView body) {
  BodyReader r(body);
  ErrorFields out;
  for (;;) {
    auto code = r.u8();
    if (!code) return std::nullopt;
    if (*code == 0) break;
    auto value = r.cstr();
    if (!value) return std::nullopt;
    out.fields.emplace_back(char(*code), std::string(*value));
  }
  if (!r.at_end()) return std::nullopt;
  return out;
}

void ErrorFields::serialize(Bytes& out, char tag) const {
  MessageWriter w(out, tag);
  for (const auto& [c, v] : fields) w.u8(std::uint8_t(c)).cstr(v);
  w.u8(0);
}

void ErrorResponse::serialize(Bytes& out, char tag) const {
  MessageWriter w(out, tag);
  w.u8('S').cstr(severity);
  w.u8('V').cstr(severity);
  w.u8('C').cstr(sqlstate);
  w.u8('M').cstr(message);
  if (!detail.empty()) w.u8('D').cstr(detail);
  if (!hint.empty()) w.u8('H').cstr(hint);
  if (position > 0) w.u8('P').cstr(std::to_string(position));
  w.u8(0);
}

// ---- authentication ----------------------------------------------------------

std::optional<AuthenticationRequest> AuthenticationRequest::parse(ByteView body) {
  BodyReader r(body);
  auto code = r.i32();
  if (!code) return std::nullopt;
  AuthenticationRequest out;
  out.code = *code;
  switch (*code) {
    case auth_code::MD5Password: {
      auto salt = r.bytes(4);
      if (!salt) return std::nullopt;
      std::copy(salt->begin(), salt->end(), out.md5_salt.begin());
      break;
    }
    case auth_code::SASL:
      for (;;) {
        auto mech = r.cstr();
        if (!mech) return std::nullopt;
        if (mech->empty()) break;
        out.sasl_mechanisms.emplace_back(*mech);
      }
      break;
    case auth_code::SASLContinue:
    case auth_code::SASLFinal:
      out.sasl_data = std::string(as_chars(r.rest()));
      break;
    default:
      // Other methods carry data we do not use (GSS/SSPI) or none.
      r.rest();
      break;
  }
  if (!r.at_end()) return std::nullopt;
  return out;
}

void AuthenticationRequest::serialize(Bytes& out) const {
  MessageWriter w(out, backend_tag::Authentication);
  w.i32(code);
  switch (code) {
    case auth_code::MD5Password:
      w.raw(ByteView(md5_salt));
      break;
    case auth_code::SASL:
      for (const auto& m : sasl_mechanisms) w.cstr(m);
      w.u8(0);
      break;
    case auth_code::SASLContinue:
    case auth_code::SASLFinal:
      w.raw(sasl_data);
      break;
    default:
      break;
  }
}

std::optional<PasswordMessage> PasswordMessage::parse(ByteView body) {
  BodyReader r(body);
  auto pw = r.cstr();
  if (!pw || !r.at_end()) return std::nullopt;
  return PasswordMessage{std::string(*pw)};
}
void PasswordMessage::serialize(Bytes& out) const {
  MessageWriter(out, frontend_tag::PasswordMessage).cstr(password);
}
void SASLInitialResponse::serialize(Bytes& out) const {
  MessageWriter w(out, frontend_tag::PasswordMessage);
  w.cstr(mechanism).i32(std::int32_t(data.size())).raw(data);
}
void SASLResponse::serialize(Bytes& out) const {
  MessageWriter(out, frontend_tag::PasswordMessage).raw(data);
}

// ---- session status -------------------------------------------------------------

std::optional<BackendKeyData> BackendKeyData::parse(ByteView body) {
  BodyReader r(body);
  auto pid = r.i32();
  auto key = r.i32();
  if (!pid || !key || !r.at_end()) return std::nullopt;
  return BackendKeyData{*pid, *key};
}
void BackendKeyData::serialize(Bytes& out) const {
  MessageWriter(out, backend_tag::BackendKeyData).i32(process_id).i32(secret_key);
}

std::optional<ParameterStatus> ParameterStatus::parse(ByteView body) {
  BodyReader r(body);
  auto name = r.cstr();
  auto value = r.cstr();
  if (!name || !value || !r.at_end()) return std::nullopt;
  return ParameterStatus{std::string(*name), std::string(*value)};
}
void ParameterStatus::serialize(Bytes& out) const {
  MessageWriter(out, backend_tag::ParameterStatus).cstr(name).cstr(value);
}

std::optional<ReadyForQuery> ReadyForQuery::parse(ByteView body) {
  BodyReader r(body);
  auto s = r.u8();
  if (!s || !r.at_end()) return std::nullopt;
  if (*s != tx_status::Idle && *s != tx_status::InBlock && *s != tx_status::Failed)
    return std::nullopt;
  return ReadyForQuery{char(*s)};
}
void ReadyForQuery::serialize(Bytes& out) const {
  MessageWriter(out, backend_tag::ReadyForQuery).u8(std::uint8_t(status));
}

}  // namespace tokengate::protocol

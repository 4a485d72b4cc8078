// parse() and serialize() for the protocol messages in messages.hpp.
#include "proxy/protocol/messages.hpp"

#include <cctype>
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

Bytes StartupPacketError::answer() const {
  Bytes out;
  if (silent) return out;
  if (old_format) {
    // send_message_to_frontend() for a pre-3.0 client: 'E', the text, NUL.
    out.push_back('E');
    const std::string text = "FATAL:  " + message + "\n";
    out.insert(out.end(), text.begin(), text.end());
    out.push_back(0);
    return out;
  }
  auto e = ErrorResponse::make("FATAL", sqlstate, message);
  e.hint = hint;
  e.serialize(out);
  return out;
}

std::optional<bool> parse_pg_bool(std::string_view v) noexcept {
  // src/backend/utils/adt/bool.c, parse_bool_with_len().
  auto prefix_of = [&](std::string_view word, std::size_t at_least) {
    if (v.size() < at_least || v.size() > word.size()) return false;
    for (std::size_t i = 0; i < v.size(); ++i)
      if (std::tolower(static_cast<unsigned char>(v[i])) != word[i]) return false;
    return true;
  };
  if (v.empty()) return std::nullopt;
  switch (v[0]) {
    case 't': case 'T': if (prefix_of("true", 1)) return true; break;
    case 'f': case 'F': if (prefix_of("false", 1)) return false; break;
    case 'y': case 'Y': if (prefix_of("yes", 1)) return true; break;
    case 'n': case 'N': if (prefix_of("no", 1)) return false; break;
    case 'o': case 'O':
      // "o" alone is ambiguous.
      if (prefix_of("on", 2)) return true;
      if (prefix_of("off", 2)) return false;
      break;
    case '1': if (v.size() == 1) return true; break;
    case '0': if (v.size() == 1) return false; break;
    default: break;
  }
  return std::nullopt;
}

StartupPacket parse_startup_packet(ByteView packet, bool ssl_done, bool gss_done) {
  BodyReader r(packet);
  auto length = r.i32();
  auto code = r.i32();
  if (!length || !code || std::size_t(std::uint32_t(*length)) != packet.size())
    return StartupPacketError{.message = "invalid length of startup packet", .silent = true};

  if (*code == kCancelRequestCode) {
    // PostgreSQL never answers a cancel request, malformed or not.
    auto pid = r.i32();
    auto key = r.i32();
    if (!pid || !key || !r.at_end())
      return StartupPacketError{.message = "invalid length of cancel request", .silent = true};
    return CancelRequest{*pid, *key};
  }
  // Extra bytes after the code do not matter to PostgreSQL 15; a request
  // repeated after it was answered is read as a protocol version (below).
  if (*code == kSSLRequestCode && !ssl_done) return SSLRequest{};
  if (*code == kGSSENCRequestCode && !gss_done) return GSSENCRequest{};

  // Same wording as ProcessStartupPacket(). 3.x with x > 0 is accepted and
  // negotiated down to 3.0 with NegotiateProtocolVersion.
  const auto version = std::uint32_t(*code);
  const unsigned major = version >> 16, minor = version & 0xffff;
  if (major != 3)
    return StartupPacketError{.sqlstate = "0A000",
                              .message = "unsupported frontend protocol " + std::to_string(major) + "." +
                                         std::to_string(minor) + ": server supports 3.0 to 3.0",
                              .old_format = major < 3};

  // PostgreSQL's loop over the body: strings end at a NUL, or at the end of
  // the packet (it appends one zero byte, so an unterminated last string is
  // still read); a name whose value would start past the end ends the list.
  // Only afterwards is the terminator checked.
  std::string buf(reinterpret_cast<const char*>(packet.data()) + 4, packet.size() - 4);
  const std::size_t len = buf.size();  // PostgreSQL's `len`: the code and the parameters
  buf.push_back('\0');
  StartupMessage msg;
  msg.protocol_version = *code;
  std::size_t offset = 4;
  while (offset < len) {
    const std::string name(buf.c_str() + offset);
    if (name.empty()) break;  // the terminator
    const std::size_t valoffset = offset + name.size() + 1;
    if (valoffset >= len) break;  // no value: the layout check below complains
    std::string value(buf.c_str() + valoffset);
    offset = valoffset + value.size() + 1;
    if (name == "replication" && value != "database" && !parse_pg_bool(value))
      return StartupPacketError{.sqlstate = "22023",
                                .message = "invalid value for parameter \"replication\": \"" + value + "\"",
                                .hint = "Valid values are: \"false\", 0, \"true\", 1, \"database\"."};
    if (name.rfind("_pq_.", 0) == 0)
      msg.protocol_options.push_back(name);
    else
      msg.parameters.emplace_back(name, std::move(value));
  }
  if (offset != len - 1)
    return StartupPacketError{.sqlstate = "08P01",
                              .message = "invalid startup packet layout: expected terminator as last byte"};
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

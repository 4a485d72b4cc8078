// PostgreSQL protocol 3.0 messages: the tag table and one struct per message
// that tokengate reads or writes, each with parse() and/or serialize().
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "proxy/protocol/wire.hpp"

namespace tokengate::protocol {

// Tag bytes, named as in the "Message Formats" section of the PostgreSQL docs.
namespace frontend_tag {
inline constexpr char Bind = 'B';
inline constexpr char Close = 'C';
inline constexpr char CopyData = 'd';
inline constexpr char CopyDone = 'c';
inline constexpr char CopyFail = 'f';
inline constexpr char Describe = 'D';
inline constexpr char Execute = 'E';
inline constexpr char Flush = 'H';
inline constexpr char FunctionCall = 'F';
inline constexpr char Parse = 'P';
inline constexpr char PasswordMessage = 'p';  // also SASLInitialResponse, SASLResponse
inline constexpr char Query = 'Q';
inline constexpr char Sync = 'S';
inline constexpr char Terminate = 'X';
}  // namespace frontend_tag

namespace backend_tag {
inline constexpr char Authentication = 'R';
inline constexpr char BackendKeyData = 'K';
inline constexpr char BindComplete = '2';
inline constexpr char CloseComplete = '3';
inline constexpr char CommandComplete = 'C';
inline constexpr char CopyData = 'd';
inline constexpr char CopyDone = 'c';
inline constexpr char CopyInResponse = 'G';
inline constexpr char CopyOutResponse = 'H';
inline constexpr char CopyBothResponse = 'W';
inline constexpr char DataRow = 'D';
inline constexpr char EmptyQueryResponse = 'I';
inline constexpr char ErrorResponse = 'E';
inline constexpr char FunctionCallResponse = 'V';
inline constexpr char NegotiateProtocolVersion = 'v';
inline constexpr char NoData = 'n';
inline constexpr char NoticeResponse = 'N';
inline constexpr char NotificationResponse = 'A';
inline constexpr char ParameterDescription = 't';
inline constexpr char ParameterStatus = 'S';
inline constexpr char ParseComplete = '1';
inline constexpr char PortalSuspended = 's';
inline constexpr char ReadyForQuery = 'Z';
inline constexpr char RowDescription = 'T';
}  // namespace backend_tag

// Request codes carried in untagged startup-phase packets.
inline constexpr std::int32_t kProtocolVersion3 = 196608;  // 3.0
inline constexpr std::int32_t kCancelRequestCode = 80877102;
inline constexpr std::int32_t kSSLRequestCode = 80877103;
inline constexpr std::int32_t kGSSENCRequestCode = 80877104;

// PostgreSQL rejects startup packets whose length, not counting the 4-byte
// length word itself, exceeds this (MAX_STARTUP_PACKET_LENGTH in
// src/include/libpq/pqcomm.h); so do we.
inline constexpr std::size_t kMaxStartupPacketLength = 10000;
// Names longer than NAMEDATALEN - 1 bytes are cut there by PostgreSQL
// (src/include/pg_config_manual.h); user and database names from a startup
// packet are cut the same way before anything looks at them.
inline constexpr std::size_t kMaxNameLength = 63;

// ---- startup phase (frontend, untagged) ------------------------------------

struct StartupMessage {
  std::int32_t protocol_version = kProtocolVersion3;
  // In the client's order, repeated keys included (PostgreSQL itself lets a
  // later one win; tokengate refuses repeats, see startup_parameters.hpp).
  // Protocol options (`_pq_.*`) are not here but in protocol_options.
  std::vector<std::pair<std::string, std::string>> parameters;
  // `_pq_.*` names the client asked for; none is supported (PostgreSQL 15
  // defines none), so each is named in NegotiateProtocolVersion.
  std::vector<std::string> protocol_options;

  // The first value of `name`, or null.
  const std::string* find(std::string_view name) const noexcept;
  void serialize(Bytes& out) const;
};

struct CancelRequest {
  std::int32_t process_id = 0;
  std::int32_t secret_key = 0;
  void serialize(Bytes& out) const;
};
struct SSLRequest {};
struct GSSENCRequest {};

// A startup packet PostgreSQL refuses, with its answer. ProcessStartupPacket
// answers some with a FATAL error and drops others without a word (it only
// logs them, as COMMERROR); `silent` says which.
struct StartupPacketError {
  std::string sqlstate{};  // empty when silent
  std::string message{};   // for the error, or for our log when silent
  std::string hint{};
  bool silent = false;
  // The client asked for a protocol older than 3.0: PostgreSQL answers in the
  // old format ('E', then "FATAL:  message\n" and a NUL, no length word), the
  // only one such a client can read.
  bool old_format = false;

  // The bytes PostgreSQL sends (nothing when silent).
  Bytes answer() const;
};
using StartupPacket =
    std::variant<StartupMessage, CancelRequest, SSLRequest, GSSENCRequest, StartupPacketError>;

// Parses one complete startup packet (`packet` includes the 4-byte length,
// which read_startup_frame has checked) as PostgreSQL 15's
// ProcessStartupPacket reads it: SSLRequest and GSSENCRequest whatever their
// length, `ssl_done`/`gss_done` making a repeated request an unsupported
// protocol version, the parameter list read up to the first empty name, the
// `replication` value checked as it is met, then the layout. A missing user
// name is not checked here: PostgreSQL sends NegotiateProtocolVersion first.
StartupPacket parse_startup_packet(ByteView packet, bool ssl_done = false, bool gss_done = false);

// PostgreSQL's parse_bool(): true/false/yes/no/on/off/1/0, case-insensitive,
// and any unique prefix of them ("t", "of"). nullopt for anything else.
std::optional<bool> parse_pg_bool(std::string_view value) noexcept;

// ---- errors and notices -----------------------------------------------------

// ErrorResponse and NoticeResponse share one layout: (code byte, string)*, 0.
struct ErrorFields {
  std::vector<std::pair<char, std::string>> fields;

  const std::string* find(char code) const noexcept;
  std::string_view severity() const noexcept;  // 'S'
  std::string_view sqlstate() const noexcept;  // 'C'
  std::string_view message() const noexcept;   // 'M'

  static std::optional<ErrorFields> parse(ByteView body);
  void serialize(Bytes& out, char tag) const;
};

// Builds an ErrorResponse (tag 'E') or NoticeResponse ('N') from the usual fields.
struct ErrorResponse {
  std::string severity;  // ERROR, FATAL, PANIC / NOTICE, WARNING, ...
  std::string sqlstate;
  std::string message;
  std::string detail;    // omitted when empty
  std::string hint;      // omitted when empty
  int position = 0;      // 1-based character position in the query; 0 = none

  static ErrorResponse make(std::string severity, std::string sqlstate, std::string message) {
    ErrorResponse e;
    e.severity = std::move(severity);
    e.sqlstate = std::move(sqlstate);
    e.message = std::move(message);
    return e;
  }
  void serialize(Bytes& out, char tag = backend_tag::ErrorResponse) const;
};

// ---- authentication (backend 'R') ------------------------------------------

namespace auth_code {
inline constexpr std::int32_t Ok = 0;
inline constexpr std::int32_t KerberosV5 = 2;
inline constexpr std::int32_t CleartextPassword = 3;
inline constexpr std::int32_t MD5Password = 5;
inline constexpr std::int32_t GSS = 7;
inline constexpr std::int32_t GSSContinue = 8;
inline constexpr std::int32_t SSPI = 9;
inline constexpr std::int32_t SASL = 10;
inline constexpr std::int32_t SASLContinue = 11;
inline constexpr std::int32_t SASLFinal = 12;
}  // namespace auth_code

struct AuthenticationRequest {
  std::int32_t code = auth_code::Ok;
  std::array<std::uint8_t, 4> md5_salt{};  // MD5Password
  std::vector<std::string> sasl_mechanisms;  // SASL
  std::string sasl_data;                     // SASLContinue / SASLFinal

  static AuthenticationRequest of(std::int32_t code) {
    AuthenticationRequest r;
    r.code = code;
    return r;
  }

  static std::optional<AuthenticationRequest> parse(ByteView body);
  void serialize(Bytes& out) const;
};

// PasswordMessage ('p') with a NUL-terminated password (cleartext or md5).
struct PasswordMessage {
  std::string password;
  static std::optional<PasswordMessage> parse(ByteView body);
  void serialize(Bytes& out) const;
};
struct SASLInitialResponse {
  std::string mechanism;
  std::string data;
  void serialize(Bytes& out) const;
};
struct SASLResponse {
  std::string data;
  void serialize(Bytes& out) const;
};

// ---- session status -----------------------------------------------------------

struct BackendKeyData {
  std::int32_t process_id = 0;
  std::int32_t secret_key = 0;
  static std::optional<BackendKeyData> parse(ByteView body);
  void serialize(Bytes& out) const;
};

struct ParameterStatus {
  std::string name;
  std::string value;
  static std::optional<ParameterStatus> parse(ByteView body);
  void serialize(Bytes& out) const;
};

// Transaction status in ReadyForQuery.
namespace tx_status {
inline constexpr char Idle = 'I';
inline constexpr char InBlock = 'T';
inline constexpr char Failed = 'E';
}  // namespace tx_status

struct ReadyForQuery {
  char status = tx_status::Idle;
  static std::optional<ReadyForQuery> parse(ByteView body);
  void serialize(Bytes& out) const;
};

}  // namespace tokengate::protocol

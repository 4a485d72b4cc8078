// libFuzzer target `startup`: a client's first bytes (SSLRequest, GSSENCRequest,
// CancelRequest, StartupMessage, PasswordMessage) through ClientHandshake,
// split into reads at fuzzer-chosen points, and parse_startup_packet on them.
//
// Input: <client bytes> <chunk lengths: n × u16 big-endian> <n: 1 byte> <options: 1 byte>
// (the trailer is read from the end, so that mutations of the stream keep it).
// options: bit 0 tls_available, bit 1 require_tls, bit 2 refuse_plaintext_password,
// bit 3 the TLS handshake after StartTls succeeds.
//
// Properties besides "no crash, no UB, no leak":
// - consumed never exceeds what was received; the machine always makes progress;
// - it never waits for more than one bounded message (no unbounded buffering);
// - every Reply and Reject is a sequence of well-formed backend messages, a
//   Reject ending in a FATAL ErrorResponse with a five-character SQLSTATE;
// - a LoggedIn startup names a non-empty user and no setting or option that
//   sets the session's identity; the packet rebuilt for the upstream speaks
//   3.0, names that user, carries no _pq_. option, survives serialize → parse
//   unchanged and passes validate_startup with the same parameters;
// - the outcome does not depend on how the bytes were split into reads (except
//   where PostgreSQL itself looks at what arrived with an SSL/GSSENC request).
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "fuzz_support.hpp"
#include "proxy/protocol/frame.hpp"
#include "proxy/protocol/messages.hpp"
#include "proxy/session/client_handshake.hpp"
#include "proxy/session/startup_parameters.hpp"

using namespace tokengate;
using namespace tokengate::protocol;
using session::ClientHandshake;
using fuzz::printable;

namespace {

// The most a driver may have to hold while the machine says NeedMore: one
// whole password message (tag, length, body), the longest message it accepts.
constexpr std::size_t kMaxBuffered = 1 + session::kMaxPasswordMessageLength + 1;

struct Input {
  ByteView stream;
  std::vector<std::size_t> chunks;  // read sizes; the last read takes the rest
  ClientHandshake::Options options;
  bool tls_succeeds = false;
};

Input decode(const std::uint8_t* data, std::size_t size) {
  Input in;
  std::size_t end = size;
  std::uint8_t opts = end > 0 ? data[--end] : 0;
  std::size_t n = end > 0 ? data[--end] & 15 : 0;
  in.options.tls_available = opts & 1;
  in.options.require_tls = opts & 2;
  in.options.refuse_plaintext_password = opts & 4;
  in.tls_succeeds = opts & 8;
  for (std::size_t i = 0; i < n && end >= 2; ++i) {
    end -= 2;
    in.chunks.push_back(std::size_t(data[end]) << 8 | data[end + 1]);
  }
  in.stream = ByteView(data, end);
  return in;
}

// Checks that `bytes` is a run of whole backend messages (or the one-byte
// answer 'N' to SSLRequest/GSSENCRequest) and returns their tags.
std::string check_messages(ByteView bytes, const char* what) {
  if (bytes.size() == 1 && bytes[0] == 'N') return "N";
  std::string tags;
  while (!bytes.empty()) {
    auto fr = read_frame(bytes);
    FUZZ_CHECK(fr.status == FrameStatus::complete,
               std::string(what) + " is not a run of whole messages: " + printable(bytes));
    tags += fr.frame.tag;
    bytes = bytes.subspan(fr.frame.size);
  }
  return tags;
}

// Whether `bytes` is a run of whole backend messages.
bool whole_messages(ByteView bytes) {
  while (!bytes.empty()) {
    auto fr = read_frame(bytes);
    if (fr.status != FrameStatus::complete) return false;
    bytes = bytes.subspan(fr.frame.size);
  }
  return true;
}

void check_reject(const ClientHandshake::Reject& r) {
  ByteView bytes = r.bytes;
  const std::string_view text = as_chars(bytes);
  if (!whole_messages(bytes) && text.rfind("EFATAL:  ", 0) == 0) {
    // A client below protocol 3.0 gets PostgreSQL's old error format: 'E',
    // the text, a newline and one NUL.
    FUZZ_CHECK(text.size() > 11 && text.find('\0') == text.size() - 1 && text[text.size() - 2] == '\n',
               "a malformed pre-3.0 error: " + printable(r.bytes));
    return;
  }
  // Bytes sent right after an SSLRequest/GSSENCRequest get its one-byte
  // answer first, then the error (as PostgreSQL answers them).
  if (!whole_messages(bytes) && !bytes.empty() && (bytes[0] == 'N' || bytes[0] == 'S')) bytes = bytes.subspan(1);
  auto tags = check_messages(bytes, "Reject");
  FUZZ_CHECK(!tags.empty() && tags.back() == backend_tag::ErrorResponse,
             "Reject does not end in an ErrorResponse: " + printable(r.bytes));
  while (bytes.size() > 0) {
    auto fr = read_frame(bytes);
    if (fr.frame.size == bytes.size()) {
      auto fields = ErrorFields::parse(fr.frame.body);
      FUZZ_CHECK(fields.has_value(), "unparsable ErrorResponse: " + printable(r.bytes));
      FUZZ_CHECK(fields->severity() == "FATAL", "Reject is not FATAL: " + printable(r.bytes));
      FUZZ_CHECK(fields->sqlstate().size() == 5, "bad SQLSTATE: " + printable(r.bytes));
      FUZZ_CHECK(!fields->message().empty(), "Reject without a message: " + printable(r.bytes));
    }
    bytes = bytes.subspan(fr.frame.size);
  }
}

bool same_parameters(const session::StartupParameters& a, const session::StartupParameters& b) {
  return a.user == b.user && a.database == b.database && a.replication == b.replication &&
         a.settings == b.settings && a.options == b.options;
}

bool sets_identity(std::string_view name) {
  std::string lower;
  for (char c : name) lower += char(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  return lower == "session_authorization" || lower == "role";
}

void check_logged_in(const ClientHandshake::LoggedIn& l) {
  const auto& s = l.startup;
  FUZZ_CHECK(!s.user.empty(), "logged in without a user name");
  for (const auto& [k, v] : s.settings)
    FUZZ_CHECK(!sets_identity(k) && k.rfind("_pq_.", 0) != 0, "a setting passed the checks: " + printable(k));
  for (const auto& [k, v] : s.options)
    FUZZ_CHECK(!sets_identity(k), "an option passed the checks: " + printable(k));
  // What goes upstream (as the user itself, as for a password login) must
  // read back as the same packet, speak 3.0, name the role as its user, carry
  // no protocol option, and pass the same checks with the same result: the
  // upstream sees exactly what tokengate checked.
  const auto up = s.for_upstream(s.user);
  Bytes wire;
  up.serialize(wire);
  auto again = parse_startup_packet(wire);
  auto* msg = std::get_if<StartupMessage>(&again);
  FUZZ_CHECK(msg != nullptr, "the upstream startup packet does not parse: " + printable(wire));
  FUZZ_CHECK(msg->protocol_version == kProtocolVersion3, "the upstream packet speaks protocol " +
                                                             std::to_string(msg->protocol_version));
  FUZZ_CHECK(msg->parameters == up.parameters && msg->protocol_options.empty(),
             "the upstream startup packet changes through serialize/parse: " + printable(wire));
  const std::string* user = msg->find("user");
  FUZZ_CHECK(user != nullptr && *user == s.user, "the upstream packet names another user: " + printable(wire));
  auto rechecked = session::validate_startup(*msg);
  auto* p = std::get_if<session::StartupParameters>(&rechecked);
  FUZZ_CHECK(p != nullptr, "the upstream packet fails the checks it was built from: " + printable(wire));
  FUZZ_CHECK(same_parameters(*p, s), "the upstream packet reads as other parameters: " + printable(wire));
}

// Runs the handshake the way the server's driver does and returns a transcript.
struct Outcome {
  std::vector<std::string> transcript;
  bool negotiated = false;  // an SSLRequest/GSSENCRequest was answered
};

Outcome drive(const Input& in, const std::vector<std::size_t>& chunks) {
  Outcome out;
  ClientHandshake hs(in.options);
  Bytes buf;
  std::size_t fed = 0, next_chunk = 0;
  auto feed = [&]() -> bool {
    if (fed == in.stream.size()) return false;
    std::size_t n = next_chunk < chunks.size() ? chunks[next_chunk++] : in.stream.size() - fed;
    n = std::max<std::size_t>(1, std::min(n, in.stream.size() - fed));
    buf.insert(buf.end(), in.stream.begin() + fed, in.stream.begin() + fed + n);
    fed += n;
    return true;
  };
  int idle_rounds = 0;  // answers in a row that consumed nothing
  for (;;) {
    std::size_t consumed = 12345;
    auto action = hs.next(ByteView(buf.data(), buf.size()), consumed);
    FUZZ_CHECK(consumed <= buf.size(),
               "consumed " + std::to_string(consumed) + " of " + std::to_string(buf.size()) + " bytes");
    buf.erase(buf.begin(), buf.begin() + std::ptrdiff_t(consumed));
    if (std::holds_alternative<ClientHandshake::NeedMore>(action)) {
      FUZZ_CHECK(buf.size() <= kMaxBuffered,
                 "NeedMore with " + std::to_string(buf.size()) + " bytes buffered: unbounded buffering");
      if (!feed()) {
        action = hs.on_eof(ByteView(buf.data(), buf.size()));
        FUZZ_CHECK(std::holds_alternative<ClientHandshake::Closed>(action) ||
                       std::holds_alternative<ClientHandshake::Reject>(action),
                   "on_eof must close or reject");
        out.transcript.push_back("eof");
        return out;
      }
      idle_rounds = 0;
      continue;
    }
    if (consumed == 0 && ++idle_rounds > 4) fuzz::fail(__FILE__, __LINE__, "progress", "the handshake loops without consuming input");
    if (consumed > 0) idle_rounds = 0;
    if (std::holds_alternative<ClientHandshake::StartTls>(action)) {
      out.negotiated = true;
      out.transcript.push_back("StartTls");
      if (!in.tls_succeeds) return out;
      hs.tls_established();
      FUZZ_CHECK(hs.tls_active(), "tls_established() did not stick");
      continue;
    }
    if (auto* reply = std::get_if<ClientHandshake::Reply>(&action)) {
      auto tags = check_messages(reply->bytes, "Reply");
      if (tags == "N") out.negotiated = true;
      out.transcript.push_back("Reply " + printable(reply->bytes, SIZE_MAX));
      continue;
    }
    if (auto* reject = std::get_if<ClientHandshake::Reject>(&action)) {
      check_reject(*reject);
      out.transcript.push_back("Reject " + printable(reject->bytes, SIZE_MAX));
      return out;
    }
    if (auto* cancel = std::get_if<ClientHandshake::Cancel>(&action)) {
      out.transcript.push_back("Cancel " + std::to_string(cancel->request.process_id) + " " +
                               std::to_string(cancel->request.secret_key));
      return out;
    }
    if (std::holds_alternative<ClientHandshake::Closed>(action)) {
      out.transcript.push_back("Closed");
      return out;
    }
    auto& login = std::get<ClientHandshake::LoggedIn>(action);
    check_logged_in(login);
    std::string t = "LoggedIn";
    for (const auto& [k, v] : login.startup.for_upstream(login.startup.user).parameters)
      t += " " + printable(k) + "=" + printable(v);
    t += " password=" + printable(login.password.view());
    out.transcript.push_back(t);
    return out;
  }
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += "  " + x + "\n";
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Input in = decode(data, size);

  // The packet parser alone, on the first packet as framed.
  if (auto fr = read_startup_frame(in.stream, kMaxStartupPacketLength); fr.status == FrameStatus::complete) {
    auto packet = parse_startup_packet(fr.frame.body);
    if (auto* msg = std::get_if<StartupMessage>(&packet)) {
      Bytes wire;
      msg->serialize(wire);
      auto again = parse_startup_packet(wire);
      auto* msg2 = std::get_if<StartupMessage>(&again);
      FUZZ_CHECK(msg2 != nullptr && msg2->parameters == msg->parameters &&
                     msg2->protocol_version == msg->protocol_version,
                 "StartupMessage changes through serialize/parse: " + printable(wire));
    }
  }

  Outcome split = drive(in, in.chunks);
  // Whole, in one read. When an SSLRequest/GSSENCRequest was answered, bytes
  // that arrived with it are refused (as PostgreSQL does, CVE-2021-23214),
  // so the split matters there by design.
  if (!split.negotiated) {
    Outcome whole = drive(in, {});
    FUZZ_CHECK(whole.negotiated || whole.transcript == split.transcript,
               "the outcome depends on how the bytes were split into reads:\nsplit:\n" + join(split.transcript) +
                   "whole:\n" + join(whole.transcript));
  }
  return 0;
}

// SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL speaks it: the client side for
// logging in upstream, and a check of a password against a stored verifier.
// MD5 password hashing lives here too. No I/O; Botan does the cryptography.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tokengate::auth {

// No setting may allow more PBKDF2 rounds than this: 10 million take seconds
// of a CPU core each time (PostgreSQL's default is 4096).
inline constexpr std::size_t kMaxScramIterationsLimit = 10'000'000;

// The i= attribute of a SCRAM server-first-message or the iteration count of
// a stored verifier ("SCRAM-SHA-256$<iter>:…"); nullopt when there is none
// or it is not a positive number.
std::optional<std::size_t> scram_iterations(std::string_view server_first);
std::optional<std::size_t> verifier_iterations(std::string_view verifier);

// The client half of one SCRAM-SHA-256 exchange without channel binding
// (tokengate never offers or uses SCRAM-SHA-256-PLUS: the client would bind to our certificate, the server to its own).
// The password is SASLprep'd as PostgreSQL does (saslprep.hpp).
class ScramClient {
 public:
  // `nonce` may be given for tests; otherwise 18 random bytes, base64.
  // `user` goes into n=; PostgreSQL ignores it (it uses the startup user),
  // so libpq and tokengate send it empty. Tests set it for RFC 7677's vector.
  explicit ScramClient(std::string_view password, std::string nonce = {}, std::string user = {});
  ~ScramClient();
  ScramClient(const ScramClient&) = delete;
  ScramClient& operator=(const ScramClient&) = delete;

  // SASLInitialResponse data: "n,,n=<user>,r=<client nonce>".
  std::string client_first() const;

  // Takes the server-first-message; returns the client-final-message, or
  // nullopt when the server's message is malformed, its nonce does not
  // extend ours, or it demands more than `max_iterations` PBKDF2 rounds.
  std::optional<std::string> client_final(std::string_view server_first,
                                          std::size_t max_iterations = kMaxScramIterationsLimit);

  // Checks the server's signature in the server-final-message (constant time).
  bool verify_server_final(std::string_view server_final) const;

 private:
  std::string password_;  // SASLprep'd; wiped by the destructor
  std::string client_nonce_;
  std::string user_;
  std::string auth_message_;
  std::array<std::uint8_t, 32> server_key_{};
  bool have_keys_ = false;
};

// The md5 answer to AuthenticationMD5Password:
// "md5" + md5hex(md5hex(password + user) + salt).
std::string md5_password_response(std::string_view user, std::string_view password,
                                  const std::array<std::uint8_t, 4>& salt);

// Checks a password against a role's stored verifier as pg_authid.rolpassword
// holds it: "SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>" or
// "md5<hex>". Constant-time comparison. Costs one PBKDF2 for SCRAM: run it off
// the I/O threads. A SCRAM verifier with more than `max_iterations` rounds is
// not computed (too_costly): a role could otherwise make every login attempt
// in its name cost seconds.
enum class VerifierCheck { match, mismatch, unsupported, too_costly };
VerifierCheck check_password_verifier(std::string_view verifier, std::string_view user,
                                      std::string_view password,
                                      std::size_t max_iterations = kMaxScramIterationsLimit);

// Costs what checking a password against PostgreSQL's default verifier
// (SCRAM-SHA-256, 4096 rounds) costs, and never matches: for a role that does
// not exist or has no password, so that the answer takes as long as for one
// that does (PostgreSQL's mock authentication does the same).
void dummy_verifier_check(std::string_view user, std::string_view password);

}  // namespace tokengate::auth

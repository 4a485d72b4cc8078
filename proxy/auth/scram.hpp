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

// The client half of one SCRAM-SHA-256 exchange without channel binding
// (tokengate never offers or uses SCRAM-SHA-256-PLUS: the client would bind to our certificate, the server to its own).
// The password is SASLprep'd as PostgreSQL does (saslprep.hpp).
class ScramClient {
 public:
  // `nonce` may be given for tests; otherwise 18 random bytes, base64.
  // `user` goes into n=; PostgreSQL ignores it (it uses the startup user),
  // so libpq and tokengate send it empty. Tests set it for RFC 7677's vector.
  explicit ScramClient(std::string password, std::string nonce = {}, std::string user = {});

  // SASLInitialResponse data: "n,,n=<user>,r=<client nonce>".
  std::string client_first() const;

  // Takes the server-first-message; returns the client-final-message, or
  // nullopt when the server's message is malformed or its nonce does not
  // extend ours.
  std::optional<std::string> client_final(std::string_view server_first);

  // Checks the server's signature in the server-final-message (constant time).
  bool verify_server_final(std::string_view server_final) const;

 private:
  std::string password_;
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
// the I/O threads.
enum class VerifierCheck { match, mismatch, unsupported };
VerifierCheck check_password_verifier(std::string_view verifier, std::string_view user,
                                      std::string_view password);

}  // namespace tokengate::auth

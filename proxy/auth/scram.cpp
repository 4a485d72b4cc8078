// SCRAM-SHA-256 client, verifier check and MD5 password hashing (see scram.hpp).
#include "proxy/auth/scram.hpp"

#include "proxy/auth/saslprep.hpp"
#include "proxy/auth/secret.hpp"

#include <botan/base64.h>
#include <botan/hash.h>
#include <botan/hex.h>
#include <botan/mac.h>
#include <botan/mem_ops.h>
#include <botan/pwdhash.h>
#include <botan/system_rng.h>

#include <algorithm>
#include <charconv>
#include <vector>

namespace tokengate::auth {
namespace {

using Key = std::array<std::uint8_t, 32>;

Key hmac(const std::uint8_t* key, std::size_t key_len, std::string_view msg) {
  auto mac = Botan::MessageAuthenticationCode::create_or_throw("HMAC(SHA-256)");
  mac->set_key(key, key_len);
  mac->update(reinterpret_cast<const std::uint8_t*>(msg.data()), msg.size());
  Key out;
  mac->final(out.data());
  return out;
}

Key sha256(const Key& in) {
  auto h = Botan::HashFunction::create_or_throw("SHA-256");
  h->update(in.data(), in.size());
  Key out;
  h->final(out.data());
  return out;
}

// SHA-256's block: HMAC hashes a longer key first (RFC 2104, section 2).
constexpr std::size_t kHmacBlockBytes = 64;

Key salted_password(std::string_view password, const std::vector<std::uint8_t>& salt,
                    std::size_t iterations) {
  // PBKDF2's password is its HMAC key. Botan refuses keys over 4,096 bytes
  // (an exception that used to end the process), while PostgreSQL takes any
  // password up to its 65,535-byte message; hashing a long one first, as HMAC
  // itself would, gives PostgreSQL's result for every length.
  Key hashed;
  if (password.size() > kHmacBlockBytes) {
    auto h = Botan::HashFunction::create_or_throw("SHA-256");
    h->update(reinterpret_cast<const std::uint8_t*>(password.data()), password.size());
    h->final(hashed.data());
    password = std::string_view(reinterpret_cast<const char*>(hashed.data()), hashed.size());
  }
  auto family = Botan::PasswordHashFamily::create_or_throw("PBKDF2(SHA-256)");
  auto pbkdf = family->from_params(iterations);
  Key out;
  pbkdf->derive_key(out.data(), out.size(), password.data(), password.size(), salt.data(),
                    salt.size());
  Botan::secure_scrub_memory(hashed.data(), hashed.size());
  return out;
}

std::optional<std::vector<std::uint8_t>> b64decode(std::string_view s) {
  try {
    auto v = Botan::base64_decode(s.data(), s.size());
    return std::vector<std::uint8_t>(v.begin(), v.end());
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::string b64encode(const std::uint8_t* p, std::size_t n) { return Botan::base64_encode(p, n); }

// Finds "k=value" among comma-separated attributes.
std::optional<std::string_view> attribute(std::string_view msg, char k) {
  while (!msg.empty()) {
    auto comma = msg.find(',');
    auto part = msg.substr(0, comma);
    if (part.size() >= 2 && part[0] == k && part[1] == '=') return part.substr(2);
    if (comma == std::string_view::npos) break;
    msg.remove_prefix(comma + 1);
  }
  return std::nullopt;
}

std::string md5_hex(std::string_view a, std::string_view b) {
  auto h = Botan::HashFunction::create_or_throw("MD5");
  h->update(reinterpret_cast<const std::uint8_t*>(a.data()), a.size());
  h->update(reinterpret_cast<const std::uint8_t*>(b.data()), b.size());
  auto d = h->final();
  return Botan::hex_encode(d.data(), d.size(), false);
}

bool equal_ct(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  return Botan::constant_time_compare(reinterpret_cast<const std::uint8_t*>(a.data()),
                                      reinterpret_cast<const std::uint8_t*>(b.data()), a.size());
}

}  // namespace

std::optional<std::size_t> scram_iterations(std::string_view server_first) {
  auto iter_s = attribute(server_first, 'i');
  if (!iter_s) return std::nullopt;
  std::size_t iterations = 0;
  auto [p, ec] = std::from_chars(iter_s->data(), iter_s->data() + iter_s->size(), iterations);
  if (ec != std::errc{} || p != iter_s->data() + iter_s->size() || iterations == 0) return std::nullopt;
  return iterations;
}

std::optional<std::size_t> verifier_iterations(std::string_view verifier) {
  constexpr std::string_view prefix = "SCRAM-SHA-256$";
  if (verifier.substr(0, prefix.size()) != prefix) return std::nullopt;
  auto rest = verifier.substr(prefix.size());
  auto iter_s = rest.substr(0, rest.find(':'));
  std::size_t iterations = 0;
  auto [p, ec] = std::from_chars(iter_s.data(), iter_s.data() + iter_s.size(), iterations);
  if (ec != std::errc{} || p != iter_s.data() + iter_s.size() || iterations == 0) return std::nullopt;
  return iterations;
}

ScramClient::~ScramClient() {
  wipe(password_);
  wipe(server_key_.data(), server_key_.size());
}

ScramClient::ScramClient(std::string_view password, std::string nonce, std::string user)
    : password_(saslprep_password(password)), client_nonce_(std::move(nonce)), user_(std::move(user)) {
  if (client_nonce_.empty()) {
    std::uint8_t raw[18];
    Botan::system_rng().randomize(raw, sizeof raw);
    client_nonce_ = b64encode(raw, sizeof raw);
  }
}

std::string ScramClient::client_first() const { return "n,,n=" + user_ + ",r=" + client_nonce_; }

std::optional<std::string> ScramClient::client_final(std::string_view server_first, std::size_t max_iterations) {
  auto nonce = attribute(server_first, 'r');
  auto salt_b64 = attribute(server_first, 's');
  auto iterations = scram_iterations(server_first);
  if (!nonce || !salt_b64 || !iterations) return std::nullopt;
  if (nonce->size() <= client_nonce_.size() || nonce->substr(0, client_nonce_.size()) != client_nonce_)
    return std::nullopt;
  if (*iterations > std::min(max_iterations, kMaxScramIterationsLimit)) return std::nullopt;
  auto salt = b64decode(*salt_b64);
  if (!salt || salt->empty()) return std::nullopt;

  Key salted = salted_password(password_, *salt, *iterations);
  Key client_key = hmac(salted.data(), salted.size(), "Client Key");
  Key stored_key = sha256(client_key);
  std::string without_proof = "c=biws,r=" + std::string(*nonce);  // biws = base64("n,,")
  auth_message_ = "n=" + user_ + ",r=" + client_nonce_ + "," + std::string(server_first) + "," + without_proof;
  Key signature = hmac(stored_key.data(), stored_key.size(), auth_message_);
  Key proof;
  for (std::size_t i = 0; i < proof.size(); ++i) proof[i] = client_key[i] ^ signature[i];
  server_key_ = hmac(salted.data(), salted.size(), "Server Key");
  have_keys_ = true;
  // The salted password and the client key are password equivalents.
  wipe(salted.data(), salted.size());
  wipe(client_key.data(), client_key.size());
  return without_proof + ",p=" + b64encode(proof.data(), proof.size());
}

bool ScramClient::verify_server_final(std::string_view server_final) const {
  if (!have_keys_) return false;
  auto v = attribute(server_final, 'v');
  if (!v) return false;
  auto got = b64decode(*v);
  if (!got || got->size() != 32) return false;
  Key expected = hmac(server_key_.data(), server_key_.size(), auth_message_);
  return Botan::constant_time_compare(got->data(), expected.data(), expected.size());
}

std::string md5_password_response(std::string_view user, std::string_view password,
                                  const std::array<std::uint8_t, 4>& salt) {
  std::string inner = md5_hex(password, user);  // what an MD5 verifier stores: a password equivalent
  auto out = "md5" + md5_hex(inner, std::string_view(reinterpret_cast<const char*>(salt.data()), 4));
  wipe(inner);
  return out;
}

VerifierCheck check_password_verifier(std::string_view verifier, std::string_view user,
                                      std::string_view password, std::size_t max_iterations) {
  if (verifier.size() == 35 && verifier.substr(0, 3) == "md5") {
    std::string computed = md5_hex(password, user);
    const bool same = equal_ct(verifier.substr(3), computed);
    wipe(computed);
    return same ? VerifierCheck::match : VerifierCheck::mismatch;
  }
  constexpr std::string_view prefix = "SCRAM-SHA-256$";
  if (verifier.substr(0, prefix.size()) != prefix) return VerifierCheck::unsupported;
  auto rest = verifier.substr(prefix.size());
  auto colon = rest.find(':');
  auto dollar = rest.find('$');
  if (colon == std::string_view::npos || dollar == std::string_view::npos || dollar < colon)
    return VerifierCheck::unsupported;
  auto salt_b64 = rest.substr(colon + 1, dollar - colon - 1);
  auto keys = rest.substr(dollar + 1);
  auto colon2 = keys.find(':');
  if (colon2 == std::string_view::npos) return VerifierCheck::unsupported;
  auto iterations = verifier_iterations(verifier);
  if (!iterations) return VerifierCheck::unsupported;
  if (*iterations > std::min(max_iterations, kMaxScramIterationsLimit)) return VerifierCheck::too_costly;
  auto salt = b64decode(salt_b64);
  auto stored = b64decode(keys.substr(0, colon2));
  if (!salt || !stored || stored->size() != 32) return VerifierCheck::unsupported;
  std::string prepared = saslprep_password(password);
  Key salted = salted_password(prepared, *salt, *iterations);
  wipe(prepared);
  Key client_key = hmac(salted.data(), salted.size(), "Client Key");
  Key stored_key = sha256(client_key);
  wipe(salted.data(), salted.size());
  wipe(client_key.data(), client_key.size());
  return Botan::constant_time_compare(stored_key.data(), stored->data(), 32)
             ? VerifierCheck::match
             : VerifierCheck::mismatch;
}

void dummy_verifier_check(std::string_view user, std::string_view password) {
  // A verifier of PostgreSQL's default shape whose stored key matches no
  // password anyone will find (a hash of the user name, not of a password).
  static const std::string salt = b64encode(reinterpret_cast<const std::uint8_t*>("tokengate-mock-salt"), 16);
  Key fake{};
  auto h = Botan::HashFunction::create_or_throw("SHA-256");
  h->update("tokengate mock verifier:");
  h->update(reinterpret_cast<const std::uint8_t*>(user.data()), user.size());
  h->final(fake.data());
  const std::string stored = b64encode(fake.data(), fake.size());
  const std::string verifier = "SCRAM-SHA-256$4096:" + salt + "$" + stored + ":" + stored;
  (void)check_password_verifier(verifier, user, password);
}

}  // namespace tokengate::auth

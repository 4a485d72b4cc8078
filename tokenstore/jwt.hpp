// The token form: compact JWT, HS256 with a keyring key; minting and the stateless part of verification.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "tokenstore/keys.hpp"

namespace tokengate::tokenstore {

// A token id: 128 random bits; in the JWT as 32 lower-case hex characters.
using tid_t = std::array<std::uint8_t, 16>;
using sha256_t = std::array<std::uint8_t, 32>;

[[nodiscard]] tid_t random_tid();
[[nodiscard]] std::string tid_to_hex(const tid_t& tid);
[[nodiscard]] std::optional<tid_t> tid_from_hex(std::string_view hex);

// Base64url without padding (RFC 7515 §2).
[[nodiscard]] std::string base64url_encode(std::span<const std::uint8_t> bytes);
// false on any character outside the alphabet, padding, or an impossible length.
[[nodiscard]] bool base64url_decode(std::string_view text, std::string& out);

// Longest token text accepted at all; ours are about 220 bytes plus the user name.
inline constexpr std::size_t max_token_length = 2048;

struct token_claims {
    std::string user;
    tid_t tid{};
    std::int64_t iat = 0;  // unix seconds
    std::int64_t exp = 0;  // unix seconds
};

// Signs `claims` with `key`. The result is the only copy of the token text:
// callers hand it to the client once and keep only token_hash() of it.
[[nodiscard]] std::string mint_token(const signing_key& key, const token_claims& claims);

// SHA-256 of the whole token text, as stored.
[[nodiscard]] sha256_t token_hash(std::string_view token);

// True if `text` has the shape of one of our tokens (three base64url parts,
// header starting `{"`): lets the login path tell a token from a password
// without any cryptography.
[[nodiscard]] bool looks_like_token(std::string_view text) noexcept;

// Every reason verification can give. Only `ok` admits a login; the caller
// logs the reason and decides what the client sees.
enum class verify_status {
    ok,
    bad_format,         // not three base64url parts, bad JSON, missing or mistyped claims, too long
    bad_alg,            // alg other than HS256, including "none"
    unknown_kid,        // no signing key with that kid
    bad_signature,      // HMAC mismatch (checked in constant time)
    expired,            // exp <= now
    unknown_tid,        // signature fine but the store has no such tid
    hash_mismatch,      // stored SHA-256 differs (checked in constant time)
    revoked,            // token revoked
    wrong_owner,        // token user differs from the expected (startup) user
    store_unavailable,  // LMDB failure during the look-up
    registry_stale,     // the fleet's registry has been unreachable longer than store.max_staleness
};

[[nodiscard]] std::string_view to_string(verify_status s) noexcept;

// The stateless part: format, alg, kid, signature, exp (in that order). On ok
// or expired, `out` holds the claims. Allocates only for the user name when
// it exceeds the small-string buffer.
[[nodiscard]] verify_status check_token(std::string_view token, keyring& keys, std::int64_t now,
                                        token_claims& out);

}  // namespace tokengate::tokenstore

// The key-encryption key (KEK) of a fleet: signing keys are stored in the registry only wrapped by it.
//
// A fleet shares its signing keys through the PostgreSQL registry, but a copy
// of the `tokengate` schema alone must not let anyone mint a login. So each
// key is stored encrypted and authenticated (AES-256-GCM) under a KEK that
// every instance reads from a file or an environment variable and that never
// enters the database. The additional data binds a wrapped key to its kid and
// creation time, so rows cannot be swapped or relabelled.
//
// The KEK is 32 bytes written as 64 hex digits (`openssl rand -hex 32`); its
// id, stored next to each wrapped key, is the first 8 bytes of SHA-256 over
// "tokengate kek id" and the key, in hex: it names which KEK wrapped a key
// (for rotation) and reveals nothing usable about it.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "tokenstore/keys.hpp"

namespace tokengate::tokenstore {

// A KEK could not be read or is malformed, or a wrapped key does not open
// with it. Messages name files and kids, never key material.
class kek_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct kek {
    std::array<std::uint8_t, 32> secret{};
    std::string id;  // 16 hex characters
};

// 64 hex digits (surrounding whitespace allowed). `what` names the source in errors.
[[nodiscard]] kek kek_from_text(std::string_view text, std::string_view what);
// Reads a KEK file: a regular file of this user, not readable or writable by
// group or others (as signing.keys), at most 1 KiB.
[[nodiscard]] kek load_kek_file(const std::filesystem::path& path);

// nonce (12) | ciphertext (32) | tag (16), bound to kid and created_at.
[[nodiscard]] std::vector<std::uint8_t> wrap_key(const kek& k, const signing_key& key);
// Opens a wrapped key; throws kek_error when it was not wrapped by this KEK
// for this kid and time (or was altered).
[[nodiscard]] signing_key unwrap_key(const kek& k, std::string_view kid, std::int64_t created_at,
                                     const std::vector<std::uint8_t>& wrapped);

}  // namespace tokengate::tokenstore

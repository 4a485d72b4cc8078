// Signing keys: 256-bit HMAC keys in <data_dir>/signing.keys (mode 0600), rotation, lock-free look-up by kid.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace tokengate::tokenstore {

// The key file is missing, unreadable, malformed, or accessible by group or
// others. The message names the file and never contains key material.
class keyring_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct signing_key {
    std::string kid;                   // 16 lower-case hex characters
    std::int64_t created_at = 0;       // unix seconds
    std::array<std::uint8_t, 32> secret{};
};

// A fresh key from the system RNG: random kid, 256-bit secret, created now.
[[nodiscard]] signing_key generate_signing_key();

// What `tokengate keys list` shows: never the secret.
struct key_info {
    std::string kid;
    std::int64_t created_at = 0;
    bool newest = false;
};

// The set of signing keys of one data directory. Keys are only ever added
// (rotation appends one; old ones keep verifying), so look-ups are lock-free:
// a fixed array plus an atomic count published with release ordering.
//
// Thread-safe. Not movable (readers hold pointers into it); hold it by
// reference or unique_ptr. Another process (the CLI) may rotate at any time:
// refresh() picks its keys up, and find()/newest() callers call it when a kid
// is unknown or before minting.
class keyring {
public:
    // Rotations allowed over the life of a data directory; a named limit so
    // look-ups never need a lock. 1024 rotations is decades of daily rotation.
    static constexpr std::size_t max_keys = 1024;
    static constexpr const char* file_name = "signing.keys";

    // Opens <data_dir>/signing.keys, creating the directory (0700) and the file
    // (0600, one fresh key from the system RNG) when absent. Throws
    // keyring_error when the file is readable or writable by group/others,
    // owned by another user, or malformed.
    explicit keyring(const std::filesystem::path& data_dir);
    // A keyring without a file, for a fleet: the keys live wrapped in the
    // PostgreSQL registry and pg_store adds them here (adopt) as it learns
    // them. Empty until then; newest() must not be called while empty.
    struct in_memory_t {};
    explicit keyring(in_memory_t);
    keyring(const keyring&) = delete;
    keyring& operator=(const keyring&) = delete;

    // The key new tokens are signed with. Never null after construction.
    [[nodiscard]] const signing_key& newest() const noexcept;
    // nullptr when the kid is unknown. The pointer stays valid for the life of the keyring.
    [[nodiscard]] const signing_key* find(std::string_view kid) const noexcept;
    [[nodiscard]] std::vector<key_info> list() const;

    // Adds a new key, durably (temp file + fsync + rename, under an flock so
    // two processes cannot lose each other's key). Returns it.
    const signing_key& rotate();

    // Re-reads the file if it changed since the last read (another process
    // rotated). At most one stat() per 200 ms unless forced. Nothing for an
    // in-memory keyring (its keys arrive through adopt()).
    void refresh(bool force = false);

    // Adds a key learned from elsewhere (the registry) unless its kid is
    // known; the newest adopted is the one new tokens are signed with. true
    // if added. Throws keyring_error when max_keys are held.
    bool adopt(const signing_key& k);
    [[nodiscard]] bool in_memory() const noexcept { return path_.empty(); }
    [[nodiscard]] std::size_t size() const noexcept { return count_.load(std::memory_order_acquire); }

private:
    void load_locked();  // reads the file and appends unknown keys; mu_ held
    void append_locked(const signing_key& k);

    std::filesystem::path path_;
    std::filesystem::path lock_path_;
    std::array<signing_key, max_keys> keys_{};
    std::atomic<std::size_t> count_{0};
    std::mutex mu_;  // serialises writers (load, rotate)
    std::atomic<std::int64_t> last_check_ms_{0};
    std::int64_t file_mtime_ns_ = 0;
    std::int64_t file_size_ = -1;
    std::uint64_t file_ino_ = 0;
};

}  // namespace tokengate::tokenstore

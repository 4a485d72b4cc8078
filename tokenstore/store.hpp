// The LMDB token store: records, indexes, policies, revocation log. No permission checks here.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "tokenstore/jwt.hpp"
#include "tokenstore/lmdb.hpp"

namespace tokengate::tokenstore {

// Opening failed: schema newer than this binary, unreadable directory, … The
// message is meant for the operator.
class store_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// One token as stored. Times are unix seconds; 0 means "not set".
struct token_record {
    tid_t tid{};
    std::string owner;
    std::string name;
    std::string kid;
    std::string created_by;
    std::optional<std::string> comment;
    std::int64_t created_at = 0;
    std::int64_t expires_at = 0;
    std::int64_t revoked_at = 0;
    std::int64_t last_used_at = 0;
    sha256_t hash{};

    [[nodiscard]] bool revoked() const noexcept { return revoked_at != 0; }
    [[nodiscard]] bool active(std::int64_t now) const noexcept { return !revoked() && expires_at > now; }
};

enum class role_kind : std::uint8_t { user = 1, role = 2 };

struct policy_record {
    std::string role;
    role_kind kind = role_kind::user;
    std::int64_t max_seconds = 0;
    std::int64_t set_at = 0;
    std::string set_by;
};

// The parts of a stored token verification needs; views into the LMDB map,
// valid only inside the callback given to store::lookup_for_verify.
struct token_view {
    std::string_view owner;
    std::string_view name;
    std::int64_t expires_at = 0;
    std::int64_t revoked_at = 0;
    std::int64_t last_used_at = 0;
    const std::uint8_t* hash = nullptr;  // 32 bytes
};

// Schema versions this binary reads and writes.
inline constexpr std::uint32_t schema_version = 1;
// Version byte at the start of every record.
inline constexpr std::uint8_t record_version = 1;

// Thread-safe. One per process per data directory (LMDB forbids opening the
// same environment twice in one process); other processes (the CLI) may have
// it open at the same time. Every mutating call is one write transaction,
// durable when it returns (unless options::durable is false).
//
// LMDB failures are thrown as lmdb::error; the token service turns them into
// errc::store_unavailable.
class store {
public:
    struct options {
        // Start small; the map doubles whenever a write hits MDB_MAP_FULL.
        std::size_t initial_map_size = std::size_t{64} << 20;
        // false: MDB_NOSYNC (commits survive a process crash, not an OS crash). For tests and bulk loads.
        bool durable = true;
    };

    explicit store(const std::filesystem::path& data_dir);
    store(const std::filesystem::path& data_dir, options opts);
    ~store();
    store(const store&) = delete;
    store& operator=(const store&) = delete;

    // ---- tokens ---------------------------------------------------------
    enum class insert_outcome { inserted, name_in_use };
    // Inserts rec and its index entries. A name is in use if an active token
    // of the owner has it; an expired or revoked holder is displaced.
    insert_outcome insert(const token_record& rec, std::int64_t now);
    // Bulk load without name checks (benchmarks, imports): one transaction.
    void insert_many(std::span<const token_record> recs);

    [[nodiscard]] std::optional<token_record> get(const tid_t& tid);
    // The active token (owner, name), if any.
    [[nodiscard]] std::optional<token_record> find_active(std::string_view owner, std::string_view name,
                                                          std::int64_t now);

    // Hot path: runs fn(view) in a read-only transaction if tid exists;
    // returns false (fn not called) otherwise. No allocation.
    template <typename Fn>
    bool lookup_for_verify(const tid_t& tid, Fn&& fn);

    // Sets or clears the comment of the active token (owner, name); false if none.
    bool set_comment(std::string_view owner, std::string_view name, const std::optional<std::string>& comment,
                     std::int64_t now);
    // Revokes the active token (owner, name); its tid, or nullopt if none.
    std::optional<tid_t> revoke(std::string_view owner, std::string_view name, std::int64_t now);
    // Revokes every active token of owner; their tids.
    std::vector<tid_t> revoke_all(std::string_view owner, std::int64_t now);

    // Tokens of one owner (or of everyone), oldest first, leaving out those
    // revoked or expired more than `retention_seconds` ago.
    [[nodiscard]] std::vector<token_record> list(const std::optional<std::string>& owner, std::int64_t now,
                                                 std::int64_t retention_seconds);

    // Writes last_used_at for several tokens in one transaction; unknown tids are skipped.
    void record_last_used(std::span<const std::pair<tid_t, std::int64_t>> uses);

    // Deletes tokens revoked/expired more than retention ago, with their index
    // entries, and revocation-log entries older than that. Returns tokens deleted.
    std::size_t purge(std::int64_t now, std::int64_t retention_seconds);

    // ---- revocation log ---------------------------------------------------
    // Revocations are numbered 1, 2, …, across every process using the store.
    struct revocations {
        std::uint64_t seq = 0;     // pass this next time
        std::vector<tid_t> tids;   // revoked after the `since` given
    };
    [[nodiscard]] revocations revocations_since(std::uint64_t since);
    [[nodiscard]] std::uint64_t revocation_seq();

    // ---- policies ---------------------------------------------------------
    void put_policy(const policy_record& p);
    bool delete_policy(std::string_view role);  // false if there was none
    [[nodiscard]] std::vector<policy_record> list_policies();
    // The policies set on any of `roles` (missing ones are skipped).
    [[nodiscard]] std::vector<policy_record> policies_for(std::span<const std::string> roles);

    // ---- misc -------------------------------------------------------------
    // Frees reader slots left by processes that died inside a read (a killed
    // CLI): they would pin old pages and make the file grow. Called at open
    // and by purge(). Returns how many were freed.
    int clear_stale_readers() noexcept;
    [[nodiscard]] std::size_t map_size() const;
    [[nodiscard]] std::size_t token_count();

private:
    // Runs fn(MDB_txn*) in a read transaction.
    template <typename Fn>
    auto read(Fn&& fn);
    // Runs fn(MDB_txn*) in a write transaction and commits; on MDB_MAP_FULL
    // grows the map and runs fn again from scratch.
    void write(const std::function<void(MDB_txn*)>& fn);
    bool try_begin(unsigned flags, lmdb::txn& out);  // false on MDB_MAP_RESIZED
    // Read transactions are recycled (mdb_txn_reset/renew): with MDB_NOTLS a
    // fresh one would take LMDB's reader-table mutex and a malloc every time.
    // false on MDB_MAP_RESIZED. Caller holds resize_mu_ shared.
    MDB_txn* acquire_reader(bool& resized);
    void release_reader(MDB_txn* txn) noexcept;  // resets and keeps it
    void drop_idle_readers() noexcept;
    void grow(std::size_t at_least);
    void append_revocation(MDB_txn* txn, const tid_t& tid, std::int64_t now);
    bool revoke_in_txn(MDB_txn* txn, const tid_t& tid, std::int64_t now);

    lmdb::env env_;
    lmdb::dbi tokens_, names_, owners_, policies_, meta_, revlog_;
    // Shared by every transaction of this process, exclusive while resizing:
    // LMDB requires no live transaction in the process during mdb_env_set_mapsize.
    mutable std::shared_mutex resize_mu_;
    // glibc's rwlock prefers readers: under steady login load a resize could
    // wait forever. While this is set, new transactions hold back.
    std::atomic<bool> grow_pending_{false};
    // Reset read transactions, ready for renew; sharded by thread so
    // concurrent logins do not meet on one mutex.
    static constexpr std::size_t reader_shards = 16;
    struct alignas(64) reader_shard {
        std::mutex mu;
        std::vector<MDB_txn*> idle;
    };
    std::array<reader_shard, reader_shards> readers_;
};

// ---- inline hot path -------------------------------------------------------

namespace detail {
bool decode_view(std::string_view raw, token_view& out) noexcept;
}
std::string bad_record_message(std::string_view what, std::string_view raw);

template <typename Fn>
auto store::read(Fn&& fn)
{
    for (;;) {
        while (grow_pending_.load(std::memory_order_acquire)) std::this_thread::yield();
        std::shared_lock lk(resize_mu_);
        bool resized = false;
        MDB_txn* txn = acquire_reader(resized);
        if (resized) {
            lk.unlock();
            grow(0);
            continue;
        }
        struct release {
            store* self;
            MDB_txn* txn;
            ~release() { self->release_reader(txn); }
        } guard{this, txn};
        return fn(txn);
    }
}

template <typename Fn>
bool store::lookup_for_verify(const tid_t& tid, Fn&& fn)
{
    return read([&](MDB_txn* txn) {
        std::string_view raw;
        if (!tokens_.get(txn, std::string_view(reinterpret_cast<const char*>(tid.data()), tid.size()), raw))
            return false;
        token_view v;
        if (!detail::decode_view(raw, v)) throw store_error(bad_record_message("token", raw));
        fn(static_cast<const token_view&>(v));
        return true;
    });
}

}  // namespace tokengate::tokenstore

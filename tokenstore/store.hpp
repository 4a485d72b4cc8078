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

#include "tokenstore/backend.hpp"
#include "tokenstore/jwt.hpp"
#include "tokenstore/lmdb.hpp"

namespace tokengate::tokenstore {

// Schema version this binary writes. Version 1 stores (token records of
// version 1, without the owner's OID) are migrated at open, in one write
// transaction; a newer version is refused.
inline constexpr std::uint32_t schema_version = 2;
// Version byte at the start of every token record: 2 carries the owner's OID.
// Version 1 records still decode (owner_oid 0).
inline constexpr std::uint8_t record_version = 2;
// Version byte of policy records.
inline constexpr std::uint8_t policy_record_version = 1;

// Space kept allocated after the end of the LMDB data file so that
// revocations commit even when the disk is full. A revocation copies a few
// dozen 4 KiB pages (one root-to-leaf path in each B-tree it touches), so
// 8 MiB is room for hundreds of them; it is small next to the 64 MiB map the
// store starts with.
inline constexpr std::size_t default_revocation_reserve = std::size_t{8} << 20;

// Thread-safe. One per process per data directory (LMDB forbids opening the
// same environment twice in one process); other processes (the CLI) may have
// it open at the same time. Every mutating call is one write transaction,
// durable when it returns (unless options::durable is false).
//
// LMDB failures are thrown as lmdb::error; the token service turns them into
// errc::store_unavailable.
class store final : public store_backend {
public:
    struct options {
        // Start small; the map doubles whenever a write hits MDB_MAP_FULL.
        std::size_t initial_map_size = std::size_t{64} << 20;
        // false: MDB_NOSYNC (commits survive a process crash, not an OS crash). For tests and bulk loads.
        bool durable = true;
        // Bytes kept allocated (fallocate, FALLOC_FL_KEEP_SIZE) after the end
        // of data.mdb for revocations on a full disk; 0 disables the reserve.
        std::size_t revocation_reserve = default_revocation_reserve;
    };

    explicit store(const std::filesystem::path& data_dir);
    store(const std::filesystem::path& data_dir, options opts);
    ~store();
    store(const store&) = delete;
    store& operator=(const store&) = delete;

    // ---- store_backend (documented there) --------------------------------
    insert_outcome insert(const token_record& rec, std::int64_t now) override;
    lookup_outcome lookup(const tid_t& tid, verify_visitor& visitor) override;
    bool set_comment(std::string_view owner, std::string_view name, const std::optional<std::string>& comment,
                     std::int64_t now) override;
    // Runs from the reserve on a full disk.
    std::vector<tid_t> revoke(std::string_view owner, std::string_view name, std::int64_t now) override;
    // Runs from the reserve on a full disk.
    std::vector<tid_t> revoke_all(std::string_view owner, std::int64_t now) override;
    // Runs from the reserve on a full disk (it narrows what a token can do).
    bind_outcome bind_owner_oid(const tid_t& tid, std::uint32_t oid) override;
    [[nodiscard]] std::vector<token_record> list(const std::optional<std::string>& owner, std::int64_t now,
                                                 std::int64_t retention_seconds) override;
    void record_last_used(std::span<const std::pair<tid_t, std::int64_t>> uses) override;
    std::size_t purge(std::int64_t now, std::int64_t retention_seconds) override;
    // Revocations are numbered 1, 2, …, across every process using the store.
    [[nodiscard]] revocations revocations_since(std::uint64_t since) override;
    [[nodiscard]] std::uint64_t revocation_seq() override;
    void put_policy(const policy_record& p) override;
    bool delete_policy(std::string_view role) override;
    [[nodiscard]] std::vector<policy_record> list_policies() override;
    [[nodiscard]] std::vector<policy_record> policies_for(std::span<const std::string> roles) override;

    // ---- LMDB only ----------------------------------------------------------
    // Bulk load without name checks (benchmarks, imports): one transaction.
    void insert_many(std::span<const token_record> recs);
    [[nodiscard]] std::optional<token_record> get(const tid_t& tid);
    // The active token (owner, name), if any.
    [[nodiscard]] std::optional<token_record> find_active(std::string_view owner, std::string_view name,
                                                          std::int64_t now);
    // Runs fn(view) in a read-only transaction if tid exists; returns false
    // (fn not called) otherwise. No allocation.
    template <typename Fn>
    bool lookup_for_verify(const tid_t& tid, Fn&& fn);

    // ---- misc -------------------------------------------------------------
    // Frees reader slots left by processes that died inside a read (a killed
    // CLI): they would pin old pages and make the file grow. Called at open
    // and by purge(). Returns how many were freed.
    int clear_stale_readers() noexcept;
    [[nodiscard]] std::size_t map_size() const;
    [[nodiscard]] std::size_t token_count();

    // Tops up the space reserved for revocations after the end of data.mdb.
    // true when the whole reserve is allocated (or the reserve is disabled).
    // Writes call it themselves; maintenance calls it to notice freed space.
    bool ensure_reserve() noexcept override;
    // Whether the reserve was whole at the last check.
    [[nodiscard]] bool reserve_ok() const noexcept { return reserve_ok_.load(std::memory_order_relaxed); }

private:
    // Ordinary writes are refused (store_full) while the reserve cannot be
    // topped up; protected ones (revocations, OID binding) may use it.
    enum class write_kind { ordinary, protected_ };
    // Runs fn(MDB_txn*) in a read transaction.
    template <typename Fn>
    auto read(Fn&& fn);
    // Runs fn(MDB_txn*) in a write transaction and commits; on MDB_MAP_FULL
    // grows the map and runs fn again from scratch.
    void write(const std::function<void(MDB_txn*)>& fn, write_kind kind = write_kind::ordinary);
    void migrate_v1(MDB_txn* txn);
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

    // The revocation reserve: our own descriptor of data.mdb (fallocate works
    // on the inode, whoever else has it open).
    std::filesystem::path data_dir_;
    std::size_t reserve_bytes_ = 0;
    int data_fd_ = -1;
    std::mutex reserve_mu_;
    std::atomic<bool> reserve_ok_{true};
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

// Thin RAII wrappers over LMDB's C handles (env, txn, dbi, cursor), in the manner of lmdbxx.
//
// Handles are movable, not copyable; destructors are noexcept and abort/close.
// Failures throw lmdb::error naming the LMDB function that failed; expected
// outcomes ("not found", "key exists") are return values, not exceptions.
//
// Lifetime of views: every std::string_view handed out by get()/cursor::get()
// points into the memory map and is valid only until the transaction that
// produced it ends (commit, abort, reset) or, in a write transaction, until the
// next write to the same database.
#pragma once

#include <lmdb.h>

#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>

namespace tokengate::tokenstore::lmdb {

// An LMDB failure: `origin` is the C function ("mdb_put"), `code` its return value.
class error : public std::runtime_error {
public:
    error(const char* origin, int code);
    [[nodiscard]] int code() const noexcept { return code_; }
    [[nodiscard]] const char* origin() const noexcept { return origin_; }

private:
    const char* origin_;
    int code_;
};

[[noreturn]] void throw_error(const char* origin, int rc);

inline MDB_val to_val(std::string_view s) noexcept
{
    return MDB_val{s.size(), const_cast<char*>(s.data())};
}
inline std::string_view to_view(const MDB_val& v) noexcept
{
    return {static_cast<const char*>(v.mv_data), v.mv_size};
}

class env {
public:
    // mdb_env_create; configure with the setters, then open().
    static env create();

    env() noexcept = default;
    env(env&& o) noexcept : h_(o.h_) { o.h_ = nullptr; }
    env& operator=(env&& o) noexcept;
    env(const env&) = delete;
    env& operator=(const env&) = delete;
    ~env();

    void set_mapsize(std::size_t bytes);
    void set_max_dbs(unsigned n);
    void set_max_readers(unsigned n);
    void open(const std::string& path, unsigned flags, mdb_mode_t mode);
    [[nodiscard]] MDB_envinfo info() const;
    // The current map size (re-read after another process grew it).
    [[nodiscard]] std::size_t mapsize() const { return info().me_mapsize; }

    [[nodiscard]] MDB_env* handle() const noexcept { return h_; }

private:
    explicit env(MDB_env* h) noexcept : h_(h) {}
    MDB_env* h_ = nullptr;
};

class txn {
public:
    // mdb_txn_begin. flags: 0 for a write transaction, MDB_RDONLY for a reader.
    static txn begin(MDB_env* env, unsigned flags, MDB_txn* parent = nullptr);

    // Takes ownership of a handle from mdb_txn_begin.
    static txn adopt(MDB_txn* h) noexcept { return txn(h); }

    txn() noexcept = default;
    txn(txn&& o) noexcept : h_(o.h_) { o.h_ = nullptr; }
    txn& operator=(txn&& o) noexcept;
    txn(const txn&) = delete;
    txn& operator=(const txn&) = delete;
    ~txn();  // aborts a live transaction

    // Gives up ownership (for recycling a read transaction with mdb_txn_reset/renew).
    [[nodiscard]] MDB_txn* release() noexcept
    {
        MDB_txn* h = h_;
        h_ = nullptr;
        return h;
    }
    void commit();          // durable at return unless the env has MDB_NOSYNC
    void abort() noexcept;  // idempotent
    [[nodiscard]] MDB_txn* handle() const noexcept { return h_; }

private:
    explicit txn(MDB_txn* h) noexcept : h_(h) {}
    MDB_txn* h_ = nullptr;
};

// A database handle; plain value (LMDB dbis live as long as the env).
class dbi {
public:
    static dbi open(MDB_txn* txn, const char* name, unsigned flags);

    dbi() noexcept = default;
    [[nodiscard]] MDB_dbi handle() const noexcept { return h_; }

    // false when absent. `out` valid as described at the top of this file.
    bool get(MDB_txn* txn, std::string_view key, std::string_view& out) const;
    // With MDB_NOOVERWRITE returns false if the key exists; otherwise true.
    bool put(MDB_txn* txn, std::string_view key, std::string_view value, unsigned flags = 0) const;
    // false when absent.
    bool del(MDB_txn* txn, std::string_view key) const;

private:
    explicit dbi(MDB_dbi h) noexcept : h_(h) {}
    MDB_dbi h_ = 0;
};

class cursor {
public:
    static cursor open(MDB_txn* txn, const dbi& db);

    cursor() noexcept = default;
    cursor(cursor&& o) noexcept : h_(o.h_) { o.h_ = nullptr; }
    cursor& operator=(cursor&& o) noexcept;
    cursor(const cursor&) = delete;
    cursor& operator=(const cursor&) = delete;
    ~cursor();

    // mdb_cursor_get; false on MDB_NOTFOUND. For MDB_SET_RANGE/MDB_SET pass the key in `key`.
    bool get(std::string_view& key, std::string_view& value, MDB_cursor_op op);
    void del();  // deletes the current item
    // Replaces the value of the current item (mdb_cursor_put with MDB_CURRENT);
    // `key` must be the current key. Views from this cursor become invalid.
    void put_current(std::string_view key, std::string_view value);

private:
    explicit cursor(MDB_cursor* h) noexcept : h_(h) {}
    MDB_cursor* h_ = nullptr;
};

}  // namespace tokengate::tokenstore::lmdb

// LMDB RAII wrappers: every failing C call becomes an lmdb::error naming it.
#include "tokenstore/lmdb.hpp"

namespace tokengate::tokenstore::lmdb {

error::error(const char* origin, int code)
    : std::runtime_error(std::string(origin) + ": " + mdb_strerror(code)), origin_(origin), code_(code)
{
}

void throw_error(const char* origin, int rc) { throw error(origin, rc); }

env env::create()
{
    MDB_env* h = nullptr;
    if (int rc = mdb_env_create(&h); rc != 0) throw_error("mdb_env_create", rc);
    return env(h);
}

env& env::operator=(env&& o) noexcept
{
    if (this != &o) {
        if (h_) mdb_env_close(h_);
        h_ = o.h_;
        o.h_ = nullptr;
    }
    return *this;
}

env::~env()
{
    if (h_) mdb_env_close(h_);
}

void env::set_mapsize(std::size_t bytes)
{
    if (int rc = mdb_env_set_mapsize(h_, bytes); rc != 0) throw_error("mdb_env_set_mapsize", rc);
}

void env::set_max_dbs(unsigned n)
{
    if (int rc = mdb_env_set_maxdbs(h_, n); rc != 0) throw_error("mdb_env_set_maxdbs", rc);
}

void env::set_max_readers(unsigned n)
{
    if (int rc = mdb_env_set_maxreaders(h_, n); rc != 0) throw_error("mdb_env_set_maxreaders", rc);
}

void env::open(const std::string& path, unsigned flags, mdb_mode_t mode)
{
    if (int rc = mdb_env_open(h_, path.c_str(), flags, mode); rc != 0) throw_error("mdb_env_open", rc);
}

MDB_envinfo env::info() const
{
    MDB_envinfo i{};
    if (int rc = mdb_env_info(h_, &i); rc != 0) throw_error("mdb_env_info", rc);
    return i;
}

txn txn::begin(MDB_env* env, unsigned flags, MDB_txn* parent)
{
    MDB_txn* h = nullptr;
    if (int rc = mdb_txn_begin(env, parent, flags, &h); rc != 0) throw_error("mdb_txn_begin", rc);
    return txn(h);
}

txn& txn::operator=(txn&& o) noexcept
{
    if (this != &o) {
        abort();
        h_ = o.h_;
        o.h_ = nullptr;
    }
    return *this;
}

txn::~txn() { abort(); }

void txn::commit()
{
    MDB_txn* h = h_;
    h_ = nullptr;  // mdb_txn_commit frees the handle even when it fails
    if (int rc = mdb_txn_commit(h); rc != 0) throw_error("mdb_txn_commit", rc);
}

void txn::abort() noexcept
{
    if (h_) {
        mdb_txn_abort(h_);
        h_ = nullptr;
    }
}

dbi dbi::open(MDB_txn* txn, const char* name, unsigned flags)
{
    MDB_dbi h = 0;
    if (int rc = mdb_dbi_open(txn, name, flags, &h); rc != 0) throw_error("mdb_dbi_open", rc);
    return dbi(h);
}

bool dbi::get(MDB_txn* txn, std::string_view key, std::string_view& out) const
{
    MDB_val k = to_val(key);
    MDB_val v{};
    int rc = mdb_get(txn, h_, &k, &v);
    if (rc == MDB_NOTFOUND) return false;
    if (rc != 0) throw_error("mdb_get", rc);
    out = to_view(v);
    return true;
}

bool dbi::put(MDB_txn* txn, std::string_view key, std::string_view value, unsigned flags) const
{
    MDB_val k = to_val(key);
    MDB_val v = to_val(value);
    int rc = mdb_put(txn, h_, &k, &v, flags);
    if (rc == MDB_KEYEXIST && (flags & MDB_NOOVERWRITE)) return false;
    if (rc != 0) throw_error("mdb_put", rc);
    return true;
}

bool dbi::del(MDB_txn* txn, std::string_view key) const
{
    MDB_val k = to_val(key);
    int rc = mdb_del(txn, h_, &k, nullptr);
    if (rc == MDB_NOTFOUND) return false;
    if (rc != 0) throw_error("mdb_del", rc);
    return true;
}

cursor cursor::open(MDB_txn* txn, const dbi& db)
{
    MDB_cursor* h = nullptr;
    if (int rc = mdb_cursor_open(txn, db.handle(), &h); rc != 0) throw_error("mdb_cursor_open", rc);
    return cursor(h);
}

cursor& cursor::operator=(cursor&& o) noexcept
{
    if (this != &o) {
        if (h_) mdb_cursor_close(h_);
        h_ = o.h_;
        o.h_ = nullptr;
    }
    return *this;
}

cursor::~cursor()
{
    if (h_) mdb_cursor_close(h_);
}

bool cursor::get(std::string_view& key, std::string_view& value, MDB_cursor_op op)
{
    MDB_val k = to_val(key);
    MDB_val v = to_val(value);
    int rc = mdb_cursor_get(h_, &k, &v, op);
    if (rc == MDB_NOTFOUND) return false;
    if (rc != 0) throw_error("mdb_cursor_get", rc);
    key = to_view(k);
    value = to_view(v);
    return true;
}

void cursor::put_current(std::string_view key, std::string_view value)
{
    MDB_val k = to_val(key);
    MDB_val v = to_val(value);
    if (int rc = mdb_cursor_put(h_, &k, &v, MDB_CURRENT); rc != 0) throw_error("mdb_cursor_put", rc);
}

void cursor::del()
{
    if (int rc = mdb_cursor_del(h_, 0); rc != 0) throw_error("mdb_cursor_del", rc);
}

}  // namespace tokengate::tokenstore::lmdb

// LMDB token store: record encoding, indexes, map growth, revocation log, purge.
#include "tokenstore/store.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

namespace tokengate::tokenstore {

namespace {

// Named databases.
constexpr const char* db_tokens = "tokens";      // tid(16) -> token record
constexpr const char* db_names = "names";        // owner_key + name -> tid, active tokens only
constexpr const char* db_owners = "owners";      // owner_key + be64(created_at) + tid -> "" (listing order)
constexpr const char* db_policies = "policies";  // role -> policy record
constexpr const char* db_meta = "meta";          // "schema_version" -> u32 LE; "revocation_seq" -> be64
constexpr const char* db_revlog = "revocations"; // be64(seq) -> tid(16) + be64(time)

constexpr std::string_view meta_schema = "schema_version";
constexpr std::string_view meta_revseq = "revocation_seq";

// Readers: server worker threads + CLI + tests; LMDB's default is 126.
constexpr unsigned max_readers = 1024;

// ---- byte encoding -------------------------------------------------------

void put_be64(std::string& out, std::uint64_t v)
{
    for (int i = 7; i >= 0; --i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}

std::uint64_t get_be64(const char* p)
{
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v = v << 8 | static_cast<unsigned char>(p[i]);
    return v;
}

void put_i64(std::string& out, std::int64_t v) { put_be64(out, static_cast<std::uint64_t>(v)); }

void put_u32(std::string& out, std::uint32_t v)
{
    for (int i = 3; i >= 0; --i) out += static_cast<char>((v >> (8 * i)) & 0xff);
}

void put_str16(std::string& out, std::string_view s)
{
    auto n = static_cast<std::uint16_t>(std::min<std::size_t>(s.size(), 0xffff));
    out += static_cast<char>(n >> 8);
    out += static_cast<char>(n & 0xff);
    out.append(s.data(), n);
}

class reader {
public:
    explicit reader(std::string_view s) : s_(s) {}
    bool u8(std::uint8_t& v)
    {
        if (s_.size() < 1) return false;
        v = static_cast<std::uint8_t>(s_[0]);
        s_.remove_prefix(1);
        return true;
    }
    bool u32(std::uint32_t& v)
    {
        if (s_.size() < 4) return false;
        v = 0;
        for (int i = 0; i < 4; ++i) v = v << 8 | static_cast<unsigned char>(s_[static_cast<std::size_t>(i)]);
        s_.remove_prefix(4);
        return true;
    }
    bool i64(std::int64_t& v)
    {
        if (s_.size() < 8) return false;
        v = static_cast<std::int64_t>(get_be64(s_.data()));
        s_.remove_prefix(8);
        return true;
    }
    bool bytes(std::size_t n, std::string_view& v)
    {
        if (s_.size() < n) return false;
        v = s_.substr(0, n);
        s_.remove_prefix(n);
        return true;
    }
    bool str16(std::string_view& v)
    {
        if (s_.size() < 2) return false;
        std::size_t n = static_cast<unsigned char>(s_[0]) << 8 | static_cast<unsigned char>(s_[1]);
        s_.remove_prefix(2);
        return bytes(n, v);
    }

private:
    std::string_view s_;
};

}  // namespace

std::string bad_record_message(std::string_view what, std::string_view raw)
{
    const std::uint8_t newest = what == "policy" ? policy_record_version : record_version;
    if (!raw.empty() && static_cast<std::uint8_t>(raw[0]) > newest)
        return std::string(what) + " record has version " + std::to_string(static_cast<std::uint8_t>(raw[0])) +
               ", this tokengate reads up to version " + std::to_string(newest) + "; upgrade tokengate";
    return std::string(what) + " record is corrupt";
}

namespace {

// Token record, version 2:
//   u8 version | u8 flags (1 = has comment) | i64 created_at | i64 expires_at |
//   i64 revoked_at | i64 last_used_at | hash[32] | u32 owner_oid | str16 owner |
//   str16 name | str16 kid | str16 created_by | str16 comment
// Version 1 is the same without owner_oid (read as 0). last_used_at sits at
// the same offset in both, so record_last_used patches either in place.
constexpr std::uint8_t record_version_1 = 1;
constexpr std::uint8_t flag_has_comment = 1;
constexpr std::size_t off_last_used = 2 + 3 * 8;

std::string encode(const token_record& r)
{
    std::string out;
    out.reserve(84 + r.owner.size() + r.name.size() + r.kid.size() + r.created_by.size() +
                (r.comment ? r.comment->size() : 0));
    out += static_cast<char>(record_version);
    out += static_cast<char>(r.comment ? flag_has_comment : 0);
    put_i64(out, r.created_at);
    put_i64(out, r.expires_at);
    put_i64(out, r.revoked_at);
    put_i64(out, r.last_used_at);
    out.append(reinterpret_cast<const char*>(r.hash.data()), r.hash.size());
    put_u32(out, r.owner_oid);
    put_str16(out, r.owner);
    put_str16(out, r.name);
    put_str16(out, r.kid);
    put_str16(out, r.created_by);
    put_str16(out, r.comment ? *r.comment : std::string_view{});
    return out;
}

token_record decode(std::string_view key, std::string_view raw)
{
    token_record r;
    reader in(raw);
    std::uint8_t ver = 0, flags = 0;
    std::string_view hash, owner, name, kid, created_by, comment;
    if (!in.u8(ver) || (ver != record_version && ver != record_version_1) || !in.u8(flags) ||
        !in.i64(r.created_at) || !in.i64(r.expires_at) || !in.i64(r.revoked_at) || !in.i64(r.last_used_at) ||
        !in.bytes(32, hash) || (ver == record_version && !in.u32(r.owner_oid)) || !in.str16(owner) ||
        !in.str16(name) || !in.str16(kid) || !in.str16(created_by) || !in.str16(comment) ||
        key.size() != r.tid.size())
        throw store_error(bad_record_message("token", raw));
    std::memcpy(r.tid.data(), key.data(), r.tid.size());
    std::memcpy(r.hash.data(), hash.data(), r.hash.size());
    r.owner = owner;
    r.name = name;
    r.kid = kid;
    r.created_by = created_by;
    if (flags & flag_has_comment) r.comment = std::string(comment);
    return r;
}

// Policy record, version 1: u8 version | u8 kind | i64 max_seconds | i64 set_at | str16 set_by
std::string encode(const policy_record& p)
{
    std::string out;
    out += static_cast<char>(policy_record_version);
    out += static_cast<char>(p.kind);
    put_i64(out, p.max_seconds);
    put_i64(out, p.set_at);
    put_str16(out, p.set_by);
    return out;
}

policy_record decode_policy(std::string_view key, std::string_view raw)
{
    policy_record p;
    reader in(raw);
    std::uint8_t ver = 0, kind = 0;
    std::string_view set_by;
    if (!in.u8(ver) || ver != policy_record_version || !in.u8(kind) || !in.i64(p.max_seconds) || !in.i64(p.set_at) ||
        !in.str16(set_by))
        throw store_error(bad_record_message("policy", raw));
    p.role = key;
    p.kind = kind == static_cast<std::uint8_t>(role_kind::role) ? role_kind::role : role_kind::user;
    p.set_by = set_by;
    return p;
}

std::string_view tid_key(const tid_t& tid)
{
    return {reinterpret_cast<const char*>(tid.data()), tid.size()};
}

// Owner prefix: one length byte then the name, so "ab"+"c" never collides with "a"+"bc".
std::string owner_prefix(std::string_view owner)
{
    std::string k;
    k += static_cast<char>(std::min<std::size_t>(owner.size(), 255));
    k.append(owner.data(), std::min<std::size_t>(owner.size(), 255));
    return k;
}

std::string name_key(std::string_view owner, std::string_view name)
{
    std::string k = owner_prefix(owner);
    k.append(name);
    return k;
}

std::string owner_key(std::string_view owner, std::int64_t created_at, const tid_t& tid)
{
    std::string k = owner_prefix(owner);
    put_i64(k, created_at);
    k.append(tid_key(tid));
    return k;
}

std::size_t this_thread_shard()
{
    thread_local const std::size_t shard = std::hash<std::thread::id>{}(std::this_thread::get_id());
    return shard % 16;
}

std::string seq_key(std::uint64_t seq)
{
    std::string k;
    put_be64(k, seq);
    return k;
}

}  // namespace

namespace detail {

bool decode_view(std::string_view raw, token_view& out) noexcept
{
    reader in(raw);
    std::uint8_t ver = 0, flags = 0;
    std::int64_t created = 0;
    std::string_view hash;
    out.owner_oid = 0;
    if (!in.u8(ver) || (ver != record_version && ver != record_version_1) || !in.u8(flags) || !in.i64(created) ||
        !in.i64(out.expires_at) || !in.i64(out.revoked_at) || !in.i64(out.last_used_at) || !in.bytes(32, hash) ||
        (ver == record_version && !in.u32(out.owner_oid)) || !in.str16(out.owner) || !in.str16(out.name))
        return false;
    out.hash = reinterpret_cast<const std::uint8_t*>(hash.data());
    return true;
}

}  // namespace detail

store::store(const std::filesystem::path& data_dir) : store(data_dir, options{}) {}

store::store(const std::filesystem::path& data_dir, options opts)
    : data_dir_(data_dir), reserve_bytes_(opts.revocation_reserve)
{
    std::error_code ec;
    if (!std::filesystem::exists(data_dir, ec)) {
        if (::mkdir(data_dir.c_str(), 0700) != 0 && errno != EEXIST)
            throw store_error("cannot create data directory " + data_dir.string() + ": " + std::strerror(errno));
    }
    env_ = lmdb::env::create();
    env_.set_max_dbs(8);
    env_.set_max_readers(max_readers);
    env_.set_mapsize(opts.initial_map_size);
    // MDB_NOTLS: read transactions are not tied to threads (coroutines may hop).
    unsigned flags = MDB_NOTLS | (opts.durable ? 0u : MDB_NOSYNC);
    try {
        env_.open(data_dir.string(), flags, 0600);
    } catch (const lmdb::error& e) {
        throw store_error("cannot open token store in " + data_dir.string() + ": " + e.what());
    }
    // If another process grew the map beyond our initial size, LMDB already
    // adopted the larger size at open.
    clear_stale_readers();

    if (reserve_bytes_ > 0) {
        auto data_file = data_dir / "data.mdb";
        data_fd_ = ::open(data_file.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
        if (data_fd_ < 0)
            throw store_error("cannot open " + data_file.string() + ": " + std::strerror(errno));
        ensure_reserve();
    }

    // Opening (and migrating) is a protected write: a server must be able to
    // start, and so revoke, on a full disk.
    write(
        [&](MDB_txn* txn) {
            tokens_ = lmdb::dbi::open(txn, db_tokens, MDB_CREATE);
            names_ = lmdb::dbi::open(txn, db_names, MDB_CREATE);
            owners_ = lmdb::dbi::open(txn, db_owners, MDB_CREATE);
            policies_ = lmdb::dbi::open(txn, db_policies, MDB_CREATE);
            meta_ = lmdb::dbi::open(txn, db_meta, MDB_CREATE);
            revlog_ = lmdb::dbi::open(txn, db_revlog, MDB_CREATE);
            std::string_view v;
            std::uint32_t found = 0;
            if (meta_.get(txn, meta_schema, v)) {
                if (v.size() != 4)
                    throw store_error("token store in " + data_dir.string() + " has a corrupt schema version");
                for (int i = 3; i >= 0; --i)
                    found = found << 8 | static_cast<unsigned char>(v[static_cast<std::size_t>(i)]);
                if (found > schema_version)
                    throw store_error("token store in " + data_dir.string() + " has schema version " +
                                      std::to_string(found) + ", newer than this tokengate supports (" +
                                      std::to_string(schema_version) + "); upgrade tokengate");
                if (found == 0)
                    throw store_error("token store in " + data_dir.string() + " has a corrupt schema version");
            }
            if (found == schema_version) return;
            if (found == 1) migrate_v1(txn);
            std::string le;
            for (int i = 0; i < 4; ++i) le += static_cast<char>((schema_version >> (8 * i)) & 0xff);
            meta_.put(txn, meta_schema, le);
        },
        write_kind::protected_);
}

// Schema 1 -> 2: token records gain the owner's OID, unknown for these (0):
// they are bound to the role at their next login (bind_owner_oid).
void store::migrate_v1(MDB_txn* txn)
{
    std::size_t migrated = 0;
    auto c = lmdb::cursor::open(txn, tokens_);
    std::string_view k, v;
    for (bool ok = c.get(k, v, MDB_FIRST); ok; ok = c.get(k, v, MDB_NEXT)) {
        if (v.empty() || static_cast<std::uint8_t>(v[0]) != record_version_1) continue;
        token_record r = decode(k, v);  // throws on a corrupt record: the store stays at version 1
        // A copy of the key: LMDB moves the page's contents while it replaces
        // a value with a longer one, under a key view into that page.
        const std::string key(k);
        c.put_current(key, encode(r));
        ++migrated;
    }
    spdlog::info("token store: migrated {} token record(s) to schema version {}", migrated, schema_version);
}

bool store::ensure_reserve() noexcept
{
    if (data_fd_ < 0) return true;
    std::lock_guard lk(reserve_mu_);
    struct stat st {};
    int rc = ::fstat(data_fd_, &st);
    // KEEP_SIZE: the blocks are allocated to data.mdb beyond its end without
    // changing its size, so LMDB (which appends pages at the end) finds them
    // there when it grows the file; nobody else can take them.
    if (rc == 0) rc = ::fallocate(data_fd_, FALLOC_FL_KEEP_SIZE, st.st_size, static_cast<off_t>(reserve_bytes_));
    // A whole reserve is not enough: with the disk full, the next ordinary
    // write would eat into it. Ordinary writes also need as much free space
    // as the reserve (statvfs counts blocks allocated beyond EOF as used).
    struct statvfs vfs {};
    if (rc == 0 && ::fstatvfs(data_fd_, &vfs) == 0 &&
        static_cast<unsigned long long>(vfs.f_bavail) * vfs.f_frsize < reserve_bytes_) {
        rc = -1;
        errno = ENOSPC;
    }
    if (rc == 0) {
        if (!reserve_ok_.exchange(true))
            spdlog::info("token store: space for revocations reserved again in {}", data_dir_.string());
        return true;
    }
    const int err = errno;
    if (err == EOPNOTSUPP || err == ENOSYS) {
        // Nothing to keep: write as before, and say once that a full disk
        // may then stop revocations too.
        ::close(data_fd_);
        data_fd_ = -1;
        spdlog::warn("token store: the file system of {} cannot reserve space (fallocate: {}); revocations may "
                     "fail while its disk is full",
                     data_dir_.string(), std::strerror(err));
        reserve_ok_ = true;
        return true;
    }
    if (reserve_ok_.exchange(false))  // once per episode, not once per refused write
        spdlog::error("token store: less than {} bytes free, or not enough to keep them reserved for "
                      "revocations, in {} ({}): only revocations are accepted until space is freed",
                      reserve_bytes_, data_dir_.string(), std::strerror(err));
    return false;
}

bool store::try_begin(unsigned flags, lmdb::txn& out)
{
    // Caller holds resize_mu_ shared. MDB_MAP_RESIZED means another process
    // grew the map; adopting the new size needs no live transaction in this
    // process, so the caller drops its lock, calls grow(0) and retries.
    MDB_txn* h = nullptr;
    int rc = mdb_txn_begin(env_.handle(), nullptr, flags, &h);
    if (rc == MDB_MAP_RESIZED) return false;
    if (rc != 0) lmdb::throw_error("mdb_txn_begin", rc);
    out = lmdb::txn::adopt(h);
    return true;
}

store::~store()
{
    drop_idle_readers();
    if (data_fd_ >= 0) ::close(data_fd_);
}

MDB_txn* store::acquire_reader(bool& resized)
{
    resized = false;
    MDB_txn* txn = nullptr;
    {
        auto& shard = readers_[this_thread_shard()];
        std::lock_guard lk(shard.mu);
        if (!shard.idle.empty()) {
            txn = shard.idle.back();
            shard.idle.pop_back();
        }
    }
    if (txn != nullptr) {
        int rc = mdb_txn_renew(txn);
        if (rc == 0) return txn;
        mdb_txn_abort(txn);
        if (rc == MDB_MAP_RESIZED) {
            resized = true;
            return nullptr;
        }
        lmdb::throw_error("mdb_txn_renew", rc);
    }
    lmdb::txn fresh;
    if (!try_begin(MDB_RDONLY, fresh)) {
        resized = true;
        return nullptr;
    }
    return fresh.release();
}

void store::release_reader(MDB_txn* txn) noexcept
{
    mdb_txn_reset(txn);
    auto& shard = readers_[this_thread_shard()];
    std::lock_guard lk(shard.mu);
    shard.idle.push_back(txn);
}

void store::drop_idle_readers() noexcept
{
    for (auto& shard : readers_) {
        std::lock_guard lk(shard.mu);
        for (MDB_txn* t : shard.idle) mdb_txn_abort(t);
        shard.idle.clear();
    }
}

void store::grow(std::size_t at_least)
{
    grow_pending_.store(true, std::memory_order_release);
    std::unique_lock lk(resize_mu_);
    struct clear_flag {
        std::atomic<bool>& f;
        ~clear_flag() { f.store(false, std::memory_order_release); }
    } clear{grow_pending_};
    // No transaction of ours may be live while the map changes, recycled ones included.
    drop_idle_readers();
    std::size_t cur = env_.mapsize();
    if (at_least == 0) {
        env_.set_mapsize(0);  // adopt the size another process set
    } else if (cur < at_least) {
        env_.set_mapsize(at_least);
    }
}

void store::write(const std::function<void(MDB_txn*)>& fn, write_kind kind)
{
    // An ordinary write may only start with the reserve whole, so at most one
    // write eats into it before the next one is refused.
    if (kind == write_kind::ordinary && !ensure_reserve())
        throw store_full("the disk holding the token store in " + data_dir_.string() +
                         " is full; only revocations are accepted until space is freed");
    struct top_up {
        store& self;
        ~top_up() { self.ensure_reserve(); }
    } after{*this};
    for (int attempt = 0;; ++attempt) {
        std::size_t size_before = 0;
        try {
            while (grow_pending_.load(std::memory_order_acquire)) std::this_thread::yield();
            std::shared_lock lk(resize_mu_);
            size_before = env_.mapsize();
            lmdb::txn t;
            if (!try_begin(0, t)) throw lmdb::error("mdb_txn_begin", MDB_MAP_RESIZED);
            fn(t.handle());
            t.commit();
            return;
        } catch (const lmdb::error& e) {
            if (attempt >= 40) throw;
            if (e.code() == MDB_MAP_FULL) {
                grow(size_before * 2);
            } else if (e.code() == MDB_MAP_RESIZED) {
                grow(0);
            } else {
                throw;
            }
        }
    }
}

std::size_t store::map_size() const { return env_.mapsize(); }

store::lookup_outcome store::lookup(const tid_t& tid, verify_visitor& visitor)
{
    return lookup_for_verify(tid, [&](const token_view& v) { visitor.visit(v); }) ? lookup_outcome::found
                                                                                  : lookup_outcome::not_found;
}

store::insert_outcome store::insert(const token_record& rec, std::int64_t now)
{
    insert_outcome outcome = insert_outcome::inserted;
    write([&](MDB_txn* txn) {
        outcome = insert_outcome::inserted;
        std::string nk = name_key(rec.owner, rec.name);
        std::string_view holder;
        if (names_.get(txn, nk, holder)) {
            std::string_view raw;
            if (holder.size() == 16 && tokens_.get(txn, holder, raw)) {
                token_view v;
                if (detail::decode_view(raw, v) && v.revoked_at == 0 && v.expires_at > now) {
                    outcome = insert_outcome::name_in_use;
                    return;  // nothing written; commit is a no-op
                }
            }
        }
        tokens_.put(txn, tid_key(rec.tid), encode(rec), MDB_NOOVERWRITE);
        names_.put(txn, nk, tid_key(rec.tid));
        owners_.put(txn, owner_key(rec.owner, rec.created_at, rec.tid), {});
    });
    return outcome;
}

void store::insert_many(std::span<const token_record> recs)
{
    write([&](MDB_txn* txn) {
        for (const auto& rec : recs) {
            tokens_.put(txn, tid_key(rec.tid), encode(rec));
            names_.put(txn, name_key(rec.owner, rec.name), tid_key(rec.tid));
            owners_.put(txn, owner_key(rec.owner, rec.created_at, rec.tid), {});
        }
    });
}

std::optional<token_record> store::get(const tid_t& tid)
{
    return read([&](MDB_txn* txn) -> std::optional<token_record> {
        std::string_view raw;
        if (!tokens_.get(txn, tid_key(tid), raw)) return std::nullopt;
        return decode(tid_key(tid), raw);
    });
}

std::optional<token_record> store::find_active(std::string_view owner, std::string_view name, std::int64_t now)
{
    return read([&](MDB_txn* txn) -> std::optional<token_record> {
        std::string_view tid;
        if (!names_.get(txn, name_key(owner, name), tid)) return std::nullopt;
        std::string_view raw;
        if (!tokens_.get(txn, tid, raw)) return std::nullopt;
        token_record r = decode(tid, raw);
        if (!r.active(now)) return std::nullopt;
        return r;
    });
}

bool store::set_comment(std::string_view owner, std::string_view name, const std::optional<std::string>& comment,
                        std::int64_t now)
{
    bool found = false;
    write([&](MDB_txn* txn) {
        found = false;
        std::string_view tid;
        if (!names_.get(txn, name_key(owner, name), tid)) return;
        std::string_view raw;
        if (!tokens_.get(txn, tid, raw)) return;
        std::string tid_copy(tid);
        token_record r = decode(tid_copy, raw);
        if (!r.active(now)) return;
        r.comment = comment;
        tokens_.put(txn, tid_copy, encode(r));
        found = true;
    });
    return found;
}

void store::append_revocation(MDB_txn* txn, const tid_t& tid, std::int64_t now)
{
    std::uint64_t seq = 0;
    std::string_view v;
    if (meta_.get(txn, meta_revseq, v) && v.size() == 8) seq = get_be64(v.data());
    ++seq;
    std::string val(tid_key(tid));
    put_i64(val, now);
    revlog_.put(txn, seq_key(seq), val);
    meta_.put(txn, meta_revseq, seq_key(seq));
}

// Marks tid revoked and drops its name entry; false if absent or already revoked.
bool store::revoke_in_txn(MDB_txn* txn, const tid_t& tid, std::int64_t now)
{
    std::string_view raw;
    if (!tokens_.get(txn, tid_key(tid), raw)) return false;
    token_record r = decode(tid_key(tid), raw);
    if (r.revoked()) return false;
    r.revoked_at = now;
    tokens_.put(txn, tid_key(tid), encode(r));
    std::string nk = name_key(r.owner, r.name);
    std::string_view holder;
    if (names_.get(txn, nk, holder) && holder == tid_key(tid)) names_.del(txn, nk);
    append_revocation(txn, tid, now);
    return true;
}

namespace {

// The tids of `owner`'s tokens not revoked yet, oldest first, optionally only
// those named `name`. Expired tokens count: their sessions may still be open.
std::vector<tid_t> unrevoked_tokens(MDB_txn* txn, const lmdb::dbi& owners, const lmdb::dbi& tokens,
                                    std::string_view owner, const std::optional<std::string_view>& name)
{
    std::vector<tid_t> out;
    auto c = lmdb::cursor::open(txn, owners);
    std::string prefix = owner_prefix(owner);
    std::string_view k = prefix, v;
    for (bool ok = c.get(k, v, MDB_SET_RANGE); ok && k.substr(0, prefix.size()) == prefix;
         ok = c.get(k, v, MDB_NEXT)) {
        if (k.size() != prefix.size() + 8 + 16) continue;
        std::string_view tid = k.substr(k.size() - 16);
        std::string_view raw;
        if (!tokens.get(txn, tid, raw)) continue;
        token_view tv;
        if (!detail::decode_view(raw, tv)) throw store_error(bad_record_message("token", raw));
        if (tv.revoked_at != 0 || tv.owner != owner || (name && tv.name != *name)) continue;
        tid_t t;
        std::memcpy(t.data(), tid.data(), t.size());
        out.push_back(t);
    }
    return out;
}

}  // namespace

std::vector<tid_t> store::revoke(std::string_view owner, std::string_view name, std::int64_t now)
{
    std::vector<tid_t> out;
    write(
        [&](MDB_txn* txn) {
            out.clear();
            for (const auto& tid : unrevoked_tokens(txn, owners_, tokens_, owner, name))
                if (revoke_in_txn(txn, tid, now)) out.push_back(tid);
        },
        write_kind::protected_);
    return out;
}

std::vector<tid_t> store::revoke_all(std::string_view owner, std::int64_t now)
{
    std::vector<tid_t> out;
    write(
        [&](MDB_txn* txn) {
            out.clear();
            for (const auto& tid : unrevoked_tokens(txn, owners_, tokens_, owner, std::nullopt))
                if (revoke_in_txn(txn, tid, now)) out.push_back(tid);
        },
        write_kind::protected_);
    return out;
}

store::bind_outcome store::bind_owner_oid(const tid_t& tid, std::uint32_t oid)
{
    bind_outcome out = bind_outcome::not_found;
    write(
        [&](MDB_txn* txn) {
            out = bind_outcome::not_found;
            std::string_view raw;
            if (!tokens_.get(txn, tid_key(tid), raw)) return;
            token_record r = decode(tid_key(tid), raw);
            if (r.owner_oid == oid) {
                out = bind_outcome::already_bound;
                return;
            }
            if (r.owner_oid != 0) {
                out = bind_outcome::bound_to_other;
                return;
            }
            r.owner_oid = oid;
            tokens_.put(txn, tid_key(tid), encode(r));
            out = bind_outcome::bound;
        },
        write_kind::protected_);
    return out;
}

std::vector<token_record> store::list(const std::optional<std::string>& owner, std::int64_t now,
                                      std::int64_t retention_seconds)
{
    auto visible = [&](const token_record& r) {
        if (r.revoked()) return r.revoked_at + retention_seconds > now;
        if (r.expires_at <= now) return r.expires_at + retention_seconds > now;
        return true;
    };
    return read([&](MDB_txn* txn) {
        std::vector<token_record> out;
        auto c = lmdb::cursor::open(txn, owners_);
        std::string prefix = owner ? owner_prefix(*owner) : std::string();
        std::string_view k = prefix, v;
        bool ok = owner ? c.get(k, v, MDB_SET_RANGE) : c.get(k, v, MDB_FIRST);
        for (; ok && k.substr(0, prefix.size()) == prefix; ok = c.get(k, v, MDB_NEXT)) {
            std::string_view tid = k.substr(k.size() - 16);
            std::string_view raw;
            if (!tokens_.get(txn, tid, raw)) continue;
            token_record r = decode(tid, raw);
            if (visible(r)) out.push_back(std::move(r));
        }
        if (!owner) {
            std::stable_sort(out.begin(), out.end(), [](const token_record& a, const token_record& b) {
                return a.created_at < b.created_at;
            });
        }
        return out;
    });
}

void store::record_last_used(std::span<const std::pair<tid_t, std::int64_t>> uses)
{
    if (uses.empty()) return;
    write([&](MDB_txn* txn) {
        for (const auto& [tid, at] : uses) {
            std::string_view raw;
            if (!tokens_.get(txn, tid_key(tid), raw)) continue;
            if (raw.size() < off_last_used + 8) continue;
            std::int64_t prev = static_cast<std::int64_t>(get_be64(raw.data() + off_last_used));
            if (prev >= at) continue;
            // Patch the field in a copy: the record is otherwise unchanged.
            std::string rec(raw);
            std::string be;
            put_i64(be, at);
            rec.replace(off_last_used, 8, be);
            tokens_.put(txn, tid_key(tid), rec);
        }
    });
}

int store::clear_stale_readers() noexcept
{
    int dead = 0;
    mdb_reader_check(env_.handle(), &dead);
    return dead;
}

std::size_t store::purge(std::int64_t now, std::int64_t retention_seconds)
{
    clear_stale_readers();
    std::size_t deleted = 0;
    write([&](MDB_txn* txn) {
        deleted = 0;
        std::vector<token_record> doomed;
        {
            auto c = lmdb::cursor::open(txn, tokens_);
            std::string_view k, v;
            for (bool ok = c.get(k, v, MDB_FIRST); ok; ok = c.get(k, v, MDB_NEXT)) {
                token_view tv;
                if (!detail::decode_view(v, tv)) continue;
                std::int64_t ended = tv.revoked_at != 0 ? tv.revoked_at
                                     : tv.expires_at <= now ? tv.expires_at
                                                            : 0;
                if (ended != 0 && ended + retention_seconds <= now) doomed.push_back(decode(k, v));
            }
        }
        for (const auto& r : doomed) {
            tokens_.del(txn, tid_key(r.tid));
            owners_.del(txn, owner_key(r.owner, r.created_at, r.tid));
            std::string nk = name_key(r.owner, r.name);
            std::string_view holder;
            if (names_.get(txn, nk, holder) && holder == tid_key(r.tid)) names_.del(txn, nk);
            ++deleted;
        }
        // Revocation log entries older than retention: servers poll every
        // second or so, so anything this old has long been seen.
        auto c = lmdb::cursor::open(txn, revlog_);
        std::string_view k, v;
        for (bool ok = c.get(k, v, MDB_FIRST); ok; ok = c.get(k, v, MDB_NEXT)) {
            if (v.size() != 24) continue;
            auto at = static_cast<std::int64_t>(get_be64(v.data() + 16));
            if (at + retention_seconds > now) break;  // seq order is time order
            c.del();
        }
    });
    return deleted;
}

store::revocations store::revocations_since(std::uint64_t since)
{
    return read([&](MDB_txn* txn) {
        revocations out;
        out.seq = since;
        std::string_view v;
        std::uint64_t cur = 0;
        if (meta_.get(txn, meta_revseq, v) && v.size() == 8) cur = get_be64(v.data());
        if (cur <= since) {
            out.seq = cur < since ? cur : since;
            return out;
        }
        auto c = lmdb::cursor::open(txn, revlog_);
        std::string start = seq_key(since + 1);
        std::string_view k = start;
        for (bool ok = c.get(k, v, MDB_SET_RANGE); ok; ok = c.get(k, v, MDB_NEXT)) {
            if (v.size() < 16) continue;
            tid_t tid;
            std::memcpy(tid.data(), v.data(), 16);
            out.tids.push_back(tid);
        }
        out.seq = cur;
        return out;
    });
}

std::uint64_t store::revocation_seq()
{
    return read([&](MDB_txn* txn) -> std::uint64_t {
        std::string_view v;
        return meta_.get(txn, meta_revseq, v) && v.size() == 8 ? get_be64(v.data()) : 0;
    });
}

void store::put_policy(const policy_record& p)
{
    write([&](MDB_txn* txn) { policies_.put(txn, p.role, encode(p)); });
}

bool store::delete_policy(std::string_view role)
{
    bool found = false;
    write([&](MDB_txn* txn) { found = policies_.del(txn, role); });
    return found;
}

std::vector<policy_record> store::list_policies()
{
    return read([&](MDB_txn* txn) {
        std::vector<policy_record> out;
        auto c = lmdb::cursor::open(txn, policies_);
        std::string_view k, v;
        for (bool ok = c.get(k, v, MDB_FIRST); ok; ok = c.get(k, v, MDB_NEXT))
            out.push_back(decode_policy(k, v));
        return out;
    });
}

std::vector<policy_record> store::policies_for(std::span<const std::string> roles)
{
    return read([&](MDB_txn* txn) {
        std::vector<policy_record> out;
        for (const auto& role : roles) {
            std::string_view v;
            if (policies_.get(txn, role, v)) out.push_back(decode_policy(role, v));
        }
        return out;
    });
}

std::size_t store::token_count()
{
    return read([&](MDB_txn* txn) {
        MDB_stat st{};
        if (int rc = mdb_stat(txn, tokens_.handle(), &st); rc != 0) lmdb::throw_error("mdb_stat", rc);
        return static_cast<std::size_t>(st.ms_entries);
    });
}

}  // namespace tokengate::tokenstore

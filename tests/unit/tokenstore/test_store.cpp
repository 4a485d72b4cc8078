// LMDB store: wrappers, schema version, record version, map growth, indexes, revocation log, purge.
#include <lmdb.h>

#include "tests/unit/tokenstore/test_helpers.hpp"
#include "tokenstore/lmdb.hpp"
#include "tokenstore/store.hpp"

using namespace tokengate::tokenstore;
using tokengate::tokenstore::test::t0;
using tokengate::tokenstore::test::temp_dir;

namespace {

token_record make_record(std::string owner, std::string name, std::int64_t created, std::int64_t expires)
{
    token_record r;
    r.tid = random_tid();
    r.owner = std::move(owner);
    r.name = std::move(name);
    r.kid = "0123456789abcdef";
    r.created_by = r.owner;
    r.created_at = created;
    r.expires_at = expires;
    r.hash = token_hash("token text of " + r.name);
    return r;
}

std::vector<std::string> names_of(const std::vector<token_record>& v)
{
    std::vector<std::string> out;
    for (const auto& r : v) out.push_back(r.owner + "/" + r.name);
    return out;
}

}  // namespace

TEST_CASE("lmdb wrappers: errors name the failing call; not-found is a value", "[lmdb]")
{
    temp_dir dir;
    auto env = lmdb::env::create();
    env.set_max_dbs(2);
    env.open(dir.path().string(), 0, 0600);
    auto txn = lmdb::txn::begin(env.handle(), 0);
    auto db = lmdb::dbi::open(txn.handle(), "x", MDB_CREATE);
    std::string_view v;
    CHECK_FALSE(db.get(txn.handle(), "missing", v));
    CHECK(db.put(txn.handle(), "k", "v1", MDB_NOOVERWRITE));
    CHECK_FALSE(db.put(txn.handle(), "k", "v2", MDB_NOOVERWRITE));
    REQUIRE(db.get(txn.handle(), "k", v));
    CHECK(v == "v1");
    CHECK(db.del(txn.handle(), "k"));
    CHECK_FALSE(db.del(txn.handle(), "k"));
    txn.commit();
    try {
        (void)lmdb::dbi::open(lmdb::txn::begin(env.handle(), MDB_RDONLY).handle(), "nope", 0);
        FAIL("expected lmdb::error");
    } catch (const lmdb::error& e) {
        CHECK(std::string(e.origin()) == "mdb_dbi_open");
        CHECK(e.code() == MDB_NOTFOUND);
    }
}

TEST_CASE("a store with a newer schema version is refused with a clear message", "[store]")
{
    temp_dir dir;
    { store st(dir.path()); }
    {
        auto env = lmdb::env::create();
        env.set_max_dbs(8);
        env.open(dir.path().string(), 0, 0600);
        auto txn = lmdb::txn::begin(env.handle(), 0);
        auto meta = lmdb::dbi::open(txn.handle(), "meta", 0);
        std::string_view v;
        REQUIRE(meta.get(txn.handle(), "schema_version", v));
        CHECK(v == std::string("\x02\x00\x00\x00", 4));
        meta.put(txn.handle(), "schema_version", std::string("\x03\x00\x00\x00", 4));
        txn.commit();
    }
    try {
        store st(dir.path());
        FAIL("expected store_error");
    } catch (const store_error& e) {
        CHECK_THAT(e.what(), Catch::Contains("has schema version 3, newer than this tokengate supports (2)"));
    }
}

TEST_CASE("records round-trip with their version byte; name index holds active tokens only", "[store]")
{
    temp_dir dir;
    store st(dir.path(), store::options{std::size_t{1} << 20, false});
    auto rec = make_record("alice", "ci", t0, t0 + 100);
    rec.comment = "for CI";
    REQUIRE(st.insert(rec, t0) == store::insert_outcome::inserted);
    auto got = st.get(rec.tid);
    REQUIRE(got.has_value());
    CHECK(got->owner == "alice");
    CHECK(got->name == "ci");
    CHECK(got->comment == std::optional<std::string>("for CI"));
    CHECK(got->hash == rec.hash);
    CHECK(got->expires_at == t0 + 100);
    CHECK(got->last_used_at == 0);

    // Same name while active: refused. Other owner: fine.
    CHECK(st.insert(make_record("alice", "ci", t0 + 1, t0 + 100), t0 + 1) == store::insert_outcome::name_in_use);
    CHECK(st.insert(make_record("bob", "ci", t0 + 1, t0 + 100), t0 + 1) == store::insert_outcome::inserted);
    // "ab"+"c" must not collide with "a"+"bc".
    CHECK(st.insert(make_record("ab", "c", t0, t0 + 100), t0) == store::insert_outcome::inserted);
    CHECK(st.insert(make_record("a", "bc", t0, t0 + 100), t0) == store::insert_outcome::inserted);

    // Once expired, the name is free again and both stay listed.
    CHECK(st.insert(make_record("alice", "ci", t0 + 200, t0 + 300), t0 + 200) == store::insert_outcome::inserted);
    CHECK(names_of(st.list(std::string("alice"), t0 + 200, 1000)) ==
          std::vector<std::string>{"alice/ci", "alice/ci"});
    CHECK(st.find_active("alice", "ci", t0 + 200)->expires_at == t0 + 300);
}

TEST_CASE("the map grows when full", "[store]")
{
    temp_dir dir;
    store st(dir.path(), store::options{std::size_t{256} << 10, false});
    std::size_t before = st.map_size();
    std::vector<token_record> batch;
    for (int i = 0; i < 5000; ++i) batch.push_back(make_record("user" + std::to_string(i % 50), "t" + std::to_string(i), t0, t0 + 100));
    st.insert_many(batch);
    for (int i = 0; i < 200; ++i) CHECK(st.insert(make_record("solo", "n" + std::to_string(i), t0, t0 + 100), t0) == store::insert_outcome::inserted);
    CHECK(st.token_count() == 5200u);
    CHECK(st.map_size() > before);
    // A second opener adopts the grown size.
    store again_in_spirit_of_cli(dir.path(), store::options{std::size_t{256} << 10, false});
}

TEST_CASE("revocation log: numbered across the store, read incrementally", "[store]")
{
    temp_dir dir;
    store st(dir.path(), store::options{std::size_t{1} << 20, false});
    auto a = make_record("alice", "a", t0, t0 + 100);
    auto b = make_record("alice", "b", t0 + 1, t0 + 100);
    auto c = make_record("alice", "c", t0 + 2, t0 + 100);
    for (auto* r : {&a, &b, &c}) REQUIRE(st.insert(*r, t0) == store::insert_outcome::inserted);
    CHECK(st.revocation_seq() == 0u);
    CHECK(st.revoke("alice", "a", t0 + 5) == std::vector<tid_t>{a.tid});
    CHECK(st.revoke("alice", "a", t0 + 5).empty());  // already revoked
    auto r1 = st.revocations_since(0);
    CHECK(r1.seq == 1u);
    CHECK(r1.tids == std::vector<tid_t>{a.tid});
    auto revoked = st.revoke_all("alice", t0 + 6);
    CHECK(revoked.size() == 2u);
    auto r2 = st.revocations_since(r1.seq);
    CHECK(r2.seq == 3u);
    CHECK(r2.tids == revoked);
    CHECK(st.revocations_since(r2.seq).tids.empty());
    CHECK(st.revocations_since(r2.seq).seq == 3u);
}

TEST_CASE("last_used_at batches and purge after retention", "[store]")
{
    temp_dir dir;
    store st(dir.path(), store::options{std::size_t{1} << 20, false});
    auto live = make_record("alice", "live", t0, t0 + 10'000);
    auto gone = make_record("alice", "gone", t0 + 1, t0 + 10'000);
    auto old = make_record("alice", "old", t0 + 2, t0 + 50);
    for (auto* r : {&live, &gone, &old}) REQUIRE(st.insert(*r, t0) == store::insert_outcome::inserted);
    std::vector<std::pair<tid_t, std::int64_t>> uses{{live.tid, t0 + 10}, {random_tid(), t0 + 10}};
    st.record_last_used(uses);
    CHECK(st.get(live.tid)->last_used_at == t0 + 10);
    REQUIRE(st.revoke("alice", "gone", t0 + 20).size() == 1u);

    const std::int64_t retention = 1000;
    CHECK(names_of(st.list(std::string("alice"), t0 + 100, retention)) ==
          std::vector<std::string>{"alice/live", "alice/gone", "alice/old"});
    CHECK(st.purge(t0 + 100, retention) == 0u);
    // old expired at t0+50, gone revoked at t0+20: both past retention at t0+1050.
    CHECK(names_of(st.list(std::string("alice"), t0 + 1050, retention)) == std::vector<std::string>{"alice/live"});
    CHECK(st.purge(t0 + 1050, retention) == 2u);
    CHECK(st.token_count() == 1u);
    CHECK_FALSE(st.get(gone.tid).has_value());
    CHECK(st.revocations_since(0).tids.empty());  // log entry purged too
    // Name of a purged expired token can be reused.
    CHECK(st.insert(make_record("alice", "old", t0 + 1100, t0 + 5000), t0 + 1100) == store::insert_outcome::inserted);
}

namespace {

// A token record exactly as schema-1 tokengate wrote it (record version 1,
// no owner OID), for the migration tests.
std::string encode_v1(const token_record& r)
{
    std::string out;
    auto be64 = [&](std::int64_t v) {
        for (int i = 7; i >= 0; --i) out += static_cast<char>((static_cast<std::uint64_t>(v) >> (8 * i)) & 0xff);
    };
    auto str16 = [&](std::string_view s) {
        out += static_cast<char>(s.size() >> 8);
        out += static_cast<char>(s.size() & 0xff);
        out.append(s);
    };
    out += '\x01';
    out += static_cast<char>(r.comment ? 1 : 0);
    be64(r.created_at);
    be64(r.expires_at);
    be64(r.revoked_at);
    be64(r.last_used_at);
    out.append(reinterpret_cast<const char*>(r.hash.data()), r.hash.size());
    str16(r.owner);
    str16(r.name);
    str16(r.kid);
    str16(r.created_by);
    str16(r.comment ? *r.comment : std::string_view{});
    return out;
}

std::string key_of(const tid_t& tid) { return std::string(reinterpret_cast<const char*>(tid.data()), tid.size()); }

std::string owner_index_key(const token_record& r)
{
    std::string k(1, static_cast<char>(r.owner.size()));
    k += r.owner;
    for (int i = 7; i >= 0; --i) k += static_cast<char>((static_cast<std::uint64_t>(r.created_at) >> (8 * i)) & 0xff);
    k += key_of(r.tid);
    return k;
}

// Writes a schema-1 store (as the previous tokengate left it) with `recs`.
void write_schema1_store(const std::filesystem::path& dir, const std::vector<token_record>& recs)
{
    auto env = lmdb::env::create();
    env.set_max_dbs(8);
    env.set_mapsize(std::size_t{64} << 20);
    env.open(dir.string(), MDB_NOSYNC, 0600);
    auto txn = lmdb::txn::begin(env.handle(), 0);
    auto tokens = lmdb::dbi::open(txn.handle(), "tokens", MDB_CREATE);
    auto names = lmdb::dbi::open(txn.handle(), "names", MDB_CREATE);
    auto owners = lmdb::dbi::open(txn.handle(), "owners", MDB_CREATE);
    (void)lmdb::dbi::open(txn.handle(), "policies", MDB_CREATE);
    (void)lmdb::dbi::open(txn.handle(), "revocations", MDB_CREATE);
    auto meta = lmdb::dbi::open(txn.handle(), "meta", MDB_CREATE);
    meta.put(txn.handle(), "schema_version", std::string("\x01\x00\x00\x00", 4));
    for (const auto& r : recs) {
        tokens.put(txn.handle(), key_of(r.tid), encode_v1(r));
        names.put(txn.handle(), std::string(1, static_cast<char>(r.owner.size())) + r.owner + r.name, key_of(r.tid));
        owners.put(txn.handle(), owner_index_key(r), "");
    }
    txn.commit();
}

std::uint8_t stored_version(const std::filesystem::path& dir, const tid_t& tid)
{
    auto env = lmdb::env::create();
    env.set_max_dbs(8);
    env.open(dir.string(), MDB_RDONLY, 0600);
    auto txn = lmdb::txn::begin(env.handle(), MDB_RDONLY);
    auto tokens = lmdb::dbi::open(txn.handle(), "tokens", 0);
    std::string_view raw;
    REQUIRE(tokens.get(txn.handle(), key_of(tid), raw));
    return static_cast<std::uint8_t>(raw[0]);
}

}  // namespace

TEST_CASE("a schema-1 store is migrated at open: records gain owner_oid 0 and keep everything else", "[store][migration]")
{
    temp_dir dir;
    std::vector<token_record> recs;
    // Enough records to span many B-tree pages, so the in-place rewrite walks them all.
    for (int i = 0; i < 3000; ++i) {
        auto r = make_record("user" + std::to_string(i % 7), "t" + std::to_string(i), t0 + i, t0 + 100'000);
        if (i % 3 == 0) r.comment = "comment " + std::to_string(i);
        if (i % 5 == 0) r.last_used_at = t0 + 50;
        recs.push_back(std::move(r));
    }
    recs[1].revoked_at = t0 + 7;
    write_schema1_store(dir.path(), recs);
    REQUIRE(stored_version(dir.path(), recs[0].tid) == 1);
    {
        store st(dir.path(), store::options{std::size_t{1} << 20, false});
        CHECK(st.token_count() == recs.size());
        for (const auto& want : recs) {
            auto got = st.get(want.tid);
            REQUIRE(got.has_value());
            CHECK(got->owner == want.owner);
            CHECK(got->name == want.name);
            CHECK(got->owner_oid == 0u);
            CHECK(got->comment == want.comment);
            CHECK(got->created_at == want.created_at);
            CHECK(got->last_used_at == want.last_used_at);
            CHECK(got->revoked_at == want.revoked_at);
            CHECK(got->hash == want.hash);
        }
        // Indexes carried over: find by name, revoke, bind.
        CHECK(st.find_active("user2", "t2", t0 + 10).has_value());
        CHECK(st.revoke("user2", "t2", t0 + 10) == std::vector<tid_t>{recs[2].tid});
        CHECK(st.bind_owner_oid(recs[3].tid, 16384) == store::bind_outcome::bound);
        CHECK(st.get(recs[3].tid)->owner_oid == 16384u);
    }
    CHECK(stored_version(dir.path(), recs[0].tid) == record_version);
    {
        // The schema version is 2 now; opening again migrates nothing.
        auto env = lmdb::env::create();
        env.set_max_dbs(8);
        env.open(dir.path().string(), MDB_RDONLY, 0600);
        auto txn = lmdb::txn::begin(env.handle(), MDB_RDONLY);
        auto meta = lmdb::dbi::open(txn.handle(), "meta", 0);
        std::string_view v;
        REQUIRE(meta.get(txn.handle(), "schema_version", v));
        CHECK(v == std::string("\x02\x00\x00\x00", 4));
    }
    store again(dir.path(), store::options{std::size_t{1} << 20, false});
    CHECK(again.get(recs[3].tid)->owner_oid == 16384u);
}

TEST_CASE("a corrupt record stops the migration and leaves the store at schema 1", "[store][migration]")
{
    temp_dir dir;
    auto good = make_record("alice", "good", t0, t0 + 100);
    auto bad = make_record("alice", "bad", t0, t0 + 100);
    write_schema1_store(dir.path(), {good, bad});
    {
        auto env = lmdb::env::create();
        env.set_max_dbs(8);
        env.open(dir.path().string(), MDB_NOSYNC, 0600);
        auto txn = lmdb::txn::begin(env.handle(), 0);
        auto tokens = lmdb::dbi::open(txn.handle(), "tokens", 0);
        tokens.put(txn.handle(), key_of(bad.tid), std::string("\x01\x00short", 7));
        txn.commit();
    }
    CHECK_THROWS_AS(store(dir.path(), store::options{std::size_t{1} << 20, false}), store_error);
    CHECK(stored_version(dir.path(), good.tid) == 1);  // rolled back as a whole
}

TEST_CASE("version-1 records written after the migration (an old process) still read", "[store][migration]")
{
    temp_dir dir;
    store st(dir.path(), store::options{std::size_t{1} << 20, false});
    auto rec = make_record("alice", "old", t0, t0 + 100);
    REQUIRE(st.insert(rec, t0) == store::insert_outcome::inserted);
    {
        auto env = lmdb::env::create();
        env.set_max_dbs(8);
        env.open(dir.path().string(), MDB_NOSYNC, 0600);
        auto txn = lmdb::txn::begin(env.handle(), 0);
        auto tokens = lmdb::dbi::open(txn.handle(), "tokens", 0);
        tokens.put(txn.handle(), key_of(rec.tid), encode_v1(rec));
        txn.commit();
    }
    auto got = st.get(rec.tid);
    REQUIRE(got.has_value());
    CHECK(got->owner_oid == 0u);
    bool seen = false;
    CHECK(st.lookup_for_verify(rec.tid, [&](const token_view& v) {
        seen = true;
        CHECK(v.owner == "alice");
        CHECK(v.owner_oid == 0u);
    }));
    CHECK(seen);
    std::vector<std::pair<tid_t, std::int64_t>> uses{{rec.tid, t0 + 5}};
    st.record_last_used(uses);  // patched in place, same offset in both versions
    CHECK(st.get(rec.tid)->last_used_at == t0 + 5);
}

TEST_CASE("owner OID: stored with the record, bound once for old tokens", "[store]")
{
    temp_dir dir;
    store st(dir.path(), store::options{std::size_t{1} << 20, false});
    auto bound = make_record("alice", "new", t0, t0 + 100);
    bound.owner_oid = 16385;
    auto unbound = make_record("alice", "old", t0, t0 + 100);
    REQUIRE(st.insert(bound, t0) == store::insert_outcome::inserted);
    REQUIRE(st.insert(unbound, t0) == store::insert_outcome::inserted);
    CHECK(st.get(bound.tid)->owner_oid == 16385u);
    CHECK(st.bind_owner_oid(bound.tid, 16385) == store::bind_outcome::already_bound);
    CHECK(st.bind_owner_oid(bound.tid, 99999) == store::bind_outcome::bound_to_other);
    CHECK(st.get(bound.tid)->owner_oid == 16385u);
    CHECK(st.bind_owner_oid(unbound.tid, 20000) == store::bind_outcome::bound);
    CHECK(st.bind_owner_oid(unbound.tid, 20001) == store::bind_outcome::bound_to_other);
    CHECK(st.bind_owner_oid(random_tid(), 1) == store::bind_outcome::not_found);
}

TEST_CASE("revoking by name takes every unrevoked token of that name, expired ones too", "[store]")
{
    temp_dir dir;
    store st(dir.path(), store::options{std::size_t{1} << 20, false});
    auto first = make_record("alice", "ci", t0, t0 + 10);          // expired at t0+10
    auto second = make_record("alice", "ci", t0 + 20, t0 + 30);    // expired at t0+30
    auto current = make_record("alice", "ci", t0 + 40, t0 + 500);  // active
    auto other = make_record("alice", "other", t0 + 1, t0 + 10);
    auto bobs = make_record("bob", "ci", t0, t0 + 500);
    REQUIRE(st.insert(first, t0) == store::insert_outcome::inserted);
    REQUIRE(st.insert(second, t0 + 20) == store::insert_outcome::inserted);
    REQUIRE(st.insert(current, t0 + 40) == store::insert_outcome::inserted);
    REQUIRE(st.insert(other, t0 + 1) == store::insert_outcome::inserted);
    REQUIRE(st.insert(bobs, t0) == store::insert_outcome::inserted);

    CHECK(st.revoke("alice", "ci", t0 + 45) == std::vector<tid_t>{first.tid, second.tid, current.tid});
    CHECK(st.revoke("alice", "ci", t0 + 46).empty());  // nothing left to revoke
    auto log = st.revocations_since(0);
    CHECK(log.tids == std::vector<tid_t>{first.tid, second.tid, current.tid});
    CHECK(st.get(bobs.tid)->revoked_at == 0);
    CHECK(st.get(other.tid)->revoked_at == 0);
    // An expired token alone can be revoked too, and revoke_all takes it.
    CHECK(st.revoke_all("alice", t0 + 50) == std::vector<tid_t>{other.tid});
    CHECK(st.get(other.tid)->revoked_at == t0 + 50);
    CHECK(st.revoke_all("alice", t0 + 51).empty());
    // A new token may take the name again.
    CHECK(st.insert(make_record("alice", "ci", t0 + 60, t0 + 600), t0 + 60) == store::insert_outcome::inserted);
}

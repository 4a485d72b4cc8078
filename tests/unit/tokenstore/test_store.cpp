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
        CHECK(v == std::string("\x01\x00\x00\x00", 4));
        meta.put(txn.handle(), "schema_version", std::string("\x02\x00\x00\x00", 4));
        txn.commit();
    }
    try {
        store st(dir.path());
        FAIL("expected store_error");
    } catch (const store_error& e) {
        CHECK_THAT(e.what(), Catch::Contains("has schema version 2, newer than this tokengate supports (1)"));
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
    CHECK(st.revoke("alice", "a", t0 + 5) == std::optional<tid_t>(a.tid));
    CHECK(st.revoke("alice", "a", t0 + 5) == std::nullopt);  // already revoked: name gone
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
    REQUIRE(st.revoke("alice", "gone", t0 + 20));

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

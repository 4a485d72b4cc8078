// Token service: permissions, names, durations, policies, listing, and every verify outcome.
#include <chrono>
#include <thread>

#include "tests/unit/tokenstore/test_helpers.hpp"
#include <spdlog/spdlog.h>

#include "tokenstore/lmdb.hpp"

using namespace tokengate::tokenstore;
using tokengate::tokenstore::test::fixture;
using tokengate::tokenstore::test::t0;
using tokengate::tokenstore::test::temp_dir;

namespace {

const actor alice{"alice", false};
const actor bob{"bob", false};
const actor admin{"admin", true, true};  // a superuser
const role_facts plain{};  // exists, no memberships

constexpr std::int64_t day = 86400;

created_token must_create(token_service& svc, const actor& who, create_request req, const role_facts& facts = plain,
                          std::int64_t now = t0)
{
    auto r = svc.create(who, req, facts, now);
    INFO("create failed: " << (r ? std::string() : r.error_value().message + " / " + r.error_value().detail));
    REQUIRE(r.code() == errc::ok);
    return *r;
}

create_request named(std::string name)
{
    create_request r;
    r.name = std::move(name);
    return r;
}

}  // namespace

TEST_CASE("documented SQLSTATE of every service error", "[service]")
{
    CHECK(sqlstate(errc::name_too_long) == "42622");
    CHECK(sqlstate(errc::name_in_use) == "42710");
    CHECK(sqlstate(errc::token_not_found) == "42704");
    CHECK(sqlstate(errc::role_not_found) == "42704");
    CHECK(sqlstate(errc::bad_duration) == "22023");
    CHECK(sqlstate(errc::duration_above_max) == "22023");
    CHECK(sqlstate(errc::permission_denied) == "42501");
    CHECK(sqlstate(errc::store_unavailable) == "58030");
    std::error_code ec = errc::permission_denied;
    CHECK(ec.category().name() == std::string("tokengate.tokenstore"));
    CHECK(ec.message() == "permission denied");
}

TEST_CASE("create: default validity, returned row, verify succeeds", "[service]")
{
    fixture f;
    auto c = must_create(f.svc, alice, named("ci"));
    CHECK(c.name == "ci");
    CHECK(c.owner == "alice");
    CHECK(c.expires_at == t0 + 365 * day);
    auto v = f.svc.verify(c.token, "alice", t0 + 10);
    CHECK(v.status == verify_status::ok);
    CHECK(v.name == "ci");
    CHECK(v.owner == "alice");
    CHECK(v.tid == c.tid);
    CHECK(v.expires_at == c.expires_at);
    // The store keeps a hash, never the token.
    auto rec = f.st.get(c.tid);
    REQUIRE(rec.has_value());
    CHECK(rec->hash == token_hash(c.token));
}

TEST_CASE("verify: every store-side rejection reason", "[service][verify]")
{
    fixture f;
    auto c = must_create(f.svc, alice, named("ci"));

    SECTION("wrong owner")
    {
        CHECK(f.svc.verify(c.token, "bob", t0).status == verify_status::wrong_owner);
    }
    SECTION("revoked")
    {
        REQUIRE(f.svc.revoke(alice, "ci", std::nullopt, false, t0 + 1).code() == errc::ok);
        CHECK(f.svc.verify(c.token, "alice", t0 + 2).status == verify_status::revoked);
    }
    SECTION("expired, with the expiry available for the message")
    {
        auto v = f.svc.verify(c.token, "alice", c.expires_at);
        CHECK(v.status == verify_status::expired);
        CHECK(v.expires_at == c.expires_at);
    }
    SECTION("forged: valid signature (keys leaked) but unknown tid")
    {
        std::string forged = mint_token(f.keys.newest(), token_claims{"alice", random_tid(), t0, t0 + day});
        CHECK(f.svc.verify(forged, "alice", t0).status == verify_status::unknown_tid);
    }
    SECTION("keys leaked and tid known, but iat differs: stored hash does not match")
    {
        std::string forged = mint_token(f.keys.newest(), token_claims{"alice", c.tid, t0 - 1, c.expires_at});
        CHECK(f.svc.verify(forged, "alice", t0).status == verify_status::hash_mismatch);
    }
    SECTION("store stolen without keys: attacker's own key never verifies")
    {
        temp_dir elsewhere;
        keyring attacker(elsewhere.path());
        signing_key k = attacker.newest();
        std::string guess = mint_token(k, token_claims{"alice", c.tid, t0, c.expires_at});
        CHECK(f.svc.verify(guess, "alice", t0).status == verify_status::unknown_kid);
        k.kid = f.keys.newest().kid;  // kid is not secret: it is in every token
        guess = mint_token(k, token_claims{"alice", c.tid, t0, c.expires_at});
        CHECK(f.svc.verify(guess, "alice", t0).status == verify_status::bad_signature);
    }
    SECTION("old key after rotation keeps verifying, new tokens use the new key")
    {
        const signing_key& fresh = f.keys.rotate();
        auto c2 = must_create(f.svc, alice, named("ci2"));
        CHECK(f.st.get(c2.tid)->kid == fresh.kid);
        CHECK(f.svc.verify(c.token, "alice", t0).status == verify_status::ok);
        CHECK(f.svc.verify(c2.token, "alice", t0).status == verify_status::ok);
    }
    SECTION("not a token at all")
    {
        CHECK(f.svc.verify("hunter2", "alice", t0).status == verify_status::bad_format);
    }
}

TEST_CASE("permissions: FOR USER other and FOR ALL USERS need an administrator", "[service]")
{
    fixture f;
    auto denied = [](errc e) { return e == errc::permission_denied; };
    create_request for_bob = named("x");
    for_bob.for_user = "bob";
    auto r = f.svc.create(alice, for_bob, plain, t0);
    CHECK(r.code() == errc::permission_denied);
    CHECK(r.error_value().message == "permission denied to create API tokens for user \"bob\"");
    CHECK(denied(f.svc.list(alice, std::string("bob"), false, t0).code()));
    CHECK(denied(f.svc.list(alice, std::nullopt, true, t0).code()));
    CHECK(denied(f.svc.set_comment(alice, "x", std::string("bob"), std::nullopt, t0).code()));
    CHECK(denied(f.svc.revoke(alice, "x", std::string("bob"), true, t0).code()));
    CHECK(denied(f.svc.revoke_all(alice, std::string("bob"), t0).code()));
    CHECK(denied(f.svc.set_policy(alice, "alice", plain, "1d", t0).code()));
    CHECK(denied(f.svc.reset_policy(alice, "alice", plain).code()));
    CHECK(denied(f.svc.list_policies(alice, std::string("bob"), plain).code()));

    // Naming oneself is always fine.
    create_request self = named("mine");
    self.for_user = "alice";
    CHECK(f.svc.create(alice, self, plain, t0).code() == errc::ok);
    CHECK(f.svc.revoke_all(alice, std::string("alice"), t0).code() == errc::ok);

    // An admin may; the created_by column records who.
    auto c = must_create(f.svc, admin, for_bob);
    CHECK(c.owner == "bob");
    auto rows = f.svc.list(admin, std::string("bob"), false, t0);
    REQUIRE(rows.code() == errc::ok);
    REQUIRE(rows->size() == 1u);
    CHECK((*rows)[0].created_by == "admin");
    CHECK((*rows)[0].user == "bob");

    role_facts missing;
    missing.exists = false;
    create_request for_ghost = named("x");
    for_ghost.for_user = "ghost";
    auto g = f.svc.create(admin, for_ghost, missing, t0);
    CHECK(g.code() == errc::role_not_found);
    CHECK(g.error_value().message == "role \"ghost\" does not exist");
    CHECK(f.svc.set_policy(admin, "ghost", missing, "1d", t0).code() == errc::role_not_found);
}

TEST_CASE("names: 63 bytes, unique among active tokens, generated form", "[service]")
{
    fixture f;
    CHECK(f.svc.create(alice, named(std::string(63, 'n')), plain, t0).code() == errc::ok);
    auto too_long = f.svc.create(alice, named(std::string(64, 'n')), plain, t0);
    CHECK(too_long.code() == errc::name_too_long);
    CHECK(too_long.error_value().sqlstate() == "42622");
    CHECK(f.svc.create(alice, named(""), plain, t0).code() == errc::invalid_name);
    CHECK(f.svc.create(alice, named(std::string("a\0b", 3)), plain, t0).code() == errc::invalid_name);

    must_create(f.svc, alice, named("Quoted Name"));
    auto dup = f.svc.create(alice, named("Quoted Name"), plain, t0 + 1);
    CHECK(dup.code() == errc::name_in_use);
    CHECK(dup.error_value().message == "API token \"Quoted Name\" already exists");
    CHECK(f.svc.create(bob, named("Quoted Name"), plain, t0 + 1).code() == errc::ok);
    // After revocation or expiry the name is free again.
    REQUIRE(f.svc.revoke(alice, "Quoted Name", std::nullopt, false, t0 + 2).code() == errc::ok);
    CHECK(f.svc.create(alice, named("Quoted Name"), plain, t0 + 3).code() == errc::ok);
    create_request shortlived = named("short");
    shortlived.max_duration = "1h";
    must_create(f.svc, alice, shortlived);
    CHECK(f.svc.create(alice, named("short"), plain, t0 + 3600).code() == errc::ok);

    for (int i = 0; i < 20; ++i) {
        auto c = must_create(f.svc, alice, create_request{});
        INFO("generated name " << c.name);
        REQUIRE(c.name.size() == 14u);
        CHECK(c.name.substr(0, 6) == "token_");
        CHECK(c.name.find_first_not_of("abcdefghijklmnopqrstuvwxyz234567", 6) == std::string::npos);
    }
}

TEST_CASE("durations and the effective maximum through nested roles", "[service][policy]")
{
    fixture f;
    // alice is in "dev", which is in "staff" (the caller resolves the transitive closure).
    role_facts alice_facts;
    alice_facts.member_of = {"dev", "staff"};
    role_facts group;
    group.can_login = false;

    SECTION("no policy: 365 days default and cap")
    {
        auto m = f.svc.effective_maximum("alice", alice_facts.member_of);
        CHECK(m->max == std::chrono::seconds(365 * day));
        CHECK(m->policy_role == std::nullopt);
        create_request r = named("a");
        r.max_duration = "366d";
        auto e = f.svc.create(alice, r, alice_facts, t0);
        CHECK(e.code() == errc::duration_above_max);
        CHECK(e.error_value().detail == "The maximum API token duration for user \"alice\" is 365d (the default).");
    }
    SECTION("longest wins, through the nested role")
    {
        REQUIRE(f.svc.set_policy(admin, "alice", plain, "7d", t0).code() == errc::ok);
        REQUIRE(f.svc.set_policy(admin, "dev", group, "30d", t0).code() == errc::ok);
        REQUIRE(f.svc.set_policy(admin, "staff", group, "90 days", t0).code() == errc::ok);
        REQUIRE(f.svc.set_policy(admin, "unrelated", group, "2 years", t0).code() == errc::ok);
        auto m = f.svc.effective_maximum("alice", alice_facts.member_of);
        CHECK(m->max == std::chrono::seconds(90 * day));
        CHECK(m->policy_role == std::optional<std::string>("staff"));

        // No MAX DURATION: 365 days lowered to the maximum.
        auto c = must_create(f.svc, alice, named("a"), alice_facts);
        CHECK(c.expires_at == t0 + 90 * day);
        create_request r = named("b");
        r.max_duration = "91d";
        auto e = f.svc.create(alice, r, alice_facts, t0);
        CHECK(e.code() == errc::duration_above_max);
        CHECK(e.error_value().sqlstate() == "22023");
        CHECK(e.error_value().detail ==
              "The maximum API token duration for user \"alice\" is 90d, set by the policy on role \"staff\".");
        CHECK_FALSE(f.st.find_active("alice", "b", t0).has_value());  // nothing stored
        r.max_duration = "1d12h";
        CHECK(must_create(f.svc, alice, r, alice_facts).expires_at == t0 + 36 * 3600);

        // A policy binds whoever issues: an admin creating for alice too.
        create_request by_admin = named("c");
        by_admin.for_user = "alice";
        by_admin.max_duration = "100d";
        CHECK(f.svc.create(admin, by_admin, alice_facts, t0).code() == errc::duration_above_max);

        // Listing with FOR USER: only the applicable policies, and the effective one.
        auto l = f.svc.list_policies(alice, std::string("alice"), alice_facts);
        REQUIRE(l.code() == errc::ok);
        REQUIRE(l->policies.size() == 3u);
        CHECK(l->policies[0].role == "alice");
        CHECK(l->policies[0].kind == role_kind::user);
        CHECK(l->policies[1].role == "dev");
        CHECK(l->policies[1].kind == role_kind::role);
        CHECK(l->policies[2].max_duration == std::chrono::seconds(90 * day));
        REQUIRE(l->effective.has_value());
        CHECK(l->effective->policy_role == std::optional<std::string>("staff"));
        CHECK(f.svc.list_policies(bob, std::nullopt, plain)->policies.size() == 4u);

        // Reset: the next longest takes over; policies do not shorten issued tokens.
        REQUIRE(f.svc.reset_policy(admin, "staff", group).code() == errc::ok);
        CHECK(f.svc.effective_maximum("alice", alice_facts.member_of)->policy_role ==
              std::optional<std::string>("dev"));
        CHECK(f.st.get(c.tid)->expires_at == t0 + 90 * day);
        CHECK(f.svc.reset_policy(admin, "staff", group).code() == errc::ok);  // no policy: still fine
    }
    SECTION("bad duration text in a policy")
    {
        CHECK(f.svc.set_policy(admin, "alice", plain, "forever", t0).code() == errc::bad_duration);
        CHECK(f.svc.set_policy(admin, "alice", plain, "0s", t0).code() == errc::bad_duration);
    }
}

TEST_CASE("list, comment, revoke, revoke all", "[service]")
{
    fixture f;
    create_request first = named("first");
    first.comment = "deploy bot";
    must_create(f.svc, alice, first, plain, t0);
    create_request brief = named("brief");
    brief.max_duration = "1h";
    must_create(f.svc, alice, brief, plain, t0 + 1);
    must_create(f.svc, bob, named("bobs"), plain, t0 + 2);
    must_create(f.svc, alice, named("third"), plain, t0 + 3);

    auto rows = f.svc.list(alice, std::nullopt, false, t0 + 7200);
    REQUIRE(rows.code() == errc::ok);
    REQUIRE(rows->size() == 3u);
    CHECK((*rows)[0].name == "first");
    CHECK((*rows)[0].comment == std::optional<std::string>("deploy bot"));
    CHECK((*rows)[0].last_used_at == std::nullopt);
    CHECK((*rows)[1].status == token_status::expired);
    CHECK((*rows)[2].status == token_status::active);

    auto all = f.svc.list(admin, std::nullopt, true, t0 + 10);
    REQUIRE(all->size() == 4u);
    CHECK((*all)[2].user == "bob");  // oldest first across users

    REQUIRE(f.svc.set_comment(alice, "first", std::nullopt, std::string("rotated"), t0 + 5).code() == errc::ok);
    REQUIRE(f.svc.set_comment(alice, "third", std::nullopt, std::nullopt, t0 + 5).code() == errc::ok);
    auto missing = f.svc.set_comment(alice, "nope", std::nullopt, std::nullopt, t0 + 5);
    CHECK(missing.code() == errc::token_not_found);
    CHECK(missing.error_value().message == "API token \"nope\" does not exist");
    CHECK(f.svc.list(alice, std::nullopt, false, t0 + 5)->front().comment == std::optional<std::string>("rotated"));

    auto gone = f.svc.revoke(alice, "nope", std::nullopt, false, t0 + 6);
    CHECK(gone.code() == errc::token_not_found);
    auto skip = f.svc.revoke(alice, "nope", std::nullopt, true, t0 + 6);
    REQUIRE(skip.code() == errc::ok);
    CHECK_FALSE(skip->revoked);
    CHECK(skip->notice == "API token \"nope\" does not exist, skipping");

    std::vector<tid_t> notified;
    f.svc.on_revoked([&](std::span<const tid_t> t) { notified.insert(notified.end(), t.begin(), t.end()); });
    auto n = f.svc.revoke_all(alice, std::nullopt, t0 + 10);
    REQUIRE(n.code() == errc::ok);
    CHECK(n->count == 3u);  // brief has not expired yet at t0+10
    CHECK(notified == n->tids);
    CHECK(f.svc.revoke_all(alice, std::nullopt, t0 + 11)->count == 0u);
    auto after = f.svc.list(alice, std::nullopt, false, t0 + 12);
    REQUIRE(after.code() == errc::ok);
    for (const auto& r : *after) CHECK(r.status == token_status::revoked);
    CHECK(f.svc.list(bob, std::nullopt, false, t0 + 12)->front().status == token_status::active);
}

TEST_CASE("revocations by another process are visible through the sequence", "[service]")
{
    fixture f;
    auto c = must_create(f.svc, alice, named("ci"));
    std::uint64_t seq = f.svc.revocation_seq();
    // The CLI would be another process; a second service on the same store stands in.
    token_service cli(f.st, f.keys);
    REQUIRE(cli.revoke(admin, "ci", std::string("alice"), false, t0 + 1).code() == errc::ok);
    auto r = f.svc.revocations_since(seq);
    CHECK(r.tids == std::vector<tid_t>{c.tid});
    CHECK(r.seq == seq + 1);
}

TEST_CASE("last_used_at: recorded off the login path, at most once a minute", "[service]")
{
    fixture f;
    auto c = must_create(f.svc, alice, named("ci"));
    CHECK(f.svc.flush_last_used() == 0u);
    REQUIRE(f.svc.verify(c.token, "alice", t0 + 100).status == verify_status::ok);
    CHECK(f.st.get(c.tid)->last_used_at == 0);  // not written by verify itself
    REQUIRE(f.svc.verify(c.token, "alice", t0 + 101).status == verify_status::ok);
    CHECK(f.svc.flush_last_used() == 1u);
    CHECK(f.st.get(c.tid)->last_used_at == t0 + 101);
    REQUIRE(f.svc.verify(c.token, "alice", t0 + 150).status == verify_status::ok);
    CHECK(f.svc.flush_last_used() == 0u);  // within the minute
    REQUIRE(f.svc.verify(c.token, "alice", t0 + 161).status == verify_status::ok);
    CHECK(f.svc.flush_last_used() == 1u);
    CHECK(f.svc.list(alice, std::nullopt, false, t0 + 200)->front().last_used_at ==
          std::optional<std::int64_t>(t0 + 161));
}

TEST_CASE("retention: ended tokens listed for 30 days, then purged", "[service]")
{
    fixture f;
    auto c = must_create(f.svc, alice, named("ci"));
    REQUIRE(f.svc.revoke(alice, "ci", std::nullopt, false, t0 + 10).code() == errc::ok);
    CHECK(f.svc.list(alice, std::nullopt, false, t0 + 10 + 30 * day - 1)->size() == 1u);
    CHECK(f.svc.purge(t0 + 10 + 30 * day - 1) == 0u);
    CHECK(f.svc.list(alice, std::nullopt, false, t0 + 10 + 30 * day)->empty());
    CHECK(f.svc.purge(t0 + 10 + 30 * day) == 1u);
    CHECK(f.svc.verify(c.token, "alice", t0 + 10 + 30 * day).status == verify_status::unknown_tid);
}

TEST_CASE("maintenance_thread flushes last_used_at off the caller's thread", "[service]")
{
    fixture f;
    auto c = must_create(f.svc, alice, named("ci"));
    REQUIRE(f.svc.verify(c.token, "alice", t0 + 100).status == verify_status::ok);
    {
        maintenance_thread m(f.svc, std::chrono::milliseconds(5));
        for (int i = 0; i < 200 && f.st.get(c.tid)->last_used_at == 0; ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    CHECK(f.st.get(c.tid)->last_used_at == t0 + 100);
}

TEST_CASE("a record with an unknown version byte makes the store unavailable (58030), not a crash", "[service]")
{
    temp_dir dir;
    tid_t tid{};
    std::string token;
    {
        keyring keys(dir.path());
        store st(dir.path(), store::options{std::size_t{1} << 20, false});
        token_service svc(st, keys);
        auto c = must_create(svc, alice, named("ci"));
        tid = c.tid;
        token = c.token;
    }
    {
        auto env = lmdb::env::create();
        env.set_max_dbs(8);
        env.open(dir.path().string(), 0, 0600);
        auto txn = lmdb::txn::begin(env.handle(), 0);
        auto tokens = lmdb::dbi::open(txn.handle(), "tokens", 0);
        std::string_view key(reinterpret_cast<const char*>(tid.data()), tid.size()), raw;
        REQUIRE(tokens.get(txn.handle(), key, raw));
        CHECK(static_cast<int>(raw[0]) == static_cast<int>(record_version));
        std::string future(raw);
        future[0] = static_cast<char>(record_version + 1);
        tokens.put(txn.handle(), key, future);
        txn.commit();
    }
    keyring keys(dir.path());
    store st(dir.path(), store::options{std::size_t{1} << 20, false});
    token_service svc(st, keys);
    spdlog::set_level(spdlog::level::off);  // the expected error lines would only clutter the test output
    CHECK(svc.verify(token, "alice", t0).status == verify_status::store_unavailable);
    auto rows = svc.list(alice, std::nullopt, false, t0);
    spdlog::set_level(spdlog::level::info);
    try {
        (void)st.get(tid);
        FAIL("expected store_error");
    } catch (const store_error& e) {
        CHECK(std::string(e.what()) == "token record has version 3, this tokengate reads up to version 2; upgrade tokengate");
    }
    CHECK(rows.code() == errc::store_unavailable);
    CHECK(rows.error_value().sqlstate() == "58030");
}

TEST_CASE("equal policies: the user's own wins the tie, then the first role by name", "[service][policy]")
{
    fixture f;
    role_facts group;
    group.can_login = false;
    REQUIRE(f.svc.set_policy(admin, "zeta", group, "30d", t0).code() == errc::ok);
    REQUIRE(f.svc.set_policy(admin, "beta", group, "30d", t0).code() == errc::ok);
    std::vector<std::string> roles{"zeta", "beta"};
    CHECK(f.svc.effective_maximum("alice", roles)->policy_role == std::optional<std::string>("beta"));
    REQUIRE(f.svc.set_policy(admin, "alice", plain, "30d", t0).code() == errc::ok);
    CHECK(f.svc.effective_maximum("alice", roles)->policy_role == std::optional<std::string>("alice"));
}

TEST_CASE("a non-superuser administrator cannot act for protected roles", "[service][admin]")
{
    fixture f;
    // carol administers tokens without being a superuser; postgres is a
    // superuser, repl has REPLICATION, dave is another administrator.
    actor carol{"carol", true, false};
    carol.protected_roles = std::vector<std::string>{"carol", "dave", "postgres", "repl"};
    must_create(f.svc, admin, [] {
        auto r = named("pg_token");
        r.for_user = "postgres";
        return r;
    }());
    must_create(f.svc, admin, [] {
        auto r = named("bob_token");
        r.for_user = "bob";
        return r;
    }(), plain, t0 + 1);
    must_create(f.svc, carol, named("own"), plain, t0 + 2);

    auto for_user = [](std::string name, std::string user) {
        auto r = named(std::move(name));
        r.for_user = std::move(user);
        return r;
    };
    for (const char* victim : {"postgres", "repl", "dave"}) {
        INFO("acting for " << victim);
        auto c = f.svc.create(carol, for_user("x", victim), plain, t0);
        REQUIRE(c.code() == errc::permission_denied);
        CHECK(c.error_value().message == std::string("permission denied to create API tokens for user \"") + victim + "\"");
        CHECK(c.error_value().detail ==
              "An administrator that is not a superuser cannot act for superusers, roles with REPLICATION, BYPASSRLS "
              "or CREATEROLE, or other administrators.");
        CHECK(f.svc.list(carol, std::string(victim), false, t0).code() == errc::permission_denied);
        CHECK(f.svc.set_comment(carol, "pg_token", std::string(victim), std::nullopt, t0).code() ==
              errc::permission_denied);
        CHECK(f.svc.revoke(carol, "pg_token", std::string(victim), true, t0).code() == errc::permission_denied);
        CHECK(f.svc.revoke_all(carol, std::string(victim), t0).code() == errc::permission_denied);
        CHECK(f.svc.set_policy(carol, victim, plain, "1d", t0).code() == errc::permission_denied);
        CHECK(f.svc.reset_policy(carol, victim, plain).code() == errc::permission_denied);
        CHECK(f.svc.list_policies(carol, std::string(victim), plain).code() == errc::permission_denied);
    }
    // Nothing happened to postgres's token.
    auto pg_rows = f.svc.list(admin, std::string("postgres"), false, t0);
    REQUIRE(pg_rows->size() == 1u);
    CHECK(pg_rows->front().status == token_status::active);

    // Ordinary roles and herself: fine.
    CHECK(f.svc.create(carol, for_user("y", "bob"), plain, t0 + 3).code() == errc::ok);
    CHECK(f.svc.revoke(carol, "bob_token", std::string("bob"), false, t0).code() == errc::ok);
    CHECK(f.svc.set_policy(carol, "bob", plain, "1d", t0).code() == errc::ok);
    CHECK(f.svc.set_policy(carol, "carol", plain, "2d", t0).code() == errc::ok);
    CHECK(f.svc.list(carol, std::string("carol"), false, t0)->size() == 1u);

    // FOR ALL USERS leaves protected roles' tokens out (her own stay).
    auto all = f.svc.list(carol, std::nullopt, true, t0 + 4);
    REQUIRE(all.code() == errc::ok);
    std::vector<std::string> owners;
    for (const auto& r : *all) owners.push_back(r.user + "/" + r.name);
    CHECK(owners == std::vector<std::string>{"bob/bob_token", "carol/own", "bob/y"});
    CHECK(f.svc.list(admin, std::nullopt, true, t0)->size() == 4u);

    // Without the protected roles looked up, such an administrator acts for nobody else.
    actor unknown{"carol", true, false};
    CHECK(f.svc.create(unknown, for_user("z", "bob"), plain, t0).code() == errc::permission_denied);
    CHECK(f.svc.list(unknown, std::nullopt, true, t0).code() == errc::permission_denied);
    CHECK(f.svc.create(unknown, named("mine2"), plain, t0).code() == errc::ok);
}

TEST_CASE("sessions that logged in with a token may not create tokens unless configured", "[service][token-session]")
{
    actor via_token{"alice", false};
    via_token.via_token = true;
    SECTION("default: refused with 42501 and a hint naming the setting")
    {
        fixture f;
        auto r = f.svc.create(via_token, named("ci"), plain, t0);
        REQUIRE(r.code() == errc::permission_denied);
        CHECK(r.error_value().sqlstate() == "42501");
        CHECK(r.error_value().message == "permission denied to create API tokens");
        CHECK(r.error_value().hint ==
              "Log in with a password, or set token_sessions.manage_credentials = true in tokengate's configuration.");
        CHECK(f.svc.list(via_token, std::nullopt, false, t0)->empty());
        // Revoking is always allowed: it only takes power away.
        must_create(f.svc, alice, named("old"));
        CHECK(f.svc.revoke(via_token, "old", std::nullopt, false, t0).code() == errc::ok);
        // Even a superuser's token session.
        actor root{"postgres", true, true};
        root.via_token = true;
        CHECK(f.svc.create(root, named("x"), plain, t0).code() == errc::permission_denied);
    }
    SECTION("token_sessions.manage_credentials = true")
    {
        service_config cfg;
        cfg.token_sessions_manage_credentials = true;
        fixture f(false, cfg);
        CHECK(f.svc.create(via_token, named("ci"), plain, t0).code() == errc::ok);
    }
}

TEST_CASE("tokens carry their owner's OID; old ones are bound at first use", "[service][oid]")
{
    fixture f;
    role_facts with_oid;
    with_oid.oid = 16400;
    auto c = must_create(f.svc, alice, named("ci"), with_oid);
    auto v = f.svc.verify(c.token, "alice", t0);
    REQUIRE(v.status == verify_status::ok);
    CHECK(v.owner_oid == 16400u);
    CHECK(f.svc.bind_owner_oid(c.tid, 16400));
    CHECK_FALSE(f.svc.bind_owner_oid(c.tid, 16401));  // never re-bound to another role

    // A token issued without the OID (the command line, or before OIDs were kept).
    auto old = must_create(f.svc, alice, named("old"));
    auto ov = f.svc.verify(old.token, "alice", t0);
    REQUIRE(ov.status == verify_status::ok);
    CHECK(ov.owner_oid == 0u);
    CHECK_FALSE(f.svc.bind_owner_oid(old.tid, 0));
    CHECK(f.svc.bind_owner_oid(old.tid, 16400));
    CHECK(f.svc.verify(old.token, "alice", t0).owner_oid == 16400u);
    CHECK_FALSE(f.svc.bind_owner_oid(random_tid(), 16400));
    // Failures report the OID too, for the audit log.
    REQUIRE(f.svc.revoke(alice, "old", std::nullopt, false, t0 + 1).code() == errc::ok);
    auto rv = f.svc.verify(old.token, "alice", t0 + 2);
    CHECK(rv.status == verify_status::revoked);
    CHECK(rv.owner_oid == 16400u);
}

TEST_CASE("DROP API TOKEN takes expired namesakes too and reports every tid", "[service]")
{
    fixture f;
    create_request brief = named("ci");
    brief.max_duration = "1h";
    auto expired = must_create(f.svc, alice, brief, plain, t0);
    auto active = must_create(f.svc, alice, named("ci"), plain, t0 + 7200);
    std::vector<tid_t> notified;
    f.svc.on_revoked([&](std::span<const tid_t> t) { notified.insert(notified.end(), t.begin(), t.end()); });
    auto r = f.svc.revoke(alice, "ci", std::nullopt, false, t0 + 7300);
    REQUIRE(r.code() == errc::ok);
    CHECK(r->revoked);
    CHECK(r->tid == std::optional<tid_t>(active.tid));
    CHECK(r->tids == std::vector<tid_t>{expired.tid, active.tid});
    CHECK(notified == r->tids);

    // An expired token alone: dropped as well (its sessions may still be open).
    auto lone = must_create(f.svc, alice, brief, plain, t0 + 8000);
    (void)lone;
    auto late = f.svc.revoke(alice, "ci", std::nullopt, false, t0 + 8000 + 7200);
    REQUIRE(late.code() == errc::ok);
    CHECK(late->tids.size() == 1u);
    CHECK(f.svc.revoke(alice, "ci", std::nullopt, false, t0 + 20000).code() == errc::token_not_found);
    auto all = f.svc.revoke_all(alice, std::nullopt, t0 + 20000);
    CHECK(all->count == 0u);
}

TEST_CASE("create: at most max_tokens_per_user active tokens per owner (53400)", "[service]")
{
    service_config cfg;
    cfg.max_tokens_per_user = 3;
    fixture f(false, cfg);
    create_request short_lived;
    short_lived.max_duration = "1h";
    must_create(f.svc, alice, short_lived);
    must_create(f.svc, alice, named("a"));
    must_create(f.svc, alice, named("b"));
    auto refused = f.svc.create(alice, named("c"), plain, t0);
    REQUIRE(refused.code() == errc::too_many_tokens);
    CHECK(sqlstate(errc::too_many_tokens) == "53400");
    CHECK(refused.error_value().message == "too many API tokens for user \"alice\"");
    CHECK(refused.error_value().detail == "User \"alice\" has 3 active tokens; at most 3 are allowed.");
    // Another owner has a limit of its own; an administrator acting for alice has hers.
    must_create(f.svc, bob, named("a"));
    create_request for_alice = named("d");
    for_alice.for_user = "alice";
    CHECK(f.svc.create(admin, for_alice, plain, t0).code() == errc::too_many_tokens);
    // Revoked and expired tokens do not count.
    REQUIRE(f.svc.revoke(alice, "a", std::nullopt, false, t0).code() == errc::ok);
    must_create(f.svc, alice, named("c"));
    CHECK(f.svc.create(alice, named("e"), plain, t0).code() == errc::too_many_tokens);
    must_create(f.svc, alice, named("e"), plain, t0 + 2 * 3600);  // the 1 h token has expired by then
}

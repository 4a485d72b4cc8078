// The fleet's token registry in PostgreSQL (`store.backend = "postgres"`), with a local copy for verification.
//
// Layout (schema `tokengate`, versioned migrations in pg_store.cpp, applied at
// start under an advisory lock; `tokengate.schema_migrations` says which):
//   tokens            one row per token: hashes only, never token text
//   policies          API TOKEN MAX DURATION policies
//   revocations       the revocation log (which token, when, at which feed position)
//   signing_keys      signing keys wrapped by the key-encryption key (kek.hpp)
//   instances         one heartbeat row per running instance: id, address
//                     for cancel forwarding, version, sessions, feed position
//   feed              one row: the change feed's position
//
// Writes: every change is one transaction that first advances `feed.seq`
// (a row lock, so writers commit one after another and feed positions are
// in commit order), stamps the rows it changes with that position, sends
// NOTIFY tokengate_feed, and commits with synchronous_commit = on before the
// caller is answered. A partial unique index on (owner, name) for active
// tokens makes two instances creating one name at once get one success.
//
// Reads for logins never leave the process: every instance keeps the tokens
// it needs in memory (lookup()), loaded at start and kept current by a feed
// thread that LISTENs on tokengate_feed and, on each notification, on each
// reconnection and every heartbeat, reads the rows stamped after the last
// position it applied. While the registry cannot be reached the copy keeps
// serving for max_staleness; after that lookup() answers `stale` (token
// logins fail closed) until the feed is back. Listing and policies are read
// from PostgreSQL directly.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "tokenstore/backend.hpp"
#include "tokenstore/kek.hpp"
#include "tokenstore/keys.hpp"

namespace tokengate::tokenstore {

namespace pg {
class connection;
}
class store;

// The newest schema version this binary applies and understands.
inline constexpr int registry_schema_version = 1;

struct pg_store_options {
    // libpq connection string (`store.dsn`); by default the server builds one
    // for the upstream with the control connections' user and settings.
    std::string dsn;
    kek current;                  // wraps new keys; opens keys it wrapped
    std::optional<kek> previous;  // during a KEK rotation: opens (and re-wraps) older keys
    // Known tokens keep logging in this long after the registry was last
    // heard from; then token logins fail closed.
    std::chrono::seconds max_staleness{60};
    // How often the instance row is refreshed and the feed read even without
    // a notification.
    std::chrono::milliseconds heartbeat_interval{1000};

    // ---- serving instances (false: the command line: no copy, no feed) ----
    bool serve = true;
    // 0: claim the lowest id in 1..max_instance_id whose row is absent or stale.
    std::uint32_t instance_id = 0;
    std::uint32_t max_instance_id = 255;
    std::string address;  // host:port peers send forwarded CancelRequests to
    std::string version;
};

class pg_store final : public store_backend {
public:
    // Connects, applies migrations, creates the first signing key when there
    // is none, loads the keys into `keys` (an in-memory keyring), and for a
    // serving instance claims an instance id, loads the local copy and starts
    // the feed thread. Throws store_error / store_unreachable / kek_error with
    // an operator-readable message. `keys` must outlive the store.
    pg_store(pg_store_options opts, keyring& keys);
    ~pg_store() override;
    pg_store(const pg_store&) = delete;
    pg_store& operator=(const pg_store&) = delete;

    // ---- store_backend (documented there) --------------------------------
    insert_outcome insert(const token_record& rec, std::int64_t now) override;
    lookup_outcome lookup(const tid_t& tid, verify_visitor& visitor) override;
    bool set_comment(std::string_view owner, std::string_view name, const std::optional<std::string>& comment,
                     std::int64_t now) override;
    std::vector<tid_t> revoke(std::string_view owner, std::string_view name, std::int64_t now) override;
    std::vector<tid_t> revoke_all(std::string_view owner, std::int64_t now) override;
    bind_outcome bind_owner_oid(const tid_t& tid, std::uint32_t oid) override;
    [[nodiscard]] std::vector<token_record> list(const std::optional<std::string>& owner, std::int64_t now,
                                                 std::int64_t retention_seconds) override;
    void record_last_used(std::span<const std::pair<tid_t, std::int64_t>> uses) override;
    std::size_t purge(std::int64_t now, std::int64_t retention_seconds) override;
    // Revocations the feed brought from any instance (and this one's own).
    [[nodiscard]] revocations revocations_since(std::uint64_t since) override;
    [[nodiscard]] std::uint64_t revocation_seq() override;
    void put_policy(const policy_record& p) override;
    bool delete_policy(std::string_view role) override;
    [[nodiscard]] std::vector<policy_record> list_policies() override;
    [[nodiscard]] std::vector<policy_record> policies_for(std::span<const std::string> roles) override;

    // ---- keys -----------------------------------------------------------------
    // Adds a signing key (wrapped by the current KEK) for the whole fleet; new
    // tokens use it. Returns its kid.
    std::string rotate_key();

    // ---- fleet ----------------------------------------------------------------
    // Every instance row, fresh from the registry, by id.
    [[nodiscard]] std::vector<instance_info> instances() override;
    // This instance's id (0 when not serving).
    [[nodiscard]] std::uint32_t instance_id() const noexcept { return instance_id_; }
    // Where peer `id` takes CancelRequests, as of the last heartbeat; nullopt
    // if unknown or it is this instance.
    [[nodiscard]] std::optional<std::string> peer_address(std::uint32_t id) const;
    // peer_address, or else (a peer that started after our last heartbeat)
    // asked of the registry: at most once per peer_lookup_interval, so that
    // cancel requests with forged keys naming unknown instances cannot make
    // this instance query the registry often. Blocks on the network: call
    // it off the I/O threads. nullopt if unknown or unreachable.
    [[nodiscard]] std::optional<std::string> find_peer(std::uint32_t id);
    static constexpr std::chrono::milliseconds peer_lookup_interval{200};
    // The sessions figure the heartbeat reports. Set once before serving.
    void set_session_counter(std::function<std::uint32_t()> count);
    // The last feed position applied to the local copy.
    [[nodiscard]] std::uint64_t feed_position() const noexcept { return applied_seq_.load(); }
    // Whether the feed thread holds a working connection to the registry.
    [[nodiscard]] bool feed_connected() const noexcept { return connected_.load(); }
    // Time since the change feed last caught up with the registry: the age
    // of the local copy that store.max_staleness bounds (for metrics).
    [[nodiscard]] std::chrono::nanoseconds staleness() const noexcept;

    // ---- migration from LMDB ----------------------------------------------------
    struct import_counts {
        std::size_t tokens = 0, revoked = 0, policies = 0, keys = 0;
        std::size_t tokens_present = 0;  // already in the registry (same tid): left as they are
    };
    // Copies every token (revoked and expired ones included, with their
    // state), every policy and every signing key of an LMDB store into the
    // registry in one transaction. Idempotent: tokens and keys already there
    // are kept. Throws on a name conflict with a different active token.
    import_counts import_lmdb(store& from, const keyring& file_keys, std::int64_t now);

private:
    struct cached_token {
        std::string owner;
        std::string name;
        std::int64_t expires_at = 0;
        std::int64_t revoked_at = 0;
        std::int64_t last_used_at = 0;
        std::uint32_t owner_oid = 0;
        sha256_t hash{};
        std::uint64_t change_seq = 0;  // feed position of this state
    };
    struct tid_hash {
        std::size_t operator()(const tid_t& t) const noexcept;
    };
    // The local copy, sharded by tid so concurrent logins rarely meet on a lock.
    static constexpr std::size_t cache_shards = 64;
    struct alignas(64) cache_shard {
        mutable std::shared_mutex mu;
        std::unordered_map<tid_t, cached_token, tid_hash> tokens;
    };

    using conn_ptr = std::unique_ptr<pg::connection>;
    conn_ptr acquire();             // a pooled connection (or a new one)
    void release(conn_ptr c);       // back to the pool if healthy
    // Runs fn(conn, feed_seq) in one transaction that advances the feed;
    // fn returns whether to commit (false: nothing changed, roll back).
    void write_txn(const std::function<bool(pg::connection&, std::uint64_t)>& fn);
    void fail_fast() const;         // store_unreachable while the feed is down

    void migrate(pg::connection& c);
    void ensure_first_key(pg::connection& c);
    void rewrap_previous(pg::connection& c);
    void load_keys(pg::connection& c, std::uint64_t upto);
    void claim_instance(pg::connection& c);
    void load_copy(pg::connection& c);
    // Applies rows stamped after applied_seq_ (up to the feed position read
    // first); reports revocations. Throws on failure.
    void catch_up(pg::connection& c);
    void heartbeat(pg::connection& c);
    void feed_loop(std::stop_token stop);
    void apply_row(const cached_token& t, const tid_t& tid, bool report_revocation);
    void note_revoked(std::span<const tid_t> tids);
    bool fetch_one(const tid_t& tid);  // a token the feed has not brought yet

    pg_store_options opts_;
    keyring& keys_;
    std::uint32_t instance_id_ = 0;
    std::string claim_;  // random: tells our instance row from a successor's

    std::mutex pool_mu_;
    std::vector<conn_ptr> idle_;

    std::array<cache_shard, cache_shards> cache_;
    std::atomic<std::uint64_t> applied_seq_{0};
    std::uint64_t keys_seq_ = 0;  // feed thread only (and the constructor)
    std::atomic<std::int64_t> last_heard_ns_{0};  // steady clock
    std::atomic<bool> connected_{false};

    mutable std::mutex rev_mu_;
    std::vector<tid_t> rev_log_;    // revocations seen, numbered rev_base_+1 …
    std::uint64_t rev_base_ = 0;

    mutable std::mutex peers_mu_;
    std::map<std::uint32_t, std::string> peers_;
    std::int64_t last_peer_lookup_ns_ = 0;  // steady clock, under peers_mu_
    std::function<std::uint32_t()> session_count_;

    std::jthread feed_;
};

}  // namespace tokengate::tokenstore

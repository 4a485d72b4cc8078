// The storage interface under the token service: records, policies, the revocation feed; LMDB or PostgreSQL behind it.
//
// The token service works on a store_backend and never knows which one it has:
//   - tokenstore::store      LMDB in the data directory, the embedded default
//                            for a single instance (`store.backend = "lmdb"`);
//   - tokenstore::pg_store   a `tokengate` schema in PostgreSQL shared by a
//                            fleet of instances (`store.backend = "postgres"`),
//                            with a local copy for verification.
// No permission checks here: they are the service's.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tokenstore/jwt.hpp"

namespace tokengate::tokenstore {

// Opening failed (schema newer than this binary, unreadable directory, …), or
// a record is corrupt. The message is meant for the operator.
class store_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// The disk holding the store is full and the space kept for revocations could
// not be topped up: every write but revocations (and binding a token to its
// owner's OID) is refused until space is freed.
class store_full : public store_error {
public:
    using store_error::store_error;
};

// The registry (PostgreSQL) cannot be reached now. Nothing was changed.
class store_unreachable : public store_error {
public:
    using store_error::store_error;
};

// One token as stored. Times are unix seconds; 0 means "not set".
struct token_record {
    tid_t tid{};
    std::string owner;
    // The owner role's OID when the token was issued; 0 for tokens stored
    // before tokens carried it (bound at their next login, see bind_owner_oid).
    std::uint32_t owner_oid = 0;
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

// The parts of a stored token verification needs; views valid only inside
// the visitor's call (into the LMDB map, or the local copy under its lock).
struct token_view {
    std::string_view owner;
    std::string_view name;
    std::int64_t expires_at = 0;
    std::int64_t revoked_at = 0;
    std::int64_t last_used_at = 0;
    std::uint32_t owner_oid = 0;
    const std::uint8_t* hash = nullptr;  // 32 bytes
};

// One running instance of a fleet, as its heartbeat row says.
struct instance_info {
    std::uint32_t id = 0;
    std::string address;  // where peers forward cancel requests
    std::string version;
    std::int64_t started_at = 0;    // unix seconds
    std::int64_t heartbeat_at = 0;  // unix seconds
    std::uint32_t sessions = 0;
    std::uint64_t feed_seq = 0;     // the last change feed position its copy applied
};

// Receives the stored token during store_backend::lookup. Must not call back
// into the backend.
class verify_visitor {
public:
    virtual void visit(const token_view& v) = 0;

protected:
    ~verify_visitor() = default;
};

// Thread-safe. Every mutating call is one transaction, durable when it
// returns. Failures are thrown (lmdb::error, store_error and its kinds); the
// token service turns them into errc::store_unavailable.
class store_backend {
public:
    virtual ~store_backend() = default;

    // ---- tokens ---------------------------------------------------------
    enum class insert_outcome { inserted, name_in_use };
    // Inserts rec. A name is in use if an active token of the owner has it;
    // an expired or revoked holder is displaced. Two callers inserting the
    // same name at once (in one process or in two) get one `inserted`.
    virtual insert_outcome insert(const token_record& rec, std::int64_t now) = 0;

    enum class lookup_outcome {
        found,      // the visitor saw the token
        not_found,  // no token with that tid
        stale,      // the local copy is older than the backend allows: fail closed
    };
    // The login's hot path: no allocation, no round trip.
    virtual lookup_outcome lookup(const tid_t& tid, verify_visitor& visitor) = 0;

    // Sets or clears the comment of the active token (owner, name); false if none.
    virtual bool set_comment(std::string_view owner, std::string_view name,
                             const std::optional<std::string>& comment, std::int64_t now) = 0;
    // Revokes every token of `owner` named `name` that is not revoked yet:
    // the active one and expired ones (their sessions may still be open).
    // Their tids, oldest first; empty if none.
    virtual std::vector<tid_t> revoke(std::string_view owner, std::string_view name, std::int64_t now) = 0;
    // Revokes every token of owner that is not revoked yet, expired ones
    // included; their tids, oldest first.
    virtual std::vector<tid_t> revoke_all(std::string_view owner, std::int64_t now) = 0;

    enum class bind_outcome { bound, already_bound, bound_to_other, not_found };
    // Records `oid` as the owner OID of a token stored without one (owner_oid
    // 0). A token already bound keeps its OID: bound_to_other if it differs.
    virtual bind_outcome bind_owner_oid(const tid_t& tid, std::uint32_t oid) = 0;

    // Tokens of one owner (or of everyone), oldest first, leaving out those
    // revoked or expired more than `retention_seconds` ago.
    [[nodiscard]] virtual std::vector<token_record> list(const std::optional<std::string>& owner,
                                                         std::int64_t now, std::int64_t retention_seconds) = 0;

    // Writes last_used_at for several tokens in one transaction; unknown tids
    // are skipped, and a value never moves backwards.
    virtual void record_last_used(std::span<const std::pair<tid_t, std::int64_t>> uses) = 0;

    // Deletes tokens revoked/expired more than retention ago and revocation
    // log entries older than that. Returns tokens deleted.
    virtual std::size_t purge(std::int64_t now, std::int64_t retention_seconds) = 0;

    // ---- revocation feed ----------------------------------------------------
    // Revocations seen by this process, numbered 1, 2, …: for LMDB the
    // store's own log (shared by every process using it), for PostgreSQL the
    // revocations the change feed brought (from any instance).
    struct revocations {
        std::uint64_t seq = 0;     // pass this next time
        std::vector<tid_t> tids;   // revoked after the `since` given
    };
    [[nodiscard]] virtual revocations revocations_since(std::uint64_t since) = 0;
    [[nodiscard]] virtual std::uint64_t revocation_seq() = 0;

    // ---- policies ---------------------------------------------------------
    virtual void put_policy(const policy_record& p) = 0;
    virtual bool delete_policy(std::string_view role) = 0;  // false if there was none
    [[nodiscard]] virtual std::vector<policy_record> list_policies() = 0;
    // The policies set on any of `roles` (missing ones are skipped).
    [[nodiscard]] virtual std::vector<policy_record> policies_for(std::span<const std::string> roles) = 0;

    // ---- fleet ----------------------------------------------------------------
    // The instances sharing this registry, by id; none for a store of one
    // instance (LMDB).
    [[nodiscard]] virtual std::vector<instance_info> instances() { return {}; }

    // ---- upkeep -------------------------------------------------------------
    // LMDB: tops up the space reserved for revocations on a full disk; true
    // when writes may proceed. Backends without such a reserve: true.
    virtual bool ensure_reserve() noexcept { return true; }
};

}  // namespace tokengate::tokenstore

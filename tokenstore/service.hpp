// The token service: the operations of the API TOKEN statements with their permission rules, plus login verification.
//
// UI-agnostic: the SQL front end and the HTTP API call the same functions and
// turn `error`s into ErrorResponses/JSON with sqlstate(). Nothing here touches
// sockets, SQL text or the upstream: facts about roles (existence, transitive
// memberships, admin status) are looked up by the caller beforehand and passed
// in as plain values.
//
// Times are unix seconds (UTC). Every function is thread-safe.
//
// Permission checks come first in every operation (42501 before 42704), so a
// non-administrator cannot probe which roles or tokens exist. A token `name`
// in set_comment means the owner's *active* token of that name; in revoke,
// every token of that name not revoked yet (the active one and expired ones,
// whose sessions may still be open).
//
// Administrators: superusers may act for any role. An administrator that is
// not a superuser may not act for a protected role (a superuser, a role with
// REPLICATION, BYPASSRLS or CREATEROLE, or another administrator): not
// create, list, comment on or drop its tokens, nor set its policy, and
// listing all users' tokens leaves protected roles' tokens out. The caller
// looks the protected roles up upstream (actor::protected_roles); without
// them such an administrator acts for nobody but itself.
//
// Backend failures in the operations (LMDB, or the PostgreSQL registry) become
// errc::store_unavailable (58030) or verify_status::store_unavailable, with
// the failing call in the server log. A registry whose local copy is too old
// (store.max_staleness) makes verify() answer verify_status::registry_stale.
// Exceptions: the constructors of keyring and store, and revocation_seq() /
// revocations_since(), which throw lmdb::error so a poller can retry.
#pragma once

#include <chrono>
#include <condition_variable>
#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "tokenstore/duration.hpp"
#include "tokenstore/jwt.hpp"
#include "tokenstore/keys.hpp"
#include "tokenstore/result.hpp"
#include "tokenstore/backend.hpp"
#include "tokenstore/store.hpp"

namespace tokengate::tokenstore {

using namespace std::chrono_literals;

// Who runs an operation: the session's user and what the upstream says
// about them.
struct actor {
    std::string user;
    bool is_admin = false;      // a superuser, or a member of admin_role by superusers' grants
    bool is_superuser = false;  // may act for any role (the command line counts as one)
    // The session logged in with an API token (or an HTTP request carries
    // one): it may not create tokens unless
    // service_config::token_sessions_manage_credentials.
    bool via_token = false;
    // For an administrator that is not a superuser: the roles it may not act
    // for, sorted. nullopt (not looked up): it acts for nobody but itself.
    std::optional<std::vector<std::string>> protected_roles{};

    [[nodiscard]] bool may_act_for(std::string_view role) const;
};

// What the caller learned upstream about a role (the token owner, or the
// target of ALTER ROLE … SET API TOKEN MAX DURATION).
struct role_facts {
    bool exists = true;
    bool can_login = true;                // policy kind: user (LOGIN) or role
    std::vector<std::string> member_of;   // every role it belongs to, directly or not
    // pg_roles.oid: a new token is bound to it (0: unknown, bound at the
    // token's first login, as for tokens stored before OIDs were kept).
    std::uint32_t oid = 0;
};

struct service_config {
    std::chrono::seconds default_duration = 365 * 24h;      // without MAX DURATION
    std::chrono::seconds max_duration_default = 365 * 24h;  // with no policy
    std::chrono::seconds retention = 30 * 24h;              // listing/purge of ended tokens
    std::chrono::seconds last_used_interval = 60s;          // at most one write per token per interval
    // `token_sessions.manage_credentials`: whether an actor that logged in
    // with a token may create tokens. Off, a stolen token cannot be turned
    // into fresh ones that outlive its revocation.
    bool token_sessions_manage_credentials = false;
    // `max_tokens_per_user`: active tokens one role may own (0: no limit).
    // Each token is a row in the store; without a bound, one user with
    // CREATE API TOKEN in a loop (or password logins to the web page, each a
    // session token) could fill the store's disk and make every listing huge.
    std::size_t max_tokens_per_user = 1000;
};

// Longest token name (PostgreSQL's NAMEDATALEN - 1).
inline constexpr std::size_t max_name_bytes = 63;
// Longest comment; a named limit so one row cannot bloat the store.
inline constexpr std::size_t max_comment_bytes = 4096;

enum class token_status { active, expired, revoked };
[[nodiscard]] std::string_view to_string(token_status s) noexcept;

struct create_request {
    std::optional<std::string> name;          // nullopt: generated
    std::optional<std::string> for_user;      // nullopt: the actor
    std::optional<std::string> max_duration;  // duration text, parsed here
    std::optional<std::string> comment;
};

struct created_token {
    std::string name;
    std::string token;  // the only copy of the token text: show once, never log
    std::int64_t expires_at = 0;
    std::string owner;
    tid_t tid{};
};

// One row of SHOW API TOKENS.
struct token_row {
    std::string name;
    std::string user;
    std::int64_t created_at = 0;
    std::int64_t expires_at = 0;
    std::optional<std::int64_t> last_used_at;
    token_status status = token_status::active;
    std::optional<std::string> comment;
    std::string created_by;
    tid_t tid{};  // for the audit log; not a column
};

struct revoke_outcome {
    bool revoked = false;     // false only with IF EXISTS and no such token
    std::optional<tid_t> tid;  // the newest token revoked (the active one, if any)
    std::vector<tid_t> tids;   // every token revoked, oldest first (expired ones too)
    std::string notice;       // with IF EXISTS and no token: the NOTICE text to send
};

struct revoke_all_outcome {
    std::size_t count = 0;
    std::vector<tid_t> tids;
};

struct effective_max {
    std::chrono::seconds max{};
    std::optional<std::string> policy_role;  // nullopt: the default applies
};

struct policy_row {
    std::string role;
    role_kind kind = role_kind::user;
    std::chrono::seconds max_duration{};
};

struct policy_listing {
    std::vector<policy_row> policies;
    std::optional<effective_max> effective;  // with FOR USER only
};

struct verify_result {
    verify_status status = verify_status::bad_format;
    tid_t tid{};
    std::string name;           // set on ok and on the store-checked failures
    std::string owner;          // the token's user claim
    std::int64_t expires_at = 0;
    std::int64_t issued_at = 0;  // the token's iat: with expires_at, its lifetime
    // The owner role's OID the token is bound to (set on ok and on the
    // store-checked failures). The login must compare it with the role's
    // current OID: a role dropped and created again under the same name has
    // another one. 0: a token stored before OIDs were kept; bind it with
    // token_service::bind_owner_oid at its first login.
    std::uint32_t owner_oid = 0;
};

class token_service {
public:
    // Both must outlive the service.
    token_service(store_backend& st, keyring& keys, service_config cfg = {});

    // CREATE API TOKEN. `owner` describes the token owner (for_user, or the
    // actor): its existence and memberships for policy resolution.
    [[nodiscard]] result<created_token> create(const actor& who, const create_request& req, const role_facts& owner,
                                               std::int64_t now);

    // SHOW API TOKENS [FOR USER u | FOR ALL USERS]; oldest first.
    [[nodiscard]] result<std::vector<token_row>> list(const actor& who, const std::optional<std::string>& for_user,
                                                      bool all_users, std::int64_t now);

    // ALTER API TOKEN name [FOR USER u] SET COMMENT {'text' | NULL}.
    [[nodiscard]] result<void> set_comment(const actor& who, std::string_view name,
                                           const std::optional<std::string>& for_user,
                                           const std::optional<std::string>& comment, std::int64_t now);

    // DROP API TOKEN [IF EXISTS] name [FOR USER u]: every token of that name
    // not revoked yet, active or expired.
    [[nodiscard]] result<revoke_outcome> revoke(const actor& who, std::string_view name,
                                                const std::optional<std::string>& for_user, bool if_exists,
                                                std::int64_t now);

    // DROP ALL API TOKENS [FOR USER u]: every token not revoked yet, expired ones included.
    [[nodiscard]] result<revoke_all_outcome> revoke_all(const actor& who, const std::optional<std::string>& for_user,
                                                        std::int64_t now);

    // ALTER USER|ROLE role SET API TOKEN MAX DURATION 'd' (admins only; role must exist).
    [[nodiscard]] result<void> set_policy(const actor& who, std::string_view role, const role_facts& facts,
                                          std::string_view duration, std::int64_t now);
    // ALTER USER|ROLE role RESET API TOKEN MAX DURATION (no policy: success).
    [[nodiscard]] result<void> reset_policy(const actor& who, std::string_view role, const role_facts& facts);

    // SHOW API TOKEN POLICIES [FOR USER u]: all policies, or with for_user the
    // ones applying to u (`user_facts` = u's memberships) and the effective maximum.
    [[nodiscard]] result<policy_listing> list_policies(const actor& who, const std::optional<std::string>& for_user,
                                                       const role_facts& user_facts);

    // SHOW TOKENGATE INSTANCES (administrators only): the fleet's instances
    // by id; none for a single instance on LMDB.
    [[nodiscard]] result<std::vector<instance_info>> list_instances(const actor& who);

    // The effective maximum: the longest of the policies on `user` and on every role in
    // `member_of`; the configured default when there is none.
    [[nodiscard]] result<effective_max> effective_maximum(std::string_view user,
                                                          std::span<const std::string> member_of);

    // Login check (parse, kid, signature, exp, tid, hash, status, owner). Read-only transaction; on ok queues a
    // last_used_at update (written by flush_last_used, at most once per
    // last_used_interval per token). Never logs the token.
    [[nodiscard]] verify_result verify(std::string_view token, std::string_view expected_user, std::int64_t now);

    // Binds a token stored without its owner's OID (verify_result::owner_oid
    // 0) to `oid`: trust on first use, at the token's next login, of the role
    // that has the token's user name then. true when the token is bound to
    // `oid` now (just bound, or already); false when it is bound to another
    // OID, unknown, `oid` is 0, or the store failed (logged). Writes even on a
    // full disk, from the space kept for revocations.
    [[nodiscard]] bool bind_owner_oid(const tid_t& tid, std::uint32_t oid);

    // Revocations by any process since `seq`; start from revocation_seq() at
    // startup and poll (about every second) to end sessions of revoked tokens.
    // Throw lmdb::error when the store cannot be read (keep `seq`, retry).
    [[nodiscard]] store_backend::revocations revocations_since(std::uint64_t seq);
    [[nodiscard]] std::uint64_t revocation_seq();

    // Called synchronously after each revocation made through this service
    // instance (same process: no need to wait for the poll). Set once before use.
    void on_revoked(std::function<void(std::span<const tid_t>)> listener);

    // Tops up the space the store keeps for revocations on a full disk; false
    // while the disk is too full for it (then only revocations are accepted).
    bool ensure_reserve() noexcept { return store_.ensure_reserve(); }

    // Writes queued last_used_at values in one transaction. Returns how many.
    std::size_t flush_last_used();
    // Deletes tokens ended more than `retention` ago. Returns how many.
    std::size_t purge(std::int64_t now);

    [[nodiscard]] const service_config& config() const noexcept { return cfg_; }

private:
    result<std::string> owner_for(const actor& who, const std::optional<std::string>& for_user,
                                  std::string_view what) const;
    result<void> check_policy_target(const actor& who, std::string_view role, std::string_view what) const;
    void notify(std::span<const tid_t> tids);

    store_backend& store_;
    keyring& keys_;
    service_config cfg_;
    struct tid_hash {
        std::size_t operator()(const tid_t& t) const noexcept
        {
            std::size_t h;  // tids are random: any 8 bytes are a good hash
            std::memcpy(&h, t.data(), sizeof h);
            return h;
        }
    };
    // Pending last_used_at values, sharded by tid so logins rarely share a mutex.
    static constexpr std::size_t used_shards = 32;
    struct alignas(64) used_shard {
        std::mutex mu;
        std::unordered_map<tid_t, std::int64_t, tid_hash> pending;
    };
    std::array<used_shard, used_shards> used_;
    std::function<void(std::span<const tid_t>)> listener_;
};

// Generated name: "token_" + 8 random lower-case base32 characters.
[[nodiscard]] std::string generate_token_name();
// errc::ok, invalid_name or name_too_long.
[[nodiscard]] result<void> check_token_name(std::string_view name);

// Runs flush_last_used() and ensure_reserve() every `flush_every` and purge()
// every `purge_every` on its own thread, off the login path. Stops (after a final flush) when destroyed.
class maintenance_thread {
public:
    explicit maintenance_thread(token_service& svc, std::chrono::milliseconds flush_every = 5s,
                                std::chrono::seconds purge_every = 1h);
    ~maintenance_thread();
    maintenance_thread(const maintenance_thread&) = delete;
    maintenance_thread& operator=(const maintenance_thread&) = delete;

private:
    std::mutex mu_;
    std::condition_variable_any cv_;
    std::jthread thread_;
};

}  // namespace tokengate::tokenstore

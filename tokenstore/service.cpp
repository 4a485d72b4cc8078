// Token service: permission rules, names, durations and policies of the API TOKEN statements, and the login verification path.
#include "tokenstore/service.hpp"

#include <botan/mem_ops.h>
#include <botan/system_rng.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

namespace tokengate::tokenstore {

namespace {

std::string dq(std::string_view s) { return "\"" + std::string(s) + "\""; }

// Every LMDB failure surfaces as 58030; the operator gets the LMDB call in the log.
error unavailable(const std::exception& e, std::string_view op)
{
    spdlog::error("token store: {} failed: {}", op, e.what());
    if (dynamic_cast<const store_full*>(&e) != nullptr)
        return store_unavailable_error(
            "The disk holding the token store is full; only revocations are accepted until space is freed.");
    if (dynamic_cast<const store_unreachable*>(&e) != nullptr)
        return store_unavailable_error(
            "The token registry in PostgreSQL cannot be reached; API TOKEN statements fail until it is back.");
    return store_unavailable_error("The token store could not complete the operation.");
}

constexpr std::string_view protected_detail =
    "An administrator that is not a superuser cannot act for superusers, roles with REPLICATION, BYPASSRLS or "
    "CREATEROLE, or other administrators.";

std::string describe_max(std::string_view user, const effective_max& m)
{
    std::string d = "The maximum API token duration for user " + dq(user) + " is " + format_duration(m.max);
    if (m.policy_role)
        d += ", set by the policy on role " + dq(*m.policy_role) + ".";
    else
        d += " (the default).";
    return d;
}

token_row to_row(const token_record& r, std::int64_t now)
{
    token_row row;
    row.name = r.name;
    row.user = r.owner;
    row.created_at = r.created_at;
    row.expires_at = r.expires_at;
    if (r.last_used_at != 0) row.last_used_at = r.last_used_at;
    row.status = r.revoked() ? token_status::revoked
                 : r.expires_at <= now ? token_status::expired
                                       : token_status::active;
    row.comment = r.comment;
    row.created_by = r.created_by;
    row.tid = r.tid;
    return row;
}

}  // namespace

std::string_view to_string(token_status s) noexcept
{
    switch (s) {
    case token_status::active: return "active";
    case token_status::expired: return "expired";
    case token_status::revoked: return "revoked";
    }
    return "unknown";
}

std::string generate_token_name()
{
    static constexpr char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
    std::uint8_t rnd[8];
    Botan::system_rng().randomize(rnd, sizeof rnd);
    std::string name = "token_";
    for (auto b : rnd) name += alphabet[b & 31];
    return name;
}

result<void> check_token_name(std::string_view name)
{
    if (name.empty()) return make_error(errc::invalid_name, "API token name must not be empty");
    if (name.find('\0') != std::string_view::npos)
        return make_error(errc::invalid_name, "API token name must not contain a zero byte");
    if (name.size() > max_name_bytes)
        return make_error(errc::name_too_long, "API token name is too long",
                          "The name is " + std::to_string(name.size()) + " bytes long; at most " +
                              std::to_string(max_name_bytes) + " bytes are allowed.");
    return {};
}

bool actor::may_act_for(std::string_view role) const
{
    if (role == user || is_superuser) return true;
    if (!is_admin || !protected_roles) return false;
    return !std::binary_search(protected_roles->begin(), protected_roles->end(), role);
}

token_service::token_service(store_backend& st, keyring& keys, service_config cfg)
    : store_(st), keys_(keys), cfg_(cfg)
{
}

result<std::string> token_service::owner_for(const actor& who, const std::optional<std::string>& for_user,
                                             std::string_view what) const
{
    if (!for_user || *for_user == who.user) return who.user;
    if (!who.is_admin)
        return permission_denied_error(std::string(what) + " for user " + dq(*for_user));
    if (!who.may_act_for(*for_user))
        return permission_denied_error(std::string(what) + " for user " + dq(*for_user),
                                       std::string(protected_detail));
    return *for_user;
}

result<void> token_service::check_policy_target(const actor& who, std::string_view role,
                                                std::string_view what) const
{
    if (!who.is_admin) return permission_denied_error(what);
    if (!who.may_act_for(role))
        return permission_denied_error(std::string(what) + " of role " + dq(role), std::string(protected_detail));
    return {};
}

void token_service::on_revoked(std::function<void(std::span<const tid_t>)> listener)
{
    listener_ = std::move(listener);
}

void token_service::notify(std::span<const tid_t> tids)
{
    if (listener_ && !tids.empty()) listener_(tids);
}

result<effective_max> token_service::effective_maximum(std::string_view user, std::span<const std::string> member_of)
{
    std::vector<std::string> roles;
    roles.reserve(member_of.size() + 1);
    roles.emplace_back(user);
    for (const auto& r : member_of)
        if (r != user) roles.push_back(r);
    std::vector<policy_record> found;
    try {
        found = store_.policies_for(roles);
    } catch (const std::exception& e) {
        return unavailable(e, "policy look-up");
    }
    if (found.empty()) return effective_max{cfg_.max_duration_default, std::nullopt};
    // Longest wins; on a tie the user's own policy, then the first role by name, so the answer is stable.
    auto better = [&](const policy_record& a, const policy_record& b) {
        if (a.max_seconds != b.max_seconds) return a.max_seconds > b.max_seconds;
        if ((a.role == user) != (b.role == user)) return a.role == user;
        return a.role < b.role;
    };
    const policy_record* best = &found.front();
    for (const auto& p : found)
        if (better(p, *best)) best = &p;
    return effective_max{std::chrono::seconds(best->max_seconds), best->role};
}

result<created_token> token_service::create(const actor& who, const create_request& req, const role_facts& owner_facts,
                                            std::int64_t now)
{
    if (who.via_token && !cfg_.token_sessions_manage_credentials)
        return permission_denied_error(
            "create API tokens",
            "This session logged in with an API token. Such sessions cannot create tokens, so that a stolen token "
            "cannot outlive its revocation.",
            "Log in with a password, or set token_sessions.manage_credentials = true in tokengate's configuration.");
    auto owner = owner_for(who, req.for_user, "create API tokens");
    if (!owner) return owner.error_value();
    if (!owner_facts.exists) return role_not_found_error(*owner);
    if (req.name) {
        if (auto ok = check_token_name(*req.name); !ok) return ok.error_value();
    }
    if (req.comment && req.comment->size() > max_comment_bytes)
        return make_error(errc::comment_too_long, "API token comment is too long",
                          "At most " + std::to_string(max_comment_bytes) + " bytes are allowed.");
    std::optional<std::chrono::seconds> requested;
    if (req.max_duration) {
        auto d = parse_duration(*req.max_duration);
        if (!d) return d.error_value();
        requested = *d;
    }
    auto max = effective_maximum(*owner, owner_facts.member_of);
    if (!max) return max.error_value();
    if (requested && *requested > max->max)
        return make_error(errc::duration_above_max,
                          "MAX DURATION " + format_duration(*requested) + " exceeds the maximum for user " +
                              dq(*owner),
                          describe_max(*owner, *max));
    std::chrono::seconds duration = requested.value_or(std::min(cfg_.default_duration, max->max));

    try {
        if (cfg_.max_tokens_per_user > 0) {
            std::size_t active = 0;
            for (const auto& r : store_.list(*owner, now, 0)) active += r.active(now) ? 1 : 0;
            if (active >= cfg_.max_tokens_per_user) {
                auto e = make_error(errc::too_many_tokens, "too many API tokens for user " + dq(*owner),
                                    "User " + dq(*owner) + " has " + std::to_string(active) +
                                        " active tokens; at most " + std::to_string(cfg_.max_tokens_per_user) +
                                        " are allowed.");
                e.hint = "Drop tokens that are no longer used, or raise max_tokens_per_user in tokengate's "
                         "configuration.";
                return e;
            }
        }
        keys_.refresh();  // pick up a rotation done by the CLI
        const signing_key& key = keys_.newest();
        // A generated name may collide with an active one; draw again a few times.
        for (int attempt = 0; attempt < 8; ++attempt) {
            token_record rec;
            rec.tid = random_tid();
            rec.owner = *owner;
            rec.owner_oid = owner_facts.oid;
            rec.name = req.name ? *req.name : generate_token_name();
            rec.kid = key.kid;
            rec.created_by = who.user;
            rec.comment = req.comment;
            rec.created_at = now;
            rec.expires_at = now + duration.count();
            created_token out;
            out.token = mint_token(key, token_claims{rec.owner, rec.tid, rec.created_at, rec.expires_at});
            rec.hash = token_hash(out.token);
            if (store_.insert(rec, now) == store_backend::insert_outcome::name_in_use) {
                if (req.name)
                    return make_error(errc::name_in_use, "API token " + dq(rec.name) + " already exists",
                                      "User " + dq(rec.owner) + " has an active token with that name.");
                continue;
            }
            out.name = std::move(rec.name);
            out.expires_at = rec.expires_at;
            out.owner = std::move(rec.owner);
            out.tid = rec.tid;
            return out;
        }
        return make_error(errc::name_in_use, "could not generate an unused API token name");
    } catch (const std::exception& e) {
        return unavailable(e, "create");
    }
}

result<std::vector<token_row>> token_service::list(const actor& who, const std::optional<std::string>& for_user,
                                                   bool all_users, std::int64_t now)
{
    std::optional<std::string> owner;
    if (all_users) {
        // A non-superuser administrator sees all but protected roles' tokens;
        // without the list of those, nothing.
        if (!who.is_admin || (!who.is_superuser && !who.protected_roles))
            return permission_denied_error("list API tokens of all users");
    } else {
        auto o = owner_for(who, for_user, "list API tokens");
        if (!o) return o.error_value();
        owner = *o;
    }
    try {
        std::vector<token_row> rows;
        for (const auto& r : store_.list(owner, now, cfg_.retention.count()))
            if (!all_users || who.may_act_for(r.owner)) rows.push_back(to_row(r, now));
        return rows;
    } catch (const std::exception& e) {
        return unavailable(e, "list");
    }
}

result<void> token_service::set_comment(const actor& who, std::string_view name,
                                        const std::optional<std::string>& for_user,
                                        const std::optional<std::string>& comment, std::int64_t now)
{
    auto owner = owner_for(who, for_user, "alter API tokens");
    if (!owner) return owner.error_value();
    if (comment && comment->size() > max_comment_bytes)
        return make_error(errc::comment_too_long, "API token comment is too long",
                          "At most " + std::to_string(max_comment_bytes) + " bytes are allowed.");
    try {
        if (!store_.set_comment(*owner, name, comment, now)) return token_not_found_error(name);
        return {};
    } catch (const std::exception& e) {
        return unavailable(e, "set comment");
    }
}

result<revoke_outcome> token_service::revoke(const actor& who, std::string_view name,
                                             const std::optional<std::string>& for_user, bool if_exists,
                                             std::int64_t now)
{
    auto owner = owner_for(who, for_user, "drop API tokens");
    if (!owner) return owner.error_value();
    revoke_outcome out;
    try {
        out.tids = store_.revoke(*owner, name, now);
    } catch (const std::exception& e) {
        return unavailable(e, "revoke");
    }
    if (out.tids.empty()) {
        if (!if_exists) return token_not_found_error(name);
        out.notice = "API token " + dq(name) + " does not exist, skipping";
        return out;
    }
    out.revoked = true;
    out.tid = out.tids.back();
    notify(out.tids);
    return out;
}

result<revoke_all_outcome> token_service::revoke_all(const actor& who, const std::optional<std::string>& for_user,
                                                     std::int64_t now)
{
    auto owner = owner_for(who, for_user, "drop API tokens");
    if (!owner) return owner.error_value();
    revoke_all_outcome out;
    try {
        out.tids = store_.revoke_all(*owner, now);
    } catch (const std::exception& e) {
        return unavailable(e, "revoke all");
    }
    out.count = out.tids.size();
    notify(out.tids);
    return out;
}

result<std::vector<instance_info>> token_service::list_instances(const actor& who)
{
    if (!who.is_admin) return permission_denied_error("show tokengate instances");
    try {
        return store_.instances();
    } catch (const std::exception& e) {
        return unavailable(e, "list instances");
    }
}

result<void> token_service::set_policy(const actor& who, std::string_view role, const role_facts& facts,
                                       std::string_view duration, std::int64_t now)
{
    if (auto ok = check_policy_target(who, role, "set API token policies"); !ok) return ok.error_value();
    if (!facts.exists) return role_not_found_error(role);
    auto d = parse_duration(duration);
    if (!d) return d.error_value();
    try {
        store_.put_policy(policy_record{std::string(role), facts.can_login ? role_kind::user : role_kind::role,
                                        d->count(), now, who.user});
        return {};
    } catch (const std::exception& e) {
        return unavailable(e, "set policy");
    }
}

result<void> token_service::reset_policy(const actor& who, std::string_view role, const role_facts& facts)
{
    if (auto ok = check_policy_target(who, role, "reset API token policies"); !ok) return ok.error_value();
    if (!facts.exists) return role_not_found_error(role);
    try {
        (void)store_.delete_policy(role);
        return {};
    } catch (const std::exception& e) {
        return unavailable(e, "reset policy");
    }
}

result<policy_listing> token_service::list_policies(const actor& who, const std::optional<std::string>& for_user,
                                                    const role_facts& user_facts)
{
    policy_listing out;
    try {
        if (!for_user) {
            for (auto& p : store_.list_policies())
                out.policies.push_back({std::move(p.role), p.kind, std::chrono::seconds(p.max_seconds)});
            return out;
        }
        auto owner = owner_for(who, for_user, "show API token policies");
        if (!owner) return owner.error_value();
        if (!user_facts.exists) return role_not_found_error(*owner);
        std::vector<std::string> roles{*owner};
        for (const auto& r : user_facts.member_of)
            if (r != *owner) roles.push_back(r);
        for (auto& p : store_.policies_for(roles))
            out.policies.push_back({std::move(p.role), p.kind, std::chrono::seconds(p.max_seconds)});
        std::sort(out.policies.begin(), out.policies.end(),
                  [](const policy_row& a, const policy_row& b) { return a.role < b.role; });
    } catch (const std::exception& e) {
        return unavailable(e, "list policies");
    }
    auto eff = effective_maximum(*for_user, user_facts.member_of);
    if (!eff) return eff.error_value();
    out.effective = *eff;
    return out;
}

verify_result token_service::verify(std::string_view token, std::string_view expected_user, std::int64_t now)
{
    verify_result out;
    token_claims claims;
    try {
        out.status = check_token(token, keys_, now, claims);
    } catch (const std::exception& e) {
        // check_token is bounded and should not throw; if anything in it ever
        // does, the login fails with an audit line rather than the connection.
        spdlog::error("token check failed unexpectedly: {}", e.what());
        out.status = verify_status::bad_format;
        return out;
    }
    if (out.status != verify_status::ok && out.status != verify_status::expired) return out;
    out.tid = claims.tid;
    out.owner = std::move(claims.user);
    out.expires_at = claims.exp;
    out.issued_at = claims.iat;
    if (out.status == verify_status::expired) return out;

    sha256_t hash = token_hash(token);
    std::int64_t last_used = 0;
    // Compares inside the backend's look-up, while the view is valid.
    struct checker final : verify_visitor {
        verify_result& out;
        const sha256_t& hash;
        std::string_view expected_user;
        std::int64_t now;
        std::int64_t& last_used;
        checker(verify_result& o, const sha256_t& h, std::string_view u, std::int64_t n, std::int64_t& lu)
            : out(o), hash(h), expected_user(u), now(n), last_used(lu)
        {
        }
        void visit(const token_view& v) override
        {
            out.name.assign(v.name);
            out.owner_oid = v.owner_oid;
            last_used = v.last_used_at;
            if (!Botan::constant_time_compare(hash.data(), v.hash, hash.size()))
                out.status = verify_status::hash_mismatch;
            else if (v.revoked_at != 0)
                out.status = verify_status::revoked;
            else if (v.owner != out.owner || v.owner != expected_user)
                out.status = verify_status::wrong_owner;
            else if (v.expires_at <= now)
                out.status = verify_status::expired;
        }
    } check(out, hash, expected_user, now, last_used);
    try {
        switch (store_.lookup(claims.tid, check)) {
        case store_backend::lookup_outcome::found: break;
        case store_backend::lookup_outcome::not_found: out.status = verify_status::unknown_tid; break;
        case store_backend::lookup_outcome::stale: out.status = verify_status::registry_stale; return out;
        }
    } catch (const std::exception& e) {
        spdlog::error("token store: verify look-up failed: {}", e.what());
        out.status = verify_status::store_unavailable;
        return out;
    }
    if (out.status == verify_status::ok && now - last_used >= cfg_.last_used_interval.count()) {
        auto& shard = used_[out.tid[0] % used_shards];
        std::lock_guard lk(shard.mu);
        shard.pending[out.tid] = now;
    }
    return out;
}

std::size_t token_service::flush_last_used()
{
    std::vector<std::pair<tid_t, std::int64_t>> uses;
    for (auto& shard : used_) {
        std::lock_guard lk(shard.mu);
        for (const auto& [tid, at] : shard.pending) uses.emplace_back(tid, at);
        shard.pending.clear();
    }
    if (uses.empty()) return 0;
    try {
        store_.record_last_used(uses);
    } catch (const std::exception& e) {
        spdlog::warn("token store: last_used_at not recorded: {}", e.what());
        return 0;
    }
    return uses.size();
}

std::size_t token_service::purge(std::int64_t now)
{
    try {
        return store_.purge(now, cfg_.retention.count());
    } catch (const std::exception& e) {
        spdlog::warn("token store: purge failed: {}", e.what());
        return 0;
    }
}

bool token_service::bind_owner_oid(const tid_t& tid, std::uint32_t oid)
{
    if (oid == 0) return false;
    try {
        switch (store_.bind_owner_oid(tid, oid)) {
        case store_backend::bind_outcome::bound:
            spdlog::info("token store: API token {} bound to its owner's role OID {}", tid_to_hex(tid), oid);
            return true;
        case store_backend::bind_outcome::already_bound: return true;
        case store_backend::bind_outcome::bound_to_other:
        case store_backend::bind_outcome::not_found: return false;
        }
    } catch (const std::exception& e) {
        spdlog::error("token store: binding a token to its owner's OID failed: {}", e.what());
    }
    return false;
}

store_backend::revocations token_service::revocations_since(std::uint64_t seq) { return store_.revocations_since(seq); }

std::uint64_t token_service::revocation_seq() { return store_.revocation_seq(); }

maintenance_thread::maintenance_thread(token_service& svc, std::chrono::milliseconds flush_every,
                                       std::chrono::seconds purge_every)
{
    thread_ = std::jthread([this, &svc, flush_every, purge_every](std::stop_token stop) {
        auto next_purge = std::chrono::steady_clock::now();
        while (!stop.stop_requested()) {
            {
                std::unique_lock lk(mu_);
                cv_.wait_for(lk, stop, flush_every, [] { return false; });
            }
            // Notices freed disk space (and logs it) even when nothing is written.
            if (svc.ensure_reserve()) svc.flush_last_used();
            if (std::chrono::steady_clock::now() >= next_purge) {
                using namespace std::chrono;
                svc.purge(duration_cast<seconds>(system_clock::now().time_since_epoch()).count());
                next_purge = steady_clock::now() + purge_every;
            }
        }
    });
}

maintenance_thread::~maintenance_thread()
{
    thread_.request_stop();
    if (thread_.joinable()) thread_.join();
}

}  // namespace tokengate::tokenstore

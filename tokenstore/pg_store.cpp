// The PostgreSQL registry: migrations, transactional writes with the change feed, the local copy and its feed thread.
#include "tokenstore/pg_store.hpp"

#include <botan/system_rng.h>
#include <poll.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <limits>

#include "tokenstore/pg.hpp"
#include "tokenstore/store.hpp"

namespace tokengate::tokenstore {

namespace {

using Clock = std::chrono::steady_clock;

// Session-level advisory lock held while migrations run and the first key is
// made: two instances starting together apply each migration once. The two
// keys spell "tkgt" and 1.
constexpr const char* lock_sql = "SELECT pg_advisory_lock(1953195892, 1)";
constexpr const char* unlock_sql = "SELECT pg_advisory_unlock(1953195892, 1)";
constexpr const char* feed_channel = "tokengate_feed";

// Migrations: index i holds version i + 1. Applied in order, each in its own
// transaction together with its row in tokengate.schema_migrations. Never
// edit a released one: add the next.
constexpr const char* migrations[] = {
    // 1: tokens, policies, the revocation log, wrapped signing keys, instance
    // heartbeats, the feed position.
    R"sql(
CREATE TABLE tokengate.tokens (
    tid bytea PRIMARY KEY CHECK (octet_length(tid) = 16),
    owner text NOT NULL,
    owner_oid oid NOT NULL DEFAULT 0,
    name text NOT NULL,
    kid text NOT NULL,
    created_by text NOT NULL,
    comment text,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    revoked_at bigint NOT NULL DEFAULT 0,
    last_used_at bigint NOT NULL DEFAULT 0,
    hash bytea NOT NULL CHECK (octet_length(hash) = 32),
    -- An expired token gives its name up when a new token takes it.
    name_released boolean NOT NULL DEFAULT false,
    -- The feed position of the last change to this row.
    change_seq bigint NOT NULL
);
-- Names are unique among an owner's tokens that are neither revoked nor
-- displaced: two instances creating one name at once get one success.
CREATE UNIQUE INDEX tokens_active_name ON tokengate.tokens (owner, name)
    WHERE revoked_at = 0 AND NOT name_released;
CREATE INDEX tokens_owner ON tokengate.tokens (owner, created_at);
CREATE INDEX tokens_change ON tokengate.tokens (change_seq, tid);
CREATE TABLE tokengate.policies (
    role text PRIMARY KEY,
    kind smallint NOT NULL,
    max_seconds bigint NOT NULL,
    set_at bigint NOT NULL,
    set_by text NOT NULL
);
CREATE TABLE tokengate.revocations (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tid bytea NOT NULL,
    revoked_at bigint NOT NULL,
    feed_seq bigint NOT NULL
);
CREATE TABLE tokengate.signing_keys (
    kid text PRIMARY KEY,
    created_at bigint NOT NULL,
    -- AES-256-GCM under the key-encryption key, which is never stored here.
    wrapped bytea NOT NULL,
    kek_id text NOT NULL,
    change_seq bigint NOT NULL
);
CREATE TABLE tokengate.instances (
    id integer PRIMARY KEY CHECK (id > 0),
    address text NOT NULL,
    version text NOT NULL,
    started_at timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL,
    sessions integer NOT NULL DEFAULT 0,
    feed_seq bigint NOT NULL DEFAULT 0,
    claim text NOT NULL
);
CREATE TABLE tokengate.feed (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    seq bigint NOT NULL
);
INSERT INTO tokengate.feed VALUES (true, 0);
)sql",
};

constexpr std::string_view cache_columns =
    "tid, owner, owner_oid, name, expires_at, revoked_at, last_used_at, hash, change_seq";
constexpr std::string_view record_columns =
    "tid, owner, owner_oid, name, kid, created_by, comment, created_at, expires_at, revoked_at, last_used_at, "
    "hash";
// Tokens per INSERT when importing an LMDB store.
constexpr std::size_t import_batch = 2000;
// Rows per page while loading the copy or catching up after a long outage.
constexpr int page_rows = 20000;
// Revocations kept for revocations_since: the server reads them twice a
// second, so this only bounds memory after a burst.
constexpr std::size_t max_revocation_log = 100000;
// An instance row not refreshed for this long may be claimed by another
// instance; heartbeats come every heartbeat_interval.
constexpr int stale_instance_heartbeats = 5;

std::string num(std::int64_t v) { return std::to_string(v); }
std::string num(std::uint64_t v) { return std::to_string(v); }
std::string num(std::uint32_t v) { return std::to_string(v); }

std::string bytea(const tid_t& t) { return pg::bytea_param(t); }

std::string hex_plain(const tid_t& t)
{
    auto s = pg::bytea_param(t);
    return s.substr(2);
}

// An array literal: every element double-quoted, with \ and " escaped;
// nullopt is NULL.
std::string text_array(std::span<const std::optional<std::string>> items)
{
    std::string out = "{";
    for (std::size_t i = 0; i < items.size(); ++i) {
        if (i) out += ',';
        if (!items[i]) {
            out += "NULL";
            continue;
        }
        out += '"';
        for (char c : *items[i]) {
            if (c == '"' || c == '\\') out += '\\';
            out += c;
        }
        out += '"';
    }
    out += '}';
    return out;
}

std::string text_array(std::span<const std::string> items)
{
    std::vector<std::optional<std::string>> all(items.begin(), items.end());
    return text_array(all);
}

std::int64_t steady_ns()
{
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

token_record record_from(const pg::result& r, int i)
{
    token_record t;
    r.bytes_into(i, 0, t.tid);
    t.owner = r.text(i, 1);
    t.owner_oid = static_cast<std::uint32_t>(r.i64(i, 2));
    t.name = r.text(i, 3);
    t.kid = r.text(i, 4);
    t.created_by = r.text(i, 5);
    if (!r.null(i, 6)) t.comment = std::string(r.text(i, 6));
    t.created_at = r.i64(i, 7);
    t.expires_at = r.i64(i, 8);
    t.revoked_at = r.i64(i, 9);
    t.last_used_at = r.i64(i, 10);
    r.bytes_into(i, 11, t.hash);
    return t;
}

policy_record policy_from(const pg::result& r, int i)
{
    policy_record p;
    p.role = r.text(i, 0);
    p.kind = r.i64(i, 1) == static_cast<int>(role_kind::role) ? role_kind::role : role_kind::user;
    p.max_seconds = r.i64(i, 2);
    p.set_at = r.i64(i, 3);
    p.set_by = r.text(i, 4);
    return p;
}

std::string random_claim()
{
    std::uint8_t b[16];
    Botan::system_rng().randomize(b, sizeof b);
    tid_t t;
    std::memcpy(t.data(), b, sizeof b);
    return hex_plain(t);
}

}  // namespace

std::size_t pg_store::tid_hash::operator()(const tid_t& t) const noexcept
{
    std::size_t h;  // tids are random: any 8 bytes are a good hash
    std::memcpy(&h, t.data(), sizeof h);
    return h;
}

// ---- start-up -----------------------------------------------------------------

pg_store::pg_store(pg_store_options opts, keyring& keys) : opts_(std::move(opts)), keys_(keys)
{
    if (!keys_.in_memory()) throw store_error("the PostgreSQL registry needs an in-memory keyring");
    auto c = std::make_unique<pg::connection>(opts_.dsn);
    c->exec(lock_sql);
    try {
        migrate(*c);
        rewrap_previous(*c);
        ensure_first_key(*c);
        if (opts_.serve) claim_instance(*c);
        c->exec(unlock_sql);
    } catch (...) {
        // Closing the connection releases the lock too; say so explicitly when we can.
        try {
            c->exec(unlock_sql);
        } catch (...) {
        }
        throw;
    }
    if (opts_.serve) {
        load_copy(*c);
        connected_ = true;
        last_heard_ns_ = steady_ns();
        release(std::move(c));
        feed_ = std::jthread([this](std::stop_token st) { feed_loop(st); });
    } else {
        load_keys(*c, std::numeric_limits<std::int64_t>::max());
        release(std::move(c));
    }
    if (keys_.size() == 0)
        throw kek_error("no signing key in the registry opens with key-encryption key " + opts_.current.id +
                        (opts_.previous ? " or " + opts_.previous->id : std::string()) +
                        ": configure the KEK the fleet uses (store.kek_file or TOKENGATE_KEK)");
}

pg_store::~pg_store()
{
    if (feed_.joinable()) {
        feed_.request_stop();
        feed_.join();
    }
    if (opts_.serve && instance_id_ != 0 && connected_) {
        // A clean stop frees the instance id at once; a crash leaves the row
        // to go stale.
        try {
            auto c = acquire();
            c->exec("DELETE FROM tokengate.instances WHERE id = $1 AND claim = $2", {num(instance_id_), claim_});
        } catch (const std::exception& e) {
            spdlog::warn("token registry: could not remove instance {}: {}", instance_id_, e.what());
        }
    }
}

void pg_store::migrate(pg::connection& c)
{
    c.exec("CREATE SCHEMA IF NOT EXISTS tokengate");
    c.exec("CREATE TABLE IF NOT EXISTS tokengate.schema_migrations ("
           " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now(), applied_by text NOT NULL)");
    auto r = c.exec("SELECT coalesce(max(version), 0) FROM tokengate.schema_migrations");
    const std::int64_t found = r.i64(0, 0);
    if (found > registry_schema_version)
        throw store_error("the token registry has schema version " + std::to_string(found) +
                          ", newer than this tokengate supports (" + std::to_string(registry_schema_version) +
                          "); upgrade tokengate");
    for (std::int64_t v = found + 1; v <= registry_schema_version; ++v) {
        c.exec("BEGIN");
        try {
            c.exec_script(migrations[v - 1]);
            c.exec("INSERT INTO tokengate.schema_migrations (version, applied_by) VALUES ($1, $2)",
                   {num(v), "tokengate " + opts_.version});
            c.exec("COMMIT");
        } catch (...) {
            try {
                c.exec("ROLLBACK");
            } catch (...) {
            }
            throw;
        }
        spdlog::info("token registry: applied schema migration {}", v);
    }
}

void pg_store::ensure_first_key(pg::connection& c)
{
    auto r = c.exec("SELECT count(*) FROM tokengate.signing_keys");
    if (r.i64(0, 0) > 0) return;
    signing_key k = generate_signing_key();
    auto wrapped = wrap_key(opts_.current, k);
    c.exec("BEGIN");
    try {
        auto seq = c.exec("UPDATE tokengate.feed SET seq = seq + 1 RETURNING seq").i64(0, 0);
        c.exec("INSERT INTO tokengate.signing_keys (kid, created_at, wrapped, kek_id, change_seq) "
               "VALUES ($1, $2, $3::bytea, $4, $5)",
               {k.kid, num(k.created_at), pg::bytea_param(wrapped), opts_.current.id, num(seq)});
        c.exec("SELECT pg_notify($1, $2)", {std::string(feed_channel), num(seq)});
        c.exec("COMMIT");
    } catch (...) {
        try {
            c.exec("ROLLBACK");
        } catch (...) {
        }
        throw;
    }
    spdlog::info("token registry: created the fleet's first signing key {}", k.kid);
}

// During a KEK rotation: keys wrapped by the previous KEK are wrapped again
// by the current one, in one transaction.
void pg_store::rewrap_previous(pg::connection& c)
{
    if (!opts_.previous) return;
    auto r = c.exec("SELECT kid, created_at, wrapped FROM tokengate.signing_keys WHERE kek_id = $1 ORDER BY kid",
                    {opts_.previous->id});
    if (r.rows() == 0) return;
    c.exec("BEGIN");
    try {
        auto seq = c.exec("UPDATE tokengate.feed SET seq = seq + 1 RETURNING seq").i64(0, 0);
        for (int i = 0; i < r.rows(); ++i) {
            signing_key k = unwrap_key(*opts_.previous, r.text(i, 0), r.i64(i, 1), r.bytes(i, 2));
            c.exec("UPDATE tokengate.signing_keys SET wrapped = $2::bytea, kek_id = $3, change_seq = $4 WHERE kid = $1",
                   {k.kid, pg::bytea_param(wrap_key(opts_.current, k)), opts_.current.id, num(seq)});
        }
        c.exec("SELECT pg_notify($1, $2)", {std::string(feed_channel), num(seq)});
        c.exec("COMMIT");
    } catch (...) {
        try {
            c.exec("ROLLBACK");
        } catch (...) {
        }
        throw;
    }
    spdlog::info("token registry: re-wrapped {} signing key(s) from key-encryption key {} to {}", r.rows(),
                 opts_.previous->id, opts_.current.id);
}

void pg_store::load_keys(pg::connection& c, std::uint64_t upto)
{
    auto r = c.exec("SELECT kid, created_at, wrapped, kek_id, change_seq FROM tokengate.signing_keys "
                    "WHERE change_seq > $1 AND change_seq <= $2 ORDER BY created_at, kid",
                    {num(keys_seq_), num(std::min<std::uint64_t>(upto, std::numeric_limits<std::int64_t>::max()))});
    for (int i = 0; i < r.rows(); ++i) {
        const std::string kid(r.text(i, 0));
        const std::string kek_id(r.text(i, 3));
        const kek* k = kek_id == opts_.current.id                       ? &opts_.current
                       : opts_.previous && kek_id == opts_.previous->id ? &*opts_.previous
                                                                        : nullptr;
        keys_seq_ = std::max<std::uint64_t>(keys_seq_, static_cast<std::uint64_t>(r.i64(i, 4)));
        if (keys_.find(kid) != nullptr) continue;
        if (k == nullptr) {
            spdlog::error("token registry: signing key {} is wrapped by key-encryption key {}, which this instance "
                          "does not have (it has {}); tokens signed with it will not log in here",
                          kid, kek_id, opts_.current.id);
            continue;
        }
        try {
            if (keys_.adopt(unwrap_key(*k, kid, r.i64(i, 1), r.bytes(i, 2))))
                spdlog::info("token registry: signing key {} loaded", kid);
        } catch (const kek_error& e) {
            spdlog::error("token registry: {}", e.what());
        }
    }
}

void pg_store::claim_instance(pg::connection& c)
{
    claim_ = random_claim();
    const auto stale = std::chrono::duration_cast<std::chrono::milliseconds>(opts_.heartbeat_interval) *
                       stale_instance_heartbeats;
    const std::string stale_interval = std::to_string(std::max<std::int64_t>(stale.count(), 2000)) + " milliseconds";
    std::uint32_t id = opts_.instance_id;
    if (id == 0) {
        auto r = c.exec("SELECT g FROM generate_series(1, $1::int) g WHERE NOT EXISTS ("
                        " SELECT 1 FROM tokengate.instances i WHERE i.id = g AND i.heartbeat_at >= now() - $2::interval)"
                        " ORDER BY g LIMIT 1",
                        {num(opts_.max_instance_id), stale_interval});
        if (r.rows() == 0)
            throw store_error("every instance id from 1 to " + std::to_string(opts_.max_instance_id) +
                              " is held by a live instance");
        id = static_cast<std::uint32_t>(r.i64(0, 0));
    } else {
        auto r = c.exec("SELECT address FROM tokengate.instances WHERE id = $1 AND heartbeat_at >= now() - $2::interval",
                        {num(id), stale_interval});
        if (r.rows() > 0)
            spdlog::warn("token registry: instance id {} (fleet.instance_id) was in use by {} until moments ago; "
                         "taking it over",
                         id, r.text(0, 0));
    }
    c.exec("INSERT INTO tokengate.instances (id, address, version, started_at, heartbeat_at, sessions, feed_seq, claim) "
           "VALUES ($1, $2, $3, now(), now(), 0, 0, $4) "
           "ON CONFLICT (id) DO UPDATE SET address = excluded.address, version = excluded.version, "
           "started_at = now(), heartbeat_at = now(), sessions = 0, feed_seq = 0, claim = excluded.claim",
           {num(id), opts_.address, opts_.version, claim_});
    instance_id_ = id;
    spdlog::info("token registry: this is instance {} of the fleet ({})", id, opts_.address);
}

// The whole copy in one snapshot, so it matches the feed position read with it.
void pg_store::load_copy(pg::connection& c)
{
    c.exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
    try {
        const auto seq = static_cast<std::uint64_t>(c.exec("SELECT seq FROM tokengate.feed").i64(0, 0));
        load_keys(c, seq);
        std::string after = "\\x";
        std::size_t loaded = 0;
        for (;;) {
            auto r = c.exec("SELECT " + std::string(cache_columns) +
                                " FROM tokengate.tokens WHERE tid > $1::bytea ORDER BY tid LIMIT " +
                                std::to_string(page_rows),
                            {after});
            for (int i = 0; i < r.rows(); ++i) {
                cached_token t;
                tid_t tid;
                r.bytes_into(i, 0, tid);
                t.owner = r.text(i, 1);
                t.owner_oid = static_cast<std::uint32_t>(r.i64(i, 2));
                t.name = r.text(i, 3);
                t.expires_at = r.i64(i, 4);
                t.revoked_at = r.i64(i, 5);
                t.last_used_at = r.i64(i, 6);
                r.bytes_into(i, 7, t.hash);
                t.change_seq = static_cast<std::uint64_t>(r.i64(i, 8));
                apply_row(t, tid, false);
                after = bytea(tid);
            }
            loaded += static_cast<std::size_t>(r.rows());
            if (r.rows() < page_rows) break;
        }
        c.exec("COMMIT");
        applied_seq_ = seq;
        spdlog::info("token registry: loaded {} token(s) and {} signing key(s); feed at {}", loaded, keys_.size(),
                     seq);
    } catch (...) {
        try {
            c.exec("ROLLBACK");
        } catch (...) {
        }
        throw;
    }
}

// ---- the local copy -------------------------------------------------------------

void pg_store::apply_row(const cached_token& t, const tid_t& tid, bool report_revocation)
{
    auto& shard = cache_[tid[1] % cache_shards];
    bool newly_revoked = false;
    {
        std::unique_lock lk(shard.mu);
        auto it = shard.tokens.find(tid);
        if (it == shard.tokens.end()) {
            shard.tokens.emplace(tid, t);
        } else {
            // An older state read before a newer one was applied (our own
            // write lands in the copy at once) must not win.
            if (t.change_seq < it->second.change_seq) return;
            newly_revoked = it->second.revoked_at == 0 && t.revoked_at != 0;
            const auto last_used = std::max(it->second.last_used_at, t.last_used_at);
            it->second = t;
            it->second.last_used_at = last_used;
        }
    }
    if (newly_revoked && report_revocation) note_revoked(std::span<const tid_t>(&tid, 1));
}

void pg_store::note_revoked(std::span<const tid_t> tids)
{
    std::lock_guard lk(rev_mu_);
    rev_log_.insert(rev_log_.end(), tids.begin(), tids.end());
    if (rev_log_.size() > max_revocation_log) {
        const std::size_t drop = rev_log_.size() - max_revocation_log / 2;
        rev_log_.erase(rev_log_.begin(), rev_log_.begin() + static_cast<std::ptrdiff_t>(drop));
        rev_base_ += drop;
    }
}

std::chrono::nanoseconds pg_store::staleness() const noexcept
{
    return std::chrono::nanoseconds(steady_ns() - last_heard_ns_.load(std::memory_order_relaxed));
}

store_backend::lookup_outcome pg_store::lookup(const tid_t& tid, verify_visitor& visitor)
{
    if (!opts_.serve) return lookup_outcome::stale;
    const auto max_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(opts_.max_staleness).count();
    if (steady_ns() - last_heard_ns_.load(std::memory_order_relaxed) > max_ns) return lookup_outcome::stale;
    for (int attempt = 0; attempt < 2; ++attempt) {
        auto& shard = cache_[tid[1] % cache_shards];
        {
            std::shared_lock lk(shard.mu);
            auto it = shard.tokens.find(tid);
            if (it != shard.tokens.end()) {
                const cached_token& t = it->second;
                token_view v;
                v.owner = t.owner;
                v.name = t.name;
                v.expires_at = t.expires_at;
                v.revoked_at = t.revoked_at;
                v.last_used_at = t.last_used_at;
                v.owner_oid = t.owner_oid;
                v.hash = t.hash.data();
                visitor.visit(v);
                return lookup_outcome::found;
            }
        }
        // Only a correctly signed, unexpired token gets here: one created on
        // another instance a moment ago whose notification is on its way.
        if (attempt == 0 && !fetch_one(tid)) break;
    }
    return lookup_outcome::not_found;
}

bool pg_store::fetch_one(const tid_t& tid)
{
    if (!connected_) return false;
    try {
        auto c = acquire();
        auto r = c->exec("SELECT " + std::string(cache_columns) + " FROM tokengate.tokens WHERE tid = $1::bytea",
                         {bytea(tid)});
        release(std::move(c));
        if (r.rows() == 0) return false;
        cached_token t;
        t.owner = r.text(0, 1);
        t.owner_oid = static_cast<std::uint32_t>(r.i64(0, 2));
        t.name = r.text(0, 3);
        t.expires_at = r.i64(0, 4);
        t.revoked_at = r.i64(0, 5);
        t.last_used_at = r.i64(0, 6);
        r.bytes_into(0, 7, t.hash);
        t.change_seq = static_cast<std::uint64_t>(r.i64(0, 8));
        apply_row(t, tid, false);
        return true;
    } catch (const std::exception& e) {
        spdlog::warn("token registry: look-up of a token not yet in the local copy failed: {}", e.what());
        return false;
    }
}

// ---- the feed thread ----------------------------------------------------------------

void pg_store::catch_up(pg::connection& c)
{
    const auto seq = static_cast<std::uint64_t>(c.exec("SELECT seq FROM tokengate.feed").i64(0, 0));
    const std::uint64_t from = applied_seq_.load();
    if (seq > from) {
        // Every change stamped at or below `seq` committed before `seq` was
        // handed out (writers take the feed row in turn), so it is visible now.
        load_keys(c, seq);
        // Pages continue after (position, tid); the first starts after every
        // row of the position already applied (no tid sorts after 16 × ff).
        std::string after_seq = num(from), after_tid = "\\x" + std::string(32, 'f');
        std::vector<tid_t> revoked;
        for (;;) {
            auto r = c.exec("SELECT " + std::string(cache_columns) +
                                " FROM tokengate.tokens WHERE (change_seq, tid) > ($1::bigint, $2::bytea)"
                                " AND change_seq <= $3 ORDER BY change_seq, tid LIMIT " +
                                std::to_string(page_rows),
                            {after_seq, after_tid, num(seq)});
            for (int i = 0; i < r.rows(); ++i) {
                cached_token t;
                tid_t tid;
                r.bytes_into(i, 0, tid);
                t.owner = r.text(i, 1);
                t.owner_oid = static_cast<std::uint32_t>(r.i64(i, 2));
                t.name = r.text(i, 3);
                t.expires_at = r.i64(i, 4);
                t.revoked_at = r.i64(i, 5);
                t.last_used_at = r.i64(i, 6);
                r.bytes_into(i, 7, t.hash);
                t.change_seq = static_cast<std::uint64_t>(r.i64(i, 8));
                auto& shard = cache_[tid[1] % cache_shards];
                bool was_live = false;
                {
                    std::shared_lock lk(shard.mu);
                    auto it = shard.tokens.find(tid);
                    was_live = it != shard.tokens.end() && it->second.revoked_at == 0;
                }
                apply_row(t, tid, false);
                if (was_live && t.revoked_at != 0) revoked.push_back(tid);
                after_seq = num(t.change_seq);
                after_tid = bytea(tid);
            }
            if (r.rows() < page_rows) break;
        }
        if (!revoked.empty()) note_revoked(revoked);
        applied_seq_ = seq;
    }
    last_heard_ns_ = steady_ns();
}

void pg_store::heartbeat(pg::connection& c)
{
    std::function<std::uint32_t()> count;
    {
        std::lock_guard lk(peers_mu_);
        count = session_count_;
    }
    const std::uint32_t sessions = count ? count() : 0;
    auto r = c.exec("UPDATE tokengate.instances SET heartbeat_at = now(), sessions = $3, feed_seq = $4 "
                    "WHERE id = $1 AND claim = $2 RETURNING 1",
                    {num(instance_id_), claim_, num(sessions), num(applied_seq_.load())});
    if (r.rows() == 0) {
        // Our row went stale (a long pause) and was removed or claimed: put it
        // back unless someone else holds the id now.
        auto again = c.exec("INSERT INTO tokengate.instances (id, address, version, started_at, heartbeat_at, "
                            "sessions, feed_seq, claim) VALUES ($1, $2, $3, now(), now(), $4, $5, $6) "
                            "ON CONFLICT (id) DO NOTHING RETURNING 1",
                            {num(instance_id_), opts_.address, opts_.version, num(sessions), num(applied_seq_.load()),
                             claim_});
        if (again.rows() == 0)
            spdlog::error("token registry: instance id {} was taken over by another instance; cancel requests for "
                          "this instance's sessions may go astray until it restarts",
                          instance_id_);
    }
    auto peers = c.exec("SELECT id, address FROM tokengate.instances");
    std::map<std::uint32_t, std::string> m;
    for (int i = 0; i < peers.rows(); ++i)
        m.emplace(static_cast<std::uint32_t>(peers.i64(i, 0)), std::string(peers.text(i, 1)));
    {
        std::lock_guard lk(peers_mu_);
        peers_ = std::move(m);
    }
    last_heard_ns_ = steady_ns();
}

void pg_store::feed_loop(std::stop_token stop)
{
    std::unique_ptr<pg::connection> c;
    auto backoff = std::chrono::milliseconds(200);
    auto next_heartbeat = Clock::now();
    while (!stop.stop_requested()) {
        try {
            if (!c) {
                c = std::make_unique<pg::connection>(opts_.dsn);
                c->exec(std::string("LISTEN ") + feed_channel);
                catch_up(*c);
                heartbeat(*c);
                next_heartbeat = Clock::now() + opts_.heartbeat_interval;
                if (!connected_.exchange(true))
                    spdlog::info("token registry: reachable again; local copy at feed position {}",
                                 applied_seq_.load());
                backoff = std::chrono::milliseconds(200);
            }
            const auto until_heartbeat =
                std::chrono::duration_cast<std::chrono::milliseconds>(next_heartbeat - Clock::now()).count();
            // Wake at least every 200 ms to notice a stop request.
            pollfd pfd{c->socket(), POLLIN, 0};
            int rc = ::poll(&pfd, 1, static_cast<int>(std::clamp<long long>(until_heartbeat, 0, 200)));
            bool notified = false;
            if (rc > 0) {
                if (!c->consume_input()) throw store_unreachable("lost the connection to the token registry");
                notified = !c->notifications().empty();
            }
            if (notified) catch_up(*c);
            if (Clock::now() >= next_heartbeat) {
                // A safety net for a notification lost in a reconnection.
                catch_up(*c);
                heartbeat(*c);
                next_heartbeat = Clock::now() + opts_.heartbeat_interval;
            }
        } catch (const std::exception& e) {
            if (connected_.exchange(false))
                spdlog::error("token registry unreachable: {}; known tokens keep logging in for {} s "
                              "(store.max_staleness), API TOKEN statements fail until it is back",
                              e.what(), opts_.max_staleness.count());
            c.reset();
            for (auto waited = std::chrono::milliseconds(0); waited < backoff && !stop.stop_requested();
                 waited += std::chrono::milliseconds(50))
                std::this_thread::sleep_for(std::chrono::milliseconds(50));
            backoff = std::min(backoff * 2, std::chrono::milliseconds(2000));
        }
    }
}

void pg_store::set_session_counter(std::function<std::uint32_t()> count)
{
    std::lock_guard lk(peers_mu_);  // the feed thread reads it
    session_count_ = std::move(count);
}

std::optional<std::string> pg_store::peer_address(std::uint32_t id) const
{
    if (id == instance_id_) return std::nullopt;
    std::lock_guard lk(peers_mu_);
    auto it = peers_.find(id);
    if (it == peers_.end()) return std::nullopt;
    return it->second;
}

std::optional<std::string> pg_store::find_peer(std::uint32_t id)
{
    if (id == instance_id_) return std::nullopt;
    {
        std::lock_guard lk(peers_mu_);
        if (auto it = peers_.find(id); it != peers_.end()) return it->second;
        const std::int64_t now = steady_ns();
        const std::int64_t interval = std::chrono::nanoseconds(peer_lookup_interval).count();
        if (last_peer_lookup_ns_ != 0 && now - last_peer_lookup_ns_ < interval) return std::nullopt;
        last_peer_lookup_ns_ = now;
    }
    try {
        fail_fast();
        auto c = acquire();
        auto r = c->exec("SELECT address FROM tokengate.instances WHERE id = $1", {num(id)});
        release(std::move(c));
        if (r.rows() == 0) return std::nullopt;
        std::string address(r.text(0, 0));
        std::lock_guard lk(peers_mu_);
        peers_[id] = address;
        return address;
    } catch (const store_error& e) {
        spdlog::debug("token registry: cannot look up instance {}: {}", id, e.what());
        return std::nullopt;
    }
}

std::vector<instance_info> pg_store::instances()
{
    fail_fast();
    auto c = acquire();
    auto r = c->exec("SELECT id, address, version, extract(epoch from started_at)::bigint,"
                     " extract(epoch from heartbeat_at)::bigint, sessions, feed_seq FROM tokengate.instances ORDER BY id");
    release(std::move(c));
    std::vector<instance_info> out;
    for (int i = 0; i < r.rows(); ++i) {
        instance_info row;
        row.id = static_cast<std::uint32_t>(r.i64(i, 0));
        row.address = r.text(i, 1);
        row.version = r.text(i, 2);
        row.started_at = r.i64(i, 3);
        row.heartbeat_at = r.i64(i, 4);
        row.sessions = static_cast<std::uint32_t>(r.i64(i, 5));
        row.feed_seq = static_cast<std::uint64_t>(r.i64(i, 6));
        out.push_back(std::move(row));
    }
    return out;
}

// ---- connections and transactions ------------------------------------------------------

pg_store::conn_ptr pg_store::acquire()
{
    {
        std::lock_guard lk(pool_mu_);
        while (!idle_.empty()) {
            conn_ptr c = std::move(idle_.back());
            idle_.pop_back();
            if (c->ok()) return c;
        }
    }
    return std::make_unique<pg::connection>(opts_.dsn);
}

void pg_store::release(conn_ptr c)
{
    // Idle connections kept: one per I/O thread is plenty for rare statements.
    constexpr std::size_t max_idle = 4;
    if (!c || !c->ok()) return;
    std::lock_guard lk(pool_mu_);
    if (idle_.size() < max_idle) idle_.push_back(std::move(c));
}

void pg_store::fail_fast() const
{
    // While the feed cannot reach the registry, statements fail at once
    // rather than each wait for a connection timeout on an I/O thread.
    if (opts_.serve && !connected_)
        throw store_unreachable("the token registry is unreachable (the change feed is reconnecting)");
}

void pg_store::write_txn(const std::function<bool(pg::connection&, std::uint64_t)>& fn)
{
    fail_fast();
    auto c = acquire();
    c->exec("BEGIN");
    try {
        // First: writers queue on the feed row, so feed positions follow commit order.
        const auto seq = static_cast<std::uint64_t>(
            c->exec("UPDATE tokengate.feed SET seq = seq + 1 RETURNING seq").i64(0, 0));
        if (fn(*c, seq)) {
            c->exec("SELECT pg_notify($1, $2)", {std::string(feed_channel), num(seq)});
            c->exec("COMMIT");
        } else {
            c->exec("ROLLBACK");
        }
    } catch (...) {
        if (c->ok()) {
            try {
                c->exec("ROLLBACK");
            } catch (...) {
            }
        }
        release(std::move(c));
        throw;
    }
    release(std::move(c));
}

// ---- tokens ---------------------------------------------------------------------------

store_backend::insert_outcome pg_store::insert(const token_record& rec, std::int64_t now)
{
    insert_outcome out = insert_outcome::inserted;
    std::uint64_t stamped = 0;
    write_txn([&](pg::connection& c, std::uint64_t seq) {
        // An expired holder of the name gives it up.
        c.exec("UPDATE tokengate.tokens SET name_released = true WHERE owner = $1 AND name = $2 AND revoked_at = 0 "
               "AND NOT name_released AND expires_at <= $3::bigint",
               {rec.owner, rec.name, num(rec.created_at > now ? rec.created_at : now)});
        auto r = c.exec("INSERT INTO tokengate.tokens (" + std::string(record_columns) +
                            ", change_seq) VALUES ($1::bytea, $2, $3::oid, $4, $5, $6, $7, $8::bigint, $9::bigint, "
                            "$10::bigint, $11::bigint, $12::bytea, $13::bigint) "
                            "ON CONFLICT (owner, name) WHERE revoked_at = 0 AND NOT name_released DO NOTHING RETURNING 1",
                        {bytea(rec.tid), rec.owner, num(rec.owner_oid), rec.name, rec.kid, rec.created_by, rec.comment,
                         num(rec.created_at), num(rec.expires_at), num(rec.revoked_at), num(rec.last_used_at),
                         pg::bytea_param(rec.hash), num(seq)});
        out = r.rows() == 1 ? insert_outcome::inserted : insert_outcome::name_in_use;
        stamped = seq;
        return out == insert_outcome::inserted;
    });
    if (out == insert_outcome::inserted && opts_.serve) {
        // This instance sees its own token at once.
        cached_token t{rec.owner, rec.name, rec.expires_at, rec.revoked_at, rec.last_used_at, rec.owner_oid, rec.hash,
                       stamped};
        apply_row(t, rec.tid, false);
    }
    return out;
}

bool pg_store::set_comment(std::string_view owner, std::string_view name, const std::optional<std::string>& comment,
                           std::int64_t now)
{
    bool found = false;
    write_txn([&](pg::connection& c, std::uint64_t seq) {
        auto r = c.exec("UPDATE tokengate.tokens SET comment = $3, change_seq = $5 WHERE owner = $1 AND name = $2 "
                        "AND revoked_at = 0 AND NOT name_released AND expires_at > $4::bigint RETURNING 1",
                        {std::string(owner), std::string(name), comment, num(now), num(seq)});
        found = r.rows() > 0;
        return found;
    });
    return found;
}

namespace {

constexpr const char* revoke_sql_tail =
    " RETURNING tid, created_at), l AS (INSERT INTO tokengate.revocations (tid, revoked_at, feed_seq)"
    " SELECT tid, $2::bigint, $3::bigint FROM r) SELECT tid FROM r ORDER BY created_at, tid";

}  // namespace

std::vector<tid_t> pg_store::revoke(std::string_view owner, std::string_view name, std::int64_t now)
{
    std::vector<tid_t> out;
    std::uint64_t stamped = 0;
    write_txn([&](pg::connection& c, std::uint64_t seq) {
        out.clear();
        auto r = c.exec(std::string("WITH r AS (UPDATE tokengate.tokens SET revoked_at = $2::bigint, change_seq = $3 "
                                    "WHERE owner = $1 AND name = $4 AND revoked_at = 0") +
                            revoke_sql_tail,
                        {std::string(owner), num(now), num(seq), std::string(name)});
        for (int i = 0; i < r.rows(); ++i) {
            tid_t t;
            r.bytes_into(i, 0, t);
            out.push_back(t);
        }
        stamped = seq;
        return !out.empty();
    });
    for (const auto& t : out) {
        auto& shard = cache_[t[1] % cache_shards];
        std::unique_lock lk(shard.mu);
        if (auto it = shard.tokens.find(t); it != shard.tokens.end() && it->second.change_seq <= stamped) {
            it->second.revoked_at = now;
            it->second.change_seq = stamped;
        }
    }
    return out;
}

std::vector<tid_t> pg_store::revoke_all(std::string_view owner, std::int64_t now)
{
    std::vector<tid_t> out;
    std::uint64_t stamped = 0;
    write_txn([&](pg::connection& c, std::uint64_t seq) {
        out.clear();
        auto r = c.exec(std::string("WITH r AS (UPDATE tokengate.tokens SET revoked_at = $2::bigint, change_seq = $3 "
                                    "WHERE owner = $1 AND revoked_at = 0") +
                            revoke_sql_tail,
                        {std::string(owner), num(now), num(seq)});
        for (int i = 0; i < r.rows(); ++i) {
            tid_t t;
            r.bytes_into(i, 0, t);
            out.push_back(t);
        }
        stamped = seq;
        return !out.empty();
    });
    for (const auto& t : out) {
        auto& shard = cache_[t[1] % cache_shards];
        std::unique_lock lk(shard.mu);
        if (auto it = shard.tokens.find(t); it != shard.tokens.end() && it->second.change_seq <= stamped) {
            it->second.revoked_at = now;
            it->second.change_seq = stamped;
        }
    }
    return out;
}

store_backend::bind_outcome pg_store::bind_owner_oid(const tid_t& tid, std::uint32_t oid)
{
    bind_outcome out = bind_outcome::not_found;
    std::uint64_t stamped = 0;
    write_txn([&](pg::connection& c, std::uint64_t seq) {
        auto r = c.exec("UPDATE tokengate.tokens SET owner_oid = $2::oid, change_seq = $3 WHERE tid = $1::bytea "
                        "AND owner_oid = 0 RETURNING 1",
                        {bytea(tid), num(oid), num(seq)});
        if (r.rows() == 1) {
            out = bind_outcome::bound;
            stamped = seq;
            return true;
        }
        auto cur = c.exec("SELECT owner_oid FROM tokengate.tokens WHERE tid = $1::bytea", {bytea(tid)});
        if (cur.rows() == 0)
            out = bind_outcome::not_found;
        else
            out = static_cast<std::uint32_t>(cur.i64(0, 0)) == oid ? bind_outcome::already_bound
                                                                   : bind_outcome::bound_to_other;
        return false;
    });
    if (out == bind_outcome::bound) {
        auto& shard = cache_[tid[1] % cache_shards];
        std::unique_lock lk(shard.mu);
        if (auto it = shard.tokens.find(tid); it != shard.tokens.end() && it->second.change_seq <= stamped) {
            it->second.owner_oid = oid;
            it->second.change_seq = stamped;
        }
    }
    return out;
}

std::vector<token_record> pg_store::list(const std::optional<std::string>& owner, std::int64_t now,
                                         std::int64_t retention_seconds)
{
    fail_fast();
    auto c = acquire();
    auto r = c->exec("SELECT " + std::string(record_columns) +
                         " FROM tokengate.tokens WHERE ($1::text IS NULL OR owner = $1) AND CASE"
                         " WHEN revoked_at <> 0 THEN revoked_at + $3::bigint > $2::bigint"
                         " WHEN expires_at <= $2::bigint THEN expires_at + $3::bigint > $2::bigint ELSE true END"
                         " ORDER BY created_at, tid",
                     {owner, num(now), num(retention_seconds)});
    release(std::move(c));
    std::vector<token_record> out;
    out.reserve(static_cast<std::size_t>(r.rows()));
    for (int i = 0; i < r.rows(); ++i) out.push_back(record_from(r, i));
    return out;
}

void pg_store::record_last_used(std::span<const std::pair<tid_t, std::int64_t>> uses)
{
    if (uses.empty()) return;
    fail_fast();
    std::string tids = "{", ats = "{";
    for (std::size_t i = 0; i < uses.size(); ++i) {
        if (i) {
            tids += ',';
            ats += ',';
        }
        tids += hex_plain(uses[i].first);
        ats += num(uses[i].second);
    }
    tids += '}';
    ats += '}';
    auto c = acquire();
    // One statement, one transaction, for the whole batch; not a change the
    // feed carries (logins do not depend on it).
    c->exec("UPDATE tokengate.tokens t SET last_used_at = u.at FROM ("
            " SELECT decode(x, 'hex') AS tid, y AS at FROM unnest($1::text[], $2::bigint[]) AS v(x, y)) u"
            " WHERE t.tid = u.tid AND t.last_used_at < u.at",
            {tids, ats});
    release(std::move(c));
    for (const auto& [tid, at] : uses) {
        auto& shard = cache_[tid[1] % cache_shards];
        std::unique_lock lk(shard.mu);
        if (auto it = shard.tokens.find(tid); it != shard.tokens.end())
            it->second.last_used_at = std::max(it->second.last_used_at, at);
    }
}

std::size_t pg_store::purge(std::int64_t now, std::int64_t retention_seconds)
{
    fail_fast();
    auto c = acquire();
    std::size_t deleted = 0;
    c->exec("BEGIN");
    try {
        auto r = c->exec("DELETE FROM tokengate.tokens WHERE (revoked_at <> 0 AND revoked_at + $2::bigint <= $1::bigint)"
                         " OR (revoked_at = 0 AND expires_at <= $1::bigint AND expires_at + $2::bigint <= $1::bigint)"
                         " RETURNING 1",
                         {num(now), num(retention_seconds)});
        deleted = static_cast<std::size_t>(r.rows());
        c->exec("DELETE FROM tokengate.revocations WHERE revoked_at + $2::bigint <= $1::bigint",
                {num(now), num(retention_seconds)});
        // Instances gone for a day are not coming back under that id.
        c->exec("DELETE FROM tokengate.instances WHERE heartbeat_at < now() - interval '1 day'");
        c->exec("COMMIT");
    } catch (...) {
        if (c->ok()) {
            try {
                c->exec("ROLLBACK");
            } catch (...) {
            }
        }
        throw;
    }
    release(std::move(c));
    for (auto& shard : cache_) {
        std::unique_lock lk(shard.mu);
        std::erase_if(shard.tokens, [&](const auto& kv) {
            const auto& t = kv.second;
            const std::int64_t ended = t.revoked_at != 0 ? t.revoked_at : t.expires_at <= now ? t.expires_at : 0;
            return ended != 0 && ended + retention_seconds <= now;
        });
    }
    return deleted;
}

store_backend::revocations pg_store::revocations_since(std::uint64_t since)
{
    std::lock_guard lk(rev_mu_);
    revocations out;
    const std::uint64_t cur = rev_base_ + rev_log_.size();
    out.seq = cur;
    if (since >= cur) return out;
    const std::size_t start = since < rev_base_ ? 0 : static_cast<std::size_t>(since - rev_base_);
    out.tids.assign(rev_log_.begin() + static_cast<std::ptrdiff_t>(start), rev_log_.end());
    return out;
}

std::uint64_t pg_store::revocation_seq()
{
    std::lock_guard lk(rev_mu_);
    return rev_base_ + rev_log_.size();
}

// ---- policies -------------------------------------------------------------------------

void pg_store::put_policy(const policy_record& p)
{
    fail_fast();
    auto c = acquire();
    c->exec("INSERT INTO tokengate.policies (role, kind, max_seconds, set_at, set_by) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (role) DO UPDATE SET kind = excluded.kind, max_seconds = excluded.max_seconds, "
            "set_at = excluded.set_at, set_by = excluded.set_by",
            {p.role, num(static_cast<std::int64_t>(p.kind)), num(p.max_seconds), num(p.set_at), p.set_by});
    release(std::move(c));
}

bool pg_store::delete_policy(std::string_view role)
{
    fail_fast();
    auto c = acquire();
    auto r = c->exec("DELETE FROM tokengate.policies WHERE role = $1 RETURNING 1", {std::string(role)});
    release(std::move(c));
    return r.rows() > 0;
}

std::vector<policy_record> pg_store::list_policies()
{
    fail_fast();
    auto c = acquire();
    auto r = c->exec("SELECT role, kind, max_seconds, set_at, set_by FROM tokengate.policies ORDER BY role COLLATE \"C\"");
    release(std::move(c));
    std::vector<policy_record> out;
    for (int i = 0; i < r.rows(); ++i) out.push_back(policy_from(r, i));
    return out;
}

std::vector<policy_record> pg_store::policies_for(std::span<const std::string> roles)
{
    if (roles.empty()) return {};
    fail_fast();
    auto c = acquire();
    auto r = c->exec("SELECT role, kind, max_seconds, set_at, set_by FROM tokengate.policies WHERE role = ANY($1::text[])"
                     " ORDER BY role COLLATE \"C\"",
                     {text_array(roles)});
    release(std::move(c));
    std::vector<policy_record> out;
    for (int i = 0; i < r.rows(); ++i) out.push_back(policy_from(r, i));
    return out;
}

// ---- keys ---------------------------------------------------------------------------------

std::string pg_store::rotate_key()
{
    signing_key k = generate_signing_key();
    write_txn([&](pg::connection& c, std::uint64_t seq) {
        c.exec("INSERT INTO tokengate.signing_keys (kid, created_at, wrapped, kek_id, change_seq) "
               "VALUES ($1, $2, $3::bytea, $4, $5)",
               {k.kid, num(k.created_at), pg::bytea_param(wrap_key(opts_.current, k)), opts_.current.id, num(seq)});
        return true;
    });
    keys_.adopt(k);
    return k.kid;
}

// ---- migration from LMDB --------------------------------------------------------------------

pg_store::import_counts pg_store::import_lmdb(store& from, const keyring& file_keys, std::int64_t now)
{
    import_counts counts;
    // Everything, however long ago it ended.
    auto tokens = from.list(std::nullopt, now, std::numeric_limits<std::int64_t>::max() / 4);
    auto policies = from.list_policies();
    // Among an owner's unrevoked tokens of one name, only the newest holds the
    // name (LMDB's names index); older expired ones gave it up.
    std::map<std::pair<std::string, std::string>, std::pair<std::int64_t, tid_t>> holder;
    for (const auto& t : tokens) {
        if (t.revoked()) continue;
        auto key = std::make_pair(t.owner, t.name);
        auto it = holder.find(key);
        if (it == holder.end() || std::tie(t.created_at, t.tid) > std::tie(it->second.first, it->second.second))
            holder[key] = {t.created_at, t.tid};
    }
    write_txn([&](pg::connection& c, std::uint64_t seq) {
        for (const auto& k : file_keys.list()) {
            const signing_key* key = file_keys.find(k.kid);
            auto r = c.exec("INSERT INTO tokengate.signing_keys (kid, created_at, wrapped, kek_id, change_seq) "
                            "VALUES ($1, $2, $3::bytea, $4, $5) ON CONFLICT (kid) DO NOTHING RETURNING 1",
                            {key->kid, num(key->created_at), pg::bytea_param(wrap_key(opts_.current, *key)),
                             opts_.current.id, num(seq)});
            counts.keys += static_cast<std::size_t>(r.rows());
        }
        // In batches of import_batch rows, one statement each: a million
        // tokens move in seconds, not one round trip per token.
        for (std::size_t at = 0; at < tokens.size(); at += import_batch) {
            const std::size_t upto = std::min(tokens.size(), at + import_batch);
            std::vector<std::string> tid, owner, oid, name, kid, by, created, expires, revoked, used, hash, released;
            std::vector<std::optional<std::string>> comment;
            for (std::size_t i = at; i < upto; ++i) {
                const auto& t = tokens[i];
                tid.push_back(hex_plain(t.tid));
                owner.push_back(t.owner);
                oid.push_back(num(t.owner_oid));
                name.push_back(t.name);
                kid.push_back(t.kid);
                by.push_back(t.created_by);
                comment.push_back(t.comment);
                created.push_back(num(t.created_at));
                expires.push_back(num(t.expires_at));
                revoked.push_back(num(t.revoked_at));
                used.push_back(num(t.last_used_at));
                hash.push_back(pg::bytea_param(t.hash).substr(2));
                released.push_back(!t.revoked() && holder[{t.owner, t.name}].second != t.tid ? "true" : "false");
            }
            auto r = c.exec(
                "WITH v AS (SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], "
                "$6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::text[], "
                "$13::boolean[]) AS v(tid, owner, owner_oid, name, kid, created_by, comment, created_at, expires_at, "
                "revoked_at, last_used_at, hash, released)), "
                "ins AS (INSERT INTO tokengate.tokens (" + std::string(record_columns) + ", name_released, change_seq) "
                "SELECT decode(tid, 'hex'), owner, owner_oid::oid, name, kid, created_by, comment, created_at, "
                "expires_at, revoked_at, last_used_at, decode(hash, 'hex'), released, $14::bigint FROM v "
                "ON CONFLICT (tid) DO NOTHING RETURNING tid, revoked_at), "
                "rev AS (INSERT INTO tokengate.revocations (tid, revoked_at, feed_seq) "
                "SELECT tid, revoked_at, $14::bigint FROM ins WHERE revoked_at <> 0) "
                "SELECT count(*), count(*) FILTER (WHERE revoked_at <> 0) FROM ins",
                {text_array(tid), text_array(owner), text_array(oid), text_array(name), text_array(kid),
                 text_array(by), text_array(comment), text_array(created), text_array(expires), text_array(revoked),
                 text_array(used), text_array(hash), text_array(released), num(seq)});
            const auto inserted = static_cast<std::size_t>(r.i64(0, 0));
            counts.tokens += inserted;
            counts.revoked += static_cast<std::size_t>(r.i64(0, 1));
            counts.tokens_present += (upto - at) - inserted;
        }
        for (const auto& p : policies) {
            auto r = c.exec("INSERT INTO tokengate.policies (role, kind, max_seconds, set_at, set_by) "
                            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (role) DO NOTHING RETURNING 1",
                            {p.role, num(static_cast<std::int64_t>(p.kind)), num(p.max_seconds), num(p.set_at),
                             p.set_by});
            counts.policies += static_cast<std::size_t>(r.rows());
        }
        return true;
    });
    return counts;
}

}  // namespace tokengate::tokenstore

// `tokengate tokens` / `tokengate keys`: CLI11 front end over the token service.
#include "tokenstore/cli.hpp"

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <libpq-fe.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <iostream>
#include <memory>

#include "tokenstore/kek.hpp"
#include "tokenstore/pg_store.hpp"
#include "tokenstore/service.hpp"

namespace tokengate::tokenstore {

namespace {

constexpr const char* cli_actor_name = "(command line)";

std::int64_t unix_now()
{
    using namespace std::chrono;
    return duration_cast<seconds>(system_clock::now().time_since_epoch()).count();
}

std::string format_time(std::int64_t t)
{
    std::time_t tt = static_cast<std::time_t>(t);
    std::tm tm{};
    ::gmtime_r(&tt, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S+00", &tm);
    return buf;
}

std::string default_data_dir()
{
    const char* env = std::getenv("TOKENGATE_DATA_DIR");
    return env && *env ? env : "./tokengate-data";
}

void print_table(const std::vector<std::string>& header, const std::vector<std::vector<std::string>>& rows)
{
    std::vector<std::size_t> width(header.size());
    for (std::size_t i = 0; i < header.size(); ++i) width[i] = header[i].size();
    for (const auto& r : rows)
        for (std::size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
    auto line = [&](const std::vector<std::string>& cells) {
        std::string out;
        for (std::size_t i = 0; i < cells.size(); ++i) {
            out += cells[i];
            if (i + 1 < cells.size()) out += std::string(width[i] - cells[i].size() + 2, ' ');
        }
        std::cout << out << '\n';
    };
    line(header);
    std::vector<std::string> rule;
    for (auto w : width) rule.push_back(std::string(w, '-'));
    line(rule);
    for (const auto& r : rows) line(r);
    std::cout << "(" << rows.size() << (rows.size() == 1 ? " row)" : " rows)") << '\n';
}

int report(const error& e)
{
    std::cerr << "ERROR:  " << e.message << " (SQLSTATE " << e.sqlstate() << ")\n";
    if (!e.detail.empty()) std::cerr << "DETAIL:  " << e.detail << '\n';
    return 1;
}

// `./dev run` keeps its store there; named when a store is missing because
// that is where a new user's tokens went.
constexpr const char* dev_run_data_dir = ".dev/tokengate-data";

// The commands work on a store the server made: they never create one (a
// mistyped --data-dir would otherwise get a new store and a new signing key).
// Throws with the path when there is none.
void require_store(const std::string& data_dir, bool tokens_too)
{
    struct stat st {};
    std::string missing;
    if (::stat(data_dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
        missing = "directory " + data_dir + " does not exist";
    else if (::stat((data_dir + "/signing.keys").c_str(), &st) != 0)
        missing = data_dir + "/signing.keys does not exist";
    else if (tokens_too && ::stat((data_dir + "/data.mdb").c_str(), &st) != 0)
        missing = data_dir + "/data.mdb does not exist";
    if (missing.empty()) return;
    throw std::runtime_error("no token store in " + data_dir + " (" + missing +
                             "). Give the data_dir tokengate serves with: --data-dir DIR or TOKENGATE_DATA_DIR "
                             "(`./dev run` keeps its store in " + dev_run_data_dir +
                             "). `tokengate serve` creates a store at its first start.");
}

// The upstream, as the server reaches it for catalog look-ups (TOKENGATE_UPSTREAM
// or PGHOST/PGPORT; the control user and database), for `tokens create` to
// check the owner role. libpq takes its password from PGPASSWORD or ~/.pgpass.
struct upstream_target {
    std::string address;  // HOST:PORT, [v6]:PORT or /socket/dir:PORT
    std::string user = "postgres";
    std::string database = "postgres";
    std::string sslmode;
};

// What the catalog says about `role`; nullopt (with `why`) when the upstream
// cannot be asked.
std::optional<role_facts> upstream_role_facts(const upstream_target& t, const std::string& role, std::string& why)
{
    std::string host = t.address, port = "5432";
    if (auto colon = host.rfind(':'); colon != std::string::npos && host.find(']', colon) == std::string::npos) {
        port = host.substr(colon + 1);
        host.resize(colon);
    }
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    const std::string sslmode = t.sslmode.empty() ? "prefer" : t.sslmode;
    const char* keys[] = {"host", "port", "user", "dbname", "sslmode", "connect_timeout", "application_name", nullptr};
    const char* values[] = {host.c_str(), port.c_str(), t.user.c_str(), t.database.c_str(), sslmode.c_str(), "5",
                            "tokengate tokens create", nullptr};
    PGconn* c = PQconnectdbParams(keys, values, 0);
    struct closer {
        PGconn* c;
        ~closer() { if (c) PQfinish(c); }
    } guard{c};
    auto error_text = [&] {
        std::string e = c ? PQerrorMessage(c) : "out of memory";
        while (!e.empty() && (e.back() == '\n' || e.back() == ' ')) e.pop_back();
        return e;
    };
    if (c == nullptr || PQstatus(c) != CONNECTION_OK) {
        why = error_text();
        return std::nullopt;
    }
    // Memberships as the server's policy resolution counts them: every role
    // the user belongs to, directly or not.
    static constexpr const char* query =
        "SELECT r.oid::text, r.rolcanlogin, b.rolname FROM pg_catalog.pg_roles r "
        "LEFT JOIN pg_catalog.pg_roles b ON b.oid <> r.oid AND pg_catalog.pg_has_role(r.oid, b.oid, 'MEMBER') "
        "WHERE r.rolname = $1 ORDER BY b.rolname";
    const char* params[] = {role.c_str()};
    PGresult* res = PQexecParams(c, query, 1, nullptr, params, nullptr, nullptr, 0);
    struct clearer {
        PGresult* r;
        ~clearer() { PQclear(r); }
    } rguard{res};
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        why = error_text();
        return std::nullopt;
    }
    role_facts f;
    f.exists = PQntuples(res) > 0;
    for (int i = 0; i < PQntuples(res); ++i) {
        f.oid = static_cast<std::uint32_t>(std::strtoul(PQgetvalue(res, i, 0), nullptr, 10));
        f.can_login = std::string_view(PQgetvalue(res, i, 1)) == "t";
        if (!PQgetisnull(res, i, 2)) f.member_of.emplace_back(PQgetvalue(res, i, 2));
    }
    return f;
}

kek load_kek(const std::string& kek_file)
{
    if (!kek_file.empty()) return load_kek_file(kek_file);
    if (const char* env = std::getenv("TOKENGATE_KEK"); env && *env) return kek_from_text(env, "TOKENGATE_KEK");
    throw kek_error("the registry needs the fleet's key-encryption key: --kek-file or TOKENGATE_KEK");
}

// Opened lazily so `--help` needs no data directory. With a registry DSN
// (--store-dsn, or TOKENGATE_STORE_DSN when TOKENGATE_STORE_BACKEND is
// postgres) the commands work on the fleet's registry instead of LMDB.
struct context {
    std::string data_dir;
    std::string dsn;
    std::string kek_file;
    std::unique_ptr<keyring> keys;
    std::unique_ptr<store_backend> st;
    pg_store* registry = nullptr;
    std::unique_ptr<token_service> svc;

    // `tokens_too`: the command reads or writes tokens (data.mdb), not only keys.
    void open_keys(bool tokens_too = false)
    {
        if (dsn.empty()) {
            require_store(data_dir, tokens_too);
            keys = std::make_unique<keyring>(data_dir);
            return;
        }
        keys = std::make_unique<keyring>(keyring::in_memory_t{});
        pg_store_options o;
        o.dsn = dsn;
        o.serve = false;
        o.version = "command line";
        o.current = load_kek(kek_file);
        auto pg = std::make_unique<pg_store>(std::move(o), *keys);
        registry = pg.get();
        st = std::move(pg);
    }
    void open_all()
    {
        open_keys(true);
        if (!st) st = std::make_unique<store>(data_dir);
        svc = std::make_unique<token_service>(*st, *keys);
    }
};

}  // namespace

int cli_main(int argc, char** argv)
{
    // stdout carries only what a command prints (`tokens create`: the token
    // alone); what the store logs goes to stderr.
    if (!spdlog::get("tokengate-cli")) spdlog::set_default_logger(spdlog::stderr_color_mt("tokengate-cli"));
    CLI::App app{"tokengate token store administration"};
    app.name(argc > 0 ? std::string(argv[0]) : "tokengate");
    app.require_subcommand(1, 1);
    context ctx;
    ctx.data_dir = default_data_dir();
    if (const char* b = std::getenv("TOKENGATE_STORE_BACKEND"); b && std::string_view(b) == "postgres")
        if (const char* env = std::getenv("TOKENGATE_STORE_DSN")) ctx.dsn = env;
    if (const char* env = std::getenv("TOKENGATE_KEK_FILE")) ctx.kek_file = env;
    auto add_data_dir = [&](CLI::App* cmd) {
        cmd->add_option("--data-dir", ctx.data_dir, "data directory (env TOKENGATE_DATA_DIR)")
            ->capture_default_str();
        cmd->add_option("--store-dsn", ctx.dsn,
                        "work on the fleet's PostgreSQL registry at this libpq connection string instead");
        cmd->add_option("--kek-file", ctx.kek_file, "the fleet's key-encryption key (else TOKENGATE_KEK)");
    };

    auto* tokens = app.add_subcommand("tokens", "list, create and revoke API tokens");
    tokens->require_subcommand(1, 1);
    auto* keys = app.add_subcommand("keys", "list and rotate signing keys");
    keys->require_subcommand(1, 1);

    std::string user, name, duration, comment;
    bool all = false;

    auto* list = tokens->add_subcommand("list", "list tokens (never their values)");
    add_data_dir(list);
    auto* list_user = list->add_option("--user", user, "only this user's tokens");
    list->add_flag("--all", all, "every user's tokens (the default)")->excludes(list_user);

    auto* create = tokens->add_subcommand("create", "create a token and print it once on stdout");
    add_data_dir(create);
    create->add_option("name", name, "token name")->required();
    create->add_option("--user", user, "owner")->required();
    auto* create_duration = create->add_option("--duration", duration, "validity, e.g. 30d, 1d12h, '1 year'");
    auto* create_comment = create->add_option("--comment", comment, "comment");
    upstream_target upstream;
    {
        const char* env = std::getenv("TOKENGATE_UPSTREAM");
        const char* pghost = std::getenv("PGHOST");
        const char* pgport = std::getenv("PGPORT");
        upstream.address = env && *env ? env
                                       : std::string(pghost && *pghost ? pghost : "127.0.0.1") + ":" +
                                             (pgport && *pgport ? pgport : "5432");
        if (const char* u = std::getenv("TOKENGATE_CONTROL_USER"); u && *u) upstream.user = u;
        if (const char* d = std::getenv("TOKENGATE_CONTROL_DATABASE"); d && *d) upstream.database = d;
        if (const char* m = std::getenv("TOKENGATE_UPSTREAM_SSLMODE"); m && *m) upstream.sslmode = m;
    }
    create->add_option("--upstream", upstream.address,
                       "PostgreSQL server to check the owner role on (env TOKENGATE_UPSTREAM, else PGHOST:PGPORT)")
        ->capture_default_str();
    create->add_option("--control-user", upstream.user, "role that reads the catalog (env TOKENGATE_CONTROL_USER)")
        ->capture_default_str();

    auto* revoke = tokens->add_subcommand("revoke", "revoke a token at once");
    add_data_dir(revoke);
    revoke->add_option("name", name, "token name")->required();
    revoke->add_option("--user", user, "owner")->required();

    auto* storecmd = app.add_subcommand("store", "move the token store");
    storecmd->require_subcommand(1, 1);
    auto* migrate = storecmd->add_subcommand(
        "migrate", "copy an LMDB store (tokens, policies, revocations, signing keys) into a PostgreSQL registry");
    add_data_dir(migrate);
    std::string to;
    if (const char* env = std::getenv("TOKENGATE_STORE_DSN"); env && ctx.dsn.empty()) ctx.dsn = env;
    migrate->add_option("--to", to, "where to: postgres")->required()->check(CLI::IsMember({"postgres"}));

    auto* klist = keys->add_subcommand("list", "list signing keys (ids only)");
    add_data_dir(klist);
    auto* krotate = keys->add_subcommand("rotate", "add a new signing key; old ones keep verifying");
    add_data_dir(krotate);

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? 0 : 2;
    }

    // Whoever can open the data directory holds the keys and the store: the
    // command line acts as a superuser would.
    actor operator_actor;
    operator_actor.user = cli_actor_name;
    operator_actor.is_admin = true;
    operator_actor.is_superuser = true;
    const std::int64_t now = unix_now();
    try {
        if (*list) {
            ctx.open_all();
            std::optional<std::string> for_user;
            if (!user.empty()) for_user = user;
            auto rows = ctx.svc->list(operator_actor, for_user, !for_user, now);
            if (!rows) return report(rows.error_value());
            std::vector<std::vector<std::string>> out;
            for (const auto& r : *rows)
                out.push_back({r.name, r.user, format_time(r.created_at), format_time(r.expires_at),
                               r.last_used_at ? format_time(*r.last_used_at) : "", std::string(to_string(r.status)),
                               r.comment.value_or(""), r.created_by});
            print_table({"name", "user", "created_at", "expires_at", "last_used_at", "status", "comment", "created_by"},
                        out);
            return 0;
        }
        if (*create) {
            ctx.open_all();
            create_request req;
            req.name = name;
            req.for_user = user;
            if (*create_duration) req.max_duration = duration;
            if (*create_comment) req.comment = comment;
            // The owner is checked upstream as CREATE API TOKEN would: a role
            // that does not exist gets no token. When the upstream cannot be
            // asked the token is made anyway, bound at its first login.
            std::string why;
            auto facts = upstream_role_facts(upstream, user, why);
            if (!facts) {
                std::cerr << "WARNING:  cannot check role \"" << user << "\" on the upstream " << upstream.address
                          << ": " << why << '\n'
                          << "HINT:  The token is created unchecked; its first login binds it to the role of that "
                             "name. Give --upstream (or TOKENGATE_UPSTREAM) to check.\n";
                facts = role_facts{};
            }
            auto c = ctx.svc->create(operator_actor, req, *facts, now);
            if (!c) return report(c.error_value());
            std::cout << c->token << std::endl;
            std::cerr << "created API token \"" << c->name << "\" for user \"" << c->owner << "\", expires "
                      << format_time(c->expires_at) << '\n';
            return 0;
        }
        if (*revoke) {
            ctx.open_all();
            auto r = ctx.svc->revoke(operator_actor, name, user, false, now);
            if (!r) return report(r.error_value());
            std::cerr << "revoked API token \"" << name << "\" of user \"" << user << "\"\n";
            return 0;
        }
        if (*migrate) {
            if (ctx.dsn.empty()) {
                std::cerr << "ERROR:  store migrate needs --store-dsn (or TOKENGATE_STORE_DSN)\n";
                return 2;
            }
            pg_store_options o;
            o.dsn = ctx.dsn;
            o.serve = false;
            o.version = "command line";
            o.current = load_kek(ctx.kek_file);
            require_store(ctx.data_dir, true);
            ctx.keys = std::make_unique<keyring>(ctx.data_dir);
            store lmdb(ctx.data_dir);
            keyring registry_keys(keyring::in_memory_t{});
            pg_store registry(std::move(o), registry_keys);
            auto n = registry.import_lmdb(lmdb, *ctx.keys, now);
            std::cout << "copied " << n.tokens << " token(s) (" << n.revoked << " revoked), " << n.policies
                      << " policy(ies) and " << n.keys << " signing key(s) from " << ctx.data_dir
                      << " into the registry";
            if (n.tokens_present) std::cout << "; " << n.tokens_present << " token(s) were there already";
            std::cout << '\n';
            return 0;
        }
        if (*klist) {
            ctx.open_keys();
            std::vector<std::vector<std::string>> out;
            for (const auto& k : ctx.keys->list())
                out.push_back({k.kid, format_time(k.created_at), k.newest ? "yes" : ""});
            print_table({"kid", "created_at", "newest"}, out);
            return 0;
        }
        if (*krotate) {
            ctx.open_keys();
            const std::string kid = ctx.registry ? ctx.registry->rotate_key() : ctx.keys->rotate().kid;
            std::cout << "new signing key " << kid << "; new tokens use it, older keys keep verifying\n";
            return 0;
        }
    } catch (const std::exception& e) {
        // keyring_error, store_error, lmdb::error: messages name files and calls, never secrets.
        std::cerr << "ERROR:  " << e.what() << '\n';
        return 1;
    }
    return 2;
}

}  // namespace tokengate::tokenstore

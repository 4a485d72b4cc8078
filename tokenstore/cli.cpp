// `tokengate tokens` / `tokengate keys`: CLI11 front end over the token service.
#include "tokenstore/cli.hpp"

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
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

    void open_keys()
    {
        if (dsn.empty()) {
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
        open_keys();
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
            auto c = ctx.svc->create(operator_actor, req, role_facts{}, now);
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

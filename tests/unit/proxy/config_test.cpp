// The TOML configuration read from text: settings, the bounds on what a file
// may hold, and clear errors (no file is read here).
#include <catch2/catch.hpp>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "proxy/admin_views.hpp"
#include "proxy/cli.hpp"
#include "proxy/settings.hpp"

using tokengate::Config;
using tokengate::ConfigError;
using tokengate::config_from_toml;

namespace {

std::string error_of(const std::string& text) {
  auto r = config_from_toml(text, "/etc/tg.toml");
  REQUIRE(std::holds_alternative<ConfigError>(r));
  return std::get<ConfigError>(r).message;
}

}  // namespace

TEST_CASE("config: the login settings are read, with their defaults") {
  auto r = config_from_toml("[login]\nclient_timeout = 5\nmax_connections_per_address = 7\n"
                            "[upstream]\nrequire_auth = \"scram-sha-256,none\"\nmax_scram_iterations = 8192\n"
                            "[auth]\nmax_scram_iterations = 50000\n",
                            "/etc/tg.toml");
  REQUIRE(std::holds_alternative<Config>(r));
  const auto& c = std::get<Config>(r);
  CHECK(c.login_client_timeout.count() == 5);
  CHECK(c.login_max_connections_per_address == 7);
  CHECK(c.login_max_connections == 1000);
  CHECK(c.upstream_require_auth == "scram-sha-256,none");
  CHECK(c.upstream_max_scram_iterations == 8192);
  CHECK(c.max_scram_iterations == 50000);
  CHECK(c.expiry_ends_sessions);  // a session does not outlive its token by default
  CHECK(c.upstream_sslmode.empty());  // chosen by the upstream's address at start
}

TEST_CASE("config: bounded, with errors that name the file and line") {
  CHECK(error_of("listen = \"x\"\n" + std::string(20000, '#') + "\n") ==
        "configuration file /etc/tg.toml, line 2: longer than 16384 bytes");
  CHECK(error_of(std::string((1 << 20) + 1, '\n')).find("larger than 1 MiB") != std::string::npos);
  CHECK(error_of("[a.b.c.d.e]\nx = 1\n").find("unknown key 'a.b.c.d") != std::string::npos);
  CHECK(error_of("nope = 1\n") == "configuration file /etc/tg.toml, line 1: unknown key 'nope'");
  CHECK(error_of("listen = \n").find("configuration file /etc/tg.toml, line 1: ") == 0);
  CHECK(error_of("# tokengate\n\n[upstream]\nrequire_auth = \"kerberos\"\n")
            .find("configuration file /etc/tg.toml, line 4: upstream.require_auth: ") == 0);
  CHECK(error_of("[auth]\nmax_scram_iterations = 0\n") ==
        "configuration file /etc/tg.toml, line 2: auth.max_scram_iterations: expected a whole number from 1 to "
        "10000000, got '0'");
}

TEST_CASE("config: every bad value names the key, the file and the line") {
  CHECK(error_of("threads = 4\n[login]\nclient_timeout = \"soon\"\n") ==
        "configuration file /etc/tg.toml, line 3: login.client_timeout: expected a whole number from 1 to 3600, "
        "got 'soon'");
  CHECK(error_of("\n\n[tls]\nmode = \"sometimes\"\n") ==
        "configuration file /etc/tg.toml, line 4: tls.mode: expected one of `disable`, `allow`, `require`, got "
        "'sometimes'");
  CHECK(error_of("revoke_ends_sessions = \"maybe\"\n") ==
        "configuration file /etc/tg.toml, line 1: revoke_ends_sessions: expected true or false, got 'maybe'");
  CHECK(error_of("[relay]\nmax_inspected_message = \"1 MB\"\n").find(
            "configuration file /etc/tg.toml, line 2: relay.max_inspected_message: expected a size") == 0);
  CHECK(error_of("[fleet]\npeers = \"x\"\n") ==
        "configuration file /etc/tg.toml, line 2: fleet.peers: expected ID=HOST:PORT,… with ids 1-255, got 'x'");
  CHECK(error_of("[http]\nmax_connections = [1]\n") ==
        "configuration file /etc/tg.toml, line 2: http.max_connections: expected a string, integer or boolean");
  // Settings that depend on each other: the fault is reported at the one named.
  CHECK(error_of("[relay]\nmax_inspected_message = \"1MB\"\nsession_memory_limit = \"1MB\"\n") ==
        "configuration file /etc/tg.toml, line 3: relay.session_memory_limit: must be at least twice "
        "relay.max_inspected_message");
  CHECK(error_of("[tls]\nmode = \"require\"\n") ==
        "configuration file /etc/tg.toml, line 2: tls.mode: tls.mode = require needs a certificate: set tls.cert "
        "and tls.key");
  CHECK(error_of("[upstream]\nauth = \"password\"\n").find("configuration file /etc/tg.toml, line 2: upstream.auth: ") ==
        0);
}

namespace {

// Settings from a file, an environment and flags, without the process's own
// environment.
std::variant<tokengate::LoadedConfig, ConfigError> load(const std::string& toml,
                                                        std::map<std::string, std::string> env,
                                                        std::map<std::string, std::string> flags) {
  tokengate::ConfigInputs in;
  in.file = "/etc/tg.toml";
  in.file_text = toml;
  in.flags = std::move(flags);
  in.getenv = [env = std::move(env)](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  };
  return tokengate::load_config(in);
}

const tokengate::SettingValue& value_of(const tokengate::LoadedConfig& c, const std::string& key) {
  for (const auto& v : c.values)
    if (v.key == key) return v;
  FAIL("no setting " << key);
  throw;
}

}  // namespace

TEST_CASE("config: a flag wins over the environment, which wins over the file, which wins over the default") {
  auto r = load("threads = 2\nmax_failed_logins = 3\nexpiry_warning = 60\n",
                {{"TOKENGATE_THREADS", "4"}, {"TOKENGATE_MAX_FAILED_LOGINS", "5"}, {"TOKENGATE_ADMIN_ROLE", ""}},
                {{"threads", "8"}});
  REQUIRE(std::holds_alternative<tokengate::LoadedConfig>(r));
  const auto& c = std::get<tokengate::LoadedConfig>(r);
  CHECK(c.config.threads == 8);
  CHECK(value_of(c, "threads").source == tokengate::SettingSource::flag);
  CHECK(value_of(c, "threads").origin == "flag --threads");
  CHECK(c.config.max_failed_logins == 5);
  CHECK(value_of(c, "max_failed_logins").source == tokengate::SettingSource::environment);
  CHECK(c.config.expiry_warning.count() == 60);
  CHECK(value_of(c, "expiry_warning").origin == "configuration file /etc/tg.toml, line 3");
  // An empty variable is unset, as libpq and CLI11 take it.
  CHECK(c.config.admin_role == "tokengate_admin");
  CHECK(value_of(c, "admin_role").source == tokengate::SettingSource::built_in);

  auto bad_env = load("", {{"TOKENGATE_THREADS", "many"}}, {});
  REQUIRE(std::holds_alternative<ConfigError>(bad_env));
  CHECK(std::get<ConfigError>(bad_env).message ==
        "environment variable TOKENGATE_THREADS: threads: expected a whole number from 0 to 256, got 'many'");
  auto bad_flag = load("", {}, {{"log_level", "loud"}});
  REQUIRE(std::holds_alternative<ConfigError>(bad_flag));
  CHECK(std::get<ConfigError>(bad_flag).message.find("flag --log-level: log_level: expected one of") == 0);
}

TEST_CASE("config: check's listing shows each source and masks secrets") {
  auto r = load("[store]\ndsn = \"host=db password=hunter2\"\n", {{"TOKENGATE_LOG_LEVEL", "debug"}}, {});
  REQUIRE(std::holds_alternative<tokengate::LoadedConfig>(r));
  const auto text = tokengate::describe_settings(std::get<tokengate::LoadedConfig>(r));
  CHECK(text.find("hunter2") == std::string::npos);
  CHECK(text.find("store.dsn                         = (secret, 24 bytes)  # file, line 2\n") != std::string::npos);
  CHECK(text.find("log_level                         = \"debug\"  # environment TOKENGATE_LOG_LEVEL\n") !=
        std::string::npos);
  CHECK(text.find("threads                           = \"0\"  # default\n") != std::string::npos);
}

TEST_CASE("config: a reload takes the live settings and keeps the others, naming them") {
  auto before = load("threads = 2\nmax_failed_logins = 3\n", {}, {});
  auto after = load("threads = 4\nmax_failed_logins = 7\nlog_level = \"debug\"\n", {}, {});
  REQUIRE(std::holds_alternative<tokengate::LoadedConfig>(before));
  REQUIRE(std::holds_alternative<tokengate::LoadedConfig>(after));
  auto plan = tokengate::plan_reload(std::get<tokengate::LoadedConfig>(before), std::get<tokengate::LoadedConfig>(after));
  REQUIRE(std::holds_alternative<tokengate::ReloadPlan>(plan));
  const auto& p = std::get<tokengate::ReloadPlan>(plan);
  CHECK(p.changed == std::vector<std::string>{"log_level", "max_failed_logins"});
  CHECK(p.needs_restart == std::vector<std::string>{"threads"});
  CHECK(p.loaded.config.threads == 2);
  CHECK(p.loaded.config.max_failed_logins == 7);
  CHECK(p.loaded.config.log_level == "debug");
  CHECK(value_of(p.loaded, "threads").origin == "configuration file /etc/tg.toml, line 1");
}

TEST_CASE("config: the table is complete and consistent") {
  std::set<std::string> keys, flags, envs;
  for (const auto& s : tokengate::settings_table()) {
    INFO(s.key);
    CHECK(keys.insert(s.key).second);
    CHECK(flags.insert(s.flag).second);
    CHECK(envs.insert(s.env).second);
    CHECK(s.flag.rfind("--", 0) == 0);
    CHECK(s.env.rfind("TOKENGATE_", 0) == 0);
    CHECK(!s.help.empty());
    CHECK(!s.type.empty());
    // Every default is itself a valid value.
    Config c;
    CHECK_NOTHROW(s.parse(c, s.default_value));
  }
  // The defaults of the table are Config's own.
  auto r = load("", {}, {});
  REQUIRE(std::holds_alternative<tokengate::LoadedConfig>(r));
  const Config& t = std::get<tokengate::LoadedConfig>(r).config;
  const Config d;
  CHECK(t.auth_query == d.auth_query);
  CHECK(t.expiry_warning == d.expiry_warning);
  CHECK(t.relay_memory_limit == d.relay_memory_limit);
  CHECK(t.http_max_response_size == d.http_max_response_size);
  CHECK(t.pool_max_lifetime == d.pool_max_lifetime);
  CHECK(t.login_max_connections == d.login_max_connections);
  CHECK(t.tls_mode == d.tls_mode);
}

TEST_CASE("config_rows: every setting of the table, as given, with where it came from; no secret") {
  tokengate::ConfigInputs in;
  in.file = "/etc/tokengate/tokengate.toml";
  in.file_text = "max_failed_logins = 3\n[store]\ndsn = \"host=db password=hunter2\"\n";
  in.flags["shutdown_timeout"] = "45";
  in.getenv = [](const char* name) -> const char* {
    return std::string_view(name) == "TOKENGATE_REVOKE_ENDS_SESSIONS" ? "off" : nullptr;
  };
  auto loaded = tokengate::load_config(in);
  REQUIRE(std::holds_alternative<tokengate::LoadedConfig>(loaded));
  const auto rows = tokengate::admin::config_rows(std::get<tokengate::LoadedConfig>(loaded).config);
  auto find = [&](std::string_view key) -> const tokengate::admin::SettingRow& {
    for (const auto& r : rows)
      if (r.setting == key) return r;
    FAIL("no row for " << key);
    return rows.front();
  };
  CHECK(find("max_failed_logins").value == "3");
  CHECK(find("max_failed_logins").source == "file");
  CHECK(find("admin_role").value == "tokengate_admin");
  CHECK(find("admin_role").source == "default");
  CHECK(find("store.dsn").value == "host=db password=********");
  CHECK(find("store.dsn").source == "file");
  CHECK(find("shutdown_timeout").value == "45");
  CHECK(find("shutdown_timeout").source == "flag");
  CHECK(find("revoke_ends_sessions").value == "off");
  CHECK(find("revoke_ends_sessions").source == "environment");
  CHECK(find("metrics.require_auth").value == "false");
  for (const auto& r : rows) CHECK(r.value.find("hunter2") == std::string::npos);
  // Made from the settings table: a new setting cannot be left out.
  const auto table = tokengate::settings_table();
  REQUIRE(rows.size() == table.size());
  for (std::size_t i = 0; i < rows.size(); ++i) CHECK(rows[i].setting == table[i].key);
  // Only a connection string can be masked by mask_dsn: a secret of another
  // kind needs its own masking here first.
  for (const auto& s : table)
    if (s.secret) CHECK(s.key == "store.dsn");
}

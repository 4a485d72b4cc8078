// The command line: subcommands, and the settings flags made from settings_table().
#include "proxy/cli.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <iostream>
#include <map>
#include <memory>
#include <string>

#include "proxy/audit.hpp"
#include "proxy/build_info.hpp"
#include "proxy/config.hpp"
#include "proxy/net/server.hpp"
#include "proxy/settings.hpp"
#include "tokenstore/cli.hpp"

namespace tokengate {
namespace {

// `tokengate tokens create|revoke` change tokens from another process; they
// go to the same audit log as the server's operations (DATA_DIR/audit.log,
// or TOKENGATE_AUDIT_LOG). Arguments were already validated by cli_main.
void audit_cli_operation(int argc, char** argv, int rc) {
  if (argc < 4 || std::string_view(argv[1]) != "tokens") return;
  std::string_view op = argv[2];
  if (op != "create" && op != "revoke") return;
  std::string name, user, data_dir;
  if (const char* env = std::getenv("TOKENGATE_DATA_DIR")) data_dir = env;
  if (data_dir.empty()) data_dir = "./tokengate-data";
  for (int i = 3; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&](std::string_view flag, std::string& out) {
      if (a == flag && i + 1 < argc) {
        out = argv[++i];
        return true;
      }
      if (a.rfind(std::string(flag) + "=", 0) == 0) {
        out = std::string(a.substr(flag.size() + 1));
        return true;
      }
      return false;
    };
    std::string ignored;
    // --store-dsn may hold a password: consumed here, never taken for the name.
    if (value("--user", user) || value("--data-dir", data_dir) || value("--duration", ignored) ||
        value("--comment", ignored) || value("--store-dsn", ignored) || value("--kek-file", ignored))
      continue;
    if (name.empty() && !a.empty() && a.front() != '-') name = std::string(a);
  }
  std::string path = data_dir + "/audit.log";
  if (const char* env = std::getenv("TOKENGATE_AUDIT_LOG"); env && *env) path = env;
  if (path == "off") return;
  AuditLog audit(path);
  if (audit.open()) return;  // the command's own output already said what happened
  AuditEvent ev;
  ev.event = op == "create" ? "create_token" : "revoke_token";
  ev.actor = "(command line)";
  ev.owner = user;
  ev.token_name = name;
  ev.outcome = rc == 0 ? "ok" : "error";
  audit.write(ev);
}


// Files a setting names that must be readable for `serve` to start; `check`
// looks, so that a typo in a path is found before a restart.
std::optional<std::string> unreadable_file(const LoadedConfig& loaded) {
  const Config& c = loaded.config;
  const std::pair<const char*, const std::string*> files[] = {
      {"tls.cert", &c.tls_cert},         {"tls.key", &c.tls_key},
      {"auth.userlist", &c.userlist},    {"store.kek_file", &c.kek_file},
      {"store.previous_kek_file", &c.previous_kek_file},
      {"upstream.sslrootcert", &c.upstream_sslrootcert},
  };
  for (const auto& entry : files) {
    // Not a structured binding: clang before 16 cannot capture one in a lambda.
    const auto& key = entry.first;
    const auto& path = entry.second;
    if (path->empty() || *path == "system") continue;
    if (::access(path->c_str(), R_OK) != 0) {
      auto it = std::find_if(loaded.values.begin(), loaded.values.end(),
                             [&](const SettingValue& v) { return v.key == key; });
      std::string where = it != loaded.values.end() && !it->origin.empty() ? it->origin + ": " : "";
      return where + key + ": cannot read " + *path + ": " + std::strerror(errno);
    }
  }
  return std::nullopt;
}

}  // namespace

std::variant<Config, ConfigError> config_from_toml(std::string_view text, const std::string& source) {
  ConfigInputs in;
  in.file = source;
  in.file_text = std::string(text);
  in.getenv = nullptr;
  auto r = load_config(in);
  if (auto* e = std::get_if<ConfigError>(&r)) return *e;
  return std::get<LoadedConfig>(r).config;
}

int run_cli(int argc, char** argv) {
  // The store's own commands parse their arguments themselves.
  if (argc >= 2 && (std::string_view(argv[1]) == "tokens" || std::string_view(argv[1]) == "keys" ||
                    std::string_view(argv[1]) == "store")) {
    int rc = tokenstore::cli_main(argc, argv);
    audit_cli_operation(argc, argv, rc);
    return rc;
  }
  const auto specs = settings_table();
  CLI::App app{"tokengate: API tokens for any PostgreSQL server.\n"
               "Exit status: 0 success, 1 a failure while running (cannot listen, cannot open the store), "
               "2 a usage or configuration error."};
  app.name("tokengate");
  app.set_version_flag("--version", TOKENGATE_VERSION);
  ConfigInputs inputs;
  app.add_option("--config", inputs.file, "TOML configuration file (env TOKENGATE_CONFIG)")
      ->envname("TOKENGATE_CONFIG");
  // Flags are kept apart from the environment, so that each value's source
  // is known (CLI11's envname would merge them).
  std::vector<std::string> flag_values(specs.size());
  std::vector<CLI::Option*> flag_options;
  for (std::size_t i = 0; i < specs.size(); ++i)
    flag_options.push_back(app.add_option(specs[i].flag, flag_values[i], specs[i].help + " (env " + specs[i].env + ")")
                               ->group("Settings (flag > environment > file > default; docs/configuration.md)"));

  auto* serve = app.add_subcommand("serve", "Run the proxy (the default)");
  serve->fallthrough();
  auto* check = app.add_subcommand(
      "check", "Validate the configuration (--config, environment, flags) and print every setting with its source; "
               "exit 0 when valid, 2 when not");
  check->fallthrough();
  auto* settings = app.add_subcommand("settings", "Print the table of settings (--markdown: as docs/configuration.md)");
  bool markdown = false;
  settings->add_flag("--markdown", markdown, "the Markdown table of docs/configuration.md");
  auto* version = app.add_subcommand("version", "Print the version, git commit and library versions");
  // Parsed by the token store's own command line before this one (above);
  // listed here so that --help shows them.
  for (const char* name : {"tokens", "keys", "store"}) {
    auto* sub = app.add_subcommand(name, std::string(name) == "tokens" ? "List, create and revoke API tokens (tokengate tokens --help)"
                                         : std::string(name) == "keys" ? "List and rotate signing keys (tokengate keys --help)"
                                                                       : "Copy the token store into a fleet's registry (tokengate store --help)");
    sub->allow_extras();
  }
  app.require_subcommand(0, 1);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // CLI11's own codes (109 for an unknown subcommand, …) are not ours:
    // any usage error is 2.
    return app.exit(e) == 0 ? 0 : 2;
  }
  for (const char* name : {"tokens", "keys", "store"})
    if (app.got_subcommand(name)) {
      std::cerr << "tokengate: " << name << " takes no settings flags before it: run tokengate " << name
                << " --help\n";
      return 2;
    }
  if (version->parsed()) {
    std::cout << version_report();
    return 0;
  }
  if (settings->parsed()) {
    if (markdown) {
      std::cout << settings_markdown();
      return 0;
    }
    for (const auto& s : specs)
      std::cout << s.key << "  " << s.flag << "  " << s.env << "  [" << s.type << "] default "
                << (s.default_value.empty() ? "(none)" : s.default_value) << (s.live ? "; SIGHUP applies it" : "")
                << (s.secret ? "; secret" : "") << "\n    " << s.help << "\n";
    return 0;
  }

  for (std::size_t i = 0; i < specs.size(); ++i)
    if (flag_options[i]->count() > 0) inputs.flags[specs[i].key] = flag_values[i];
  auto loaded = load_config(inputs);
  if (auto* e = std::get_if<ConfigError>(&loaded)) {
    std::cerr << "tokengate: " << e->message << "\n";
    return 2;
  }
  auto& ok = std::get<LoadedConfig>(loaded);
  if (check->parsed()) {
    if (auto problem = unreadable_file(ok)) {
      std::cerr << "tokengate: " << *problem << "\n";
      return 2;
    }
    std::cout << describe_settings(ok);
    std::cerr << "tokengate: the configuration is valid"
              << (inputs.file.empty() ? std::string() : " (" + inputs.file + ")") << "\n";
    return 0;
  }

  // Logs go to stderr; stdout is for what a subcommand prints.
  spdlog::set_default_logger(spdlog::stderr_color_mt("tokengate"));
  spdlog::set_level(spdlog::level::from_str(ok.config.log_level));
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
  // SIGHUP: the same sources read again (the file and the environment as
  // they are then, the flags as given); called on the server's signal
  // thread only.
  auto running = std::make_shared<LoadedConfig>(ok);
  ConfigReloader reloader = [inputs, running]() -> std::variant<ConfigReload, ConfigError> {
    auto fresh = load_config(inputs);
    if (auto* e = std::get_if<ConfigError>(&fresh)) return *e;
    auto plan = plan_reload(*running, std::get<LoadedConfig>(fresh));
    if (auto* e = std::get_if<ConfigError>(&plan)) return *e;
    auto& p = std::get<ReloadPlan>(plan);
    *running = p.loaded;
    return ConfigReload{p.loaded.config, std::move(p.changed), std::move(p.needs_restart)};
  };
  return net::Server(std::move(ok.config), std::move(reloader)).run();
}

}  // namespace tokengate

// The one table of tokengate's settings: each row gives a setting's TOML key,
// flag, environment variable, type, default, whether SIGHUP can change it,
// whether it is a secret and what it means. The command line, the loader,
// the validation into Config, `tokengate check` and docs/configuration.md are
// all made from it, so they cannot drift apart.
#pragma once

#include <functional>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "proxy/config.hpp"

namespace tokengate {

// One setting. `parse` checks a value and stores it, typed, in a Config; it
// throws ConfigError with a message that does not yet name the setting.
struct SettingSpec {
  std::string key;   // TOML key, dotted: `upstream.address`
  std::string flag;  // `--upstream`
  std::string env;   // `TOKENGATE_UPSTREAM`
  std::string type;  // for people: "seconds, 1 to 3600"
  std::string default_value;  // as a flag would give it
  std::string default_doc;    // shown instead of default_value when the default is computed
  bool live = false;          // SIGHUP applies a new value to a running server
  bool secret = false;        // masked wherever the value is shown
  std::string help;
  std::function<void(Config&, const std::string&)> parse;
};

// Every setting, in the order of the documentation. The default of
// `upstream.address` comes from PGHOST/PGPORT as libpq's does.
[[nodiscard]] std::vector<SettingSpec> settings_table();

enum class SettingSource { built_in, file, environment, flag };
[[nodiscard]] std::string_view to_string(SettingSource s);

// A setting's value in force and where it came from.
struct SettingValue {
  std::string key;
  std::string value;
  SettingSource source = SettingSource::built_in;
  std::string origin;  // "configuration file F, line N", "environment variable X", "flag --x"; empty: default
};

struct LoadedConfig {
  Config config;
  std::vector<SettingValue> values;  // in table order
};

// Where the settings come from, besides the defaults: a TOML file, the
// environment, flags (by key), with flag > environment > file > default.
struct ConfigInputs {
  std::string file;  // empty: none
  std::optional<std::string> file_text;  // the file's text, instead of reading `file` (tests)
  std::map<std::string, std::string> flags;  // key -> value given on the command line
  std::function<const char*(const char*)> getenv = [](const char* name) { return std::getenv(name); };
};

// Reads the file (at most 1 MiB), applies each source in turn and validates
// every value once. Errors name the setting and where its value came from
// (a file's name and line).
[[nodiscard]] std::variant<LoadedConfig, ConfigError> load_config(const ConfigInputs& inputs);

// The running configuration after a SIGHUP: the settings that can change
// take the new value, the others keep theirs (named in `needs_restart`).
struct ReloadPlan {
  LoadedConfig loaded;
  std::vector<std::string> changed;        // live settings whose value changed
  std::vector<std::string> needs_restart;  // settings whose new value waits for a restart
};
[[nodiscard]] std::variant<ReloadPlan, ConfigError> plan_reload(const LoadedConfig& running,
                                                                const LoadedConfig& fresh);

// The effective configuration, one `key = value  # source` line per setting,
// secrets masked: what `tokengate check` prints.
[[nodiscard]] std::string describe_settings(const LoadedConfig& loaded);

// The Markdown table of every setting, as docs/configuration.md holds it
// between its "settings table" markers.
[[nodiscard]] std::string settings_markdown();

}  // namespace tokengate

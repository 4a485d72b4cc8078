// Command-line entry: parses `tokengate [serve] …` into a Config (CLI11,
// toml++ and the environment), and dispatches the other subcommands.
#pragma once

#include <string>
#include <string_view>
#include <variant>

#include "proxy/config.hpp"

namespace tokengate {

// The settings a TOML configuration `text` gives (over the built-in
// defaults, without the environment or flags), or why it is refused;
// `source` names it in messages. No file is read: for tests and fuzzing.
[[nodiscard]] std::variant<Config, ConfigError> config_from_toml(std::string_view text, const std::string& source);

// Runs the program; returns the process exit code.
int run_cli(int argc, char** argv);

}  // namespace tokengate

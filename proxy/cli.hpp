// Command-line entry: parses `tokengate [serve] …` into a Config (CLI11,
// toml++ and the environment), and dispatches the other subcommands.
#pragma once

#include <string>
#include <string_view>

#include "proxy/config.hpp"

namespace tokengate {

// The configuration from TOML text alone: the built-in defaults, then the
// text, as `--config PATH` without flags or environment would give it. `path`
// names the file in messages. Throws ConfigError. No file or socket is
// touched, so it can be fuzzed (tests/fuzz/config_fuzz.cpp).
Config config_from_toml(std::string_view text, const std::string& path);

// Runs the program; returns the process exit code.
int run_cli(int argc, char** argv);

}  // namespace tokengate

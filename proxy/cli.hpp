// Command-line entry: parses `tokengate [serve] …` into a Config (CLI11,
// toml++ and the environment), and dispatches the other subcommands.
#pragma once

namespace tokengate {

// Runs the program; returns the process exit code.
int run_cli(int argc, char** argv);

}  // namespace tokengate

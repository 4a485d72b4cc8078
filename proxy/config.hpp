// tokengate's settings: defaults, then the TOML file, then TOKENGATE_*
// environment variables, then command-line flags (SPEC §7).
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "proxy/net/endpoint.hpp"

namespace tokengate {

struct Config {
  std::vector<net::Endpoint> listen;  // `listen`, --listen, TOKENGATE_LISTEN
  net::Endpoint upstream;             // `upstream.address`, --upstream, TOKENGATE_UPSTREAM
  std::string data_dir = "./tokengate-data";
  unsigned threads = 0;               // 0: one I/O thread per core
  std::string log_level = "info";
  // A client that has not finished logging in by then is disconnected
  // (PostgreSQL's authentication_timeout defaults to 60 s; we are stricter).
  std::chrono::seconds auth_timeout{30};
  // On SIGTERM, sessions get this long to finish before they are closed.
  std::chrono::seconds shutdown_timeout{30};
};

struct ConfigError {
  std::string message;
};

}  // namespace tokengate

// The proxy server: listeners, one I/O thread per io_context, client sessions.
// Asio stays inside server.cpp; this header is cheap to include.
#pragma once

#include <memory>

#include "proxy/config.hpp"

namespace tokengate::net {

class Server {
 public:
  // `reloader`, when set, is called on SIGHUP for the configuration read
  // again (see ConfigReload).
  explicit Server(Config config, ConfigReloader reloader = {});
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Listens, serves until SIGINT (at once) or SIGTERM (after draining), and
  // returns the process exit code.
  int run();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tokengate::net

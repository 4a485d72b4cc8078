// The TOML configuration read from text: settings, the bounds on what a file
// may hold, and clear errors (no file is read here).
#include <catch2/catch.hpp>

#include <string>

#include "proxy/cli.hpp"

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
  CHECK(error_of("[a.b.c.d.e]\nx = 1\n").find("unknown configuration key 'a.b.c.d") != std::string::npos);
  CHECK(error_of("nope = 1\n") == "unknown configuration key 'nope' in /etc/tg.toml");
  CHECK(error_of("listen = \n").find("cannot read configuration file /etc/tg.toml") == 0);
  CHECK(error_of("[upstream]\nrequire_auth = \"kerberos\"\n").find("upstream.require_auth") == 0);
  CHECK(error_of("[auth]\nmax_scram_iterations = 0\n") == "auth.max_scram_iterations: must be at least 1");
}

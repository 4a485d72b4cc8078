// The example configuration installed as /etc/tokengate/tokengate.toml
// (packaging/tokengate.toml) loads as it is and with every "#key = value"
// line enabled: no key in it is unknown to the loader, no value invalid.
#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>
#include <string>

#include "proxy/cli.hpp"

using tokengate::Config;
using tokengate::ConfigError;
using tokengate::config_from_toml;

namespace {

std::string example_text() {
  const std::string path = std::string(TG_PACKAGING_DIR) + "/tokengate.toml";
  std::ifstream in(path);
  REQUIRE(in.good());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// "#key = value" lines (a setting at its default) become "key = value";
// prose comments ("# text") stay. Counts the lines enabled.
std::string enable_all(const std::string& text, int& enabled) {
  std::istringstream in(text);
  std::string out, line;
  while (std::getline(in, line)) {
    if (line.size() > 1 && line[0] == '#' && line[1] != ' ' && line.find(" = ") != std::string::npos) {
      line.erase(0, 1);
      ++enabled;
    }
    out += line + "\n";
  }
  return out;
}

std::string error_text(const std::variant<Config, ConfigError>& r) {
  return std::holds_alternative<ConfigError>(r) ? std::get<ConfigError>(r).message : "";
}

}  // namespace

TEST_CASE("packaging: the example configuration loads as installed") {
  auto r = config_from_toml(example_text(), "packaging/tokengate.toml");
  INFO(error_text(r));
  REQUIRE(std::holds_alternative<Config>(r));
  const auto& c = std::get<Config>(r);
  CHECK(c.data_dir == "/var/lib/tokengate");  // the unit's StateDirectory
  CHECK(c.upstream.to_string() == "/var/run/postgresql/.s.PGSQL.5432");
}

TEST_CASE("packaging: every setting the example shows commented out is accepted") {
  int enabled = 0;
  const std::string text = enable_all(example_text(), enabled);
  CHECK(enabled >= 30);  // the example shows most settings; a broken marker convention would enable none
  auto r = config_from_toml(text, "packaging/tokengate.toml (all enabled)");
  INFO(error_text(r));
  REQUIRE(std::holds_alternative<Config>(r));
}

TEST_CASE("packaging: a key the loader does not know would fail the example") {
  int enabled = 0;
  const std::string text = enable_all(example_text() + "\n[tls]\n#no_such_key = 1\n", enabled);
  auto r = config_from_toml(text, "example");
  CHECK(std::holds_alternative<ConfigError>(r));
}

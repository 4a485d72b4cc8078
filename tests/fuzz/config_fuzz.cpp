// libFuzzer target `config`: the TOML configuration loader
// (tokengate::config_from_toml: toml++, the flattening of tables into dotted
// keys, and the validation of every setting into a Config).
//
// Input: the configuration file's text, any bytes.
//
// Properties besides "no crash, no UB, no leak":
// - the only failure is a ConfigError with a message naming the file (no other
//   exception escapes, so a bad file cannot take the process down differently);
// - an accepted configuration holds values inside their documented ranges, and
//   every endpoint has a host and a port.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

#include "fuzz_support.hpp"
#include "proxy/cli.hpp"

using namespace tokengate;
using tokengate::fuzz::printable;

namespace {

constexpr const char* kPath = "/etc/tokengate/tokengate.toml";

// config_from_toml either returns the Config and throws ConfigError, or
// returns std::variant<Config, ConfigError>; both are checked the same way.
template <typename R>
std::optional<Config> accepted(R&& r) {
  if constexpr (std::is_same_v<std::decay_t<R>, Config>) {
    return std::forward<R>(r);
  } else {
    if (auto* e = std::get_if<ConfigError>(&r)) {
      FUZZ_CHECK(!e->message.empty(), "an empty ConfigError");
      return std::nullopt;
    }
    return std::get<Config>(std::forward<R>(r));
  }
}

void check_endpoint(const net::Endpoint& e, std::string_view text) {
  FUZZ_CHECK(!e.host.empty() && e.port != 0, "an endpoint without host or port from " + printable(text));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::optional<Config> accepted_config;
  try {
    accepted_config = accepted(config_from_toml(text, kPath));
  } catch (const ConfigError& e) {
    FUZZ_CHECK(!e.message.empty(), "an empty ConfigError");
    return 0;
  }
  if (!accepted_config) return 0;
  const Config& c = *accepted_config;
  FUZZ_CHECK(!c.listen.empty(), "no listen address from " + printable(text));
  for (const auto& e : c.listen) check_endpoint(e, text);
  check_endpoint(c.upstream, text);
  FUZZ_CHECK(c.threads <= 256 && c.auth_timeout.count() <= 3600 && c.shutdown_timeout.count() <= 86400 &&
                 c.max_failed_logins <= 1000000,
             "a setting outside its range from " + printable(text));
  FUZZ_CHECK(c.upstream_auth == Config::UpstreamAuth::trust || c.upstream_auth == Config::UpstreamAuth::password,
             "upstream.auth out of range");
  return 0;
}

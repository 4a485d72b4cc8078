// What SHOW TOKENGATE SESSIONS | STATUS | CONFIG show, built from plain
// values (sans-io): a session's own figures, kept up to date by its relay
// without locks, and the configuration with its secrets masked.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "proxy/config.hpp"
#include "proxy/protocol/result_set.hpp"

namespace tokengate::admin {

enum class SessionState : std::uint8_t { idle, active, idle_in_transaction, idle_in_failed_transaction };
[[nodiscard]] std::string_view state_name(SessionState s) noexcept;  // as pg_stat_activity.state says it

// One logged-in session. The fixed part is set at login; the relay (on the
// session's thread) moves the atomics, and SHOW TOKENGATE SESSIONS reads
// them from any thread.
struct SessionStats {
  std::int64_t backend_pid = 0;  // the upstream backend's process ID (the client sees the same)
  std::string client_address;    // IP, or "[local]" for a Unix socket
  std::string user, database, application_name;
  std::string login_method;  // "password" or "token"
  std::string token_name;    // empty for a password session
  bool tls = false;
  std::string listener;      // "wire" or "websocket"
  std::int64_t started_at = 0;  // unix seconds

  std::atomic<std::uint64_t> bytes_in{0};   // read from the client
  std::atomic<std::uint64_t> bytes_out{0};  // read from the upstream (for the client)
  std::atomic<SessionState> state{SessionState::idle};
};

// Rows of SHOW TOKENGATE SESSIONS (columns in session::columns_of), oldest first.
[[nodiscard]] std::vector<std::vector<protocol::Value>> session_rows(
    std::span<const std::shared_ptr<const SessionStats>> sessions);

// One setting as SHOW TOKENGATE CONFIG shows it.
struct SettingRow {
  std::string setting;  // the TOML key
  std::string value;    // as given (or the default), secrets masked
  std::string source;   // "default", "file", "environment" or "flag"
};
// Every setting of `c` by its TOML key, in the settings table's order, as the
// loader resolved it (Config::resolved: none for a Config built in code).
// Passwords in store.dsn are masked; file names are shown (they are not
// secrets, the files' contents are).
[[nodiscard]] std::vector<SettingRow> config_rows(const Config& c);
[[nodiscard]] std::vector<std::vector<protocol::Value>> config_table(const Config& c);

// Listen addresses as the `listen` setting takes them; "off" for none.
[[nodiscard]] std::string endpoints_text(const std::vector<net::Endpoint>& eps);

// A libpq connection string with its password masked: `password=…` in the
// key=value form, and the password of a postgresql:// URI (also as
// ?password=…).
[[nodiscard]] std::string mask_dsn(std::string_view dsn);
inline constexpr std::string_view kMasked = "********";

// Rows of a (name, value) view such as SHOW TOKENGATE STATUS.
[[nodiscard]] std::vector<std::vector<protocol::Value>> name_value_rows(
    std::span<const std::pair<std::string, std::string>> items);

}  // namespace tokengate::admin

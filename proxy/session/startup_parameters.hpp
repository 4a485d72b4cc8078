// Which startup parameters a client may send through tokengate, and the
// StartupMessage rebuilt from them for the upstream: identity is decided once,
// by tokengate, and the upstream never sees a parameter that was not checked.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "proxy/protocol/messages.hpp"

namespace tokengate::session {

// A startup packet's parameters after tokengate's checks (see
// validate_startup). Names keep the client's spelling.
struct StartupParameters {
  // As PostgreSQL reads them: cut to kMaxNameLength bytes. An empty
  // database means PostgreSQL's default, the user name.
  std::string user;
  std::string database;
  // The client's `replication` value ("database", "true", "1", …), or empty
  // for an ordinary connection.
  std::string replication;
  // Every other parameter (GUC settings: application_name, client_encoding,
  // DateStyle, …), in the client's order.
  std::vector<std::pair<std::string, std::string>> settings;
  // The settings of the `options` parameter (`-c name=value`,
  // `--name=value`), in order, names with '-' read as '_' as PostgreSQL does.
  std::vector<std::pair<std::string, std::string>> options;

  // The value of setting `name` (exact spelling), or empty.
  [[nodiscard]] std::string setting(std::string_view name) const;
  [[nodiscard]] std::string application_name() const { return setting("application_name"); }
  // The database PostgreSQL will open (physical replication opens none).
  [[nodiscard]] const std::string& database_or_user() const { return database.empty() ? user : database; }

  // The StartupMessage for the upstream (protocol 3.0): `user` is `role`,
  // the role tokengate authenticated, then the database, the settings, the
  // options rebuilt into one `options` value, and `replication`.
  [[nodiscard]] protocol::StartupMessage for_upstream(std::string_view role) const;
};

// Why tokengate refuses a startup packet PostgreSQL would have taken.
struct StartupRefusal {
  std::string sqlstate;  // 08P01, or PostgreSQL's own for a malformed -c
  std::string message;
  std::string hint;
};

// Checks a parsed StartupMessage (which has a non-empty user: the handshake
// checks that first, as PostgreSQL does):
//   - no parameter twice (names compared case-insensitively, as GUC names
//     are): PostgreSQL would let the last one win, after tokengate had
//     checked the first;
//   - user and database without control characters;
//   - every other name GUC-shaped (letters, digits, '_', '$', parts joined
//     by '.'), and none that sets the session's identity: session_authorization
//     and role;
//   - `options` holds only `-c name=value` and `--name=value` under the same
//     rules; other backend switches are refused.
[[nodiscard]] std::variant<StartupParameters, StartupRefusal> validate_startup(const protocol::StartupMessage& m);

// Splits an `options` value as PostgreSQL's pg_split_opts() does (spaces
// separate, a backslash makes the next character literal).
[[nodiscard]] std::vector<std::string> split_options(std::string_view options);

// Joins arguments so that split_options() gives them back.
[[nodiscard]] std::string join_options(const std::vector<std::string>& args);

}  // namespace tokengate::session

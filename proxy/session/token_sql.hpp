// Runs a parsed API TOKEN statement against the token service and
// turns the outcome into PostgreSQL protocol bytes, for the simple and the
// extended protocol. Sans-io: the caller looks up role facts upstream first
// (facts_needed), calls execute(), and writes the bytes it gets.
//
// Result columns (all timestamps timestamptz in UTC, durations text):
//   CREATE API TOKEN          name text, token text, expires_at timestamptz — one row
//   SHOW API TOKENS           name text, user text, created_at timestamptz,
//                             expires_at timestamptz, last_used_at timestamptz (NULL
//                             if never), status text (active/expired/revoked),
//                             comment text, created_by text — oldest first
//   SHOW API TOKEN POLICIES   role text, kind text (user/role), max_duration text,
//                             ordered by role
//     … FOR USER u            the same three columns plus effective_max_duration text
//                             and effective_policy text (the role whose policy sets
//                             the maximum, NULL when the default applies): one row
//                             per policy that applies to u, the effective values
//                             repeated on each; with no applicable policy, one row
//                             whose first three columns are NULL.
//   everything else           no columns (NoData); only a command tag.
// Durations are printed as PostgreSQL prints justify_hours(interval): whole days
// as `N days` (`1 day`), the rest as `HH:MM:SS`: `30 days`, `1 day 12:00:00`,
// `01:30:00`. (`'24h'` is stored as seconds and therefore shows as `1 day`.)
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "parser_ext/ast.hpp"
#include "proxy/protocol/messages.hpp"
#include "proxy/protocol/result_set.hpp"
#include "tokenstore/service.hpp"

namespace tokengate::session {

// Roles whose upstream facts (exists, can_login, transitive member_of) a
// statement needs, in statement order and without duplicates. The session
// user's administrator status is looked up by the caller in every case and is
// not listed here.
struct FactsNeeded {
  std::vector<std::string> roles;
  // The statement acts for roles other than the session user (FOR USER
  // another role, FOR ALL USERS, a policy statement): the caller then looks
  // the session user and `roles` up fresh (not from a cache) and, for an
  // administrator that is not a superuser, the protected roles.
  bool acts_for_others = false;
};
//   CREATE API TOKEN        the owner: the FOR USER role, else the session user
//                           (existence and memberships for the policy)
//   ALTER USER|ROLE …       the target role
//   SHOW API TOKEN POLICIES FOR USER u
//                           u (memberships for the effective maximum)
//   other FOR USER u        u when it is not the session user (it must exist)
[[nodiscard]] FactsNeeded facts_needed(const parser_ext::Statement& stmt,
                                       std::string_view session_user);

// What the caller learned upstream. `roles` holds an entry for every role of
// facts_needed(); a role missing upstream has exists = false.
struct StatementFacts {
  bool is_admin = false;
  bool is_superuser = false;
  // The session logged in with an API token (see tokenstore::actor::via_token).
  bool via_token = false;
  // For an administrator that is not a superuser, when acts_for_others: the
  // roles it may not act for (tokenstore::actor::protected_roles).
  std::optional<std::vector<std::string>> protected_roles{};
  std::unordered_map<std::string, tokenstore::role_facts> roles{};
};

// The result columns of a statement, without running it (for Describe).
[[nodiscard]] std::vector<protocol::Column> columns_of(const parser_ext::Statement& stmt);

// Interval text of a duration (see the header comment): `30 days`, `01:30:00`.
[[nodiscard]] std::string format_interval(std::int64_t seconds);

// The outcome of one statement: rows and a command tag, or an error; notices
// to send before either; and what the audit log and session bookkeeping need.
struct LocalResult {
  std::vector<protocol::Column> columns;  // == columns_of(stmt), also on error
  std::vector<std::vector<protocol::Value>> rows;
  std::string command_tag;                       // empty when `error` is set
  std::vector<protocol::ErrorResponse> notices;  // severity NOTICE, sent first
  std::optional<protocol::ErrorResponse> error;  // severity ERROR

  // Tokens this statement revoked: sessions logged in with them must end
  // (FATAL 57P01). The service's on_revoked listener fires too.
  std::vector<tokenstore::tid_t> revoked;

  // ---- for the audit log; never holds a token value ----
  parser_ext::StatementKind kind{};
  // False when nothing reached the token store: a failed transaction block
  // (25P02) or a role whose facts were missing/absent upstream.
  bool executed = false;
  // The token owner, or the role of a policy statement; empty for FOR ALL
  // USERS and for SHOW API TOKEN POLICIES without FOR USER.
  std::string owner;
  std::optional<std::string> token_name;  // CREATE (also generated), ALTER, DROP
  std::optional<tokenstore::tid_t> tid;   // the token created or revoked

  [[nodiscard]] bool ok() const noexcept { return !error.has_value(); }
  // "ok", or the SQLSTATE of the error.
  [[nodiscard]] std::string_view outcome() const noexcept {
    return error ? std::string_view(error->sqlstate) : std::string_view("ok");
  }
};

// Runs `stmt` for `session_user` (the actor: session_user with is_admin,
// is_superuser, via_token and protected_roles from `facts`) at
// unix time `now`. `tx_status` is the upstream's ReadyForQuery status:
//   'I'  runs it;
//   'T'  runs it and, for a statement that changes something, adds NOTICE 25001
//        `API TOKEN statements are not transactional` (DETAIL: it took effect at
//        once and will not be rolled back);
//   'E'  does not run it: ERROR 25P02 `current transaction is aborted, commands
//        ignored until end of transaction block`.
// Errors of the service keep their SQLSTATE, message and DETAIL. A FOR
// USER role that does not exist upstream is 42704 `role "x" does not exist`
// (checked after the permission check, so a non-admin learns nothing).
// The token value appears only in the CREATE row; it is never in a notice,
// an error or the audit fields.
[[nodiscard]] LocalResult execute(tokenstore::token_service& service,
                                  const parser_ext::Statement& stmt, std::string_view session_user,
                                  const StatementFacts& facts, std::int64_t now, char tx_status);

// ---- protocol bytes --------------------------------------------------------

// Simple protocol (one statement of a Query): NoticeResponses, then either
// the ErrorResponse, or RowDescription (text format; only when there are
// columns) + DataRows + CommandComplete. No ReadyForQuery: the caller sends
// one per Query; it stops the Query's remaining statements when !result.ok().
void write_simple(protocol::Bytes& out, const LocalResult& result);

// Extended protocol, Execute of a portal with Bind's result-format codes:
// NoticeResponses, DataRows in those formats + CommandComplete (no
// RowDescription), or an ErrorResponse. Returns false when an ErrorResponse
// was written — the statement's error, or result formats that do not fit
// (08P01/22023, see protocol::resolve_result_formats; nothing else is written
// then) — so the caller skips messages until Sync.
[[nodiscard]] bool write_execute(protocol::Bytes& out, const LocalResult& result,
                                 std::span<const std::int16_t> result_formats);

// Execute with a row limit (Execute's max_rows; 0 = all). `cursor` belongs to
// the portal and starts value-initialized; notices go out with the first call.
// A call that leaves rows over ends with PortalSuspended; the next one
// continues from there and the last ends with CommandComplete.
struct ExecuteCursor {
  std::size_t next_row = 0;
  bool started = false;
};
enum class ExecuteOutcome { complete, suspended, error };
[[nodiscard]] ExecuteOutcome write_execute(protocol::Bytes& out, const LocalResult& result,
                                           std::span<const std::int16_t> result_formats,
                                           std::int32_t max_rows, ExecuteCursor& cursor);

// Describe of a prepared statement: ParameterDescription (no parameters),
// then RowDescription in text format, or NoData.
void write_describe_statement(protocol::Bytes& out, const parser_ext::Statement& stmt);

// Describe of a portal: RowDescription in Bind's result formats, or NoData.
// Returns false (having written only the ErrorResponse) when the formats do
// not fit; the caller then skips until Sync. Normally the caller refuses such
// a Bind already, as PostgreSQL does, with resolve_result_formats.
[[nodiscard]] bool write_describe_portal(protocol::Bytes& out, const parser_ext::Statement& stmt,
                                         std::span<const std::int16_t> result_formats);

}  // namespace tokengate::session

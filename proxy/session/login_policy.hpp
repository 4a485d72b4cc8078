// Who may log in: the decisions of a login as pure functions that the driver
// (net/server.cpp) calls between its I/O steps, one path for API tokens and
// one for passwords. No I/O and no clock: facts and the time are passed in.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "proxy/auth/scram.hpp"
#include "proxy/protocol/wire.hpp"
#include "proxy/session/query_client.hpp"
#include "tokenstore/service.hpp"

namespace tokengate::session {

// A password shaped like a token: base64url of '{"' ("eyJ") and a dot, the
// malformed and unsigned ones included. It is checked as a token and never
// tried upstream as a password (that would put a token into the upstream's
// logs, and make the upstream an oracle for it).
[[nodiscard]] bool is_token_form(std::string_view password);

// A login refused, for each party that hears of it.
struct LoginRefusal {
  protocol::Bytes to_client;      // a FATAL ErrorResponse
  std::string outcome = "denied";  // audit log: "denied", or "error" (not the client's fault)
  std::string reason;             // log and audit log; never a secret
  bool counts_as_failure = true;  // a failed guess, for the throttle
};

// PostgreSQL's answer to a wrong password (28P01), whatever the real reason:
// a client learns nothing it would not learn from PostgreSQL itself.
[[nodiscard]] LoginRefusal wrong_password(std::string_view user, std::string reason);
// PostgreSQL's answer to a NOLOGIN role (28000), sent only to a client that
// proved who it is.
[[nodiscard]] LoginRefusal not_permitted(std::string_view user);
// tokengate could not decide (the store or the upstream failed): 08006.
[[nodiscard]] LoginRefusal cannot_check(std::string message, std::string reason);

// ---- API tokens ---------------------------------------------------------------

// Step 1: the store's verdict (token_service::verify, with the startup user
// as the expected owner). `max_staleness_seconds` (store.max_staleness) is
// named when a fleet's registry is too old to trust.
[[nodiscard]] std::optional<LoginRefusal> judge_token(std::string_view user, const tokenstore::verify_result& v,
                                                      std::int64_t max_staleness_seconds = 0);

// The token's owner as the upstream has it now, or nullopt when no role has
// that name.
struct RoleFacts {
  std::uint32_t oid = 0;
  bool can_login = false;
  // VALID UNTIL in unix seconds; nullopt: no limit.
  std::optional<std::int64_t> valid_until;
};

// The query that gives RoleFacts for $1 (the role name): zero rows when no
// such role exists. pg_roles is readable by any role; never cached. A login
// needs these three columns only: ControlPool::role_info_fresh also works out
// memberships and administrator status, a query that costs several times as
// much to plan (about 5.7 ms against 0.9 ms here), on every token login.
inline constexpr const char* kRoleFactsQuery =
    "SELECT oid, rolcanlogin, extract(epoch from rolvaliduntil) FROM pg_catalog.pg_roles WHERE rolname = $1";
// Its answer: the facts, nullopt for no row; an error text when the answer
// has another shape.
struct RoleFactsAnswer {
  std::optional<RoleFacts> facts;
  std::string error;  // empty when the answer was understood
};
[[nodiscard]] RoleFactsAnswer role_facts_from(const QueryResult& result);

// Epoch seconds as extract(epoch from …) prints them ("1767225600",
// "1767225600.25", "-1.5", "Infinity", "-Infinity"), rounded down.
// Outer nullopt: not such a number; inner nullopt: +Infinity (no limit);
// INT64_MIN for -Infinity.
[[nodiscard]] std::optional<std::optional<std::int64_t>> parse_epoch(std::string_view text);

struct TokenRoleVerdict {
  std::optional<LoginRefusal> refusal;
  // The token predates OID binding (bound_oid 0): bind it to role->oid now,
  // trusting the role that has the owner's name at its first login.
  bool bind_oid = false;
};

// Step 2: a token works only for the very role it was issued to (the same
// OID: a role dropped and created again under the name is another role),
// while that role may log in and is within VALID UNTIL, checked at each login.
[[nodiscard]] TokenRoleVerdict judge_token_role(std::string_view user, std::uint32_t bound_oid,
                                                const std::optional<RoleFacts>& role, std::int64_t now);

// The NOTICE sent just before the first ReadyForQuery when the token expires
// within `warning` seconds; empty otherwise.
[[nodiscard]] protocol::Bytes expiry_notice(const tokenstore::verify_result& v, std::int64_t now,
                                            std::int64_t warning_seconds);

// `upstream.auth = password` and the owner has no usable password in the
// userlist: not the client's fault.
[[nodiscard]] LoginRefusal no_upstream_password(std::string_view user, std::string why);

// The text PostgreSQL uses for a timestamp with time zone in UTC:
// "2026-12-28 17:57:23+00".
[[nodiscard]] std::string utc_text(std::int64_t unix_seconds);

// ---- passwords, checked by tokengate (`upstream.auth = trust`) -------------------

// The role as upstream.auth_query returned it; nullopt when it does not exist.
struct PasswordFacts {
  std::optional<std::string> verifier;     // nullopt: no password
  std::optional<std::int64_t> valid_until;  // nullopt: no limit
  bool can_login = false;
};

// Step 1: which computation the attempt costs. A role that does not exist or
// has no password costs a dummy verification (auth::dummy_verifier_check) so
// that its answer takes as long as any other.
struct PasswordPlan {
  bool dummy = false;        // no verifier to check: compute the dummy one
  std::string_view verifier;  // points into the facts when !dummy
};
[[nodiscard]] PasswordPlan plan_password_check(const std::optional<PasswordFacts>& role);

// Step 2: the verdict. `check` is the verifier's answer (ignored for a dummy
// plan); max_iterations is `auth.max_scram_iterations`, for the log.
[[nodiscard]] std::optional<LoginRefusal> judge_password(std::string_view user,
                                                         const std::optional<PasswordFacts>& role,
                                                         auth::VerifierCheck check, std::int64_t now,
                                                         std::size_t max_iterations);

}  // namespace tokengate::session

// The login decisions (see login_policy.hpp).
#include "proxy/session/login_policy.hpp"

#include <charconv>
#include <ctime>
#include <limits>

#include "proxy/protocol/messages.hpp"
#include "tokenstore/jwt.hpp"

namespace tokengate::session {

using namespace tokengate::protocol;

namespace {

Bytes fatal(std::string sqlstate, std::string message, std::string detail = {}) {
  Bytes out;
  auto e = ErrorResponse::make("FATAL", std::move(sqlstate), std::move(message));
  e.detail = std::move(detail);
  e.serialize(out);
  return out;
}

}  // namespace

bool is_token_form(std::string_view password) {
  return tokenstore::looks_like_token(password) ||
         (password.rfind("eyJ", 0) == 0 && password.find('.') != std::string_view::npos);
}

std::string utc_text(std::int64_t t) {
  std::time_t tt = t;
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S+00", &tm);
  return buf;
}

LoginRefusal wrong_password(std::string_view user, std::string reason) {
  return LoginRefusal{fatal("28P01", "password authentication failed for user \"" + std::string(user) + "\""),
                      "denied", std::move(reason), true};
}

LoginRefusal not_permitted(std::string_view user) {
  return LoginRefusal{fatal("28000", "role \"" + std::string(user) + "\" is not permitted to log in"), "denied",
                      "role has NOLOGIN", true};
}

LoginRefusal cannot_check(std::string message, std::string reason) {
  return LoginRefusal{fatal("08006", std::move(message)), "error", std::move(reason), false};
}

std::optional<LoginRefusal> judge_token(std::string_view user, const tokenstore::verify_result& v,
                                        std::int64_t max_staleness_seconds) {
  using tokenstore::verify_status;
  switch (v.status) {
    case verify_status::ok:
      return std::nullopt;
    case verify_status::registry_stale:
      // Fail closed, and say why: this instance's copy of the fleet's
      // registry is older than store.max_staleness allows. Not a guess.
      return LoginRefusal{fatal("57P03", "API token logins are unavailable: the token registry cannot be reached",
                                "tokengate stops accepting tokens once its copy of the registry is older than "
                                "store.max_staleness (" +
                                    std::to_string(max_staleness_seconds) + " s)."),
                          "error", "registry_stale", false};
    case verify_status::expired:
      // The one failure a token's holder is told about: it was once valid.
      return LoginRefusal{fatal("28P01", "API token expired", "The token expired at " + utc_text(v.expires_at) + "."),
                          "denied", "expired", true};
    case verify_status::store_unavailable: {
      // Not the client's doing: not counted, but still PostgreSQL's words.
      auto r = wrong_password(user, "store_unavailable");
      r.outcome = "error";
      r.counts_as_failure = false;
      return r;
    }
    default:
      return wrong_password(user, std::string(tokenstore::to_string(v.status)));
  }
}

std::optional<std::optional<std::int64_t>> parse_epoch(std::string_view s) {
  using Result = std::optional<std::optional<std::int64_t>>;
  if (s == "Infinity" || s == "infinity") return Result(std::optional<std::int64_t>());
  if (s == "-Infinity" || s == "-infinity") return Result(std::numeric_limits<std::int64_t>::min());
  const auto dot = s.find('.');
  const auto whole = s.substr(0, dot);
  const auto frac = dot == std::string_view::npos ? std::string_view() : s.substr(dot + 1);
  if (whole.empty() || whole == "-" || whole.front() == '+') return std::nullopt;
  std::int64_t v = 0;
  auto [end, ec] = std::from_chars(whole.data(), whole.data() + whole.size(), v);
  if (ec != std::errc() || end != whole.data() + whole.size()) return std::nullopt;
  if (dot != std::string_view::npos && frac.empty()) return std::nullopt;
  bool frac_nonzero = false;
  for (char c : frac) {
    if (c < '0' || c > '9') return std::nullopt;
    frac_nonzero |= c != '0';
  }
  if (whole.front() == '-' && frac_nonzero) {
    if (v == std::numeric_limits<std::int64_t>::min()) return std::nullopt;
    --v;  // rounded down, towards -Infinity
  }
  return Result(v);
}

RoleFactsAnswer role_facts_from(const QueryResult& q) {
  RoleFactsAnswer out;
  if (q.error) {
    out.error = "role look-up failed: " + std::string(q.error->sqlstate()) + " " + std::string(q.error->message());
    return out;
  }
  if (q.columns.size() != 3 || q.rows.size() > 1) {
    out.error = "role look-up returned an unexpected shape";
    return out;
  }
  if (q.rows.empty()) return out;
  const auto& row = q.rows.front();
  RoleFacts f;
  auto [end, ec] = std::from_chars(row[0] ? row[0]->data() : nullptr,
                                   row[0] ? row[0]->data() + row[0]->size() : nullptr, f.oid);
  if (!row[0] || ec != std::errc() || end != row[0]->data() + row[0]->size() || !row[1] ||
      (*row[1] != "t" && *row[1] != "f")) {
    out.error = "role look-up returned unexpected values";
    return out;
  }
  f.can_login = *row[1] == "t";
  if (row[2]) {
    auto epoch = parse_epoch(*row[2]);
    if (!epoch) {
      out.error = "role look-up returned an unexpected VALID UNTIL";
      return out;
    }
    f.valid_until = *epoch;
  }
  out.facts = f;
  return out;
}

TokenRoleVerdict judge_token_role(std::string_view user, std::uint32_t bound_oid,
                                  const std::optional<RoleFacts>& role, std::int64_t now) {
  TokenRoleVerdict out;
  if (!role) {
    out.refusal = wrong_password(user, "the token's owner role no longer exists");
    return out;
  }
  if (bound_oid != 0 && role->oid != bound_oid) {
    out.refusal = wrong_password(user, "the token's owner role was dropped and created again (OID " +
                                           std::to_string(role->oid) + ", token issued to OID " +
                                           std::to_string(bound_oid) + ")");
    return out;
  }
  if (role->valid_until && *role->valid_until < now) {
    out.refusal = wrong_password(user, "the role's VALID UNTIL has passed");
    return out;
  }
  if (!role->can_login) {
    out.refusal = not_permitted(user);
    return out;
  }
  out.bind_oid = bound_oid == 0;
  return out;
}

Bytes expiry_notice(const tokenstore::verify_result& v, std::int64_t now, std::int64_t warning_seconds) {
  Bytes out;
  if (warning_seconds <= 0 || v.expires_at - now > warning_seconds) return out;
  auto n = ErrorResponse::make("NOTICE", "01000",
                               "API token \"" + v.name + "\" expires at " + utc_text(v.expires_at));
  n.hint = "Create a new token with CREATE API TOKEN.";
  n.serialize(out, backend_tag::NoticeResponse);
  return out;
}

LoginRefusal no_upstream_password(std::string_view user, std::string why) {
  return LoginRefusal{fatal("28000", "tokengate cannot log in upstream as \"" + std::string(user) + "\"",
                            "No password for this role in the auth.userlist file."),
                      "error", std::move(why), false};
}

PasswordPlan plan_password_check(const std::optional<PasswordFacts>& role) {
  if (!role || !role->verifier) return PasswordPlan{true, {}};
  return PasswordPlan{false, *role->verifier};
}

std::optional<LoginRefusal> judge_password(std::string_view user, const std::optional<PasswordFacts>& role,
                                           auth::VerifierCheck check, std::int64_t now,
                                           std::size_t max_iterations) {
  // PostgreSQL's order: the password first (a missing role or password fails
  // the same way), then VALID UNTIL, then LOGIN.
  if (!role) return wrong_password(user, "no such role");
  if (!role->verifier) return wrong_password(user, "role has no password");
  switch (check) {
    case auth::VerifierCheck::match:
      break;
    case auth::VerifierCheck::mismatch:
      return wrong_password(user, "wrong password");
    case auth::VerifierCheck::unsupported:
      return wrong_password(user, "unsupported verifier");
    case auth::VerifierCheck::too_costly: {
      auto r = wrong_password(user, "the role's SCRAM verifier needs more PBKDF2 iterations than "
                                    "auth.max_scram_iterations (" +
                                        std::to_string(max_iterations) + ")");
      r.outcome = "error";
      return r;
    }
  }
  if (role->valid_until && *role->valid_until < now) return wrong_password(user, "password expired (VALID UNTIL)");
  if (!role->can_login) return not_permitted(user);
  return std::nullopt;
}

}  // namespace tokengate::session

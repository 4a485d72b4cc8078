// Typed AST of the API TOKEN statements, as produced by parser_ext::parse_statement.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace tokengate::parser_ext {

// Every string here is decoded (identifiers folded or unquoted, string constants
// unescaped) and owned by the struct; nothing points back into the query text.
// Durations are the decoded string constant as written ('30d', '1 year'); the
// token store parses and validates them.

// CREATE API TOKEN [ name ] [ FOR USER role ] [ MAX DURATION 'd' ] [ COMMENT 't' ]
struct CreateApiToken {
  std::optional<std::string> name;  // nullopt: the store generates one
  std::optional<std::string> for_user;
  std::optional<std::string> max_duration;
  std::optional<std::string> comment;
  bool operator==(const CreateApiToken&) const = default;
};

// SHOW API TOKENS [ FOR USER role | FOR ALL USERS ]
struct ShowApiTokens {
  std::optional<std::string> for_user;  // set only with FOR USER
  bool all_users = false;               // FOR ALL USERS
  bool operator==(const ShowApiTokens&) const = default;
};

// ALTER API TOKEN name [ FOR USER role ] SET COMMENT { 't' | NULL }
struct AlterApiTokenSetComment {
  std::string name;
  std::optional<std::string> for_user;
  std::optional<std::string> comment;  // nullopt: SET COMMENT NULL
  bool operator==(const AlterApiTokenSetComment&) const = default;
};

// DROP API TOKEN [ IF EXISTS ] name [ FOR USER role ]
struct DropApiToken {
  std::string name;
  bool if_exists = false;
  std::optional<std::string> for_user;
  bool operator==(const DropApiToken&) const = default;
};

// DROP ALL API TOKENS [ FOR USER role ]
struct DropAllApiTokens {
  std::optional<std::string> for_user;
  bool operator==(const DropAllApiTokens&) const = default;
};

// ALTER { USER | ROLE } role SET API TOKEN MAX DURATION 'd'
struct AlterRoleSetApiTokenMaxDuration {
  std::string role;
  std::string max_duration;
  bool operator==(const AlterRoleSetApiTokenMaxDuration&) const = default;
};

// ALTER { USER | ROLE } role RESET API TOKEN MAX DURATION
struct AlterRoleResetApiTokenMaxDuration {
  std::string role;
  bool operator==(const AlterRoleResetApiTokenMaxDuration&) const = default;
};

// SHOW API TOKEN POLICIES [ FOR USER role ]
struct ShowApiTokenPolicies {
  std::optional<std::string> for_user;
  bool operator==(const ShowApiTokenPolicies&) const = default;
};

// SHOW TOKENGATE INSTANCES: the fleet's instances (administrators only).
struct ShowTokengateInstances {
  bool operator==(const ShowTokengateInstances&) const = default;
};

using Statement =
    std::variant<CreateApiToken, ShowApiTokens, AlterApiTokenSetComment, DropApiToken,
                 DropAllApiTokens, AlterRoleSetApiTokenMaxDuration,
                 AlterRoleResetApiTokenMaxDuration, ShowApiTokenPolicies, ShowTokengateInstances>;

// One value per alternative of Statement, in the same order.
enum class StatementKind {
  create_api_token,
  show_api_tokens,
  alter_api_token,
  drop_api_token,
  drop_all_api_tokens,
  alter_role_set_api_token_max_duration,
  alter_role_reset_api_token_max_duration,
  show_api_token_policies,
  show_tokengate_instances,
};

[[nodiscard]] constexpr StatementKind kind_of(const Statement& s) noexcept {
  return static_cast<StatementKind>(s.index());
}

// The CommandComplete tag. For drop_all_api_tokens the caller appends
// " <n>" (the number of revoked tokens): "DROP API TOKENS 3". Static storage.
[[nodiscard]] constexpr std::string_view command_tag(StatementKind k) noexcept {
  switch (k) {
    case StatementKind::create_api_token: return "CREATE API TOKEN";
    case StatementKind::show_api_tokens: return "SHOW";
    case StatementKind::alter_api_token: return "ALTER API TOKEN";
    case StatementKind::drop_api_token: return "DROP API TOKEN";
    case StatementKind::drop_all_api_tokens: return "DROP API TOKENS";
    case StatementKind::alter_role_set_api_token_max_duration: return "ALTER ROLE";
    case StatementKind::alter_role_reset_api_token_max_duration: return "ALTER ROLE";
    case StatementKind::show_api_token_policies: return "SHOW";
    case StatementKind::show_tokengate_instances: return "SHOW";
  }
  return "";
}

// Name for logs and test output ("CreateApiToken", ...). Static storage.
[[nodiscard]] std::string_view kind_name(StatementKind k) noexcept;

// Human-readable rendering of a statement for test failures and debug logs,
// e.g. CreateApiToken{name="x", for_user=null, max_duration="30d", comment=null}.
[[nodiscard]] std::string to_string(const Statement& s);

}  // namespace tokengate::parser_ext

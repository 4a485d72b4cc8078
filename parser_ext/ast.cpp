// Names and debug rendering of the API TOKEN statement AST.
#include "parser_ext/ast.hpp"

namespace tokengate::parser_ext {

namespace {

std::string quoted(const std::optional<std::string>& v) {
  return v ? "\"" + *v + "\"" : std::string("null");
}
std::string quoted(const std::string& v) { return "\"" + v + "\""; }

}  // namespace

std::string_view kind_name(StatementKind k) noexcept {
  switch (k) {
    case StatementKind::create_api_token: return "CreateApiToken";
    case StatementKind::show_api_tokens: return "ShowApiTokens";
    case StatementKind::alter_api_token: return "AlterApiTokenSetComment";
    case StatementKind::drop_api_token: return "DropApiToken";
    case StatementKind::drop_all_api_tokens: return "DropAllApiTokens";
    case StatementKind::alter_role_set_api_token_max_duration:
      return "AlterRoleSetApiTokenMaxDuration";
    case StatementKind::alter_role_reset_api_token_max_duration:
      return "AlterRoleResetApiTokenMaxDuration";
    case StatementKind::show_api_token_policies: return "ShowApiTokenPolicies";
    case StatementKind::show_tokengate_instances: return "ShowTokengateInstances";
  }
  return "?";
}

std::string to_string(const Statement& s) {
  std::string body;
  switch (kind_of(s)) {
    case StatementKind::create_api_token: {
      const auto& c = std::get<CreateApiToken>(s);
      body = "name=" + quoted(c.name) + ", for_user=" + quoted(c.for_user) +
             ", max_duration=" + quoted(c.max_duration) + ", comment=" + quoted(c.comment);
      break;
    }
    case StatementKind::show_api_tokens: {
      const auto& c = std::get<ShowApiTokens>(s);
      body = "for_user=" + quoted(c.for_user) + ", all_users=" + (c.all_users ? "true" : "false");
      break;
    }
    case StatementKind::alter_api_token: {
      const auto& c = std::get<AlterApiTokenSetComment>(s);
      body = "name=" + quoted(c.name) + ", for_user=" + quoted(c.for_user) +
             ", comment=" + quoted(c.comment);
      break;
    }
    case StatementKind::drop_api_token: {
      const auto& c = std::get<DropApiToken>(s);
      body = "name=" + quoted(c.name) + ", if_exists=" + (c.if_exists ? "true" : "false") +
             ", for_user=" + quoted(c.for_user);
      break;
    }
    case StatementKind::drop_all_api_tokens:
      body = "for_user=" + quoted(std::get<DropAllApiTokens>(s).for_user);
      break;
    case StatementKind::alter_role_set_api_token_max_duration: {
      const auto& c = std::get<AlterRoleSetApiTokenMaxDuration>(s);
      body = "role=" + quoted(c.role) + ", max_duration=" + quoted(c.max_duration);
      break;
    }
    case StatementKind::alter_role_reset_api_token_max_duration:
      body = "role=" + quoted(std::get<AlterRoleResetApiTokenMaxDuration>(s).role);
      break;
    case StatementKind::show_api_token_policies:
      body = "for_user=" + quoted(std::get<ShowApiTokenPolicies>(s).for_user);
      break;
    case StatementKind::show_tokengate_instances: break;
  }
  return std::string(kind_name(kind_of(s))) + "{" + body + "}";
}

}  // namespace tokengate::parser_ext

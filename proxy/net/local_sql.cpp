// API TOKEN statement execution for a session (see local_sql.hpp).
#include "proxy/net/local_sql.hpp"

#include <spdlog/spdlog.h>

#include <chrono>

#include "proxy/audit.hpp"
#include "proxy/net/control_pool.hpp"

namespace tokengate::net {

namespace {

session::LocalResult failure(const parser_ext::Statement& stmt, std::string sqlstate, std::string message) {
  session::LocalResult r;
  r.columns = session::columns_of(stmt);
  r.kind = parser_ext::kind_of(stmt);
  r.error = protocol::ErrorResponse::make("ERROR", std::move(sqlstate), std::move(message));
  return r;
}

std::string_view audit_event_name(parser_ext::StatementKind k) {
  using K = parser_ext::StatementKind;
  switch (k) {
    case K::create_api_token: return "create_token";
    case K::show_api_tokens: return "list_tokens";
    case K::alter_api_token: return "set_comment";
    case K::drop_api_token: return "revoke_token";
    case K::drop_all_api_tokens: return "revoke_all_tokens";
    case K::alter_role_set_api_token_max_duration: return "set_policy";
    case K::alter_role_reset_api_token_max_duration: return "reset_policy";
    case K::show_api_token_policies: return "list_policies";
    case K::show_tokengate_instances: return "list_instances";
  }
  return "api_token_statement";
}

}  // namespace

protocol::ErrorResponse local_sql_error(const parser_ext::ParseError& e) {
  auto out = protocol::ErrorResponse::make("ERROR", std::string(parser_ext::sqlstate(e.code)), e.message);
  out.detail = e.detail;
  out.hint = e.hint;
  out.position = e.position;
  return out;
}

boost::asio::awaitable<session::LocalResult> LocalSql::run(const parser_ext::Statement& stmt, char tx_status) {
  if (services_.tokens == nullptr) co_return failure(stmt, "58030", "token store unavailable");

  session::StatementFacts facts;
  facts.via_token = info_.via_token;
  // In a failed transaction block nothing runs (25P02), so nothing is looked up.
  if (tx_status != protocol::tx_status::Failed) {
    if (services_.control == nullptr) co_return failure(stmt, "58030", "role information is unavailable");
    const session::FactsNeeded needed = session::facts_needed(stmt, info_.user);
    // Acting for another role is decided on the roles as they are now, not as
    // the role cache last saw them (a superuser demoted a second ago).
    const bool fresh = needed.acts_for_others;
    ControlResult<std::optional<RoleInfo>> me;
    if (fresh)
      me = co_await services_.control->role_info_fresh(info_.user);
    else
      me = co_await services_.control->role_info(info_.user);
    if (!me) {
      spdlog::error("API TOKEN statement of \"{}\": role look-up failed: {}", info_.user, me.error());
      co_return failure(stmt, "58030", "could not read role information from the upstream server");
    }
    facts.is_admin = me->has_value() && (*me)->is_admin;
    facts.is_superuser = me->has_value() && (*me)->is_superuser;
    if (facts.is_admin && !facts.is_superuser && needed.acts_for_others) {
      auto protected_roles = co_await services_.control->protected_roles();
      if (!protected_roles) {
        spdlog::error("API TOKEN statement of \"{}\": protected roles look-up failed: {}", info_.user,
                      protected_roles.error());
        co_return failure(stmt, "58030", "could not read role information from the upstream server");
      }
      facts.protected_roles = std::move(*protected_roles);
    }
    for (const auto& role : needed.roles) {
      ControlResult<std::optional<RoleInfo>> found;
      if (fresh)
        found = co_await services_.control->role_info_fresh(role);
      else
        found = co_await services_.control->role_info(role);
      if (!found) {
        spdlog::error("API TOKEN statement of \"{}\": role look-up failed: {}", info_.user, found.error());
        co_return failure(stmt, "58030", "could not read role information from the upstream server");
      }
      tokenstore::role_facts rf;
      rf.exists = found->has_value();
      if (rf.exists) {
        rf.can_login = (*found)->can_login;
        rf.member_of = (*found)->member_of;
        rf.oid = (*found)->oid;
      }
      facts.roles.emplace(role, std::move(rf));
    }
  }

  auto now = std::chrono::duration_cast<std::chrono::seconds>(
                 std::chrono::system_clock::now().time_since_epoch())
                 .count();
  auto result = session::execute(*services_.tokens, stmt, info_.user, facts, now, tx_status);

  if (services_.audit != nullptr && result.executed) {
    AuditEvent ev;
    ev.event = std::string(audit_event_name(result.kind));
    ev.actor = info_.user;
    ev.owner = result.owner;
    ev.token_name = result.token_name.value_or("");
    if (result.tid) ev.tid = tokenstore::tid_to_hex(*result.tid);
    ev.client_address = client_address(info_.peer);
    ev.application_name = info_.application_name;
    ev.outcome = result.ok() ? "ok" : "error";
    if (result.error) ev.reason = result.error->sqlstate + " " + result.error->message;
    services_.audit->write(ev);
  }
  co_return result;
}

}  // namespace tokengate::net

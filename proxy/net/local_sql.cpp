// API TOKEN statement execution for a session (see local_sql.hpp).
#include "proxy/net/local_sql.hpp"

#include <spdlog/spdlog.h>

#include <chrono>

#include "proxy/audit.hpp"
#include "proxy/metrics.hpp"
#include "proxy/net/control_pool.hpp"
#include "proxy/net/store_worker.hpp"

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
    case K::show_tokengate_view: return "show_tokengate";
  }
  return "api_token_statement";
}

// session::execute on the store worker, with copies of its inputs. Not a
// coroutine: GCC 12 miscompiles lambdas with init-captures built inside a
// coroutine (a captured unordered_map was freed twice), so the call is built
// here and the coroutine only co_awaits it.
boost::asio::awaitable<std::optional<session::LocalResult>> execute_on(StoreWorker& worker,
                                                                       tokenstore::token_service& tokens,
                                                                       parser_ext::Statement stmt, std::string user,
                                                                       session::StatementFacts facts, std::int64_t now,
                                                                       char tx_status) {
  return worker.run([svc = &tokens, stmt = std::move(stmt), user = std::move(user), facts = std::move(facts), now,
                     tx_status] { return session::execute(*svc, stmt, user, facts, now, tx_status); });
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
  if (services_.tokens == nullptr || services_.store == nullptr)
    co_return failure(stmt, "58030", "token store unavailable");

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

  // SHOW TOKENGATE SESSIONS | STATUS | CONFIG: the server's rows, gathered
  // only for an administrator (execute() refuses everyone else with 42501).
  if (const auto* view = std::get_if<parser_ext::ShowTokengateView>(&stmt);
      view != nullptr && facts.is_admin && tx_status != protocol::tx_status::Failed) {
    if (!services_.admin_view) co_return failure(stmt, "58030", "SHOW TOKENGATE is not available here");
    facts.view_rows = co_await services_.admin_view(view->view);
  }

  auto now = std::chrono::duration_cast<std::chrono::seconds>(
                 std::chrono::system_clock::now().time_since_epoch())
                 .count();
  session::LocalResult result;
  if (tx_status == protocol::tx_status::Failed) {
    // 25P02 without touching the store.
    result = session::execute(*services_.tokens, stmt, info_.user, facts, now, tx_status);
  } else {
    // The store's write transaction (an fsync) or the registry's round trip
    // runs on the store worker, never on this I/O thread. The call owns
    // copies of its inputs: this frame may be gone before it returns (an
    // io_context stopped at shutdown).
    auto answer =
        co_await execute_on(*services_.store, *services_.tokens, stmt, info_.user, std::move(facts), now, tx_status);
    if (!answer) {
      spdlog::warn("API TOKEN statement of \"{}\" refused: {} token operations are waiting for the store", info_.user,
                   kMaxPendingStoreCalls);
      co_return failure(stmt, kStoreBusySqlstate, kStoreBusyMessage);
    }
    result = std::move(*answer);
  }
  if (result.executed && result.kind != parser_ext::StatementKind::show_tokengate_view &&
      result.kind != parser_ext::StatementKind::show_tokengate_instances)
    metrics::global().token_operations[std::size_t(metrics::token_op(audit_event_name(result.kind)))]
                                      [result.ok() ? 0 : 1].inc();

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

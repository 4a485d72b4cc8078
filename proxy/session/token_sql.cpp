// API TOKEN statements: AST → token service call → result set or ErrorResponse → bytes.
#include "proxy/session/token_sql.hpp"

#include <algorithm>
#include <cstdio>
#include <type_traits>
#include <utility>

namespace tokengate::session {

namespace {

namespace pe = parser_ext;
namespace ts = tokenstore;
using protocol::Column;
using protocol::ErrorResponse;
using protocol::Timestamp;
using protocol::Value;

template <class... Fs>
struct overloaded : Fs... {
  using Fs::operator()...;
};
template <class... Fs>
overloaded(Fs...) -> overloaded<Fs...>;

std::string dq(std::string_view s) { return "\"" + std::string(s) + "\""; }

void add_unique(std::vector<std::string>& v, std::string_view s) {
  if (std::find(v.begin(), v.end(), s) == v.end()) v.emplace_back(s);
}

ErrorResponse to_error(const ts::error& e) {
  auto r = ErrorResponse::make("ERROR", std::string(e.sqlstate()), e.message);
  r.detail = e.detail;
  r.hint = e.hint;
  return r;
}

ts::actor actor_of(std::string_view session_user, const StatementFacts& facts) {
  ts::actor a;
  a.user = std::string(session_user);
  a.is_admin = facts.is_admin;
  a.is_superuser = facts.is_superuser;
  a.via_token = facts.via_token;
  a.protected_roles = facts.protected_roles;
  return a;
}

Value text_or_null(const std::optional<std::string>& s) {
  if (!s) return std::monostate{};
  return *s;
}
Value ts_of(std::int64_t unix_seconds) { return Timestamp::from_unix_seconds(unix_seconds); }

// The words of the statement for the not-transactional notice.
std::string_view statement_words(pe::StatementKind k) noexcept {
  switch (k) {
    case pe::StatementKind::create_api_token: return "CREATE API TOKEN";
    case pe::StatementKind::alter_api_token: return "ALTER API TOKEN";
    case pe::StatementKind::drop_api_token: return "DROP API TOKEN";
    case pe::StatementKind::drop_all_api_tokens: return "DROP ALL API TOKENS";
    case pe::StatementKind::alter_role_set_api_token_max_duration:
      return "ALTER ROLE … SET API TOKEN MAX DURATION";
    case pe::StatementKind::alter_role_reset_api_token_max_duration:
      return "ALTER ROLE … RESET API TOKEN MAX DURATION";
    case pe::StatementKind::show_api_tokens:
    case pe::StatementKind::show_api_token_policies:
    case pe::StatementKind::show_tokengate_instances: return {};
  }
  return {};
}

bool changes_something(pe::StatementKind k) noexcept { return !statement_words(k).empty(); }

// Runs one statement; `r` already has kind and columns.
class Runner {
 public:
  Runner(ts::token_service& svc, std::string_view session_user, const StatementFacts& facts,
         std::int64_t now, LocalResult& r)
      : svc_(svc), who_(actor_of(session_user, facts)), facts_(facts), now_(now), r_(r) {}

  void operator()(const pe::CreateApiToken& s) {
    const std::string owner = s.for_user.value_or(who_.user);
    r_.owner = owner;
    r_.token_name = s.name;
    const ts::role_facts* f = facts_for(owner);
    if (f == nullptr) return;
    ts::create_request req{s.name, s.for_user, s.max_duration, s.comment};
    auto c = svc_.create(who_, req, *f, now_);
    r_.executed = true;
    if (!c) return fail(c.error_value());
    r_.owner = c->owner;
    r_.token_name = c->name;
    r_.tid = c->tid;
    r_.rows.push_back({c->name, std::move(c->token), ts_of(c->expires_at)});
    done();
  }

  void operator()(const pe::ShowApiTokens& s) {
    if (!s.all_users) r_.owner = s.for_user.value_or(who_.user);
    if (!s.all_users && !other_role_exists(s.for_user)) return;
    auto rows = svc_.list(who_, s.for_user, s.all_users, now_);
    r_.executed = true;
    if (!rows) return fail(rows.error_value());
    r_.rows.reserve(rows->size());
    for (const auto& t : *rows) {
      r_.rows.push_back({t.name, t.user, ts_of(t.created_at), ts_of(t.expires_at),
                         t.last_used_at ? ts_of(*t.last_used_at) : Value{},
                         std::string(ts::to_string(t.status)), text_or_null(t.comment), t.created_by});
    }
    done();
  }

  void operator()(const pe::AlterApiTokenSetComment& s) {
    r_.owner = s.for_user.value_or(who_.user);
    r_.token_name = s.name;
    if (!other_role_exists(s.for_user)) return;
    auto res = svc_.set_comment(who_, s.name, s.for_user, s.comment, now_);
    r_.executed = true;
    if (!res) return fail(res.error_value());
    done();
  }

  void operator()(const pe::DropApiToken& s) {
    r_.owner = s.for_user.value_or(who_.user);
    r_.token_name = s.name;
    if (!other_role_exists(s.for_user)) return;
    auto res = svc_.revoke(who_, s.name, s.for_user, s.if_exists, now_);
    r_.executed = true;
    if (!res) return fail(res.error_value());
    if (res->revoked && res->tid) {
      r_.tid = res->tid;  // the newest; an expired namesake may be revoked with it
      r_.revoked = res->tids;
    } else if (!res->notice.empty()) {
      // As DROP TABLE IF EXISTS: NOTICE without a specific SQLSTATE (00000).
      r_.notices.push_back(ErrorResponse::make("NOTICE", "00000", res->notice));
    }
    done();
  }

  void operator()(const pe::DropAllApiTokens& s) {
    r_.owner = s.for_user.value_or(who_.user);
    if (!other_role_exists(s.for_user)) return;
    auto res = svc_.revoke_all(who_, s.for_user, now_);
    r_.executed = true;
    if (!res) return fail(res.error_value());
    r_.revoked = std::move(res->tids);
    done(std::string(pe::command_tag(r_.kind)) + " " + std::to_string(res->count));
  }

  void operator()(const pe::AlterRoleSetApiTokenMaxDuration& s) {
    r_.owner = s.role;
    const ts::role_facts* f = facts_for(s.role);
    if (f == nullptr) return;
    auto res = svc_.set_policy(who_, s.role, *f, s.max_duration, now_);
    r_.executed = true;
    if (!res) return fail(res.error_value());
    done();
  }

  void operator()(const pe::AlterRoleResetApiTokenMaxDuration& s) {
    r_.owner = s.role;
    const ts::role_facts* f = facts_for(s.role);
    if (f == nullptr) return;
    auto res = svc_.reset_policy(who_, s.role, *f);
    r_.executed = true;
    if (!res) return fail(res.error_value());
    done();
  }

  void operator()(const pe::ShowTokengateInstances&) {
    auto res = svc_.list_instances(who_);
    r_.executed = true;
    if (!res) return fail(res.error_value());
    for (const auto& i : *res)
      r_.rows.push_back({std::int64_t(i.id), i.address, i.version, std::int64_t(i.sessions), ts_of(i.heartbeat_at),
                         std::int64_t(i.feed_seq), ts_of(i.started_at)});
    done();
  }

  void operator()(const pe::ShowApiTokenPolicies& s) {
    static const ts::role_facts unused{};
    const ts::role_facts* f = &unused;
    if (s.for_user) {
      r_.owner = *s.for_user;
      f = facts_for(*s.for_user);
      if (f == nullptr) return;
    }
    auto res = svc_.list_policies(who_, s.for_user, *f);
    r_.executed = true;
    if (!res) return fail(res.error_value());
    auto kind_text = [](ts::role_kind k) -> std::string { return k == ts::role_kind::user ? "user" : "role"; };
    if (!res->effective) {
      for (const auto& p : res->policies)
        r_.rows.push_back({p.role, kind_text(p.kind), format_interval(p.max_duration.count())});
      return done();
    }
    Value eff_max = format_interval(res->effective->max.count());
    Value eff_policy = text_or_null(res->effective->policy_role);
    for (const auto& p : res->policies)
      r_.rows.push_back({p.role, kind_text(p.kind), format_interval(p.max_duration.count()), eff_max,
                         eff_policy});
    if (res->policies.empty())
      r_.rows.push_back({std::monostate{}, std::monostate{}, std::monostate{}, eff_max, eff_policy});
    done();
  }

 private:
  // The facts the caller looked up for `role`; a missing entry is a bug in
  // the caller, reported as an internal error rather than guessed.
  const ts::role_facts* facts_for(const std::string& role) {
    auto it = facts_.roles.find(role);
    if (it != facts_.roles.end()) return &it->second;
    r_.error = ErrorResponse::make("ERROR", "XX000",
                                   "internal error: upstream facts for role " + dq(role) + " were not looked up");
    return nullptr;
  }

  // For statements whose service call does not check the FOR USER role:
  // it must exist upstream. Only an administrator naming another
  // role gets here; the service refuses everyone else with 42501 first, so a
  // non-administrator cannot probe which roles exist.
  bool other_role_exists(const std::optional<std::string>& for_user) {
    if (!for_user || *for_user == who_.user || !who_.is_admin) return true;
    const ts::role_facts* f = facts_for(*for_user);
    if (f == nullptr) return false;
    if (f->exists) return true;
    r_.error = to_error(ts::role_not_found_error(*for_user));
    return false;
  }

  void fail(const ts::error& e) { r_.error = to_error(e); }

  void done(std::string tag = {}) {
    r_.command_tag = tag.empty() ? std::string(pe::command_tag(r_.kind)) : std::move(tag);
  }

  ts::token_service& svc_;
  ts::actor who_;
  const StatementFacts& facts_;
  std::int64_t now_;
  LocalResult& r_;
};

void write_notices(protocol::Bytes& out, const LocalResult& r) {
  for (const auto& n : r.notices) n.serialize(out, protocol::backend_tag::NoticeResponse);
}

}  // namespace

FactsNeeded facts_needed(const parser_ext::Statement& stmt, std::string_view session_user) {
  FactsNeeded out;
  auto other = [&](const std::optional<std::string>& for_user) {
    if (for_user && *for_user != session_user) {
      add_unique(out.roles, *for_user);
      out.acts_for_others = true;
    }
  };
  std::visit(overloaded{
                 [&](const pe::CreateApiToken& s) {
                   add_unique(out.roles, s.for_user ? std::string_view(*s.for_user) : session_user);
                   out.acts_for_others = s.for_user && *s.for_user != session_user;
                 },
                 [&](const pe::ShowApiTokens& s) {
                   other(s.for_user);
                   out.acts_for_others = out.acts_for_others || s.all_users;
                 },
                 [&](const pe::AlterApiTokenSetComment& s) { other(s.for_user); },
                 [&](const pe::DropApiToken& s) { other(s.for_user); },
                 [&](const pe::DropAllApiTokens& s) { other(s.for_user); },
                 [&](const pe::AlterRoleSetApiTokenMaxDuration& s) {
                   add_unique(out.roles, s.role);
                   out.acts_for_others = true;
                 },
                 [&](const pe::AlterRoleResetApiTokenMaxDuration& s) {
                   add_unique(out.roles, s.role);
                   out.acts_for_others = true;
                 },
                 [&](const pe::ShowApiTokenPolicies& s) {
                   if (s.for_user) add_unique(out.roles, *s.for_user);
                   out.acts_for_others = s.for_user && *s.for_user != session_user;
                 },
                 // Administrators only: decided on the session user's facts, read fresh.
                 [&](const pe::ShowTokengateInstances&) { out.acts_for_others = true; },
             },
             stmt);
  return out;
}

std::vector<protocol::Column> columns_of(const parser_ext::Statement& stmt) {
  switch (pe::kind_of(stmt)) {
    case pe::StatementKind::create_api_token:
      return {Column::text("name"), Column::text("token"), Column::timestamptz("expires_at")};
    case pe::StatementKind::show_api_tokens:
      return {Column::text("name"),          Column::text("user"),
              Column::timestamptz("created_at"), Column::timestamptz("expires_at"),
              Column::timestamptz("last_used_at"), Column::text("status"),
              Column::text("comment"),       Column::text("created_by")};
    case pe::StatementKind::show_api_token_policies: {
      std::vector<Column> cols{Column::text("role"), Column::text("kind"), Column::text("max_duration")};
      if (std::get<pe::ShowApiTokenPolicies>(stmt).for_user) {
        cols.push_back(Column::text("effective_max_duration"));
        cols.push_back(Column::text("effective_policy"));
      }
      return cols;
    }
    case pe::StatementKind::show_tokengate_instances:
      return {Column::int8("instance_id"), Column::text("address"),    Column::text("version"),
              Column::int8("sessions"),    Column::timestamptz("last_heartbeat"), Column::int8("feed_position"),
              Column::timestamptz("started_at")};
    case pe::StatementKind::alter_api_token:
    case pe::StatementKind::drop_api_token:
    case pe::StatementKind::drop_all_api_tokens:
    case pe::StatementKind::alter_role_set_api_token_max_duration:
    case pe::StatementKind::alter_role_reset_api_token_max_duration: return {};
  }
  return {};
}

std::string format_interval(std::int64_t seconds) {
  std::string out;
  if (seconds < 0) {  // never stored; printed the way PostgreSQL would
    out = "-";
    seconds = -seconds;
  }
  const std::int64_t days = seconds / 86400;
  const std::int64_t rest = seconds % 86400;
  if (days != 0) out += std::to_string(days) + (days == 1 ? " day" : " days");
  if (rest != 0 || days == 0) {
    if (days != 0) out += ' ';
    char buf[16];
    std::snprintf(buf, sizeof buf, "%02d:%02d:%02d", int(rest / 3600), int(rest / 60 % 60), int(rest % 60));
    out += buf;
  }
  return out;
}

LocalResult execute(tokenstore::token_service& service, const parser_ext::Statement& stmt,
                    std::string_view session_user, const StatementFacts& facts, std::int64_t now,
                    char tx_status) {
  LocalResult r;
  r.kind = pe::kind_of(stmt);
  r.columns = columns_of(stmt);
  if (tx_status == protocol::tx_status::Failed) {
    r.error = ErrorResponse::make("ERROR", "25P02",
                                  "current transaction is aborted, commands ignored until end of "
                                  "transaction block");
    return r;
  }
  std::visit(Runner(service, session_user, facts, now, r), stmt);
  if (r.ok() && tx_status == protocol::tx_status::InBlock && changes_something(r.kind)) {
    // 25001 active_sql_transaction, as PostgreSQL's own notices about blocks.
    auto n = ErrorResponse::make("NOTICE", "25001", "API TOKEN statements are not transactional");
    n.detail = std::string(statement_words(r.kind)) + " took effect at once and will not be rolled back.";
    r.notices.push_back(std::move(n));
  }
  if (!r.ok()) r.rows.clear();
  return r;
}

void write_simple(protocol::Bytes& out, const LocalResult& result) {
  write_notices(out, result);
  if (result.error) {
    result.error->serialize(out, protocol::backend_tag::ErrorResponse);
    return;
  }
  if (!result.columns.empty()) protocol::write_row_description(out, result.columns);
  for (const auto& row : result.rows) protocol::write_data_row(out, row);
  protocol::write_command_complete(out, result.command_tag);
}

ExecuteOutcome write_execute(protocol::Bytes& out, const LocalResult& result,
                             std::span<const std::int16_t> result_formats, std::int32_t max_rows,
                             ExecuteCursor& cursor) {
  auto formats = protocol::resolve_result_formats(result_formats, result.columns.size());
  if (formats.error) {
    formats.error->serialize(out, protocol::backend_tag::ErrorResponse);
    return ExecuteOutcome::error;
  }
  if (!cursor.started) {
    cursor.started = true;
    write_notices(out, result);
  }
  if (result.error) {
    result.error->serialize(out, protocol::backend_tag::ErrorResponse);
    return ExecuteOutcome::error;
  }
  const std::size_t total = result.rows.size();
  std::size_t end = total;
  if (max_rows > 0 && total - std::min(cursor.next_row, total) > std::size_t(max_rows))
    end = cursor.next_row + std::size_t(max_rows);
  for (std::size_t i = cursor.next_row; i < end; ++i)
    protocol::write_data_row(out, result.rows[i], formats.formats);
  cursor.next_row = std::max(cursor.next_row, end);
  if (end < total) {
    protocol::write_portal_suspended(out);
    return ExecuteOutcome::suspended;
  }
  protocol::write_command_complete(out, result.command_tag);
  return ExecuteOutcome::complete;
}

bool write_execute(protocol::Bytes& out, const LocalResult& result,
                   std::span<const std::int16_t> result_formats) {
  ExecuteCursor cursor;
  return write_execute(out, result, result_formats, 0, cursor) == ExecuteOutcome::complete;
}

void write_describe_statement(protocol::Bytes& out, const parser_ext::Statement& stmt) {
  protocol::write_parameter_description_none(out);
  auto cols = columns_of(stmt);
  if (cols.empty())
    protocol::write_no_data(out);
  else
    protocol::write_row_description(out, cols);
}

bool write_describe_portal(protocol::Bytes& out, const parser_ext::Statement& stmt,
                           std::span<const std::int16_t> result_formats) {
  auto cols = columns_of(stmt);
  auto formats = protocol::resolve_result_formats(result_formats, cols.size());
  if (formats.error) {
    formats.error->serialize(out, protocol::backend_tag::ErrorResponse);
    return false;
  }
  if (cols.empty())
    protocol::write_no_data(out);
  else
    protocol::write_row_description(out, cols, formats.formats);
  return true;
}

}  // namespace tokengate::session

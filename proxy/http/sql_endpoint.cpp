// POST /sql (see sql_endpoint.hpp): authenticate, take a pooled upstream
// connection, run the statement or the batch, answer in the driver's JSON.
#include "proxy/http/sql_endpoint.hpp"

#include <spdlog/spdlog.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <memory>

#include "parser_ext/parser.hpp"
#include "proxy/http/sql_exchange.hpp"
#include "proxy/http/sql_protocol.hpp"
#include "proxy/log_text.hpp"
#include "proxy/net/control_pool.hpp"
#include "proxy/net/local_sql.hpp"
#include "proxy/net/session_registry.hpp"
#include "proxy/net/stream.hpp"
#include "proxy/pool/upstream_pool.hpp"
#include "proxy/session/startup_parameters.hpp"

// GCC 12 warns that Asio's coroutine frames are freed by a mismatched
// operator delete; a known false positive (GCC bug 109224).
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace tokengate::http {

namespace asio = boost::asio;
namespace pe = parser_ext;

namespace {

// Statement errors are answered 400: the driver reads the error's fields
// only from a 400 answer (any other status becomes "Server error (HTTP status
// N): <body>"), as the server it was written for does.
constexpr int kStatementErrorStatus = 400;
// The driver's server answers a result over its limit with 507.
constexpr int kTooLargeStatus = 507;

HttpResponse answer(int status, std::string body) { return json_response(status, std::move(body)); }

HttpResponse too_large(std::size_t limit) {
  return answer(kTooLargeStatus,
                error_json("54000", "response is too large (max is " + std::to_string(limit) + " bytes)", {},
                           "Select fewer rows or columns, or raise http.max_response_size."));
}

HttpResponse upstream_lost() {
  return answer(503, error_json("08006", "connection to the upstream server was lost"));
}

// A login refusal in the driver's error shape, with the wire's severity.
HttpResponse login_refused(const std::string& sqlstate, const std::string& message, const std::string& detail) {
  auto e = protocol::ErrorResponse::make("FATAL", sqlstate, message);
  e.detail = detail;
  return answer(status_for_sqlstate(sqlstate), error_json(e));
}

// "bind message supplies 1 parameters, but prepared statement "" requires 0",
// PostgreSQL's words for parameters given to a statement that has none.
HttpResponse extra_parameters(std::size_t n) {
  return answer(kStatementErrorStatus,
                error_json("08P01", "bind message supplies " + std::to_string(n) +
                                        " parameters, but prepared statement \"\" requires 0"));
}

// A request authenticated by a token is a live session while it runs: a
// revocation, an expiry or a shutdown ends it (SqlEndpointServices::sessions).
// Touched only on the request's executor.
struct Ending {
  std::optional<protocol::ErrorResponse> why;  // set once the session was ended
  bool finished = false;                        // the request no longer uses its connection
};

// Ends the backend an ended request runs on, as an ended wire session's is
// ended: what it runs is interrupted and its open transaction rolled back, so
// nothing the request sent commits after the revocation is answered.
asio::awaitable<void> terminate_backend(net::ControlPool* control, std::int32_t pid) {
  if (control == nullptr || pid == 0) co_return;
  std::vector<session::QueryParam> params;
  params.emplace_back(std::to_string(pid));
  std::string sql = "SELECT pg_catalog.pg_terminate_backend($1::int)";
  auto r = co_await control->query(std::move(sql), std::move(params));
  if (!r) spdlog::warn("HTTP /sql: cannot terminate upstream backend {}: {}", pid, log_text(r.error()));
  else if (r->error) spdlog::warn("HTTP /sql: cannot terminate upstream backend {}: {}",
                                  pid, log_text(r->error->message()));
}

// How long an ended request waits for its terminated backend to be gone.
// A backend sends its FATAL before it exits; until it has exited it still
// holds its locks and shows in pg_stat_activity. A revocation answers once
// its sessions are gone, backends included (an ended wire session waits for
// the backend's socket to close). Exiting takes milliseconds; a backend stuck
// longer than this is left to PostgreSQL.
constexpr auto kBackendExitWait = std::chrono::seconds(2);
constexpr auto kBackendExitPoll = std::chrono::milliseconds(10);

// Waits (bounded) until backend `pid` is no longer in pg_stat_activity.
asio::awaitable<void> wait_backend_gone(net::ControlPool* control, std::int32_t pid) {
  if (control == nullptr || pid == 0) co_return;
  const auto deadline = std::chrono::steady_clock::now() + kBackendExitWait;
  asio::steady_timer pause(co_await asio::this_coro::executor);
  while (std::chrono::steady_clock::now() < deadline) {
    std::vector<session::QueryParam> params;
    params.emplace_back(std::to_string(pid));
    std::string sql = "SELECT 1 FROM pg_catalog.pg_stat_activity WHERE pid = $1::int";
    auto r = co_await control->query(std::move(sql), std::move(params));
    if (!r || r->error || r->rows.empty()) co_return;
    pause.expires_after(kBackendExitPoll);
    co_await pause.async_wait(net::use_nothrow);
  }
  spdlog::warn("HTTP /sql: upstream backend {} was still running {} s after it was terminated", pid,
               std::chrono::duration_cast<std::chrono::seconds>(kBackendExitWait).count());
}

}  // namespace

class SqlEndpoint {
 public:
  SqlEndpoint(Gateway& gateway, SqlEndpointServices services) : gateway_(gateway), s_(std::move(services)) {}

  asio::awaitable<HttpResponse> handle(HttpRequest& req);

 private:
  struct Context {
    pool::Lease lease;
    ResultWriter* writer = nullptr;
    const net::RelayServices* relay = nullptr;
    net::SessionInfo* info = nullptr;
    char tx = protocol::tx_status::Idle;
    bool usable = true;  // the connection may be reset and reused
    std::shared_ptr<Ending> ending;
    net::SessionRegistry::Handle registered = 0;  // this request's entry, if it has one
  };
  // The answer for a request whose session was ended, once it was.
  static std::optional<HttpResponse> ended(Context& ctx) {
    if (!ctx.ending || !ctx.ending->why) return std::nullopt;
    ctx.usable = false;
    return answer(status_for_sqlstate(ctx.ending->why->sqlstate), error_json(*ctx.ending->why));
  }
  // One statement; nullopt when it succeeded (its result is in the writer).
  asio::awaitable<std::optional<HttpResponse>> statement(Context& ctx, const SqlQuery& q, bool array_mode,
                                                         bool raw);
  asio::awaitable<std::optional<HttpResponse>> upstream_statement(Context& ctx, const std::string& text,
                                                                  const std::vector<std::optional<std::string>>& params,
                                                                  ResultWriter* writer, bool array_mode, bool raw);
  std::optional<HttpResponse> write_local(Context& ctx, const session::LocalResult& r, bool array_mode, bool raw);

  Gateway& gateway_;
  SqlEndpointServices s_;
};

asio::awaitable<std::optional<HttpResponse>> SqlEndpoint::upstream_statement(
    Context& ctx, const std::string& text, const std::vector<std::optional<std::string>>& params,
    ResultWriter* writer, bool array_mode, bool raw) {
  if (auto e = ended(ctx)) co_return e;
  SqlExchange x(writer, array_mode, raw);
  protocol::Bytes first = x.start(text, params);
  if (x.status() == SqlExchange::Status::failed)
    co_return answer(kStatementErrorStatus, error_json("08P01", x.failure_reason()));
  auto r = co_await ctx.lease.run(x, first);
  if (r.outcome == pool::Lease::Outcome::too_large || x.too_large()) {
    ctx.usable = false;  // the rest of the result is still coming: the connection goes
    co_return too_large(s_.max_response_size);
  }
  // Its backend was terminated: the statement broke off (a statement that
  // completed first came before the revocation).
  if (r.outcome == pool::Lease::Outcome::io_error || x.status() == SqlExchange::Status::failed || x.error())
    if (auto e = ended(ctx)) co_return e;
  if (r.outcome == pool::Lease::Outcome::io_error) {
    spdlog::warn("HTTP /sql of \"{}\": {}", log_name(ctx.info->user), log_text(r.reason));
    ctx.usable = false;
    co_return upstream_lost();
  }
  if (x.status() == SqlExchange::Status::failed) {
    spdlog::warn("HTTP /sql of \"{}\": {}", log_name(ctx.info->user), log_text(x.failure_reason()));
    ctx.usable = false;
    if (x.failure_reason().rfind("upstream ended the connection", 0) == 0) co_return upstream_lost();
    co_return answer(502, error_json("08P01", "invalid message from the upstream server"));
  }
  ctx.tx = x.tx_status();
  if (x.error()) co_return answer(kStatementErrorStatus, error_json(*x.error()));
  co_return std::nullopt;
}

std::optional<HttpResponse> SqlEndpoint::write_local(Context& ctx, const session::LocalResult& r, bool array_mode,
                                                     bool raw) {
  ResultWriter& w = *ctx.writer;
  w.begin_result(array_mode, raw);
  std::vector<FieldDescription> fields;
  fields.reserve(r.columns.size());
  for (const auto& c : r.columns) fields.push_back({c.name, 0, 0, std::uint32_t(c.type_oid), c.type_len, -1});
  w.fields(fields);
  std::vector<std::optional<std::string>> texts;
  std::vector<std::optional<std::string_view>> values;
  for (const auto& row : r.rows) {
    texts.clear();
    values.clear();
    for (const auto& v : row) texts.push_back(protocol::encode_value(v, protocol::kTextFormat));
    for (const auto& t : texts) values.push_back(t ? std::optional<std::string_view>(*t) : std::nullopt);
    if (!w.row(values)) return too_large(s_.max_response_size);
  }
  w.end_result(r.command_tag);
  return std::nullopt;
}

asio::awaitable<std::optional<HttpResponse>> SqlEndpoint::statement(Context& ctx, const SqlQuery& q,
                                                                    bool array_mode, bool raw) {
  // API TOKEN statements are tokengate's, as on the wire: the same parser
  // decides, the same code runs them.
  auto parsed = pe::parse_statement(q.text);
  if (auto* e = std::get_if<pe::ParseError>(&parsed))
    co_return answer(kStatementErrorStatus, error_json(net::local_sql_error(*e)));
  if (auto* stmt = std::get_if<pe::Statement>(&parsed)) {
    if (!q.params.empty()) co_return extra_parameters(q.params.size());
    if (auto e = ended(ctx)) co_return e;
    net::LocalSql local(*ctx.relay, *ctx.info);
    session::LocalResult r = co_await local.run(*stmt, ctx.tx);
    // A revocation answers once the sessions it ended are gone (this
    // request's own aside), upstream backends included, as on the wire.
    if (!r.revoked.empty() && s_.sessions != nullptr &&
        !co_await s_.sessions->wait_ended(r.revoked, ctx.registered, net::kRevokedSessionsWait))
      spdlog::warn("HTTP /sql of \"{}\": sessions of revoked tokens were still open after {} s", log_name(ctx.info->user),
                   net::kRevokedSessionsWait.count());
    if (r.error) co_return answer(kStatementErrorStatus, error_json(*r.error));
    co_return write_local(ctx, r, array_mode, raw);
  }
  if (ctx.info->via_token && !s_.token_sessions_manage_credentials && s_.changes_role_password != nullptr &&
      s_.changes_role_password(q.text)) {
    auto e = protocol::ErrorResponse::make("ERROR", "42501", "a session opened with an API token cannot change passwords");
    e.hint = "Log in with the role's password to change it.";
    co_return answer(kStatementErrorStatus, error_json(e));
  }
  co_return co_await upstream_statement(ctx, q.text, q.params, ctx.writer, array_mode, raw);
}

asio::awaitable<HttpResponse> SqlEndpoint::handle(HttpRequest& req) {
  auto parsed = parse_sql_request(req);
  if (auto* e = std::get_if<SqlRequestError>(&parsed)) co_return answer(e->status, error_json(e->sqlstate, e->message));
  SqlRequest& sql = std::get<SqlRequest>(parsed);
  const ConnectionString* cs = sql.connection ? &*sql.connection : nullptr;

  // ---- who: a Bearer token (or the cookie) in place of the password, or the
  // connection string's password or token, checked as a wire login.
  std::string user;
  bool via_token = false;                     // authenticated by a token, not a password
  std::optional<tokenstore::tid_t> tid;       // the token's, for the session registry
  std::int64_t token_expires_at = 0;
  std::string token;                          // the token itself, checked once more after registration
  std::optional<std::string> login_password;  // a password (not a token): password mode may log in with it
  if (req.header("Authorization") != nullptr || cs == nullptr || !cs->password) {
    if (auto refusal = co_await gateway_.authenticate(req)) co_return std::move(*refusal);
    user = req.identity.user;
    // The cookie of a browser login made with a password is a token too:
    // /sql treats every Bearer and cookie request as a token session.
    via_token = true;
    tid = req.identity.tid;
    token_expires_at = req.identity.expires_at;
    token = req.identity.token;
    if (cs != nullptr && !cs->user.empty() && cs->user != user) {
      // The token is not this user's: what a wire login with it would say.
      spdlog::info("HTTP /sql from {}: a token of \"{}\" presented for user \"{}\"", req.peer, log_name(user),
                   log_name(cs->user));
      co_return login_refused("28P01", "password authentication failed for user \"" + cs->user + "\"", {});
    }
  } else {
    if (cs->user.empty())
      co_return answer(400, error_json("08P01", "the connection string names no user"));
    HttpLoginRequest login;
    login.user = cs->user;
    login.secret = *cs->password;
    login.peer = req.peer;
    login.application_name = application_name(req);
    if (!s_.login) co_return answer(503, error_json("58030", "password checks are unavailable"));
    HttpLoginResult result = co_await s_.login(std::move(login));
    if (!result.ok) {
      if (result.delay.count() > 0) {
        asio::steady_timer wait(co_await asio::this_coro::executor, result.delay);
        co_await wait.async_wait(net::use_nothrow);
      }
      if (result.sqlstate.empty()) result.sqlstate = "28P01";
      co_return login_refused(result.sqlstate, result.message, result.detail);
    }
    user = result.user;
    via_token = result.tid.has_value();
    if (via_token) {
      tid = result.tid;
      token_expires_at = result.expires_at;
      token = *cs->password;
    } else {
      login_password = *cs->password;
    }
  }

  // ---- where: a pooled connection of this role, database and settings.
  // Identity is decided once, as for a wire login: the connection string's
  // database and settings pass the same startup checks (no
  // session_authorization or role, only -c settings in options, no control
  // characters in the database name), and the pool logs in with the
  // settings rebuilt from what was checked.
  protocol::StartupMessage requested;
  requested.parameters.emplace_back("user", user);
  if (cs != nullptr && !cs->database.empty()) requested.parameters.emplace_back("database", cs->database);
  if (cs != nullptr)
    for (const auto& p : cs->parameters) requested.parameters.push_back(p);
  auto checked = session::validate_startup(requested);
  if (const auto* refused = std::get_if<session::StartupRefusal>(&checked))
    co_return answer(400, error_json(refused->sqlstate, refused->message));
  const auto& startup = std::get<session::StartupParameters>(checked);
  pool::PoolKey key;
  key.user = user;
  key.database = startup.database_or_user();
  for (auto& kv : startup.for_upstream(user).parameters)
    if (kv.first != "user" && kv.first != "database") key.parameters.push_back(std::move(kv));
  pool::AcquireResult acquired = co_await s_.pool->acquire(key, login_password);
  login_password.reset();
  if (!acquired.lease) {
    const auto& e = acquired.error;
    if (e.upstream) {
      const int status = e.sqlstate.rfind("28", 0) == 0 ? 401 : kStatementErrorStatus;
      co_return answer(status, error_json(*e.upstream));
    }
    co_return answer(status_for_sqlstate(e.sqlstate), error_json(e.sqlstate, e.message));
  }

  // ---- a token request is a live session while it runs: registered before
  // its token is checked once more, so that a revocation is seen by that
  // check or by the registry, as for a wire session.
  auto ending = std::make_shared<Ending>();
  struct Unregister {
    net::SessionRegistry* registry = nullptr;
    net::SessionRegistry::Handle handle = 0;
    ~Unregister() {
      if (registry != nullptr) registry->remove(handle);
    }
  } unregister;
  if (tid && s_.sessions != nullptr) {
    auto exec = co_await asio::this_coro::executor;
    const std::int32_t pid = acquired.lease.backend_pid();
    net::ControlPool* control = s_.control;
    unregister.handle = s_.sessions->add(
        *tid, token_expires_at, [exec, ending, pid, control](const protocol::ErrorResponse& why, bool when_idle) {
          // A drain lets a request finish: it is one statement, answered within http.request_timeout.
          if (when_idle) return;
          asio::post(exec, [exec, ending, pid, control, why] {
            if (ending->finished || ending->why) return;
            ending->why = why;
            asio::co_spawn(exec, terminate_backend(control, pid), asio::detached);
          });
        });
    unregister.registry = s_.sessions;
    if (s_.tokens != nullptr) {
      const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                           std::chrono::system_clock::now().time_since_epoch()).count();
      auto again = s_.tokens->verify(token, user, now);
      if (again.status != tokenstore::verify_status::ok) {
        acquired.lease.release(true, protocol::tx_status::Idle);  // nothing ran on it
        spdlog::info("HTTP /sql from {}: the token of \"{}\" is no longer valid", req.peer, log_name(user));
        co_return login_refused("28P01", "password authentication failed for user \"" + user + "\"", {});
      }
    }
  }
  std::fill(token.begin(), token.end(), '\0');  // not needed any more

  // ---- run
  std::string body;
  ResultWriter writer(body, s_.max_response_size);
  net::RelayServices relay;
  relay.tokens = s_.tokens;
  relay.store = s_.store;
  relay.control = s_.control;
  relay.audit = s_.audit;
  relay.admin_view = s_.admin_view;
  net::SessionInfo info;
  info.user = user;
  info.database = key.database;
  info.application_name = application_name(req);
  info.peer = req.peer;
  info.via_token = via_token;
  Context ctx;
  ctx.lease = std::move(acquired.lease);
  ctx.writer = &writer;
  ctx.relay = &relay;
  ctx.info = &info;
  ctx.ending = ending;
  ctx.registered = unregister.handle;

  std::optional<HttpResponse> failed;
  if (!sql.batch) {
    const SqlQuery& q = sql.queries.front();
    failed = co_await statement(ctx, q, q.array_mode.value_or(sql.array_mode), sql.raw_text_output);
  } else {
    // One transaction: BEGIN with the batch's options, each statement, COMMIT.
    // A failure leaves the transaction open; the reset rolls it back.
    writer.begin_batch();
    // Named, not temporaries: GCC 12 mishandles temporaries bound to a
    // coroutine's reference parameters inside co_await.
    const std::string begin = begin_statement(sql);
    const std::string commit = "COMMIT";
    const std::vector<std::optional<std::string>> no_params;
    failed = co_await upstream_statement(ctx, begin, no_params, nullptr, true, true);
    for (std::size_t i = 0; !failed && i < sql.queries.size(); ++i) {
      const SqlQuery& q = sql.queries[i];
      info.tx_status = ctx.tx;
      failed = co_await statement(ctx, q, q.array_mode.value_or(sql.array_mode), sql.raw_text_output);
    }
    if (!failed) failed = co_await upstream_statement(ctx, commit, no_params, nullptr, true, true);
    writer.end_batch();
  }
  // Ended after its last statement answered: what it did came before the
  // revocation; the connection goes all the same (its backend is being
  // terminated). The registry entry goes after the connection is closed.
  ending->finished = true;
  if (ending->why) ctx.usable = false;
  const std::int32_t backend = ctx.lease.backend_pid();
  ctx.lease.release(ctx.usable, ctx.tx);
  if (ending->why) co_await wait_backend_gone(s_.control, backend);
  if (failed) co_return std::move(*failed);
  co_return answer(200, std::move(body));
}

void add_sql_endpoint(Gateway& gateway, SqlEndpointServices services) {
  auto endpoint = std::make_shared<SqlEndpoint>(gateway, std::move(services));
  RouteOptions options;
  options.auth = Auth::none;  // the connection string may carry the credential: handle() authenticates
  options.max_body = gateway.settings().max_body_size;
  // The driver posts its JSON with fetch()'s default text/plain type. That
  // opens no hole for other sites' forms: a request authenticated only by
  // the auth_token cookie still needs the CSRF header (Gateway::authenticate),
  // and the other credentials travel in headers a form cannot set.
  options.json_body = false;
  gateway.add_route("POST", "/sql", options, [endpoint](HttpRequest& r) { return endpoint->handle(r); });
}

}  // namespace tokengate::http

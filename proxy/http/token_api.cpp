// REST routes for tokens, the browser login and logout (see token_api.hpp).
#include "proxy/http/token_api.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>

#include "parser_ext/ast.hpp"
#include "proxy/http/credentials.hpp"
#include "proxy/log_text.hpp"
#include "proxy/net/control_pool.hpp"
#include "proxy/net/local_sql.hpp"
#include "proxy/net/stream.hpp"
#include "tokenstore/service.hpp"

// GCC 12 warns that Asio's coroutine frames are freed by a mismatched
// operator delete; a known false positive for class-specific operator new
// in coroutine frames (GCC bug 109224), fixed in later releases.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace tokengate::http {

namespace asio = boost::asio;
namespace json = boost::json;
namespace pe = parser_ext;

namespace {

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string joined(std::initializer_list<std::string_view> names) {
  std::string out;
  for (auto n : names) {
    if (!out.empty()) out += ", ";
    out += n;
  }
  return out;
}

// The body as a JSON object holding only `known` fields; an empty body is {}.
std::optional<HttpResponse> read_object(const HttpRequest& req, std::initializer_list<std::string_view> known,
                                        json::object& out) {
  if (req.body.empty()) return std::nullopt;
  boost::system::error_code ec;
  json::parse_options options;
  options.max_depth = 8;  // the bodies are flat objects; deep nesting is an attack on the parser
  auto v = json::parse(req.body, ec, {}, options);
  if (ec) return json_error(400, "22P02", "invalid JSON in the request body", ec.message());
  if (!v.is_object()) return json_error(422, "22023", "the request body must be a JSON object");
  for (const auto& kv : v.as_object()) {
    const std::string_view key = kv.key();
    if (std::find(known.begin(), known.end(), key) == known.end())
      return json_error(422, "22023", "unknown field \"" + std::string(key.substr(0, 64)) + "\"",
                        "Known fields: " + joined(known) + ".");
  }
  out = std::move(v.as_object());
  return std::nullopt;
}

// A text field of a JSON body: absent, null, or a string of valid text.
struct TextField {
  bool present = false;
  bool null = false;
  std::string value;
  [[nodiscard]] std::optional<std::string> optional() const {
    return present && !null ? std::optional<std::string>(value) : std::nullopt;
  }
};

std::optional<HttpResponse> text_field(const json::object& o, std::string_view key, TextField& out) {
  const json::value* v = o.if_contains(key);
  if (v == nullptr) return std::nullopt;
  out.present = true;
  if (v->is_null()) {
    out.null = true;
    return std::nullopt;
  }
  if (!v->is_string()) return json_error(422, "22023", "field \"" + std::string(key) + "\" must be a string or null");
  out.value = std::string(v->as_string());
  // JSON strings are UTF-8 already (the parser checks); "\u0000" is the one
  // thing PostgreSQL's text cannot hold.
  if (!valid_text(out.value))
    return json_error(422, "22021", "invalid byte sequence for encoding \"UTF8\": 0x00",
                      "Field \"" + std::string(key) + "\" contains a NUL character.");
  return std::nullopt;
}

// The role named by ?user=, refused when empty or not text.
std::optional<HttpResponse> user_param(const HttpRequest& req, std::optional<std::string>& out) {
  const std::string* u = req.query_param("user");
  if (u == nullptr) return std::nullopt;
  if (u->empty()) return json_error(422, "22023", "query parameter \"user\" must not be empty");
  if (!valid_text(*u)) return json_error(422, "22021", "query parameter \"user\" is not valid UTF-8 text");
  out = *u;
  return std::nullopt;
}

// Unknown query parameters are refused: a misspelt ?usr=bob must not quietly
// act on the caller's own tokens.
std::optional<HttpResponse> only_params(const HttpRequest& req, std::initializer_list<std::string_view> known) {
  for (const auto& [k, v] : req.query) {
    if (std::find(known.begin(), known.end(), k) == known.end())
      return json_error(422, "22023", "unknown query parameter \"" + k.substr(0, 64) + "\"",
                        known.size() ? "Known parameters: " + joined(known) + "." : "This endpoint takes none.");
  }
  return std::nullopt;
}

std::optional<HttpResponse> name_param(const HttpRequest& req, std::string& out) {
  const std::string* n = req.param("name");
  if (n == nullptr || !valid_text(*n)) return json_error(422, "22021", "the token name is not valid UTF-8 text");
  out = *n;
  return std::nullopt;
}

json::value to_json(const protocol::Value& v) {
  if (const auto* s = std::get_if<std::string>(&v)) return json::string(*s);
  if (const auto* i = std::get_if<std::int64_t>(&v)) return *i;
  if (const auto* t = std::get_if<protocol::Timestamp>(&v)) return json::string(rfc3339(t->unix_micros / 1'000'000));
  return nullptr;
}

json::object row_object(const session::LocalResult& r, std::size_t row) {
  json::object o;
  for (std::size_t c = 0; c < r.columns.size(); ++c) o[r.columns[c].name] = to_json(r.rows[row][c]);
  return o;
}

HttpResponse error_of(const session::LocalResult& r) {
  const auto& e = *r.error;
  return sql_error(e.sqlstate, e.message, e.detail, e.hint);
}

HttpResponse no_content() {
  HttpResponse r;
  r.status = 204;
  return r;
}

class TokenApi {
 public:
  explicit TokenApi(TokenApiServices s) : s_(std::move(s)) {}

  asio::awaitable<HttpResponse> list(HttpRequest& req);
  asio::awaitable<HttpResponse> create(HttpRequest& req);
  asio::awaitable<HttpResponse> set_comment(HttpRequest& req);
  asio::awaitable<HttpResponse> revoke(HttpRequest& req);
  asio::awaitable<HttpResponse> login(HttpRequest& req);
  asio::awaitable<HttpResponse> logout(HttpRequest& req);
  asio::awaitable<HttpResponse> me(HttpRequest& req);
  asio::awaitable<HttpResponse> users(HttpRequest& req);

 private:
  // Runs one API TOKEN statement as the request's user, as a session would.
  // `as_token_session` overrides what the request's identity says (a
  // password login mints its web session as a password session).
  asio::awaitable<session::LocalResult> run(const HttpRequest& req, pe::Statement stmt,
                                            std::optional<bool> as_token_session = std::nullopt);

  // Whether the request stands for a session that logged in with a token:
  // every request but those carrying a web session this process made from a
  // password login. (A token's name cannot say so: anyone may name a token
  // web_session_….)
  bool via_token(const Identity& id);
  void remember_password_session(const tokenstore::tid_t& tid, std::int64_t expires_at);

  TokenApiServices s_;
  // The web sessions minted by password logins: tid → expiry. Held in memory
  // only, so after a restart such a session acts as a token session (it can
  // list and revoke, and create only with token_sessions.manage_credentials)
  // until the browser logs in again.
  std::mutex password_sessions_mutex_;
  std::map<tokenstore::tid_t, std::int64_t> password_sessions_;
};

bool TokenApi::via_token(const Identity& id) {
  std::lock_guard lock(password_sessions_mutex_);
  auto it = password_sessions_.find(id.tid);
  return it == password_sessions_.end() || it->second <= unix_now();
}

void TokenApi::remember_password_session(const tokenstore::tid_t& tid, std::int64_t expires_at) {
  const std::int64_t now = unix_now();
  std::lock_guard lock(password_sessions_mutex_);
  if (password_sessions_.size() >= kMaxTrackedWebSessions) {
    std::erase_if(password_sessions_, [now](const auto& kv) { return kv.second <= now; });
    while (password_sessions_.size() >= kMaxTrackedWebSessions) {
      auto soonest = std::min_element(password_sessions_.begin(), password_sessions_.end(),
                                      [](const auto& a, const auto& b) { return a.second < b.second; });
      password_sessions_.erase(soonest);
    }
  }
  password_sessions_[tid] = expires_at;
}

asio::awaitable<session::LocalResult> TokenApi::run(const HttpRequest& req, pe::Statement stmt,
                                                   std::optional<bool> as_token_session) {
  net::RelayServices services{s_.tokens, s_.control, s_.audit};
  net::SessionInfo info{req.identity.user, "", application_name(req), req.peer, 'I',
                        as_token_session.value_or(via_token(req.identity))};
  net::LocalSql sql(services, info);
  auto r = co_await sql.run(stmt, 'I');
  // A revocation answers once the sessions it ended are gone, upstream
  // backends included: nothing they sent commits after the answer.
  if (!r.revoked.empty() && s_.sessions != nullptr &&
      !co_await s_.sessions->wait_ended(r.revoked, 0, net::kRevokedSessionsWait))
    spdlog::warn("HTTP {} {}: sessions of revoked tokens were still open after {} s", req.method, req.path,
                 net::kRevokedSessionsWait.count());
  co_return r;
}

asio::awaitable<HttpResponse> TokenApi::list(HttpRequest& req) {
  if (auto bad = only_params(req, {"user", "all"})) co_return *bad;
  pe::ShowApiTokens stmt;
  if (auto bad = user_param(req, stmt.for_user)) co_return *bad;
  if (const std::string* all = req.query_param("all")) {
    if (*all == "true" || *all == "1") stmt.all_users = true;
    else if (*all != "false" && *all != "0")
      co_return json_error(422, "22023", "query parameter \"all\" must be true or false");
  }
  if (stmt.all_users && stmt.for_user)
    co_return json_error(422, "22023", "query parameters \"user\" and \"all\" cannot be combined");
  auto r = co_await run(req, stmt);
  if (r.error) co_return error_of(r);
  json::array tokens;
  tokens.reserve(r.rows.size());
  for (std::size_t i = 0; i < r.rows.size(); ++i) tokens.push_back(row_object(r, i));
  json::object o;
  o["tokens"] = std::move(tokens);
  co_return json_response(200, json::serialize(o));
}

asio::awaitable<HttpResponse> TokenApi::create(HttpRequest& req) {
  if (auto bad = only_params(req, {"user"})) co_return *bad;
  pe::CreateApiToken stmt;
  if (auto bad = user_param(req, stmt.for_user)) co_return *bad;
  json::object body;
  if (auto bad = read_object(req, {"name", "max_duration", "comment"}, body)) co_return *bad;
  TextField name, duration, comment;
  if (auto bad = text_field(body, "name", name)) co_return *bad;
  if (auto bad = text_field(body, "max_duration", duration)) co_return *bad;
  if (auto bad = text_field(body, "comment", comment)) co_return *bad;
  stmt.name = name.optional();
  stmt.max_duration = duration.optional();
  stmt.comment = comment.optional();
  auto r = co_await run(req, stmt);
  if (r.error) co_return error_of(r);
  // name, token, expires_at: the only time the value leaves tokengate.
  co_return json_response(201, json::serialize(row_object(r, 0)));
}

asio::awaitable<HttpResponse> TokenApi::set_comment(HttpRequest& req) {
  if (auto bad = only_params(req, {"user"})) co_return *bad;
  pe::AlterApiTokenSetComment stmt;
  if (auto bad = name_param(req, stmt.name)) co_return *bad;
  if (auto bad = user_param(req, stmt.for_user)) co_return *bad;
  json::object body;
  if (auto bad = read_object(req, {"comment"}, body)) co_return *bad;
  TextField comment;
  if (auto bad = text_field(body, "comment", comment)) co_return *bad;
  if (!comment.present)
    co_return json_error(422, "22023", "field \"comment\" is required", {}, "Send {\"comment\": null} to remove it.");
  stmt.comment = comment.optional();
  auto r = co_await run(req, stmt);
  if (r.error) co_return error_of(r);
  co_return no_content();
}

asio::awaitable<HttpResponse> TokenApi::revoke(HttpRequest& req) {
  if (auto bad = only_params(req, {"user"})) co_return *bad;
  pe::DropApiToken stmt;
  if (auto bad = name_param(req, stmt.name)) co_return *bad;
  if (auto bad = user_param(req, stmt.for_user)) co_return *bad;
  auto r = co_await run(req, stmt);
  if (r.error) co_return error_of(r);
  co_return no_content();
}

asio::awaitable<HttpResponse> TokenApi::me(HttpRequest& req) {
  if (auto bad = only_params(req, {})) co_return *bad;
  if (s_.control == nullptr) co_return json_error(503, "58030", "role information is unavailable");
  auto role = co_await s_.control->role_info(req.identity.user);
  if (!role) {
    spdlog::error("GET /api/me of \"{}\": role look-up failed: {}", log_name(req.identity.user), role.error());
    co_return json_error(503, "58030", "could not read role information from the upstream server");
  }
  json::object o;
  o["user"] = req.identity.user;
  o["is_admin"] = role->has_value() && (*role)->is_admin;
  o["via"] = req.identity.via == Identity::Via::cookie ? "cookie" : "bearer";
  o["token_name"] = req.identity.token_name;
  o["expires_at"] = rfc3339(req.identity.expires_at);
  // Whether POST /api/tokens may succeed for these credentials (the web page
  // offers "create" only then).
  o["creates_tokens"] = !via_token(req.identity) || s_.token_sessions_manage_credentials;
  co_return json_response(200, json::serialize(o));
}

asio::awaitable<HttpResponse> TokenApi::users(HttpRequest& req) {
  if (auto bad = only_params(req, {})) co_return *bad;
  if (s_.control == nullptr) co_return json_error(503, "58030", "role information is unavailable");
  // Who may act for others is decided on the role as it is now, as for the
  // statements that do (a superuser demoted a second ago).
  auto me = co_await s_.control->role_info_fresh(req.identity.user);
  if (!me) {
    spdlog::error("GET /api/users of \"{}\": role look-up failed: {}", log_name(req.identity.user), me.error());
    co_return json_error(503, "58030", "could not read role information from the upstream server");
  }
  if (!me->has_value() || !(*me)->is_admin)
    co_return sql_error("42501", "permission denied to list users",
                        "Only tokengate administrators may act for other users.");
  const bool superuser = (*me)->is_superuser;

  // One more row than is listed tells whether the list was cut. Byte order,
  // as the other lists of role names (protected_roles) are sorted.
  auto found = co_await s_.control->query(
      "SELECT rolname FROM pg_catalog.pg_roles WHERE rolcanlogin ORDER BY rolname COLLATE \"C\" LIMIT " +
          std::to_string(kMaxListedUsers + 1),
      {});
  if (!found || found->error || found->columns.size() != 1) {
    spdlog::error("GET /api/users of \"{}\": role list failed: {}", log_name(req.identity.user),
                  !found ? found.error() : found->error ? std::string(found->error->message()) : "unexpected columns");
    co_return json_error(503, "58030", "could not read role information from the upstream server");
  }
  std::vector<std::string> protected_roles;
  if (!superuser) {
    auto p = co_await s_.control->protected_roles();
    if (!p) {
      spdlog::error("GET /api/users of \"{}\": protected roles look-up failed: {}", log_name(req.identity.user), p.error());
      co_return json_error(503, "58030", "could not read role information from the upstream server");
    }
    protected_roles = std::move(*p);
  }
  const bool truncated = found->rows.size() > kMaxListedUsers;
  json::array users;
  for (std::size_t i = 0; i < found->rows.size() && i < kMaxListedUsers; ++i) {
    const auto& name = found->rows[i][0];
    if (!name) continue;
    // The rule of tokenstore::actor::may_act_for: oneself, anyone for a
    // superuser, anyone but protected roles for other administrators.
    if (*name != req.identity.user && !superuser &&
        std::binary_search(protected_roles.begin(), protected_roles.end(), *name))
      continue;
    users.emplace_back(json::string(*name));
  }
  json::object o;
  o["users"] = std::move(users);
  o["truncated"] = truncated;
  co_return json_response(200, json::serialize(o));
}

asio::awaitable<HttpResponse> TokenApi::login(HttpRequest& req) {
  if (auto bad = only_params(req, {})) co_return *bad;
  json::object body;
  if (auto bad = read_object(req, {"user", "password", "token"}, body)) co_return *bad;
  TextField user, password, token;
  if (auto bad = text_field(body, "user", user)) co_return *bad;
  if (auto bad = text_field(body, "password", password)) co_return *bad;
  if (auto bad = text_field(body, "token", token)) co_return *bad;
  // The password's other copies: wiped as soon as the check has them.
  std::fill(req.body.begin(), req.body.end(), '\0');
  body = {};

  HttpLoginRequest login;
  login.peer = req.peer;
  login.application_name = application_name(req);
  if (token.optional()) {
    if (user.present || password.present)
      co_return json_error(422, "22023", "send either \"user\" and \"password\", or \"token\"");
    // As for a Bearer header: a value without the token form is not tried.
    if (!has_token_form(token.value)) co_return json_error(401, "28P01", "invalid API token");
    login.user = token_user_claim(token.value).value_or("");
    login.secret = token.value;
  } else {
    if (!user.optional() || user.value.empty() || !password.optional())
      co_return json_error(422, "22023", "\"user\" and \"password\", or \"token\", are required");
    login.user = std::move(user.value);
    login.secret = std::move(password.value);
  }
  if (!s_.login || s_.tokens == nullptr || s_.control == nullptr)
    co_return json_error(503, "58030", "token store unavailable");
  auto result = co_await s_.login(std::move(login));
  if (!result.ok) {
    if (result.delay.count() > 0) {
      asio::steady_timer wait(co_await asio::this_coro::executor, result.delay);
      co_await wait.async_wait(net::use_nothrow);
    }
    co_return sql_error(result.sqlstate.empty() ? "28P01" : result.sqlstate, result.message, result.detail);
  }

  const std::int64_t now = unix_now();
  if (result.tid) {
    // A token login: the browser keeps the very token it logged in with, for
    // at most http.session_duration. A new token would outlive a revocation
    // of this one, and a token may not be turned into new credentials
    // (token_sessions.manage_credentials); so the browser session is a token
    // session, which ends the moment the token is revoked.
    const std::int64_t lifetime = std::min<std::int64_t>(s_.session_duration.count(), result.expires_at - now);
    if (lifetime < 1) co_return json_error(401, "28P01", "API token expired");
    json::object o;
    o["user"] = result.user;
    o["session"] = result.token_name;
    o["expires_at"] = rfc3339(now + lifetime);
    auto response = json_response(200, json::serialize(o));
    response.headers.push_back({"Set-Cookie", session_cookie(token.value, lifetime, req.tls)});
    std::fill(token.value.begin(), token.value.end(), '\0');
    co_return response;
  }

  // A password login: the cookie holds a token of its own, short-lived:
  // never longer than http.session_duration, nor than the user's policies
  // allow (they bind it as every other token).
  std::int64_t lifetime = s_.session_duration.count();
  auto role = co_await s_.control->role_info(result.user);
  if (!role) {
    spdlog::error("POST /api/login of \"{}\": role look-up failed: {}", log_name(result.user), role.error());
    co_return json_error(503, "58030", "could not read role information from the upstream server");
  }
  if (!role->has_value()) co_return json_error(401, "28P01", "password authentication failed for user \"" + result.user + "\"");
  auto maximum = s_.tokens->effective_maximum(result.user, (*role)->member_of);
  if (!maximum) {
    const auto& e = maximum.error_value();
    co_return sql_error(e.sqlstate(), e.message, e.detail);
  }
  lifetime = std::min<std::int64_t>(lifetime, maximum->max.count());

  pe::CreateApiToken stmt;
  stmt.name = std::string(kWebSessionPrefix) + tokenstore::generate_token_name().substr(6);
  stmt.max_duration = std::to_string(lifetime) + "s";
  stmt.comment = "web session from " + req.client_address;
  req.identity.user = result.user;
  auto r = co_await run(req, stmt, /*as_token_session=*/false);
  if (r.error) co_return error_of(r);
  auto& session_token = std::get<std::string>(r.rows[0][1]);
  const std::int64_t expires_at = std::get<protocol::Timestamp>(r.rows[0][2]).unix_micros / 1'000'000;
  if (r.tid) remember_password_session(*r.tid, expires_at);

  json::object o;
  o["user"] = result.user;
  o["session"] = std::get<std::string>(r.rows[0][0]);
  o["expires_at"] = rfc3339(expires_at);
  auto response = json_response(200, json::serialize(o));
  response.headers.push_back({"Set-Cookie", session_cookie(session_token, std::max<std::int64_t>(1, expires_at - now),
                                                           req.tls)});
  std::fill(session_token.begin(), session_token.end(), '\0');
  co_return response;
}

asio::awaitable<HttpResponse> TokenApi::logout(HttpRequest& req) {
  if (auto bad = only_params(req, {})) co_return *bad;
  // Only a browser session's own token is revoked: a script that presents
  // its long-lived token here must not lose it.
  if (req.identity.token_name.rfind(kWebSessionPrefix, 0) == 0) {
    pe::DropApiToken stmt;
    stmt.name = req.identity.token_name;
    stmt.if_exists = true;
    auto r = co_await run(req, stmt);
    if (r.error) co_return error_of(r);
  }
  auto response = no_content();
  response.headers.push_back({"Set-Cookie", expired_session_cookie(req.tls)});
  co_return response;
}

}  // namespace

void add_token_api(Gateway& gateway, TokenApiServices services) {
  auto api = std::make_shared<TokenApi>(std::move(services));
  RouteOptions authed;  // Bearer or cookie; JSON bodies of at most kMaxApiBodySize
  RouteOptions no_body = authed;
  no_body.max_body = 0;
  gateway.add_route("GET", "/api/tokens", no_body, [api](HttpRequest& r) { return api->list(r); });
  gateway.add_route("POST", "/api/tokens", authed, [api](HttpRequest& r) { return api->create(r); });
  gateway.add_route("PATCH", "/api/tokens/{name}", authed, [api](HttpRequest& r) { return api->set_comment(r); });
  gateway.add_route("DELETE", "/api/tokens/{name}", no_body, [api](HttpRequest& r) { return api->revoke(r); });
  gateway.add_route("GET", "/api/me", no_body, [api](HttpRequest& r) { return api->me(r); });
  gateway.add_route("GET", "/api/users", no_body, [api](HttpRequest& r) { return api->users(r); });
  gateway.add_route("POST", "/api/logout", no_body, [api](HttpRequest& r) { return api->logout(r); });
  RouteOptions open = authed;  // the login itself: credentials in the body
  open.auth = Auth::none;
  gateway.add_route("POST", "/api/login", open, [api](HttpRequest& r) { return api->login(r); });
}

}  // namespace tokengate::http

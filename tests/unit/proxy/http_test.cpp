// The HTTP gateway's sans-io rules: route matching, request-target parsing,
// credentials and CSRF, cookies, JSON errors and SQLSTATE → status.
#include <catch2/catch.hpp>

#include "proxy/http/credentials.hpp"
#include "proxy/http/message.hpp"
#include "proxy/http/router.hpp"

using namespace tokengate::http;

namespace {

HttpRequest request(std::string method, std::vector<Header> headers) {
  HttpRequest r;
  r.method = std::move(method);
  r.headers = std::move(headers);
  return r;
}

std::string describe(const Router::Match& m) {
  std::string s = "status=" + std::to_string(int(m.status)) + " route=" + std::to_string(m.route) + " allow=" + m.allow;
  for (const auto& [k, v] : m.params) s += " " + k + "=" + v;
  return s;
}

}  // namespace

TEST_CASE("router: literal and parameter segments, 404, 405 with Allow", "[http]") {
  Router r;
  const auto list = r.add("GET", "/api/tokens");
  const auto create = r.add("POST", "/api/tokens");
  const auto patch = r.add("PATCH", "/api/tokens/{name}");
  const auto del = r.add("DELETE", "/api/tokens/{name}");

  auto m = r.match("GET", "/api/tokens");
  INFO(describe(m));
  CHECK(m.status == Router::Match::Status::found);
  CHECK(m.route == list);
  CHECK(r.match("POST", "/api/tokens").route == create);

  m = r.match("PATCH", "/api/tokens/ci%2Fdeploy%20bot");
  INFO(describe(m));
  REQUIRE(m.status == Router::Match::Status::found);
  CHECK(m.route == patch);
  CHECK(m.params == std::vector<std::pair<std::string, std::string>>{{"name", "ci/deploy bot"}});
  CHECK(r.match("DELETE", "/api/tokens/x").route == del);

  m = r.match("PUT", "/api/tokens/x");
  CHECK(m.status == Router::Match::Status::method_not_allowed);
  CHECK(m.allow == "PATCH, DELETE");

  CHECK(r.match("GET", "/api/tokens/").status == Router::Match::Status::not_found);  // empty {name}
  CHECK(r.match("GET", "/api/token").status == Router::Match::Status::not_found);
  CHECK(r.match("GET", "/api/tokens/a/b").status == Router::Match::Status::not_found);
  CHECK(r.match("GET", "/API/tokens").status == Router::Match::Status::not_found);  // paths are case-sensitive
  CHECK(r.match("DELETE", "/api/tokens/%zz").status == Router::Match::Status::bad_path);
  // '+' is a plus in a path, a space only in a query string.
  CHECK(r.match("DELETE", "/api/tokens/a+b").params[0].second == "a+b");
}

TEST_CASE("router: programming errors are refused at start-up", "[http]") {
  Router r;
  r.add("GET", "/healthz");
  CHECK_THROWS_AS(r.add("GET", "/healthz"), std::invalid_argument);
  CHECK_THROWS_AS(r.add("GET", "healthz"), std::invalid_argument);
  CHECK_THROWS_AS(r.add("GET", "/a/{}"), std::invalid_argument);
  CHECK_THROWS_AS(r.add("GET", "/a/b{c}"), std::invalid_argument);
  CHECK_NOTHROW(r.add("POST", "/healthz"));
}

TEST_CASE("request targets: origin form only, decoded query, no repeated names", "[http]") {
  TargetError err;
  auto t = parse_target("/api/tokens?user=al%C3%A9x&all=true&&x=a+b#frag", err);
  REQUIRE(t);
  CHECK(t->path == "/api/tokens");
  CHECK(t->query == std::vector<std::pair<std::string, std::string>>{{"user", "al\xC3\xA9x"}, {"all", "true"},
                                                                       {"x", "a b"}});
  CHECK_FALSE(parse_target("http://evil.example/api/tokens", err));
  CHECK(err.message == "the request target must be a path starting with \"/\"");
  CHECK_FALSE(parse_target("*", err));
  CHECK_FALSE(parse_target("/api/tokens?user=a&user=b", err));
  CHECK(err.message == "query parameter \"user\" is given more than once");
  CHECK_FALSE(parse_target("/api/tokens?user=%4", err));
  CHECK(err.message == "malformed percent-encoding in the query string");
  auto flag = parse_target("/x?all", err);
  REQUIRE(flag);
  CHECK(flag->query == std::vector<std::pair<std::string, std::string>>{{"all", ""}});
}

TEST_CASE("percent-decoding", "[http]") {
  CHECK(percent_decode("a%20b%2fc", false) == "a b/c");
  CHECK(percent_decode("a+b", true) == "a b");
  CHECK(percent_decode("a+b", false) == "a+b");
  CHECK(percent_decode("%00", false) == std::string(1, '\0'));  // decoded; valid_text refuses it later
  CHECK_FALSE(percent_decode("%", false));
  CHECK_FALSE(percent_decode("%4", false));
  CHECK_FALSE(percent_decode("%g0", false));
}

TEST_CASE("credentials: Bearer wins over the cookie, other schemes are refused", "[http]") {
  using Kind = Credential::Kind;
  auto c = find_credential(request("GET", {{"authorization", "Bearer  abc.def.ghi "}, {"Cookie", "auth_token=zzz"}}));
  CHECK(c.kind == Kind::bearer);
  CHECK(c.token == "abc.def.ghi");

  c = find_credential(request("GET", {{"Cookie", "theme=dark; auth_token=\"tok.en.x\"; other=1"}}));
  CHECK(c.kind == Kind::cookie);
  CHECK(c.token == "tok.en.x");

  c = find_credential(request("GET", {{"Cookie", "a=1"}, {"Cookie", "auth_token=first"}, {"Cookie", "auth_token=second"}}));
  CHECK(c.token == "first");

  CHECK(find_credential(request("GET", {})).kind == Kind::none);
  CHECK(find_credential(request("GET", {{"Cookie", "auth_token="}})).kind == Kind::none);
  CHECK(find_credential(request("GET", {{"Cookie", "xauth_token=a"}})).kind == Kind::none);

  c = find_credential(request("GET", {{"Authorization", "Basic YWRtaW46YWRtaW4="}, {"Cookie", "auth_token=t"}}));
  CHECK(c.kind == Kind::malformed);
  CHECK(c.problem == "unsupported authorization scheme; use Bearer");
  CHECK(find_credential(request("GET", {{"Authorization", "Bearer"}})).kind == Kind::malformed);
  CHECK(find_credential(request("GET", {{"Authorization", "Bearer a b"}})).kind == Kind::malformed);
  c = find_credential(request("GET", {{"Authorization", "Bearer a"}, {"Authorization", "Bearer b"}}));
  CHECK(c.kind == Kind::malformed);
  CHECK(c.problem == "more than one Authorization header");
}

TEST_CASE("CSRF: only unsafe methods authenticated by the cookie need the header", "[http]") {
  using Kind = Credential::Kind;
  CHECK(csrf_refused(request("POST", {}), Kind::cookie));
  CHECK(csrf_refused(request("DELETE", {{"X-Tokengate-CSRF", "  "}}), Kind::cookie));
  CHECK_FALSE(csrf_refused(request("PATCH", {{"x-tokengate-csrf", "1"}}), Kind::cookie));
  CHECK_FALSE(csrf_refused(request("GET", {}), Kind::cookie));
  CHECK_FALSE(csrf_refused(request("HEAD", {}), Kind::cookie));
  CHECK_FALSE(csrf_refused(request("POST", {}), Kind::bearer));
}

TEST_CASE("token form and the unverified user claim", "[http]") {
  // {"alg":"HS256"} . {"user":"alice","tid":"x"} . sig
  const std::string token = "eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyIjoiYWxpY2UiLCJ0aWQiOiJ4In0.c2ln";
  CHECK(has_token_form(token));
  CHECK(token_user_claim(token) == "alice");
  CHECK(has_token_form("eyJ.x"));  // malformed, still a token attempt
  CHECK_FALSE(has_token_form("hunter2"));
  CHECK_FALSE(has_token_form("eyJnotoken"));
  CHECK_FALSE(token_user_claim("eyJhbGciOiJIUzI1NiJ9.!!!.c2ln"));
  CHECK_FALSE(token_user_claim("eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyIjoxfQ.c2ln"));  // {"user":1}
  CHECK_FALSE(token_user_claim("no dots"));
}

TEST_CASE("session cookies", "[http]") {
  CHECK(session_cookie("abc.def.ghi", 43200, false) ==
        "auth_token=abc.def.ghi; Path=/; Max-Age=43200; HttpOnly; SameSite=Strict");
  CHECK(session_cookie("t", 60, true) == "auth_token=t; Path=/; Max-Age=60; HttpOnly; SameSite=Strict; Secure");
  CHECK(expired_session_cookie(true) == "auth_token=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict; Secure");
}

TEST_CASE("JSON errors and statuses", "[http]") {
  auto e = json_error(422, "22023", "invalid duration \"x\"", "Expected a number at position 1.");
  CHECK(e.status == 422);
  CHECK(e.content_type == "application/json");
  CHECK(e.body == R"({"code":"22023","message":"invalid duration \"x\"","detail":"Expected a number at position 1."})");
  CHECK(json_error(401, "28000", "authentication required", {}, "log in").body ==
        R"({"code":"28000","message":"authentication required","hint":"log in"})");

  CHECK(status_for_sqlstate("28P01") == 401);
  CHECK(status_for_sqlstate("28000") == 401);
  CHECK(status_for_sqlstate("42501") == 403);
  CHECK(status_for_sqlstate("42704") == 404);
  CHECK(status_for_sqlstate("42710") == 409);
  CHECK(status_for_sqlstate("22023") == 422);
  CHECK(status_for_sqlstate("22001") == 422);
  CHECK(status_for_sqlstate("42622") == 422);
  CHECK(status_for_sqlstate("42601") == 422);
  CHECK(status_for_sqlstate("54000") == 413);
  CHECK(status_for_sqlstate("58030") == 503);
  CHECK(status_for_sqlstate("08006") == 503);
  CHECK(status_for_sqlstate("53300") == 503);
  CHECK(status_for_sqlstate("XX000") == 500);
  CHECK(status_for_sqlstate("") == 500);
  CHECK(sql_error("42710", "API token \"a\" already exists").status == 409);
}

TEST_CASE("text helpers", "[http]") {
  CHECK(rfc3339(0) == "1970-01-01T00:00:00Z");
  CHECK(rfc3339(1798565843) == "2026-12-29T17:37:23Z");
  CHECK(valid_text("plain"));
  CHECK(valid_text("\xD0\x94\xD0\xB5\xD0\xBF\xD0\xBB\xD0\xBE\xD0\xB9"));  // Деплой
  CHECK(valid_text("\xF0\x9F\x94\x91"));                                  // U+1F511
  CHECK_FALSE(valid_text(std::string("a\0b", 3)));
  CHECK_FALSE(valid_text("\xC3"));              // truncated
  CHECK_FALSE(valid_text("\xC0\xAF"));          // overlong '/'
  CHECK_FALSE(valid_text("\xED\xA0\x80"));      // a surrogate
  CHECK_FALSE(valid_text("\xF4\x90\x80\x80"));  // beyond U+10FFFF
  CHECK_FALSE(valid_text("\xFF"));
  CHECK(iequals("Content-Type", "content-type"));
  CHECK_FALSE(iequals("Content-Type", "Content-Typ"));
  HttpRequest r;
  r.headers = {{"User-Agent", std::string(300, 'u')}};
  CHECK(application_name(r) == "http: " + std::string(200, 'u'));
  CHECK(application_name(HttpRequest{}) == "http: ");
}

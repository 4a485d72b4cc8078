// Credentials in HTTP requests, the CSRF rule and session cookies (see credentials.hpp).
#include "proxy/http/credentials.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include "tokenstore/jwt.hpp"

namespace tokengate::http {

namespace {

std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

Credential find_credential(const HttpRequest& request) {
  Credential c;
  const std::string* auth = nullptr;
  int count = 0;
  for (const auto& h : request.headers) {
    if (iequals(h.name, "Authorization")) {
      if (count++ == 0) auth = &h.value;
    }
  }
  if (count > 1) {
    c.kind = Credential::Kind::malformed;
    c.problem = "more than one Authorization header";
    return c;
  }
  if (auth != nullptr) {
    std::string_view v = trim(*auth);
    const auto space = v.find(' ');
    const std::string_view scheme = v.substr(0, space);
    if (!iequals(scheme, "Bearer")) {
      c.kind = Credential::Kind::malformed;
      c.problem = "unsupported authorization scheme; use Bearer";
      return c;
    }
    std::string_view token = space == std::string_view::npos ? std::string_view{} : trim(v.substr(space + 1));
    if (token.empty() || token.find_first_of(" \t") != std::string_view::npos) {
      c.kind = Credential::Kind::malformed;
      c.problem = "the Authorization header must be \"Bearer <token>\"";
      return c;
    }
    c.kind = Credential::Kind::bearer;
    c.token = std::string(token);
    return c;
  }
  if (auto cookie = cookie_value(request, kAuthCookie); cookie && !cookie->empty()) {
    c.kind = Credential::Kind::cookie;
    c.token = std::move(*cookie);
  }
  return c;
}

std::optional<std::string> cookie_value(const HttpRequest& request, std::string_view name) {
  for (const auto& h : request.headers) {
    if (!iequals(h.name, "Cookie")) continue;
    std::string_view rest = h.value;
    while (!rest.empty()) {
      const auto semi = rest.find(';');
      std::string_view pair = trim(rest.substr(0, semi));
      rest = semi == std::string_view::npos ? std::string_view{} : rest.substr(semi + 1);
      const auto eq = pair.find('=');
      if (eq == std::string_view::npos || trim(pair.substr(0, eq)) != name) continue;
      std::string_view value = trim(pair.substr(eq + 1));
      if (value.size() >= 2 && value.front() == '"' && value.back() == '"') value = value.substr(1, value.size() - 2);
      return std::string(value);
    }
  }
  return std::nullopt;
}

bool is_safe_method(std::string_view method) noexcept {
  return method == "GET" || method == "HEAD" || method == "OPTIONS";
}

bool csrf_refused(const HttpRequest& request, Credential::Kind kind) noexcept {
  if (kind != Credential::Kind::cookie || is_safe_method(request.method)) return false;
  const std::string* h = request.header(kCsrfHeader);
  return h == nullptr || trim(*h).empty();
}

bool has_token_form(std::string_view secret) noexcept {
  return tokenstore::looks_like_token(secret) ||
         (secret.substr(0, 3) == "eyJ" && secret.find('.') != std::string_view::npos);
}

std::optional<std::string> token_user_claim(std::string_view token) {
  if (token.size() > tokenstore::max_token_length) return std::nullopt;
  const auto first = token.find('.');
  if (first == std::string_view::npos) return std::nullopt;
  const auto second = token.find('.', first + 1);
  if (second == std::string_view::npos) return std::nullopt;
  std::string payload;
  if (!tokenstore::base64url_decode(token.substr(first + 1, second - first - 1), payload)) return std::nullopt;
  boost::system::error_code ec;
  auto v = boost::json::parse(payload, ec);
  if (ec || !v.is_object()) return std::nullopt;
  const auto* user = v.as_object().if_contains("user");
  if (user == nullptr || !user->is_string()) return std::nullopt;
  return std::string(user->as_string());
}

std::string session_cookie(std::string_view token, std::int64_t max_age_seconds, bool secure) {
  std::string out(kAuthCookie);
  out += '=';
  out += token;
  out += "; Path=/; Max-Age=" + std::to_string(max_age_seconds) + "; HttpOnly; SameSite=Strict";
  if (secure) out += "; Secure";
  return out;
}

std::string expired_session_cookie(bool secure) {
  std::string out(kAuthCookie);
  out += "=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict";
  if (secure) out += "; Secure";
  return out;
}

}  // namespace tokengate::http

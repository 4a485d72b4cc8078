// Where a request's credentials come from (Authorization: Bearer or the
// auth_token cookie), the CSRF rule for cookie-authenticated requests, and
// the Set-Cookie lines of a browser login. Sans-io: no verification here,
// only the rules about headers; the gateway verifies tokens as logins.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "proxy/http/message.hpp"

namespace tokengate::http {

// The cookie /api/login sets and every route accepts.
inline constexpr std::string_view kAuthCookie = "auth_token";
// A request authenticated by the cookie that changes state must carry this
// header (any non-empty value). Browsers send it cross-origin only after a
// CORS preflight, which tokengate never approves, so another site's page
// cannot forge such a request with the user's cookie.
inline constexpr std::string_view kCsrfHeader = "X-Tokengate-CSRF";

struct Credential {
  enum class Kind {
    none,       // neither Authorization nor the cookie
    bearer,     // Authorization: Bearer <token>
    cookie,     // auth_token=<token>
    malformed,  // an Authorization header that is not one Bearer token
  };
  Kind kind = Kind::none;
  std::string token;    // with bearer and cookie
  std::string problem;  // with malformed: what is wrong, for the 401 answer
};

// An Authorization header wins over the cookie and is never combined with
// it: a script's explicit token decides, and a bad one is refused rather than
// replaced by whatever cookie the client also holds. Only the Bearer scheme
// (RFC 6750) is accepted; Basic would put a password in every request.
[[nodiscard]] Credential find_credential(const HttpRequest& request);

// The value of cookie `name` in the request's Cookie headers (RFC 6265
// §5.4 order: the first one), nullopt when absent.
[[nodiscard]] std::optional<std::string> cookie_value(const HttpRequest& request, std::string_view name);

// GET, HEAD and OPTIONS change nothing; every other method may.
[[nodiscard]] bool is_safe_method(std::string_view method) noexcept;

// True when a cookie-authenticated request is refused for lack of the CSRF
// header: an unsafe method without kCsrfHeader.
[[nodiscard]] bool csrf_refused(const HttpRequest& request, Credential::Kind kind) noexcept;

// What the wire login treats as a token: one of our tokens' shape, or any
// `eyJ…` text with a dot (a malformed or `"alg":"none"` token is still a
// token attempt, audited and throttled as one, never a password).
[[nodiscard]] bool has_token_form(std::string_view secret) noexcept;

// The `user` claim of a token, read without verifying anything: the user the
// login check then verifies the token for (it must be the token's owner, so
// a forged claim fails with the signature). nullopt when unreadable.
[[nodiscard]] std::optional<std::string> token_user_claim(std::string_view token);

// Set-Cookie values: the session cookie (HttpOnly so page scripts cannot read
// it, SameSite=Strict so other sites' requests do not carry it, Secure over
// TLS), and the line that removes it.
[[nodiscard]] std::string session_cookie(std::string_view token, std::int64_t max_age_seconds, bool secure);
[[nodiscard]] std::string expired_session_cookie(bool secure);

}  // namespace tokengate::http

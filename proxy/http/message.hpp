// HTTP requests and responses as the gateway's routes see them: plain values
// without Beast or Asio, so route code compiles quickly and the rules around
// them (JSON errors, SQLSTATE → status) are unit-tested without sockets.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tokenstore/jwt.hpp"

namespace tokengate::http {

struct Header {
  std::string name;
  std::string value;
};

// Who a request acts for, once the gateway authenticated it.
struct Identity {
  enum class Via {
    none,    // the route needs no credentials
    bearer,  // Authorization: Bearer <token>
    cookie,  // the auth_token cookie
  };
  Via via = Via::none;
  std::string user;  // the role the request acts as (the token's owner)
  tokenstore::tid_t tid{};
  std::string token_name;
  std::int64_t expires_at = 0;  // unix seconds
  std::string token;            // the credential itself: never log it, never echo it
};

struct HttpRequest {
  std::string method;  // as sent, e.g. "GET"
  std::string target;  // the raw request-target, e.g. "/api/tokens?user=alice"
  std::string path;    // the target up to '?', still percent-encoded
  // Decoded query parameters in order; a name given twice is refused before
  // any route runs, so each name appears at most once.
  std::vector<std::pair<std::string, std::string>> query;
  // Decoded `{name}` segments of the route pattern.
  std::vector<std::pair<std::string, std::string>> params;
  std::vector<Header> headers;
  std::string body;
  std::string peer;  // "ip:port", for logs
  std::string client_address;  // the IP alone, for the audit log and throttling
  bool tls = false;
  bool peer_is_local = false;  // loopback
  Identity identity;

  // Case-insensitive; the first header of that name.
  [[nodiscard]] const std::string* header(std::string_view name) const noexcept;
  [[nodiscard]] const std::string* query_param(std::string_view name) const noexcept;
  [[nodiscard]] const std::string* param(std::string_view name) const noexcept;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<Header> headers;  // besides Content-Type and Content-Length
  std::string body;
  bool close = false;  // close the connection after sending it
};

// The JSON error every failure is answered with:
//   {"code": "<SQLSTATE>", "message": "…", "detail": "…", "hint": "…"}
// (detail and hint only when not empty), the fields of PostgreSQL's
// ErrorResponse, so a client handles SQL and HTTP errors alike.
[[nodiscard]] HttpResponse json_error(int status, std::string_view sqlstate, std::string_view message,
                                      std::string_view detail = {}, std::string_view hint = {});
// An error whose HTTP status follows from its SQLSTATE (status_for_sqlstate).
[[nodiscard]] HttpResponse sql_error(std::string_view sqlstate, std::string_view message,
                                     std::string_view detail = {}, std::string_view hint = {});
[[nodiscard]] HttpResponse json_response(int status, std::string body);

// The HTTP status for an error of this SQLSTATE: 401 for failed
// authentication (28xxx), 403 for permission (42501), 404 for a missing
// token or role (42704), 409 for a name in use (42710), 413/431 for limits,
// 422 for values the statement refuses (22xxx, 42601, 42622, 42P02),
// 503 when tokengate or the upstream cannot answer (08xxx, 53xxx, 57xxx,
// 58xxx), 500 otherwise.
[[nodiscard]] int status_for_sqlstate(std::string_view sqlstate) noexcept;

// The standard reason phrase ("Not Found"), "" for codes without one here.
[[nodiscard]] std::string_view reason_phrase(int status) noexcept;

// Unix seconds as RFC 3339 in UTC: 2026-12-28T17:57:23Z.
[[nodiscard]] std::string rfc3339(std::int64_t unix_seconds);

// True when `text` is valid UTF-8 without NUL characters: what PostgreSQL
// accepts as text in a UTF8 database, and what names and comments must be.
[[nodiscard]] bool valid_text(std::string_view text) noexcept;

// The application_name of an HTTP request for logins and the audit log:
// "http: " and the User-Agent (cut to 200 bytes), so the log shows both
// where a login came from and with what.
[[nodiscard]] std::string application_name(const HttpRequest& request);

// Case-insensitive ASCII comparison (HTTP header names, auth schemes).
[[nodiscard]] bool iequals(std::string_view a, std::string_view b) noexcept;

}  // namespace tokengate::http

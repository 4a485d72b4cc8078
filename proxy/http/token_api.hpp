// The REST API for tokens and the browser login on the HTTP gateway:
//   GET    /api/tokens[?user=U|?all=true]   SHOW API TOKENS [FOR USER U | FOR ALL USERS]
//   POST   /api/tokens[?user=U]             CREATE API TOKEN (the value appears only here)
//   PATCH  /api/tokens/{name}[?user=U]      ALTER API TOKEN … SET COMMENT
//   DELETE /api/tokens/{name}[?user=U]      DROP API TOKEN
//   POST   /api/login, POST /api/logout     the auth_token cookie (a short-lived token)
//   GET    /api/me                          who the credentials stand for
// Each operation is the API TOKEN statement run through net::LocalSql, so
// permissions, policies, errors and the audit log are those of the SQL.
#pragma once

#include <chrono>

#include "proxy/http/gateway.hpp"

namespace tokengate {
class AuditLog;
}
namespace tokengate::tokenstore {
class token_service;
}
namespace tokengate::net {
class ControlPool;
}

namespace tokengate::http {

// Browser sessions are tokens named with this prefix (and a random part),
// commented "web session from <address>"; POST /api/logout revokes only those.
inline constexpr std::string_view kWebSessionPrefix = "web_session_";

struct TokenApiServices {
  tokenstore::token_service* tokens = nullptr;  // null: every call answers 503 58030
  net::ControlPool* control = nullptr;          // role facts, as for the SQL statements
  AuditLog* audit = nullptr;                    // may be null (audit_log = off)
  LoginCheck login;                             // the same check the gateway authenticates with
  std::chrono::seconds session_duration{12 * 3600};  // http.session_duration
};

// Registers the routes above on `gateway`. The services must outlive it.
void add_token_api(Gateway& gateway, TokenApiServices services);

}  // namespace tokengate::http

// The REST API for tokens and the browser login on the HTTP gateway:
//   GET    /api/tokens[?user=U|?all=true]   SHOW API TOKENS [FOR USER U | FOR ALL USERS]
//   POST   /api/tokens[?user=U]             CREATE API TOKEN (the value appears only here)
//   PATCH  /api/tokens/{name}[?user=U]      ALTER API TOKEN … SET COMMENT
//   DELETE /api/tokens/{name}[?user=U]      DROP API TOKEN
//   POST   /api/login, POST /api/logout     the auth_token cookie (a short-lived token)
//   GET    /api/me                          who the credentials stand for
//   GET    /api/users                       roles an administrator may act for (the web page's picker)
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
class SessionRegistry;
}

namespace tokengate::http {

// A password login's browser session is a token named with this prefix (and
// a random part), commented "web session from <address>"; POST /api/logout
// revokes only those.
inline constexpr std::string_view kWebSessionPrefix = "web_session_";
// Web sessions this process keeps track of (see TokenApi::password_sessions_);
// beyond this many the one closest to expiry is forgotten. A million logins
// within http.session_duration is far more than one server sees, and the
// table stays under 100 MiB.
inline constexpr std::size_t kMaxTrackedWebSessions = 1'000'000;

// GET /api/users lists at most this many roles (and says when it cut the
// list): a picker of more is of no use to a person, and ?user= still reaches
// any role. 1,000 names of at most 63 bytes keep the answer under 70 KB.
inline constexpr std::size_t kMaxListedUsers = 1000;

struct TokenApiServices {
  tokenstore::token_service* tokens = nullptr;  // null: every call answers 503 58030
  net::ControlPool* control = nullptr;          // role facts, as for the SQL statements
  AuditLog* audit = nullptr;                    // may be null (audit_log = off)
  LoginCheck login;                             // the same check the gateway authenticates with
  std::chrono::seconds session_duration{12 * 3600};  // http.session_duration
  // token_sessions.manage_credentials: whether requests authenticated by a
  // token (not by a password login's web session) may create tokens.
  bool token_sessions_manage_credentials = false;
  // Live sessions: a revocation answers once the sessions it ended are gone
  // upstream, as DROP API TOKEN on the wire does. May be null.
  net::SessionRegistry* sessions = nullptr;
};

// Registers the routes above on `gateway`. The services must outlive it.
void add_token_api(Gateway& gateway, TokenApiServices services);

}  // namespace tokengate::http

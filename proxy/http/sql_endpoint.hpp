// POST /sql: SQL over HTTP in the @neondatabase/serverless driver's protocol,
// on the gateway. The connection string's password (a password or a token)
// or an Authorization: Bearer token authenticates the request as a wire
// login would; statements run on pooled upstream connections; API TOKEN
// statements are answered by tokengate, as on the wire.
#pragma once

#include <cstddef>

#include "proxy/http/gateway.hpp"
#include "proxy/net/relay.hpp"

namespace tokengate {
class AuditLog;
}
namespace tokengate::tokenstore {
class token_service;
}
namespace tokengate::net {
class ControlPool;
class SessionRegistry;
class StoreWorker;
}
namespace tokengate::pool {
class UpstreamPool;
}

namespace tokengate::http {

struct SqlEndpointServices {
  // Every pointer must outlive the gateway. The pool is required; null
  // tokens/control make API TOKEN statements fail as on the wire (58030).
  pool::UpstreamPool* pool = nullptr;
  tokenstore::token_service* tokens = nullptr;
  net::ControlPool* control = nullptr;
  AuditLog* audit = nullptr;  // may be null (audit_log = off)
  LoginCheck login;           // connection-string credentials, checked as a wire login
  // The largest answer (`http.max_response_size`): beyond it the request
  // fails with 507 and the upstream connection is closed.
  std::size_t max_response_size = 10 * 1024 * 1024;
  // `token_sessions.manage_credentials`: requests authenticated by a token
  // may change passwords (they may never create tokens otherwise: the token
  // service refuses that itself). When the setting is off and
  // `changes_role_password` is set (the relay's classifier of CREATE/ALTER
  // ROLE … PASSWORD), such statements are refused with the relay's 42501.
  bool token_sessions_manage_credentials = false;
  bool (*changes_role_password)(std::string_view sql) = nullptr;
  // Live sessions: a request authenticated by a token is one while it runs,
  // so that revoking the token (or its expiry, or a shutdown) ends it as it
  // ends a wire session: its upstream backend is terminated over `control`
  // and nothing it sent commits after the revocation is answered. Null: not
  // registered (tests of the endpoint alone).
  net::SessionRegistry* sessions = nullptr;
  // Where the token service's calls run (off the I/O threads); required with `tokens`.
  net::StoreWorker* store = nullptr;
  // SHOW TOKENGATE SESSIONS | STATUS | CONFIG for administrators: the
  // server's rows, as on the wire. Unset: those statements fail with 58030.
  net::AdminView admin_view;
};

// Registers POST /sql on `gateway`.
void add_sql_endpoint(Gateway& gateway, SqlEndpointServices services);

}  // namespace tokengate::http

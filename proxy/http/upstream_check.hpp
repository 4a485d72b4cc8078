// A password checked by the upstream itself, for POST /api/login when
// `upstream.auth = password`: tokengate logs in upstream with it exactly as
// a wire session would (the same machine and driver, answering only what
// upstream.require_auth allows), then says Terminate. Included by server.cpp
// (Asio).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <string>

#include "proxy/auth/secret.hpp"
#include "proxy/net/endpoint.hpp"
#include "proxy/protocol/messages.hpp"
#include "proxy/session/upstream_login.hpp"

namespace tokengate::net {
class UpstreamTlsContext;
}

namespace tokengate::http {

struct UpstreamCheck {
  enum class Outcome {
    accepted,  // the upstream logged the role in
    refused,   // the upstream answered an ErrorResponse (wrong password, no such role, …)
    failed,    // tokengate could not ask: connection, TLS, timeout, malformed answer
  };
  Outcome outcome = Outcome::failed;
  // refused: the upstream's own fields, as a wire client would see them;
  // failed: tokengate's 08006 / 08P01.
  std::string sqlstate;
  std::string message;
  std::string detail;
  std::string reason;  // for the log and the audit log; never the password
};

// `startup` names user and database; `methods` are the requests answered
// (upstream.require_auth); `deadline` bounds the whole exchange.
boost::asio::awaitable<UpstreamCheck> check_password_upstream(const net::Endpoint& upstream,
                                                              const net::UpstreamTlsContext* tls,
                                                              protocol::StartupMessage startup,
                                                              auth::SecretString password,
                                                              session::UpstreamAuthMethods methods,
                                                              std::chrono::steady_clock::time_point deadline);

// sqlstate/message/detail of one serialized ErrorResponse (a login
// decision's rejection); empty fields when `message` is not one.
struct ErrorText {
  std::string sqlstate;
  std::string message;
  std::string detail;
};
[[nodiscard]] ErrorText error_text(const protocol::Bytes& message);

}  // namespace tokengate::http

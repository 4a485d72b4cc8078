// Runs one API TOKEN statement for a session: gathers the upstream facts it
// needs (admin status, roles) over the control pool, calls the token service
// through session::execute, and writes the audit event. Included only by
// relay.cpp (Asio).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <string>

#include "parser_ext/parser.hpp"
#include "proxy/net/relay.hpp"
#include "proxy/session/token_sql.hpp"

namespace tokengate::net {

class LocalSql {
 public:
  // Both must outlive the LocalSql.
  LocalSql(const RelayServices& services, const SessionInfo& info) : services_(services), info_(info) {}

  boost::asio::awaitable<session::LocalResult> run(const parser_ext::Statement& stmt, char tx_status);

 private:
  const RelayServices& services_;
  const SessionInfo& info_;
};

// The ErrorResponse for a pre-parser error (42601 with position, 42P02, 42622).
protocol::ErrorResponse local_sql_error(const parser_ext::ParseError& e);

}  // namespace tokengate::net

// The relay phase of a client session: the driver that performs what the
// sans-io session::Relay machine says, over the client's and the upstream's
// streams. Included only by the Asio translation units.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include "parser_ext/ast.hpp"
#include "proxy/net/endpoint.hpp"
#include "proxy/net/session_registry.hpp"
#include "proxy/net/stream.hpp"
#include "proxy/protocol/messages.hpp"
#include "proxy/session/memory.hpp"

namespace tokengate::tokenstore {
class token_service;
}
namespace tokengate {
class AuditLog;
}

namespace tokengate::net {

// The rows of SHOW TOKENGATE SESSIONS | STATUS | CONFIG, from the server.
using AdminView = std::function<boost::asio::awaitable<std::vector<std::vector<protocol::Value>>>(
    parser_ext::ShowTokengateView::View)>;

class ControlPool;
class StoreWorker;

// What the relay needs from the rest of the server; every pointer may be
// null when that part is not configured (then API TOKEN statements fail with
// 58030 "token store unavailable", and nothing is waited for).
struct RelayServices {
  tokenstore::token_service* tokens = nullptr;
  // Looks up upstream facts about roles (admin status, existence,
  // memberships) for API TOKEN statements.
  ControlPool* control = nullptr;
  AuditLog* audit = nullptr;
  // Where DROP API TOKEN waits for the sessions it ended.
  SessionRegistry* sessions = nullptr;
  session::MemoryBudget* memory = nullptr;  // `relay.memory_limit`
  // Where the token service's calls run, off the I/O threads; required with
  // `tokens` (without it, API TOKEN statements fail with 58030).
  StoreWorker* store = nullptr;
  std::size_t max_inspected_message = session::kDefaultMaxInspectedMessage;  // `relay.max_inspected_message`
  std::size_t session_memory_limit = session::kDefaultSessionMemoryLimit;    // `relay.session_memory_limit`
  // Token sessions may change passwords (CREATE/ALTER ROLE … PASSWORD).
  bool token_sessions_manage_credentials = false;
  // SHOW TOKENGATE SESSIONS | STATUS | CONFIG: the rows (session::columns_of),
  // from the server; unset: 58030. A coroutine: STATUS may count the token
  // store, which runs on the store worker.
  AdminView admin_view;
};

struct SessionInfo {
  std::string user;
  std::string database;
  std::string application_name;
  std::string peer;  // client address for logs
  char tx_status = 'I';
  bool via_token = false;  // logged in with an API token
  std::optional<tokenstore::tid_t> tid;
  // Where the upstream backend runs (the server's setting, which outlives
  // the session) and its own key: a session that is ended (revocation,
  // expiry, shutdown, a limit) cancels what runs there.
  const Endpoint* upstream = nullptr;
  protocol::BackendKeyData upstream_key;
  // As the upstream reported them at login (ParameterStatus).
  bool standard_conforming_strings = true;
  std::string client_encoding = "UTF8";
  // What SHOW TOKENGATE SESSIONS shows; the relay keeps its figures current.
  std::shared_ptr<admin::SessionStats> stats;
  // The upstream connection is the pool's (pool.wire_sessions): if the client
  // leaves it idle, it is kept open for the pool (upstream_kept()).
  bool pooled_upstream = false;
};

class Relay {
 public:
  // `services` and both streams must outlive the relay (and on_done).
  Relay(asio::any_io_executor ex, ByteStream& client, ByteStream& upstream, const RelayServices& services,
        SessionInfo info);
  ~Relay();
  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;

  // The session's entry in services.sessions, so that DROP API TOKEN of its
  // own token does not wait for itself.
  void set_registry_handle(SessionRegistry::Handle h);

  // Relays until either side closes, the client terminates, or end() is
  // called, then posts on_done. `pending`: client bytes already read after
  // the login. When the session was ended by end() or a limit, on_done comes
  // only once the upstream backend has gone (or a timeout passed): nothing it
  // was sent runs after. No coroutine frame waits meanwhile, so an idle
  // session costs only the relay's own state.
  void start(protocol::Bytes pending, std::function<void()> on_done);

  // Ends the session with this error (e.g. FATAL 57P01 "API token revoked"):
  // cancels what runs upstream and ends the backend. Call it on the
  // session's executor.
  void end(protocol::ErrorResponse reason);
  // Ends the session with this error once it is idle outside a transaction
  // block (at once if it is now): a drain. Call it on the session's executor.
  void end_when_idle(protocol::ErrorResponse reason);

  // Pooled upstream, once done: the client left the backend idle and the
  // upstream stream was left open (a plain socket back in its ByteStream),
  // ready for the pool's reset. Otherwise the upstream stream is closed.
  [[nodiscard]] bool upstream_kept() const noexcept;
  // Pooled upstream: the settings the backend reported during the session.
  [[nodiscard]] const std::vector<std::pair<std::string, std::string>>& parameter_changes() const noexcept;

 private:
  struct State;
  std::shared_ptr<State> s_;
};

}  // namespace tokengate::net

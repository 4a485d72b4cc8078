// The Asio driver: listeners, I/O threads, and one coroutine per client
// session that performs what the sans-io state machines ask for.
#include "proxy/net/server.hpp"

#include <spdlog/spdlog.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <csignal>
#include <cstdio>
#include <thread>
#include <unistd.h>

#include "proxy/net/buffer_pool.hpp"
#include "proxy/net/cancel_registry.hpp"
#include "proxy/net/stream.hpp"
#include "proxy/protocol/frame.hpp"
#include "proxy/session/client_handshake.hpp"
#include "proxy/session/client_stream.hpp"
#include "proxy/session/upstream_login.hpp"

namespace tokengate::net {

using namespace std::chrono_literals;
using namespace asio::experimental::awaitable_operators;
using tcp = asio::ip::tcp;
using unix_socket = asio::local::stream_protocol;
using protocol::ByteView;
using protocol::Bytes;

namespace {

// Upstream messages during login are small (ParameterStatus, errors); this
// bounds what a misbehaving upstream can make us buffer before relaying.
constexpr std::size_t kMaxLoginMessageLength = 1024 * 1024;
// How long a forwarded CancelRequest may take to be delivered.
constexpr auto kCancelTimeout = 5s;

ByteView view(const Bytes& b, std::size_t n) { return ByteView(b.data(), n); }

Bytes fatal(std::string sqlstate, std::string message) {
  Bytes out;
  protocol::ErrorResponse::make("FATAL", std::move(sqlstate), std::move(message)).serialize(out);
  return out;
}

asio::awaitable<std::tuple<error_code, std::unique_ptr<ByteStream>>> connect_to(const Endpoint& ep) {
  auto exec = co_await asio::this_coro::executor;
  if (ep.is_unix()) {
    unix_socket::socket sock(exec);
    auto [ec] = co_await sock.async_connect(unix_socket::endpoint(ep.unix_path()), use_nothrow);
    if (ec) co_return std::make_tuple(ec, std::unique_ptr<ByteStream>());
    co_return std::make_tuple(ec, std::unique_ptr<ByteStream>(
                                      std::make_unique<SocketStream<unix_socket::socket>>(std::move(sock))));
  }
  tcp::resolver resolver(exec);
  auto [rec, results] = co_await resolver.async_resolve(ep.host, std::to_string(ep.port), use_nothrow);
  if (rec) co_return std::make_tuple(rec, std::unique_ptr<ByteStream>());
  tcp::socket sock(exec);
  auto [ec, connected] = co_await asio::async_connect(sock, results, use_nothrow);
  if (ec) co_return std::make_tuple(ec, std::unique_ptr<ByteStream>());
  error_code ignored;
  sock.set_option(tcp::no_delay(true), ignored);
  co_return std::make_tuple(ec, std::unique_ptr<ByteStream>(
                                    std::make_unique<SocketStream<tcp::socket>>(std::move(sock))));
}

}  // namespace

struct Server::Impl {
  explicit Impl(Config c) : config(std::move(c)) {}

  asio::io_context& next_context() { return *contexts[next++ % contexts.size()]; }

  asio::awaitable<void> session(std::unique_ptr<ByteStream> client, std::string peer);
  asio::awaitable<void> forward_cancel(protocol::CancelRequest request);
  asio::awaitable<void> pump_client_to_upstream(ByteStream& client, ByteStream& upstream, Bytes pending,
                                                bool& client_broke_protocol);
  asio::awaitable<void> pump_upstream_to_client(ByteStream& upstream, ByteStream& client);
  template <typename Acceptor>
  asio::awaitable<void> accept_loop(Acceptor& acceptor, std::string name);
  asio::awaitable<void> drain_then_stop();
  void stop_all();

  Config config;
  CancelRegistry cancels;
  std::vector<std::unique_ptr<asio::io_context>> contexts;
  std::atomic<std::size_t> next{0};
  std::atomic<int> active_sessions{0};
  std::vector<std::unique_ptr<tcp::acceptor>> tcp_acceptors;
  std::vector<std::unique_ptr<unix_socket::acceptor>> unix_acceptors;
  std::vector<std::string> unix_paths;
};

template <typename Acceptor>
asio::awaitable<void> Server::Impl::accept_loop(Acceptor& acceptor, std::string name) {
  for (;;) {
    auto& ctx = next_context();
    auto [ec, sock] = co_await acceptor.async_accept(ctx, use_nothrow);
    if (ec) {
      if (!acceptor.is_open()) co_return;
      // Out of descriptors or a connection reset before accept: keep serving.
      spdlog::warn("accept on {} failed: {}", name, ec.message());
      asio::steady_timer backoff(co_await asio::this_coro::executor, 100ms);
      co_await backoff.async_wait(use_nothrow);
      continue;
    }
    std::string peer = name;
    if constexpr (std::is_same_v<Acceptor, tcp::acceptor>) {
      error_code ignored;
      sock.set_option(tcp::no_delay(true), ignored);
      auto remote = sock.remote_endpoint(ignored);
      if (!ignored) peer = remote.address().to_string() + ":" + std::to_string(remote.port());
    }
    using Socket = std::decay_t<decltype(sock)>;
    asio::co_spawn(ctx, session(std::make_unique<SocketStream<Socket>>(std::move(sock)), std::move(peer)),
                   asio::detached);
  }
}

asio::awaitable<void> Server::Impl::session(std::unique_ptr<ByteStream> client, std::string peer) {
  ++active_sessions;
  struct Count {
    std::atomic<int>& n;
    ~Count() { --n; }
  } count{active_sessions};

  auto exec = co_await asio::this_coro::executor;
  // The whole login must finish within auth_timeout; the timer closes the
  // client socket, which fails whatever I/O is pending.
  asio::steady_timer auth_timer(exec, config.auth_timeout);
  auth_timer.async_wait([c = client.get()](error_code ec) {
    if (!ec) c->close();
  });

  // ---- startup phase: the sans-io handshake decides, we perform ----------
  session::ClientHandshake handshake;
  Bytes in;
  std::size_t have = 0;
  session::ClientHandshake::LoggedIn login_request;
  for (bool logged_in = false; !logged_in;) {
    std::size_t consumed = 0;
    auto action = handshake.next(view(in, have), consumed);
    if (consumed > 0) {
      in.erase(in.begin(), in.begin() + std::ptrdiff_t(consumed));
      have -= consumed;
    }
    if (std::holds_alternative<session::ClientHandshake::NeedMore>(action)) {
      if (in.size() < have + 4096) in.resize(have + 4096);
      auto [ec, n] = co_await client->read_some(asio::buffer(in.data() + have, in.size() - have));
      if (ec) {
        handshake.on_eof(view(in, have));
        co_return;
      }
      have += n;
    } else if (auto* reply = std::get_if<session::ClientHandshake::Reply>(&action)) {
      auto [ec, n] = co_await client->write(asio::buffer(reply->bytes));
      if (ec) co_return;
    } else if (auto* reject = std::get_if<session::ClientHandshake::Reject>(&action)) {
      spdlog::info("rejected connection from {}: {}", peer, reject->reason);
      co_await client->write(asio::buffer(reject->bytes));
      co_return;
    } else if (auto* cancel = std::get_if<session::ClientHandshake::Cancel>(&action)) {
      co_await forward_cancel(cancel->request);
      co_return;
    } else if (std::holds_alternative<session::ClientHandshake::Closed>(action)) {
      co_return;
    } else {
      login_request = std::move(std::get<session::ClientHandshake::LoggedIn>(action));
      logged_in = true;
    }
  }
  in.resize(have);  // anything the client sent after its password is relayed later

  const std::string user = login_request.startup.find("user") ? *login_request.startup.find("user") : "";
  const std::string database =
      login_request.startup.find("database") ? *login_request.startup.find("database") : user;

  // ---- upstream login ------------------------------------------------------
  auto [cec, upstream] = co_await connect_to(config.upstream);
  if (cec) {
    spdlog::error("cannot connect to upstream {} for user \"{}\" from {}: {}", config.upstream.to_string(),
                  user, peer, cec.message());
    co_await client->write(asio::buffer(fatal("08006", "tokengate could not connect to the upstream server")));
    co_return;
  }
  const protocol::BackendKeyData client_key = cancels.issue();
  struct Release {
    CancelRegistry& r;
    protocol::BackendKeyData k;
    ~Release() { r.release(k); }
  } release{cancels, client_key};

  session::UpstreamLogin login(std::move(login_request.startup), std::move(login_request.password),
                               client_key);
  {
    auto first = login.start();
    if (auto [ec, n] = co_await upstream->write(asio::buffer(first)); ec) {
      co_await client->write(asio::buffer(fatal("08006", "connection to the upstream server was lost")));
      co_return;
    }
  }
  Bytes up;
  std::size_t up_have = 0;
  for (bool done = false; !done;) {
    auto fr = protocol::read_frame(view(up, up_have), kMaxLoginMessageLength);
    if (fr.status == protocol::FrameStatus::bad_length) {
      spdlog::error("upstream sent a malformed message during login of \"{}\"", user);
      co_await client->write(asio::buffer(fatal("08P01", "invalid message from the upstream server")));
      co_return;
    }
    if (fr.status == protocol::FrameStatus::need_more) {
      if (up.size() < std::max(fr.need, up_have + 4096)) up.resize(std::max(fr.need, up_have + 4096));
      auto [ec, n] = co_await upstream->read_some(asio::buffer(up.data() + up_have, up.size() - up_have));
      if (ec) {
        spdlog::error("upstream closed during login of \"{}\": {}", user, ec.message());
        co_await client->write(asio::buffer(fatal("08006", "connection to the upstream server was lost")));
        co_return;
      }
      up_have += n;
      continue;
    }
    auto step = login.on_message(fr.frame);
    up.erase(up.begin(), up.begin() + std::ptrdiff_t(fr.frame.size));
    up_have -= fr.frame.size;
    if (!step.to_upstream.empty()) {
      if (auto [ec, n] = co_await upstream->write(asio::buffer(step.to_upstream)); ec) co_return;
    }
    if (!step.to_client.empty()) {
      if (auto [ec, n] = co_await client->write(asio::buffer(step.to_client)); ec) co_return;
    }
    if (step.status == session::UpstreamLogin::Status::failed) {
      spdlog::info("login of user \"{}\" to database \"{}\" from {} failed: {}", user, database, peer,
                   login.failure_reason());
      co_return;
    }
    done = step.status == session::UpstreamLogin::Status::done;
  }
  auth_timer.cancel();
  cancels.bind(client_key, {config.upstream, login.upstream_key()});
  spdlog::info("user \"{}\" logged in to database \"{}\" from {}", user, database, peer);

  // Whatever the upstream sent after ReadyForQuery (it should be nothing).
  if (up_have > 0) {
    if (auto [ec, n] = co_await client->write(asio::buffer(up.data(), up_have)); ec) co_return;
  }
  Bytes().swap(up);

  // ---- relay ---------------------------------------------------------------
  bool client_broke_protocol = false;
  co_await (pump_client_to_upstream(*client, *upstream, std::move(in), client_broke_protocol) ||
            pump_upstream_to_client(*upstream, *client));
  if (client_broke_protocol) {
    co_await client->write(asio::buffer(fatal("08P01", "invalid message length")));
  }
  upstream->close();
  client->close();
  spdlog::debug("session of \"{}\" from {} ended", user, peer);
}

asio::awaitable<void> Server::Impl::pump_client_to_upstream(ByteStream& client, ByteStream& upstream,
                                                            Bytes pending, bool& client_broke_protocol) {
  session::ClientStream framing;
  Bytes buf = std::move(pending);
  std::size_t have = buf.size();
  std::size_t need = 0;
  for (;;) {
    if (have > 0) {
      auto scan = framing.scan(view(buf, have), [](const protocol::Frame&) {
        // Query and Parse arrive here whole; API TOKEN statements will be
        // answered locally (issue 4). For now every message goes upstream.
      });
      if (scan.bad_length) {
        client_broke_protocol = true;
        co_return;
      }
      if (scan.forward > 0) {
        auto [ec, n] = co_await upstream.write(asio::buffer(buf.data(), scan.forward));
        if (ec) co_return;
        std::memmove(buf.data(), buf.data() + scan.forward, have - scan.forward);
        have -= scan.forward;
      }
      if (scan.terminate) co_return;
      need = scan.need;
    }
    if (have == 0) {
      // Idle: give the buffer back and wait without one.
      if (!buf.empty()) BufferPool::release(std::move(buf));
      buf = Bytes();
      if (auto ec = co_await client.wait_readable(); ec) co_return;
      buf = BufferPool::acquire();
    }
    if (buf.size() < need) buf.resize(need);            // a whole Query/Parse must fit
    if (buf.size() == have) buf.resize(buf.size() * 2);  // keep room to read
    auto [ec, n] = co_await client.read_some(asio::buffer(buf.data() + have, buf.size() - have));
    if (ec) co_return;
    have += n;
  }
}

asio::awaitable<void> Server::Impl::pump_upstream_to_client(ByteStream& upstream, ByteStream& client) {
  for (;;) {
    if (auto ec = co_await upstream.wait_readable(); ec) co_return;
    Bytes buf = BufferPool::acquire();
    for (;;) {
      auto [ec, n] = co_await upstream.read_some(asio::buffer(buf));
      if (ec) co_return;
      auto [wec, wn] = co_await client.write(asio::buffer(buf.data(), n));
      if (wec) co_return;
      // A short read means the socket is drained: wait again without a buffer.
      if (n < buf.size()) break;
    }
    BufferPool::release(std::move(buf));
  }
}

asio::awaitable<void> Server::Impl::forward_cancel(protocol::CancelRequest request) {
  auto target = cancels.find({request.process_id, request.secret_key});
  if (!target) {
    spdlog::debug("ignored a cancel request with an unknown key");
    co_return;
  }
  auto [ec, upstream] = co_await connect_to(target->upstream);
  if (ec) {
    spdlog::warn("cannot forward cancel request to {}: {}", target->upstream.to_string(), ec.message());
    co_return;
  }
  Bytes out;
  protocol::CancelRequest{target->upstream_key.process_id, target->upstream_key.secret_key}.serialize(out);
  co_await upstream->write(asio::buffer(out));
  // PostgreSQL closes once it has read the request; wait for that (bounded)
  // so the request is not lost to an early close.
  asio::steady_timer timer(co_await asio::this_coro::executor, kCancelTimeout);
  timer.async_wait([u = upstream.get()](error_code e) {
    if (!e) u->close();
  });
  std::uint8_t sink[64];
  while (true) {
    auto [rec, n] = co_await upstream->read_some(asio::buffer(sink));
    if (rec) break;
  }
  timer.cancel();
}

asio::awaitable<void> Server::Impl::drain_then_stop() {
  auto deadline = std::chrono::steady_clock::now() + config.shutdown_timeout;
  asio::steady_timer tick(co_await asio::this_coro::executor);
  while (active_sessions.load() > 0 && std::chrono::steady_clock::now() < deadline) {
    tick.expires_after(100ms);
    co_await tick.async_wait(use_nothrow);
  }
  if (active_sessions.load() > 0)
    spdlog::warn("closing {} session(s) still open after {} s", active_sessions.load(),
                 config.shutdown_timeout.count());
  stop_all();
}

void Server::Impl::stop_all() {
  for (auto& c : contexts) c->stop();
}

Server::Server(Config config) : impl_(std::make_unique<Impl>(std::move(config))) {}
Server::~Server() = default;

int Server::run() {
  auto& im = *impl_;
  unsigned n = im.config.threads ? im.config.threads : std::max(1u, std::thread::hardware_concurrency());
  for (unsigned i = 0; i < n; ++i) im.contexts.push_back(std::make_unique<asio::io_context>(1));
  auto& main_ctx = *im.contexts[0];

  for (const auto& ep : im.config.listen) {
    try {
      if (ep.is_unix()) {
        auto path = ep.unix_path();
        ::unlink(path.c_str());  // a stale socket from a previous run
        auto acc = std::make_unique<unix_socket::acceptor>(main_ctx, unix_socket::endpoint(path));
        im.unix_paths.push_back(path);
        asio::co_spawn(main_ctx, im.accept_loop(*acc, path), asio::detached);
        im.unix_acceptors.push_back(std::move(acc));
      } else {
        tcp::resolver resolver(main_ctx);
        for (const auto& entry : resolver.resolve(ep.host, std::to_string(ep.port))) {
          auto acc = std::make_unique<tcp::acceptor>(main_ctx);
          acc->open(entry.endpoint().protocol());
          acc->set_option(tcp::acceptor::reuse_address(true));
          acc->bind(entry.endpoint());
          acc->listen(asio::socket_base::max_listen_connections);
          asio::co_spawn(main_ctx, im.accept_loop(*acc, ep.to_string()), asio::detached);
          im.tcp_acceptors.push_back(std::move(acc));
        }
      }
      spdlog::info("listening on {}", ep.to_string());
    } catch (const boost::system::system_error& e) {
      spdlog::critical("cannot listen on {}: {}", ep.to_string(), e.code().message());
      return 1;
    }
  }
  spdlog::info("tokengate {} relaying to {} with {} I/O thread(s)", TOKENGATE_VERSION,
               im.config.upstream.to_string(), n);

  asio::signal_set signals(main_ctx, SIGINT, SIGTERM);
  std::function<void(error_code, int)> on_signal = [&](error_code ec, int sig) {
    if (ec) return;
    for (auto& a : im.tcp_acceptors) a->close();
    for (auto& a : im.unix_acceptors) a->close();
    if (sig == SIGTERM) {
      spdlog::info("SIGTERM: no new connections; waiting for {} session(s)", im.active_sessions.load());
      asio::co_spawn(main_ctx, im.drain_then_stop(), asio::detached);
    } else {
      spdlog::info("SIGINT: stopping");
      im.stop_all();
    }
  };
  signals.async_wait(on_signal);

  std::vector<std::thread> threads;
  for (unsigned i = 1; i < n; ++i) {
    threads.emplace_back([&, i] {
      auto guard = asio::make_work_guard(*im.contexts[i]);
      im.contexts[i]->run();
    });
  }
  {
    auto guard = asio::make_work_guard(main_ctx);
    main_ctx.run();
  }
  im.stop_all();
  for (auto& t : threads) t.join();
  for (const auto& p : im.unix_paths) ::unlink(p.c_str());
  spdlog::info("stopped");
  return 0;
}

}  // namespace tokengate::net

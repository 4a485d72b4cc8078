// Password check by an upstream login (see upstream_check.hpp).
#include "proxy/http/upstream_check.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

#include "proxy/net/connect.hpp"
#include "proxy/protocol/frame.hpp"
#include "proxy/session/upstream_login.hpp"

namespace tokengate::http {

namespace asio = boost::asio;
using net::use_nothrow;
using protocol::Bytes;

namespace {

// Messages during a login are small (ParameterStatus, errors); the same bound
// as the wire session's.
constexpr std::size_t kMaxLoginMessageLength = 1024 * 1024;

UpstreamCheck failed(std::string sqlstate, std::string message, std::string reason) {
  UpstreamCheck c;
  c.outcome = UpstreamCheck::Outcome::failed;
  c.sqlstate = std::move(sqlstate);
  c.message = std::move(message);
  c.reason = std::move(reason);
  return c;
}

}  // namespace

ErrorText error_text(const Bytes& message) {
  ErrorText out;
  auto fr = protocol::read_frame(protocol::ByteView(message.data(), message.size()));
  if (fr.status != protocol::FrameStatus::complete || fr.frame.tag != protocol::backend_tag::ErrorResponse) return out;
  auto fields = protocol::ErrorFields::parse(fr.frame.body);
  if (!fields) return out;
  out.sqlstate = std::string(fields->sqlstate());
  out.message = std::string(fields->message());
  if (const auto* d = fields->find('D')) out.detail = *d;
  return out;
}

asio::awaitable<UpstreamCheck> check_password_upstream(const net::Endpoint& upstream,
                                                       const net::UpstreamTlsContext* tls,
                                                       protocol::StartupMessage startup, std::string password,
                                                       std::chrono::steady_clock::time_point deadline) {
  auto [cec, connected, cdetail] = co_await net::connect_upstream(upstream, tls, deadline);
  if (cec)
    co_return failed("08006", "tokengate could not connect to the upstream server",
                     "cannot connect to upstream: " + cec.message() + " " + cdetail);
  // The deadline closes the stream, which fails whatever read is pending. The
  // handler holds a weak reference: it may run after this coroutine ended.
  std::shared_ptr<net::ByteStream> stream = std::move(connected);
  asio::steady_timer timer(co_await asio::this_coro::executor, deadline);
  timer.async_wait([weak = std::weak_ptr<net::ByteStream>(stream)](net::error_code ec) {
    if (auto s = weak.lock(); s && !ec) s->close();
  });
  struct Cancel {
    asio::steady_timer& t;
    ~Cancel() { t.cancel(); }
  } cancel{timer};

  session::UpstreamLogin login(std::move(startup), std::move(password), protocol::BackendKeyData{});
  if (auto [ec, n] = co_await stream->write(asio::buffer(login.start())); ec)
    co_return failed("08006", "connection to the upstream server was lost", ec.message());
  Bytes in;
  std::size_t have = 0;
  for (;;) {
    auto fr = protocol::read_frame(protocol::ByteView(in.data(), have), kMaxLoginMessageLength);
    if (fr.status == protocol::FrameStatus::bad_length)
      co_return failed("08P01", "invalid message from the upstream server", "malformed upstream message");
    if (fr.status == protocol::FrameStatus::need_more) {
      if (in.size() < std::max(fr.need, have + 4096)) in.resize(std::max(fr.need, have + 4096));
      auto [ec, n] = co_await stream->read_some(asio::buffer(in.data() + have, in.size() - have));
      if (ec) co_return failed("08006", "connection to the upstream server was lost", ec.message());
      have += n;
      continue;
    }
    auto step = login.on_message(fr.frame);
    const std::size_t used = fr.frame.size;
    in.erase(in.begin(), in.begin() + std::ptrdiff_t(used));
    have -= used;
    if (!step.to_upstream.empty()) {
      if (auto [ec, n] = co_await stream->write(asio::buffer(step.to_upstream)); ec)
        co_return failed("08006", "connection to the upstream server was lost", ec.message());
    }
    if (step.status == session::UpstreamLogin::Status::failed) {
      UpstreamCheck c;
      // The upstream's own error, or the login machine's (an unsupported
      // authentication request, a malformed answer).
      auto text = error_text(step.to_client);
      c.outcome = login.failure_reason().size() >= 5 && text.sqlstate == login.failure_reason().substr(0, 5)
                      ? UpstreamCheck::Outcome::refused
                      : UpstreamCheck::Outcome::failed;
      c.sqlstate = std::move(text.sqlstate);
      c.message = std::move(text.message);
      c.detail = std::move(text.detail);
      c.reason = login.failure_reason();
      stream->close();
      co_return c;
    }
    if (step.status == session::UpstreamLogin::Status::done) {
      // Terminate: the backend ends without logging an unexpected EOF.
      static constexpr std::uint8_t terminate[] = {'X', 0, 0, 0, 4};
      co_await stream->write(asio::buffer(terminate));
      stream->close();
      UpstreamCheck c;
      c.outcome = UpstreamCheck::Outcome::accepted;
      co_return c;
    }
  }
}

}  // namespace tokengate::http

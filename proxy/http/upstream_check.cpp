// Password check by an upstream login (see upstream_check.hpp).
#include "proxy/http/upstream_check.hpp"

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>

#include "proxy/net/connect.hpp"
#include "proxy/net/drive.hpp"
#include "proxy/protocol/frame.hpp"
#include "proxy/protocol/input_buffer.hpp"
#include "proxy/session/machine.hpp"
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

// The last whole message of `bytes` (what the login produced for a client:
// the error that ended it comes last).
Bytes last_message(const Bytes& bytes) {
  protocol::ByteView rest(bytes.data(), bytes.size());
  Bytes last;
  for (;;) {
    auto fr = protocol::read_frame(rest);
    if (fr.status != protocol::FrameStatus::complete) return last;
    last.assign(rest.begin(), rest.begin() + std::ptrdiff_t(fr.frame.size));
    rest = rest.subspan(fr.frame.size);
  }
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
                                                       protocol::StartupMessage startup, auth::SecretString password,
                                                       session::UpstreamAuthMethods methods,
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

  session::UpstreamLogin login(std::move(startup), std::optional<auth::SecretString>(std::move(password)),
                               protocol::BackendKeyData{}, methods);
  if (auto [ec, n] = co_await stream->write(asio::buffer(login.start())); ec)
    co_return failed("08006", "connection to the upstream server was lost", ec.message());
  // The one driver of the login machines (net/drive.hpp), as for a session.
  protocol::InputBuffer in(kMaxLoginMessageLength + 5);
  session::FramedMachine<session::UpstreamLogin> machine(login, kMaxLoginMessageLength);
  auto r = co_await net::drive(*stream, in, machine);
  if (machine.finished()) {
    // Terminate: the backend ends without logging an unexpected EOF.
    static constexpr std::uint8_t terminate[] = {'X', 0, 0, 0, 4};
    co_await stream->write(asio::buffer(terminate));
    stream->close();
    UpstreamCheck c;
    c.outcome = UpstreamCheck::Outcome::accepted;
    co_return c;
  }
  stream->close();
  if (machine.error() && machine.error()->find("length") != std::string::npos)
    co_return failed("08P01", "invalid message from the upstream server", "malformed upstream message");
  if (r.end != net::DriveResult::End::stopped || machine.error())
    co_return failed("08006", "connection to the upstream server was lost",
                     machine.error() ? *machine.error() : r.ec.message());
  UpstreamCheck c;
  // The upstream's own error, or the login machine's (an unsupported
  // authentication request, a malformed answer).
  auto text = error_text(last_message(machine.take_client_bytes()));
  c.outcome = login.failure_reason().size() >= 5 && text.sqlstate == login.failure_reason().substr(0, 5)
                  ? UpstreamCheck::Outcome::refused
                  : UpstreamCheck::Outcome::failed;
  c.sqlstate = std::move(text.sqlstate);
  c.message = std::move(text.message);
  c.detail = std::move(text.detail);
  c.reason = login.failure_reason();
  co_return c;
}

}  // namespace tokengate::http

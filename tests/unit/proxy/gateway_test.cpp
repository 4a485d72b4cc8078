// The HTTP gateway in-process over loopback: the upgrade route hands over the
// stream with the bytes read past the request and the identity; the login
// check is injected; pipelined requests are answered in order; a handler's
// exception becomes a 500 without ending the connection.
#include <catch2/catch.hpp>

#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/streambuf.hpp>
#include <stdexcept>
#include <thread>

#include "proxy/http/gateway.hpp"
#include "proxy/http/takeover.hpp"
#include "proxy/net/stream.hpp"

using namespace tokengate;
using namespace tokengate::http;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

// {"alg":"HS256"} . {"user":"alice","tid":"x"} . "sig": token-shaped, user claim alice.
const std::string kGoodToken = "eyJhbGciOiJIUzI1NiJ9.eyJ1c2VyIjoiYWxpY2UiLCJ0aWQiOiJ4In0.c2ln";

asio::awaitable<HttpLoginResult> fake_login(HttpLoginRequest r) {
  HttpLoginResult out;
  if (r.secret == kGoodToken && r.user == "alice") {
    out.ok = true;
    out.user = r.user;
    out.tid = tokenstore::tid_t{};
    out.token_name = "t1";
  } else {
    out.sqlstate = "28P01";
    out.message = "password authentication failed for user \"" + r.user + "\"";
  }
  co_return out;
}

// A gateway on 127.0.0.1 (a port the kernel picks) served by one thread.
struct Harness {
  asio::io_context ctx;
  Gateway gateway;
  std::thread thread;
  unsigned short port = 0;

  explicit Harness(GatewaySettings s = {})
      : gateway(with_listen(std::move(s)), GatewayServices{fake_login, nullptr, {}},
                [this]() -> asio::io_context& { return ctx; }) {}

  static GatewaySettings with_listen(GatewaySettings s) {
    net::Endpoint any;  // port 0: the kernel picks one (parse_endpoint refuses 0)
    any.host = "127.0.0.1";
    any.port = 0;
    s.listen = {any};
    return s;
  }

  void start() {
    auto err = gateway.listen(ctx);
    REQUIRE_FALSE(err);
    auto eps = gateway.local_endpoints();
    REQUIRE(eps.size() == 1);
    port = static_cast<unsigned short>(std::stoi(eps[0].substr(eps[0].rfind(':') + 1)));
    thread = std::thread([this] { ctx.run(); });
  }
  ~Harness() {
    ctx.stop();
    if (thread.joinable()) thread.join();
  }

  tcp::socket connect() {
    tcp::socket s(client_ctx);
    s.connect({asio::ip::make_address("127.0.0.1"), port});
    return s;
  }
  asio::io_context client_ctx;
};

// One response: the header block and a Content-Length body.
std::string read_response(tcp::socket& s, asio::streambuf& buf) {
  asio::read_until(s, buf, "\r\n\r\n");
  std::string all = boost::beast::buffers_to_string(buf.data());
  auto end = all.find("\r\n\r\n") + 4;
  std::string head = all.substr(0, end);
  std::size_t length = 0;
  if (auto p = head.find("Content-Length: "); p != std::string::npos) length = std::stoul(head.substr(p + 16));
  buf.consume(end);
  if (buf.size() < length) asio::read(s, buf, asio::transfer_exactly(length - buf.size()));
  std::string body = boost::beast::buffers_to_string(buf.data()).substr(0, length);
  buf.consume(length);
  return head + body;
}

}  // namespace

TEST_CASE("gateway: an upgrade route takes over the stream with its buffered bytes and identity", "[http][net]") {
  Harness h;
  RouteOptions opts;
  opts.max_body = 0;
  h.gateway.add_upgrade_route("GET", "/echo", opts, [](std::unique_ptr<Takeover> t) -> asio::awaitable<void> {
    auto& stream = std::get<Takeover::PlainStream>(t->stream);
    std::string hello = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nX-User: " + t->info.identity.user +
                        "\r\nX-Upgrade: " + std::string(t->request[boost::beast::http::field::upgrade]) +
                        "\r\n\r\n" + boost::beast::buffers_to_string(t->buffer.data());
    co_await asio::async_write(stream, asio::buffer(hello), net::use_nothrow);
    char more[5];
    auto [ec, n] = co_await asio::async_read(stream, asio::buffer(more), net::use_nothrow);
    if (!ec) co_await asio::async_write(stream, asio::buffer(more, n), net::use_nothrow);
  });
  h.start();

  auto s = h.connect();
  asio::write(s, asio::buffer("GET /echo HTTP/1.1\r\nHost: t\r\nUpgrade: echo\r\nConnection: Upgrade\r\n"
                              "Authorization: Bearer " + kGoodToken + "\r\n\r\nEARLY"));
  asio::streambuf buf;
  asio::read_until(s, buf, "\r\n\r\n");
  std::string got = boost::beast::buffers_to_string(buf.data());
  INFO(got);
  CHECK(got.rfind("HTTP/1.1 101 Switching Protocols\r\n", 0) == 0);
  CHECK(got.find("X-User: alice\r\n") != std::string::npos);
  CHECK(got.find("X-Upgrade: echo\r\n") != std::string::npos);
  if (got.find("EARLY") == std::string::npos) asio::read_until(s, buf, "EARLY");
  CHECK(boost::beast::buffers_to_string(buf.data()).ends_with("\r\n\r\nEARLY"));
  buf.consume(buf.size());
  asio::write(s, asio::buffer(std::string("LATER")));
  asio::read(s, buf, asio::transfer_exactly(5));
  CHECK(boost::beast::buffers_to_string(buf.data()) == "LATER");
}

TEST_CASE("gateway: an upgrade route that requires authentication refuses without credentials", "[http][net]") {
  Harness h;
  RouteOptions opts;
  opts.max_body = 0;
  bool called = false;
  h.gateway.add_upgrade_route("GET", "/echo", opts, [&called](std::unique_ptr<Takeover>) -> asio::awaitable<void> {
    called = true;
    co_return;
  });
  h.start();
  auto s = h.connect();
  asio::write(s, asio::buffer(std::string("GET /echo HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer eyJ.bad.x\r\n\r\n")));
  asio::streambuf buf;
  auto r = read_response(s, buf);
  INFO(r);
  CHECK(r.rfind("HTTP/1.1 401 Unauthorized\r\n", 0) == 0);
  CHECK(r.ends_with(R"({"code":"28P01","message":"password authentication failed for user \"\""})"));
  CHECK_FALSE(called);
}

TEST_CASE("gateway: pipelined requests in order, a handler's exception is a 500", "[http][net]") {
  Harness h;
  RouteOptions open;
  open.auth = Auth::none;
  open.max_body = 0;
  h.gateway.add_route("GET", "/boom", open, [](HttpRequest&) -> asio::awaitable<HttpResponse> {
    throw std::runtime_error("handler bug");
    co_return HttpResponse{};
  });
  h.gateway.add_route("GET", "/items/{id}", open, [](HttpRequest& r) -> asio::awaitable<HttpResponse> {
    co_return json_response(200, "{\"id\":\"" + *r.param("id") + "\"}");
  });
  h.start();
  auto s = h.connect();
  asio::write(s, asio::buffer(std::string("GET /items/a%20b HTTP/1.1\r\nHost: t\r\n\r\n"
                                          "GET /boom HTTP/1.1\r\nHost: t\r\n\r\n"
                                          "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")));
  asio::streambuf buf;
  auto first = read_response(s, buf);
  auto second = read_response(s, buf);
  auto third = read_response(s, buf);
  INFO(first << "\n---\n" << second << "\n---\n" << third);
  CHECK(first.ends_with(R"({"id":"a b"})"));
  CHECK(second.rfind("HTTP/1.1 500 Internal Server Error\r\n", 0) == 0);
  CHECK(second.ends_with(R"({"code":"XX000","message":"internal error"})"));
  CHECK(third.ends_with(R"({"status":"ok"})"));
}

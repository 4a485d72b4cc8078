// The control connection pool: against a scripted fake upstream (queueing,
// reconnects, timeouts, login failures, the auth_query contract), and, tagged
// [pg], against a real PostgreSQL named by TOKENGATE_TEST_PG ("host:port" or
// "/socket/dir:port", trust for user postgres); skipped when it is unset.
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <catch2/catch.hpp>

#include <atomic>
#include <cstdlib>
#include <functional>
#include <limits>
#include <mutex>
#include <thread>
#include <unistd.h>

#include "proxy/net/control_pool.hpp"
#include "proxy/net/stream.hpp"
#include "proxy/protocol/frame.hpp"
#include "proxy/protocol/messages.hpp"
#include "tests/common/pg_bytes.hpp"

using namespace tokengate;
using namespace tokengate::test;
using namespace std::chrono_literals;
using net::ControlPool;
using net::ControlPoolSettings;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

// Runs one pool call to completion on `io` and returns its result.
template <typename T>
T run(asio::io_context& io, asio::awaitable<T> call) {
  std::optional<T> out;
  asio::co_spawn(
      io, [&]() -> asio::awaitable<void> { out.emplace(co_await std::move(call)); }, asio::detached);
  io.restart();
  io.run();
  REQUIRE(out.has_value());
  return std::move(*out);
}

// ---- a scripted upstream ------------------------------------------------------

struct FakeQuery {
  std::string sql;
  std::vector<std::optional<std::string>> params;
};

Bytes ready() { return msg('Z', Bytes{'I'}); }
Bytes row_description(std::initializer_list<std::string_view> names) {
  Bytes b;
  put_i16(b, std::int16_t(names.size()));
  for (auto n : names) {
    put_cstr(b, n);
    put_i32(b, 0);
    put_i16(b, 0);
    put_i32(b, 25);
    put_i16(b, -1);
    put_i32(b, -1);
    put_i16(b, 0);
  }
  return msg('T', b);
}
Bytes data_row(std::initializer_list<std::optional<std::string_view>> values) {
  Bytes b;
  put_i16(b, std::int16_t(values.size()));
  for (auto v : values) {
    if (!v) {
      put_i32(b, -1);
    } else {
      put_i32(b, std::int32_t(v->size()));
      put_str(b, *v);
    }
  }
  return msg('D', b);
}
// The answer to Parse/Bind/Describe/Execute/Sync with these rows.
Bytes rows_answer(std::initializer_list<std::string_view> columns, std::vector<Bytes> rows) {
  Bytes out = concat({msg('1', {}), msg('2', {}), row_description(columns)});
  for (auto& r : rows) out.insert(out.end(), r.begin(), r.end());
  auto tail = concat({msg('C', body_cstrs({"SELECT " + std::to_string(rows.size())})), ready()});
  out.insert(out.end(), tail.begin(), tail.end());
  return out;
}

// A minimal PostgreSQL on 127.0.0.1 (own thread): trust or cleartext login,
// then answers each Sync with answer(query); the query is decoded from Parse
// and Bind. Counts connections.
class FakeUpstream {
 public:
  using Answer = std::function<Bytes(const FakeQuery&)>;

  explicit FakeUpstream(Answer answer) : answer_(std::move(answer)), acceptor_(io_, {asio::ip::make_address("127.0.0.1"), 0}) {
    asio::co_spawn(io_, accept_loop(), asio::detached);
    thread_ = std::thread([this] { io_.run(); });
  }
  ~FakeUpstream() {
    io_.stop();
    thread_.join();
  }

  std::uint16_t port() const { return acceptor_.local_endpoint().port(); }
  net::Endpoint endpoint() const { return {"127.0.0.1", port()}; }

  std::atomic<int> connections{0};
  std::atomic<int> queries{0};
  std::atomic<int> concurrent{0};
  std::atomic<int> max_concurrent{0};
  // Behaviour knobs, set before use.
  std::optional<std::string> require_password;  // ask for cleartext and check it
  bool refuse_login = false;                      // FATAL 28P01 instead of AuthenticationOk
  bool close_after_answer = false;                // drop the connection after each answer
  bool never_answer_startup = false;              // hang at login
  std::atomic<std::chrono::milliseconds> answer_delay{std::chrono::milliseconds(0)};

 private:
  asio::awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, sock] = co_await acceptor_.async_accept(net::use_nothrow);
      if (ec) co_return;
      ++connections;
      asio::co_spawn(io_, serve(std::move(sock)), asio::detached);
    }
  }

  // Reads into buf until read_frame (or the startup variant) completes.
  static asio::awaitable<std::optional<protocol::Frame>> next(tcp::socket& s, Bytes& buf, std::size_t& have,
                                                             bool startup) {
    for (;;) {
      protocol::ByteView v(buf.data(), have);
      auto fr = startup ? protocol::read_startup_frame(v, 10000) : protocol::read_frame(v);
      if (fr.status == protocol::FrameStatus::complete) co_return fr.frame;
      if (fr.status == protocol::FrameStatus::bad_length) co_return std::nullopt;
      if (buf.size() < have + 4096) buf.resize(have + 4096);
      auto [ec, n] = co_await s.async_read_some(asio::buffer(buf.data() + have, buf.size() - have), net::use_nothrow);
      if (ec) co_return std::nullopt;
      have += n;
    }
  }
  static void consume(Bytes& buf, std::size_t& have, std::size_t n) {
    buf.erase(buf.begin(), buf.begin() + std::ptrdiff_t(n));
    have -= n;
  }

  asio::awaitable<void> serve(tcp::socket sock) {
    sockets_.push_back(&sock);
    struct Forget {
      std::vector<tcp::socket*>& v;
      tcp::socket* s;
      ~Forget() { std::erase(v, s); }
    } forget{sockets_, &sock};
    Bytes buf;
    std::size_t have = 0;
    auto write = [&](const Bytes& b) -> asio::awaitable<bool> {
      auto [ec, n] = co_await asio::async_write(sock, asio::buffer(b), net::use_nothrow);
      co_return !ec;
    };
    auto startup = co_await next(sock, buf, have, true);
    if (!startup) co_return;
    consume(buf, have, startup->size);
    if (never_answer_startup) {
      asio::steady_timer t(io_, 1h);
      co_await t.async_wait(net::use_nothrow);
      co_return;
    }
    // (Messages are built before co_await: GCC 12 rejects braced lists in it.)
    const Bytes refused = error_response("FATAL", "28P01", "password authentication failed for user \"postgres\"");
    const Bytes ask_password = msg('R', body_i32s({3}));
    const Bytes logged_in = concat({msg('R', body_i32s({0})), msg('S', body_cstrs({"server_version", "15.0"})),
                                    msg('K', body_i32s({1, 2})), ready()});
    if (refuse_login) {
      co_await write(refused);
      co_return;
    }
    if (require_password) {
      co_await write(ask_password);
      auto p = co_await next(sock, buf, have, false);
      if (!p || p->tag != 'p') co_return;
      auto pw = protocol::PasswordMessage::parse(p->body);
      consume(buf, have, p->size);
      if (!pw || pw->password != *require_password) {
        co_await write(refused);
        co_return;
      }
    }
    if (!co_await write(logged_in)) co_return;

    FakeQuery q;
    for (;;) {
      auto f = co_await next(sock, buf, have, false);
      if (!f) co_return;
      protocol::BodyReader r(f->body);
      if (f->tag == 'P') {
        r.cstr();
        q.sql = std::string(*r.cstr());
      } else if (f->tag == 'B') {
        r.cstr();
        r.cstr();
        auto nfmt = *r.i16();
        for (int i = 0; i < nfmt; ++i) r.i16();
        auto n = *r.i16();
        q.params.clear();
        for (int i = 0; i < n; ++i) {
          auto len = *r.i32();
          if (len < 0)
            q.params.emplace_back(std::nullopt);
          else
            q.params.emplace_back(std::string(protocol::as_chars(*r.bytes(std::size_t(len)))));
        }
      } else if (f->tag == 'X') {
        co_return;
      }
      const char tag = f->tag;
      consume(buf, have, f->size);
      if (tag != 'S') continue;
      ++queries;
      int now = ++concurrent;
      for (int m = max_concurrent; now > m && !max_concurrent.compare_exchange_weak(m, now);) {
      }
      if (const auto delay = answer_delay.load(); delay.count() > 0) {
        asio::steady_timer t(io_, delay);
        co_await t.async_wait(net::use_nothrow);
      }
      --concurrent;
      const Bytes answer = answer_(q);
      if (!co_await write(answer)) co_return;
      if (close_after_answer) co_return;
    }
  }

  // In this order: the sessions' frames, destroyed with io_, still touch
  // sockets_; the acceptor goes before io_.
  Answer answer_;
  std::vector<tcp::socket*> sockets_;
  asio::io_context io_;
  tcp::acceptor acceptor_;
  std::thread thread_;
};

// A role_info answer as the catalog query gives it: oid, name, can login,
// superuser, replication, bypassrls, createrole, valid-until epoch, is-admin,
// then one row per membership.
struct FakeRole {
  std::string name;
  bool login = true;
  bool super = false;
  std::vector<std::string> member_of{};
  bool admin = false;  // as the upstream computed it
  std::string oid = "16384";
  bool replication = false, bypassrls = false, createrole = false;
  std::optional<std::string> valid_until{};
};
const std::initializer_list<std::string_view> kRoleColumns = {
    "oid", "rolname", "rolcanlogin", "rolsuper", "rolreplication", "rolbypassrls", "rolcreaterole",
    "valid_until", "is_admin", "rolname"};
Bytes role_rows(const FakeRole& r) {
  std::vector<Bytes> rows;
  auto b = [](bool v) -> std::string_view { return v ? "t" : "f"; };
  auto row = [&](std::optional<std::string_view> member) {
    std::optional<std::string_view> vu;
    if (r.valid_until) vu = *r.valid_until;
    return data_row({r.oid, r.name, b(r.login), b(r.super), b(r.replication), b(r.bypassrls), b(r.createrole), vu,
                     b(r.admin || r.super), member});
  };
  if (r.member_of.empty()) rows.push_back(row(std::nullopt));
  for (auto& m : r.member_of) rows.push_back(row(std::string_view(m)));
  return rows_answer(kRoleColumns, std::move(rows));
}
Bytes role_rows(std::string_view name, bool login, bool super, std::vector<std::string> member_of) {
  return role_rows(FakeRole{std::string(name), login, super, std::move(member_of)});
}
Bytes no_role() { return rows_answer(kRoleColumns, {}); }

ControlPoolSettings settings_for(const net::Endpoint& ep) {
  ControlPoolSettings s;
  s.upstream = ep;
  s.connect_timeout = 2000ms;
  s.query_timeout = 3000ms;
  return s;
}

}  // namespace

// ---- against the fake ----------------------------------------------------------

TEST_CASE("control pool: role_info parses roles, memberships and administrator status") {
  FakeUpstream up([](const FakeQuery& q) {
    // The role, then the admin role, as bound parameters.
    REQUIRE(q.params.size() == 2);
    CHECK(q.params[1] == std::optional<std::string>("tokengate_admin"));
    const std::string& role = *q.params[0];
    if (role == "alice") return role_rows(FakeRole{"alice", true, false, {"readers", "tokengate_admin"}, true});
    if (role == "bob") return role_rows("bob", true, false, {"readers"});
    if (role == "root") return role_rows("root", true, true, {});
    // Named like an administrator, not one: the upstream says so.
    if (role == "admin") return role_rows("admin", false, false, {});
    if (role == "tokengate_admin") return role_rows("tokengate_admin", false, false, {});
    if (role == "repl") {
      FakeRole r{"repl"};
      r.oid = "4294967295";
      r.replication = true;
      r.bypassrls = true;
      r.createrole = true;
      r.valid_until = "1767225600.500000";
      return role_rows(r);
    }
    if (role == "ever") {
      FakeRole r{"ever"};
      r.valid_until = "-Infinity";
      return role_rows(r);
    }
    if (role == "bad oid") {
      FakeRole r{"bad oid"};
      r.oid = "0";
      return role_rows(r);
    }
    return no_role();
  });
  asio::io_context io;
  ControlPool pool(io.get_executor(), settings_for(up.endpoint()));

  auto alice = run(io, pool.role_info("alice"));
  REQUIRE(alice.has_value());
  REQUIRE(alice->has_value());
  CHECK((*alice)->name == "alice");
  CHECK((*alice)->oid == 16384u);
  CHECK((*alice)->can_login);
  CHECK_FALSE((*alice)->is_superuser);
  CHECK((*alice)->member_of == std::vector<std::string>{"readers", "tokengate_admin"});
  CHECK((*alice)->is_admin);
  CHECK((*alice)->is_protected());
  CHECK_FALSE((*alice)->valid_until);

  auto bob = run(io, pool.role_info("bob"));
  REQUIRE(bob);
  REQUIRE(*bob);
  CHECK((*bob)->member_of == std::vector<std::string>{"readers"});
  CHECK_FALSE((*bob)->is_admin);
  CHECK_FALSE((*bob)->is_protected());

  auto root = run(io, pool.role_info("root"));
  REQUIRE((root && *root));
  CHECK((*root)->is_admin);
  CHECK((*root)->is_protected());
  for (const char* name : {"admin", "tokengate_admin"}) {
    INFO(name);
    auto r = run(io, pool.role_info(name));
    REQUIRE(r);
    REQUIRE(*r);
    CHECK_FALSE((*r)->is_admin);
    CHECK((*r)->member_of.empty());
  }

  auto repl = run(io, pool.role_info("repl"));
  REQUIRE((repl && *repl));
  CHECK((*repl)->oid == 4294967295u);
  CHECK((*repl)->replication);
  CHECK((*repl)->bypassrls);
  CHECK((*repl)->createrole);
  CHECK((*repl)->is_protected());
  CHECK((*repl)->valid_until == std::optional<std::int64_t>(1767225600));
  auto ever = run(io, pool.role_info("ever"));
  REQUIRE((ever && *ever));
  CHECK((*ever)->valid_until == std::optional<std::int64_t>(std::numeric_limits<std::int64_t>::min()));

  auto bad = run(io, pool.role_info("bad oid"));
  REQUIRE_FALSE(bad);
  CHECK(bad.error() == "role look-up returned unexpected values");

  auto missing = run(io, pool.role_info("nobody"));
  REQUIRE(missing);
  CHECK_FALSE(missing->has_value());
  CHECK(up.connections == 1);  // lazily opened, then reused
}

TEST_CASE("control pool: protected_roles is sorted, deduplicated and never cached") {
  FakeUpstream up([](const FakeQuery& q) {
    REQUIRE(q.params.size() == 1);
    CHECK(q.params[0] == std::optional<std::string>("tokengate_admin"));
    return rows_answer({"rolname"}, {data_row({"zed"}), data_row({"Postgres"}), data_row({"alice"}),
                                     data_row({"alice"})});
  });
  asio::io_context io;
  ControlPool pool(io.get_executor(), settings_for(up.endpoint()));
  auto r = run(io, pool.protected_roles());
  REQUIRE(r);
  CHECK(*r == std::vector<std::string>{"Postgres", "alice", "zed"});
  REQUIRE(run(io, pool.protected_roles()));
  CHECK(up.queries == 2);
}

TEST_CASE("control pool: role_info is cached for the ttl; missing roles are not") {
  FakeUpstream up([](const FakeQuery& q) {
    if (*q.params[0] == "alice") return role_rows("alice", true, false, {});
    return no_role();
  });
  asio::io_context io;
  auto s = settings_for(up.endpoint());
  SECTION("cached") {
    s.role_cache_ttl = 200ms;
    ControlPool pool(io.get_executor(), s);
    REQUIRE(run(io, pool.role_info("alice")));
    REQUIRE(run(io, pool.role_info("alice")));
    CHECK(up.queries == 1);
    REQUIRE(run(io, pool.role_info("nobody")));
    REQUIRE(run(io, pool.role_info("nobody")));
    CHECK(up.queries == 3);
    std::this_thread::sleep_for(250ms);
    REQUIRE(run(io, pool.role_info("alice")));
    CHECK(up.queries == 4);
  }
  SECTION("role_info_fresh always asks, and refreshes the cache") {
    s.role_cache_ttl = 10s;
    ControlPool pool(io.get_executor(), s);
    REQUIRE(run(io, pool.role_info("alice")));
    REQUIRE(run(io, pool.role_info_fresh("alice")));
    REQUIRE(run(io, pool.role_info_fresh("alice")));
    CHECK(up.queries == 3);
    REQUIRE(run(io, pool.role_info("alice")));
    CHECK(up.queries == 3);
  }
  SECTION("ttl 0 disables the cache") {
    s.role_cache_ttl = 0ms;
    ControlPool pool(io.get_executor(), s);
    REQUIRE(run(io, pool.role_info("alice")));
    REQUIRE(run(io, pool.role_info("alice")));
    CHECK(up.queries == 2);
  }
}

TEST_CASE("control pool: login_verifier follows the auth_query contract") {
  std::string mode;
  FakeUpstream up([&](const FakeQuery& q) {
    CHECK(q.sql == net::kDefaultAuthQuery);
    REQUIRE(q.params.size() == 1);
    CHECK(*q.params[0] == "alice");
    std::initializer_list<std::string_view> cols = {"rolpassword", "extract", "rolcanlogin"};
    if (mode == "scram") return rows_answer(cols, {data_row({"SCRAM-SHA-256$4096:c2FsdA==$a:b", "1767225600.000000", "t"})});
    if (mode == "no expiry") return rows_answer(cols, {data_row({"md5abc", std::nullopt, "t"})});
    if (mode == "fraction") return rows_answer(cols, {data_row({"md5abc", "1767225600.75", "f"})});
    if (mode == "negative") return rows_answer(cols, {data_row({"md5abc", "-1.5", "t"})});
    if (mode == "infinity") return rows_answer(cols, {data_row({std::nullopt, "Infinity", "t"})});
    if (mode == "-infinity") return rows_answer(cols, {data_row({"md5abc", "-Infinity", "t"})});
    if (mode == "none") return rows_answer(cols, {});
    if (mode == "two rows") return rows_answer(cols, {data_row({"a", std::nullopt, "t"}), data_row({"b", std::nullopt, "t"})});
    if (mode == "two columns") return rows_answer({"a", "b"}, {data_row({"md5abc", "t"})});
    if (mode == "timestamp") return rows_answer(cols, {data_row({"md5secret", "2026-01-01 00:00:00+00", "t"})});
    if (mode == "bad bool") return rows_answer(cols, {data_row({"md5secret", std::nullopt, "yes"})});
    return concat({error_response("ERROR", "42501", "permission denied for table pg_authid"), ready()});
  });
  asio::io_context io;
  ControlPool pool(io.get_executor(), settings_for(up.endpoint()));
  auto get = [&](std::string m) {
    mode = std::move(m);
    return run(io, pool.login_verifier("alice"));
  };

  auto v = get("scram");
  REQUIRE(v);
  REQUIRE(*v);
  CHECK((*v)->verifier == std::optional<std::string>("SCRAM-SHA-256$4096:c2FsdA==$a:b"));
  CHECK((*v)->valid_until == std::optional<std::int64_t>(1767225600));
  CHECK((*v)->can_login);

  v = get("no expiry");
  REQUIRE((v && *v));
  CHECK_FALSE((*v)->valid_until);

  v = get("fraction");
  REQUIRE((v && *v));
  CHECK((*v)->valid_until == std::optional<std::int64_t>(1767225600));
  CHECK_FALSE((*v)->can_login);

  v = get("negative");
  REQUIRE((v && *v));
  CHECK((*v)->valid_until == std::optional<std::int64_t>(-2));

  v = get("infinity");
  REQUIRE((v && *v));
  CHECK_FALSE((*v)->verifier);
  CHECK_FALSE((*v)->valid_until);

  v = get("-infinity");
  REQUIRE((v && *v));
  CHECK((*v)->valid_until == std::optional<std::int64_t>(std::numeric_limits<std::int64_t>::min()));

  v = get("none");
  REQUIRE(v);
  CHECK_FALSE(v->has_value());

  v = get("two rows");
  REQUIRE_FALSE(v);
  CHECK(v.error() == "auth_query returned 2 rows for one user");

  v = get("two columns");
  REQUIRE_FALSE(v);
  CHECK(v.error() == "auth_query must return 3 columns (password, valid-until epoch, can-login); it returned 2");

  v = get("timestamp");
  REQUIRE_FALSE(v);
  CHECK(v.error().find("is not epoch seconds") != std::string::npos);
  CHECK(v.error().find("secret") == std::string::npos);

  v = get("bad bool");
  REQUIRE_FALSE(v);
  CHECK(v.error() == "auth_query column 3 (can login) is not a boolean");

  v = get("error");
  REQUIRE_FALSE(v);
  CHECK(v.error() == "auth_query failed: 42501 permission denied for table pg_authid");
  CHECK(up.connections == 1);  // an ErrorResponse leaves the connection usable
}

TEST_CASE("control pool: the control user's password is sent when asked, and never shown") {
  FakeUpstream up([](const FakeQuery&) { return role_rows("alice", true, false, {}); });
  up.require_password = "s3cret-control";
  asio::io_context io;
  auto s = settings_for(up.endpoint());
  SECTION("right password") {
    s.password = "s3cret-control";
    ControlPool pool(io.get_executor(), s);
    auto r = run(io, pool.role_info("alice"));
    REQUIRE(r);
  }
  SECTION("wrong password") {
    s.password = "wrong-pw";
    ControlPool pool(io.get_executor(), s);
    auto r = run(io, pool.role_info("alice"));
    REQUIRE_FALSE(r);
    CHECK(r.error().find("login as \"postgres\" failed: 28P01 password authentication failed") != std::string::npos);
    CHECK(r.error().find("wrong-pw") == std::string::npos);
  }
  SECTION("no password configured") {
    ControlPool pool(io.get_executor(), s);
    auto r = run(io, pool.role_info("alice"));
    REQUIRE_FALSE(r);
    CHECK(r.error().find("upstream asked for a password and none is configured") != std::string::npos);
  }
}

TEST_CASE("control pool: failures are values, and the next call reconnects") {
  asio::io_context io;
  SECTION("nothing listens") {
    std::uint16_t port;
    {
      asio::io_context tmp;
      tcp::acceptor a(tmp, {asio::ip::make_address("127.0.0.1"), 0});
      port = a.local_endpoint().port();
    }
    ControlPool pool(io.get_executor(), settings_for({"127.0.0.1", port}));
    auto r = run(io, pool.role_info("alice"));
    REQUIRE_FALSE(r);
    CHECK(r.error().rfind("role look-up failed: control connection to 127.0.0.1:" + std::to_string(port) +
                              ": connecting to 127.0.0.1:" + std::to_string(port) + " failed: ",
                          0) == 0);
    auto v = run(io, pool.login_verifier("alice"));
    REQUIRE_FALSE(v);
  }
  SECTION("login refused") {
    FakeUpstream up([](const FakeQuery&) { return Bytes{}; });
    up.refuse_login = true;
    ControlPool pool(io.get_executor(), settings_for(up.endpoint()));
    auto r = run(io, pool.role_info("alice"));
    REQUIRE_FALSE(r);
    CHECK(r.error().find("login as \"postgres\" failed: 28P01") != std::string::npos);
    (void)run(io, pool.role_info("alice"));
    CHECK(up.connections == 2);  // a failed connection is not kept
  }
  SECTION("login hangs: connect_timeout") {
    FakeUpstream up([](const FakeQuery&) { return Bytes{}; });
    up.never_answer_startup = true;
    auto s = settings_for(up.endpoint());
    s.connect_timeout = 150ms;
    ControlPool pool(io.get_executor(), s);
    auto t0 = std::chrono::steady_clock::now();
    auto r = run(io, pool.role_info("alice"));
    REQUIRE_FALSE(r);
    CHECK(r.error().find("connecting and logging in to " + up.endpoint().to_string() + " timed out") !=
          std::string::npos);
    CHECK(std::chrono::steady_clock::now() - t0 < 2s);
  }
  SECTION("query hangs: query_timeout") {
    FakeUpstream up([](const FakeQuery&) { return role_rows("alice", true, false, {}); });
    up.answer_delay = 1000ms;
    auto s = settings_for(up.endpoint());
    s.query_timeout = 150ms;
    ControlPool pool(io.get_executor(), s);
    auto r = run(io, pool.role_info("alice"));
    REQUIRE_FALSE(r);
    CHECK(r.error().find("timed out after 150 ms") != std::string::npos);
  }
  SECTION("the upstream drops idle connections: retried once on a new one") {
    FakeUpstream up([](const FakeQuery&) { return role_rows("alice", true, false, {}); });
    up.close_after_answer = true;
    auto s = settings_for(up.endpoint());
    s.role_cache_ttl = 0ms;
    ControlPool pool(io.get_executor(), s);
    for (int i = 0; i < 3; ++i) {
      auto r = run(io, pool.role_info("alice"));
      REQUIRE(r);
      REQUIRE(*r);
    }
    CHECK(up.queries == 3);
    CHECK(up.connections >= 3);
  }
}

TEST_CASE("control pool: callers on several io_contexts share the pool; extra callers wait their turn") {
  FakeUpstream up([](const FakeQuery& q) { return role_rows(*q.params[0], true, false, {}); });
  up.answer_delay = 5ms;
  auto s = settings_for(up.endpoint());
  s.size = 2;
  s.role_cache_ttl = 0ms;
  s.query_timeout = 20s;

  asio::io_context home, a, b;  // the pool lives on `home`; callers run on a and b
  auto home_work = asio::make_work_guard(home);
  std::thread home_thread([&] { home.run(); });
  {
    ControlPool pool(home.get_executor(), s);
    std::atomic<int> ok{0}, wrong{0};
    auto caller = [&](asio::io_context& io, int id) -> asio::awaitable<void> {
      const std::string name = "role" + std::to_string(id);
      auto r = co_await pool.role_info(name);
      // The result comes back on the caller's own context.
      if (r && *r && (*r)->name == name && io.get_executor().running_in_this_thread())
        ++ok;
      else
        ++wrong;
    };
    for (int i = 0; i < 20; ++i) {
      asio::co_spawn(a, caller(a, i), asio::detached);
      asio::co_spawn(b, caller(b, 100 + i), asio::detached);
    }
    std::thread ta([&] { a.run(); });
    std::thread tb([&] { b.run(); });
    ta.join();
    tb.join();
    CHECK(ok == 40);
    CHECK(wrong == 0);
  }
  home_work.reset();
  home_thread.join();
  CHECK(up.queries == 40);
  CHECK(up.connections == 2);
  CHECK(up.max_concurrent <= 2);
}

TEST_CASE("control pool: a caller that gives up mid-query does not leave a stale answer behind") {
  using namespace asio::experimental::awaitable_operators;
  FakeUpstream up([](const FakeQuery& q) { return role_rows(*q.params[0], true, false, {}); });
  up.answer_delay = 300ms;
  auto s = settings_for(up.endpoint());
  s.size = 1;
  s.role_cache_ttl = 0ms;
  asio::io_context io;
  ControlPool pool(io.get_executor(), s);
  bool gave_up = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        asio::steady_timer t(io, 50ms);
        auto r = co_await (pool.role_info("first") || t.async_wait(asio::as_tuple(asio::use_awaitable)));
        gave_up = r.index() == 1;
      },
      asio::detached);
  io.run();
  REQUIRE(gave_up);
  up.answer_delay = 0ms;
  auto second = run(io, pool.role_info("second"));
  REQUIRE(second);
  REQUIRE(*second);
  CHECK((*second)->name == "second");
}

TEST_CASE("control pool: query() returns upstream errors as data") {
  FakeUpstream up([](const FakeQuery&) {
    return concat({error_response("ERROR", "42601", "syntax error at or near \"SELEC\""), ready()});
  });
  asio::io_context io;
  ControlPool pool(io.get_executor(), settings_for(up.endpoint()));
  auto r = run(io, pool.query("SELEC 1", {}));
  REQUIRE(r);
  REQUIRE(r->error);
  CHECK(r->error->sqlstate() == "42601");
}

// ---- against a real PostgreSQL ------------------------------------------------------

namespace {

std::optional<net::Endpoint> test_pg() {
  const char* env = std::getenv("TOKENGATE_TEST_PG");
  if (env == nullptr || *env == '\0') return std::nullopt;
  return net::parse_endpoint(env, 5432);
}

// Runs DDL through the pool itself (no libpq in the unit tests).
void exec(asio::io_context& io, ControlPool& pool, const std::string& sql) {
  auto r = run(io, pool.query(sql, {}));
  INFO(sql);
  REQUIRE(r);
  if (r->error) FAIL(std::string(r->error->sqlstate()) + " " + std::string(r->error->message()));
}

}  // namespace

TEST_CASE("control pool against PostgreSQL: roles, memberships, verifiers, reconnects", "[pg]") {
  auto ep = test_pg();
  if (!ep) {
    WARN("TOKENGATE_TEST_PG is not set: skipped");
    return;
  }
  asio::io_context io;
  auto s = settings_for(*ep);
  const std::string p = "tg_ctl_" + std::to_string(::getpid()) + "_";
  s.admin_role = p + "admins";
  s.role_cache_ttl = 0ms;
  ControlPool pool(io.get_executor(), s);

  // Names that would break string-built SQL.
  const std::string odd = p + "o'dd \"name\"";
  const std::string odd_ident = "\"" + p + "o'dd \"\"name\"\"\"";
  const std::vector<std::string> drops = {odd_ident,      p + "user",     p + "mid",      p + "admins",
                                          p + "nologin", p + "forever",  p + "ctl",      p + "self",
                                          p + "viaplain", p + "team",    p + "chain",    p + "bysu2",
                                          p + "su2",     p + "repl"};
  for (auto& r : drops) exec(io, pool, "DROP ROLE IF EXISTS " + r);
  exec(io, pool, "CREATE ROLE " + p + "admins");
  exec(io, pool, "CREATE ROLE " + p + "mid IN ROLE " + p + "admins");
  exec(io, pool, "CREATE ROLE " + p + "user LOGIN PASSWORD 'pw-one' VALID UNTIL '2001-01-01 00:00:00+00' IN ROLE " + p + "mid");
  exec(io, pool, "CREATE ROLE " + p + "nologin NOLOGIN");
  exec(io, pool, "CREATE ROLE " + p + "forever LOGIN PASSWORD 'pw-three' VALID UNTIL 'infinity'");
  exec(io, pool, "CREATE ROLE " + odd_ident + " LOGIN");

  SECTION("role_info") {
    auto u = run(io, pool.role_info(p + "user"));
    INFO((u ? std::string() : u.error()));
    REQUIRE(u);
    REQUIRE(*u);
    CHECK((*u)->name == p + "user");
    CHECK((*u)->can_login);
    CHECK_FALSE((*u)->is_superuser);
    CHECK((*u)->member_of == std::vector<std::string>{p + "admins", p + "mid"});  // transitive
    CHECK((*u)->is_admin);

    auto nl = run(io, pool.role_info(p + "nologin"));
    REQUIRE((nl && *nl));
    CHECK_FALSE((*nl)->can_login);
    CHECK((*nl)->member_of.empty());
    CHECK_FALSE((*nl)->is_admin);

    auto pg = run(io, pool.role_info("postgres"));
    REQUIRE((pg && *pg));
    CHECK((*pg)->is_superuser);
    CHECK((*pg)->is_admin);

    auto o = run(io, pool.role_info(odd));
    REQUIRE((o && *o));
    CHECK((*o)->name == odd);

    auto missing = run(io, pool.role_info(p + "missing' OR true --"));
    REQUIRE(missing);
    CHECK_FALSE(*missing);
  }

  SECTION("administrators: only chains of memberships that superusers granted count") {
    // A CREATEROLE role joins the admin role itself (PostgreSQL 15 lets it).
    exec(io, pool, "CREATE ROLE " + p + "self LOGIN CREATEROLE");
    auto as_self = s;
    as_self.user = p + "self";
    ControlPool self_pool(io.get_executor(), as_self);
    exec(io, self_pool, "GRANT " + p + "admins TO " + p + "self");
    // Recorded as granted by a non-superuser.
    exec(io, pool, "CREATE ROLE " + p + "viaplain LOGIN");
    exec(io, pool, "GRANT " + p + "admins TO " + p + "viaplain GRANTED BY " + p + "self");
    // A chain with one link a non-superuser granted.
    exec(io, pool, "CREATE ROLE " + p + "team IN ROLE " + p + "admins");
    exec(io, pool, "CREATE ROLE " + p + "chain LOGIN");
    exec(io, pool, "GRANT " + p + "team TO " + p + "chain GRANTED BY " + p + "self");
    // Granted by a superuser who is later demoted.
    exec(io, pool, "CREATE ROLE " + p + "su2 SUPERUSER");
    exec(io, pool, "CREATE ROLE " + p + "bysu2 LOGIN");
    exec(io, pool, "GRANT " + p + "admins TO " + p + "bysu2 GRANTED BY " + p + "su2");
    exec(io, pool, "CREATE ROLE " + p + "repl LOGIN REPLICATION");

    auto info = [&](const std::string& name) {
      auto r = run(io, pool.role_info(name));
      INFO(name << ": " << (r ? std::string() : r.error()));
      REQUIRE((r && *r));
      return **r;
    };
    auto self = info(p + "self");
    CHECK(self.member_of == std::vector<std::string>{p + "admins"});
    CHECK_FALSE(self.is_admin);
    CHECK(self.createrole);
    CHECK(self.is_protected());
    CHECK_FALSE(info(p + "viaplain").is_admin);
    CHECK(info(p + "chain").member_of == std::vector<std::string>{p + "admins", p + "team"});
    CHECK_FALSE(info(p + "chain").is_admin);
    CHECK(info(p + "user").is_admin);  // user -> mid -> admins, all granted by the control superuser
    CHECK(info(p + "bysu2").is_admin);
    auto protected_now = run(io, pool.protected_roles());
    REQUIRE(protected_now);
    auto has = [&](const std::vector<std::string>& v, const std::string& name) {
      return std::binary_search(v.begin(), v.end(), name);
    };
    CHECK(has(*protected_now, p + "bysu2"));
    exec(io, pool, "ALTER ROLE " + p + "su2 NOSUPERUSER");
    CHECK_FALSE(info(p + "bysu2").is_admin);

    auto prot = run(io, pool.protected_roles());
    REQUIRE(prot);
    CHECK(has(*prot, "postgres"));
    CHECK(has(*prot, p + "self"));  // CREATEROLE
    CHECK(has(*prot, p + "repl"));  // REPLICATION
    CHECK(has(*prot, p + "user"));  // an administrator
    CHECK(has(*prot, p + "mid"));
    CHECK_FALSE(has(*prot, p + "viaplain"));
    CHECK_FALSE(has(*prot, p + "chain"));
    CHECK_FALSE(has(*prot, p + "bysu2"));
    CHECK_FALSE(has(*prot, p + "nologin"));
    CHECK(info(p + "repl").replication);
    CHECK(info(p + "user").valid_until == std::optional<std::int64_t>(978307200));
  }

  SECTION("login_verifier") {
    auto v = run(io, pool.login_verifier(p + "user"));
    INFO((v ? std::string() : v.error()));
    REQUIRE((v && *v));
    REQUIRE((*v)->verifier);
    CHECK((*v)->verifier->rfind("SCRAM-SHA-256$4096:", 0) == 0);
    CHECK((*v)->valid_until == std::optional<std::int64_t>(978307200));
    CHECK((*v)->can_login);

    // Not cached: a new password is seen at once.
    const std::string before = *(*v)->verifier;
    exec(io, pool, "ALTER ROLE " + p + "user PASSWORD 'pw-two'");
    auto v2 = run(io, pool.login_verifier(p + "user"));
    REQUIRE((v2 && *v2));
    CHECK(*(*v2)->verifier != before);

    auto nl = run(io, pool.login_verifier(p + "nologin"));
    REQUIRE((nl && *nl));
    CHECK_FALSE((*nl)->verifier);
    CHECK_FALSE((*nl)->valid_until);
    CHECK_FALSE((*nl)->can_login);

    auto inf = run(io, pool.login_verifier(p + "forever"));
    REQUIRE((inf && *inf));
    CHECK_FALSE((*inf)->valid_until);
    CHECK((*inf)->can_login);

    auto missing = run(io, pool.login_verifier(p + "missing"));
    REQUIRE(missing);
    CHECK_FALSE(*missing);
  }

  SECTION("terminated control connections are replaced") {
    REQUIRE(run(io, pool.role_info(p + "user")));
    ControlPool killer(io.get_executor(), s);
    exec(io, killer,
         "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
         "WHERE application_name = 'tokengate-control' AND pid <> pg_backend_pid()");
    auto u = run(io, pool.role_info(p + "user"));
    INFO((u ? std::string() : u.error()));
    REQUIRE((u && *u));
    auto v = run(io, pool.login_verifier(p + "user"));
    REQUIRE((v && *v));
  }

  SECTION("a control user with a password (SCRAM where pg_hba.conf asks for it)") {
    exec(io, pool, "CREATE ROLE " + p + "ctl LOGIN PASSWORD 'ctl-pw-42'");
    auto s2 = s;
    s2.user = p + "ctl";
    s2.password = "ctl-pw-42";
    ControlPool with_password(io.get_executor(), s2);
    auto u = run(io, with_password.role_info(p + "user"));
    INFO((u ? std::string() : u.error()));
    REQUIRE((u && *u));
    CHECK((*u)->member_of == std::vector<std::string>{p + "admins", p + "mid"});
  }

  SECTION("a custom auth_query with the wrong shape is reported, not guessed at") {
    auto s2 = s;
    s2.auth_query = "SELECT rolpassword, rolvaliduntil, rolcanlogin FROM pg_catalog.pg_authid WHERE rolname = $1";
    ControlPool custom(io.get_executor(), s2);
    auto v = run(io, custom.login_verifier(p + "user"));
    REQUIRE_FALSE(v);
    CHECK(v.error() == "auth_query column 2 (valid until) is not epoch seconds; use extract(epoch from …)");
  }

  for (auto& r : drops) exec(io, pool, "DROP ROLE IF EXISTS " + r);
}

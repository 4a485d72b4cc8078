// Scripts of the startup-phase state machines: what the client or upstream
// sends, and the exact bytes tokengate answers with.
#include <catch2/catch.hpp>

#include "proxy/auth/scram.hpp"
#include "proxy/protocol/frame.hpp"
#include "proxy/session/client_handshake.hpp"
#include "proxy/session/upstream_login.hpp"
#include "tests/common/pg_bytes.hpp"

using namespace tokengate;
using namespace tokengate::protocol;
using namespace tokengate::test;
using session::ClientHandshake;
using session::UpstreamLogin;

namespace {

// Feeds `input` to the handshake in one go and runs it until it needs more,
// returning every action in order with the bytes consumed in between.
struct HandshakeScript {
  ClientHandshake hs;
  Bytes pending;

  ClientHandshake::Action feed(const Bytes& more) {
    pending.insert(pending.end(), more.begin(), more.end());
    std::size_t consumed = 0;
    auto action = hs.next(pending, consumed);
    pending.erase(pending.begin(), pending.begin() + std::ptrdiff_t(consumed));
    return action;
  }
  ClientHandshake::Action again() { return feed({}); }
};

Bytes password_request() { return msg('R', body_i32s({3})); }

}  // namespace

TEST_CASE("handshake: SSLRequest gets N, then startup, then a cleartext password request") {
  HandshakeScript s;
  auto a1 = s.feed(startup_packet(kSSLRequestCode));
  REQUIRE(std::holds_alternative<ClientHandshake::Reply>(a1));
  CHECK(std::get<ClientHandshake::Reply>(a1).bytes == Bytes{'N'});

  auto a2 = s.feed(startup_packet(kProtocolVersion3, startup_params({{"user", "alice"}, {"database", "d"}})));
  REQUIRE(std::holds_alternative<ClientHandshake::Reply>(a2));
  CHECK(std::get<ClientHandshake::Reply>(a2).bytes == password_request());

  CHECK(std::holds_alternative<ClientHandshake::NeedMore>(s.again()));
  auto a3 = s.feed(msg('p', body_cstrs({"s3cret"})));
  REQUIRE(std::holds_alternative<ClientHandshake::LoggedIn>(a3));
  const auto& in = std::get<ClientHandshake::LoggedIn>(a3);
  CHECK(in.password.view() == "s3cret");
  CHECK(in.startup.user == "alice");
  CHECK(in.startup.database == "d");
}

TEST_CASE("handshake: protocol 3.2 and _pq_ options are negotiated down to 3.0") {
  HandshakeScript s;
  auto a = s.feed(startup_packet(0x00030002, startup_params({{"user", "u"}, {"_pq_.compression", "on"}})));
  REQUIRE(std::holds_alternative<ClientHandshake::Reply>(a));
  Bytes nego = body_i32s({kProtocolVersion3, 1});
  put_cstr(nego, "_pq_.compression");
  CHECK(std::get<ClientHandshake::Reply>(a).bytes == concat({msg('v', nego), password_request()}));
  auto in = s.feed(msg('p', body_cstrs({"pw"})));
  REQUIRE(std::holds_alternative<ClientHandshake::LoggedIn>(in));
  const auto& startup = std::get<ClientHandshake::LoggedIn>(in).startup;
  CHECK(startup.user == "u");
  CHECK(startup.settings.empty());
  // The upstream sees 3.0 and no protocol options.
  CHECK(startup.for_upstream("u").protocol_version == kProtocolVersion3);
  CHECK(startup.for_upstream("u").parameters.size() == 1);
}

TEST_CASE("handshake: GSSENCRequest then SSLRequest (libpq's order) both get N") {
  HandshakeScript s;
  auto g = s.feed(startup_packet(kGSSENCRequestCode));
  REQUIRE(std::holds_alternative<ClientHandshake::Reply>(g));
  auto l = s.feed(startup_packet(kSSLRequestCode));
  REQUIRE(std::holds_alternative<ClientHandshake::Reply>(l));
  CHECK(std::get<ClientHandshake::Reply>(l).bytes == Bytes{'N'});
}

TEST_CASE("handshake: GSSENCRequest gets N") {
  HandshakeScript s;
  auto a = s.feed(startup_packet(kGSSENCRequestCode));
  REQUIRE(std::holds_alternative<ClientHandshake::Reply>(a));
  CHECK(std::get<ClientHandshake::Reply>(a).bytes == Bytes{'N'});
}

TEST_CASE("handshake: a packet arriving byte by byte is waited for") {
  HandshakeScript s;
  auto pkt = startup_packet(kProtocolVersion3, startup_params({{"user", "u"}}));
  for (std::size_t i = 0; i + 1 < pkt.size(); ++i)
    REQUIRE(std::holds_alternative<ClientHandshake::NeedMore>(s.feed(Bytes{pkt[i]})));
  CHECK(std::holds_alternative<ClientHandshake::Reply>(s.feed(Bytes{pkt.back()})));
}

TEST_CASE("handshake: bad startup input is answered as PostgreSQL answers it") {
  HandshakeScript s;
  SECTION("too long: dropped without a word, as soon as the length is known") {
    Bytes huge;
    put_i32(huge, 10005);
    auto a = s.feed(huge);
    REQUIRE(std::holds_alternative<ClientHandshake::Closed>(a));
    CHECK(std::get<ClientHandshake::Closed>(a).reason == "invalid length of startup packet");
  }
  SECTION("Terminate before any startup packet: its bytes read as a length, dropped") {
    auto a = s.feed(msg('X', {}));
    REQUIRE(std::holds_alternative<ClientHandshake::Closed>(a));
  }
  SECTION("unknown protocol version: 0A000") {
    auto a = s.feed(startup_packet(0x00040000, startup_params({{"user", "u"}})));
    REQUIRE(std::holds_alternative<ClientHandshake::Reject>(a));
    CHECK(std::get<ClientHandshake::Reject>(a).bytes ==
          error_response("FATAL", "0A000", "unsupported frontend protocol 4.0: server supports 3.0 to 3.0"));
  }
  SECTION("data pipelined after SSLRequest: answered, then refused") {
    auto a = s.feed(concat({startup_packet(kSSLRequestCode), startup_packet(kProtocolVersion3)}));
    REQUIRE(std::holds_alternative<ClientHandshake::Reject>(a));
    auto e = ErrorResponse::make("FATAL", "08P01", "received unencrypted data after SSL request");
    e.detail = "This could be either a client-software bug or evidence of an attempted man-in-the-middle attack.";
    Bytes expected{'N'};
    e.serialize(expected);
    CHECK(std::get<ClientHandshake::Reject>(a).bytes == expected);
  }
  SECTION("no user: NegotiateProtocolVersion first, then 28000") {
    auto a = s.feed(startup_packet(0x00030002, startup_params({{"database", "d"}, {"_pq_.a", "1"}})));
    REQUIRE(std::holds_alternative<ClientHandshake::Reject>(a));
    Bytes nego = body_i32s({kProtocolVersion3, 1});
    put_cstr(nego, "_pq_.a");
    CHECK(std::get<ClientHandshake::Reject>(a).bytes ==
          concat({msg('v', nego),
                  error_response("FATAL", "28000", "no PostgreSQL user name specified in startup packet")}));
  }
  SECTION("a query instead of a password") {
    s.feed(startup_packet(kProtocolVersion3, startup_params({{"user", "u"}})));
    auto a = s.feed(msg('Q', body_cstrs({"select 1"})));
    REQUIRE(std::holds_alternative<ClientHandshake::Reject>(a));
    CHECK(std::get<ClientHandshake::Reject>(a).bytes ==
          error_response("FATAL", "08P01", "expected password response, got message type 81"));
  }
  SECTION("the message type is judged before its length") {
    s.feed(startup_packet(kProtocolVersion3, startup_params({{"user", "u"}})));
    auto a = s.feed(Bytes{'X'});
    REQUIRE(std::holds_alternative<ClientHandshake::Reject>(a));
  }
  SECTION("a password message over 65535 bytes: dropped without a word") {
    s.feed(startup_packet(kProtocolVersion3, startup_params({{"user", "u"}})));
    Bytes big{'p'};
    put_i32(big, 65536);
    auto a = s.feed(big);
    REQUIRE(std::holds_alternative<ClientHandshake::Closed>(a));
  }
  SECTION("a password with bytes after its NUL") {
    s.feed(startup_packet(kProtocolVersion3, startup_params({{"user", "u"}})));
    auto a = s.feed(msg('p', body_cstrs({"pw", "x"})));
    REQUIRE(std::holds_alternative<ClientHandshake::Reject>(a));
    CHECK(std::get<ClientHandshake::Reject>(a).bytes == error_response("FATAL", "08P01", "invalid password packet size"));
  }
}

TEST_CASE("handshake: hanging up is quiet where PostgreSQL is quiet") {
  ClientHandshake nothing;
  auto a = nothing.on_eof({});
  REQUIRE(std::holds_alternative<ClientHandshake::Closed>(a));
  CHECK(std::get<ClientHandshake::Closed>(a).reason.empty());

  ClientHandshake partial;
  Bytes two{0, 0};
  auto b = partial.on_eof(two);
  REQUIRE(std::holds_alternative<ClientHandshake::Closed>(b));
  CHECK(std::get<ClientHandshake::Closed>(b).reason == "incomplete startup packet");
}

TEST_CASE("handshake: a cleartext password is not asked for when refused") {
  ClientHandshake hs({.tls_available = false, .require_tls = false, .refuse_plaintext_password = true});
  Bytes pkt = startup_packet(kProtocolVersion3, startup_params({{"user", "u"}}));
  std::size_t consumed = 0;
  auto a = hs.next(pkt, consumed);
  REQUIRE(std::holds_alternative<ClientHandshake::Reject>(a));
  auto fr = read_frame(std::get<ClientHandshake::Reject>(a).bytes);
  REQUIRE(fr.status == FrameStatus::complete);
  auto fields = ErrorFields::parse(fr.frame.body);
  REQUIRE(fields);
  CHECK(fields->sqlstate() == "28000");
  CHECK(*fields->find('H') == "Connect with sslmode=require, or set auth.allow_plaintext_passwords = true.");
}

TEST_CASE("handshake: with TLS available, SSLRequest starts TLS; require refuses plain logins") {
  ClientHandshake hs({.tls_available = true, .require_tls = true, .refuse_plaintext_password = true});
  std::size_t consumed = 0;
  auto ssl = startup_packet(kSSLRequestCode);
  CHECK(std::holds_alternative<ClientHandshake::StartTls>(hs.next(ssl, consumed)));
  hs.tls_established();
  auto login = hs.next(startup_packet(kProtocolVersion3, startup_params({{"user", "u"}})), consumed);
  CHECK(std::holds_alternative<ClientHandshake::Reply>(login));

  // A second SSLRequest is refused as PostgreSQL refuses it.
  ClientHandshake twice({.tls_available = true, .require_tls = false, .refuse_plaintext_password = false});
  CHECK(std::holds_alternative<ClientHandshake::StartTls>(twice.next(ssl, consumed)));
  twice.tls_established();
  auto again = twice.next(ssl, consumed);
  REQUIRE(std::holds_alternative<ClientHandshake::Reject>(again));
  CHECK(std::get<ClientHandshake::Reject>(again).bytes ==
        error_response("FATAL", "0A000", "unsupported frontend protocol 1234.5679: server supports 3.0 to 3.0"));

  ClientHandshake plain({.tls_available = true, .require_tls = true, .refuse_plaintext_password = false});
  auto refused = plain.next(startup_packet(kProtocolVersion3, startup_params({{"user", "u"}})), consumed);
  REQUIRE(std::holds_alternative<ClientHandshake::Reject>(refused));
  auto fr = read_frame(std::get<ClientHandshake::Reject>(refused).bytes);
  auto fields = ErrorFields::parse(fr.frame.body);
  REQUIRE(fields);
  CHECK(fields->message() == "tokengate requires an encrypted connection");
}

TEST_CASE("handshake: a CancelRequest is handed to the driver") {
  HandshakeScript s;
  auto a = s.feed(startup_packet(kCancelRequestCode, body_i32s({42, 7})));
  REQUIRE(std::holds_alternative<ClientHandshake::Cancel>(a));
  CHECK(std::get<ClientHandshake::Cancel>(a).request.process_id == 42);
  CHECK(std::get<ClientHandshake::Cancel>(a).request.secret_key == 7);
}

namespace {

StartupMessage alice_startup() {
  StartupMessage m;
  m.parameters = {{"user", "alice"}, {"database", "db"}, {"application_name", "t"}};
  return m;
}

UpstreamLogin::Step feed(UpstreamLogin& login, const Bytes& message) {
  auto fr = read_frame(message);
  REQUIRE(fr.status == FrameStatus::complete);
  return login.on_message(fr.frame);
}

const BackendKeyData kClientKey{1111, 2222};
const auto kAny = session::UpstreamAuthMethods::any();
std::optional<auth::SecretString> pw(std::string_view p) { return auth::SecretString(p); }

}  // namespace

TEST_CASE("upstream login: sends the StartupMessage it was given") {
  UpstreamLogin login(alice_startup(), pw("pw"), kClientKey, kAny);
  CHECK(login.start() == startup_packet(kProtocolVersion3, startup_params({{"user", "alice"},
                                                                           {"database", "db"},
                                                                           {"application_name", "t"}})));
}

TEST_CASE("upstream login: trust, then the upstream's process ID with our own secret") {
  UpstreamLogin login(alice_startup(), std::nullopt, kClientKey, kAny);
  auto ok = feed(login, msg('R', body_i32s({0})));
  CHECK(ok.status == UpstreamLogin::Status::in_progress);
  CHECK(ok.to_client == msg('R', body_i32s({0})));

  CHECK(feed(login, msg('S', body_cstrs({"server_version", "15.18"}))).to_client ==
        msg('S', body_cstrs({"server_version", "15.18"})));
  auto key = feed(login, msg('K', body_i32s({99, 77})));
  CHECK(key.to_client == msg('K', body_i32s({99, 2222})));
  auto ready = feed(login, msg('Z', Bytes{'I'}));
  CHECK(ready.status == UpstreamLogin::Status::done);
  CHECK(ready.to_client == msg('Z', Bytes{'I'}));
  CHECK(login.upstream_key().process_id == 99);
  CHECK(login.upstream_key().secret_key == 77);
}

TEST_CASE("upstream login: cleartext and MD5 requests are answered") {
  UpstreamLogin login(alice_startup(), pw("secret"), kClientKey, kAny);
  auto clear = feed(login, msg('R', body_i32s({3})));
  CHECK(clear.to_upstream == msg('p', body_cstrs({"secret"})));
  CHECK(clear.to_client.empty());

  UpstreamLogin login2(alice_startup(), pw("secret"), kClientKey, kAny);
  Bytes md5 = body_i32s({5});
  md5.insert(md5.end(), {1, 2, 3, 4});
  auto step = feed(login2, msg('R', md5));
  CHECK(step.to_upstream == msg('p', body_cstrs({"md598a0412b9c31436fc53776e863350083"})));
}

TEST_CASE("upstream login: a full SCRAM-SHA-256 exchange against a simulated server") {
  UpstreamLogin login(alice_startup(), pw("pencil"), kClientKey, kAny);
  Bytes sasl = body_i32s({10});
  put_cstr(sasl, "SCRAM-SHA-256-PLUS");
  put_cstr(sasl, "SCRAM-SHA-256");
  sasl.push_back(0);
  auto init = feed(login, msg('R', sasl));
  // SASLInitialResponse: mechanism (never -PLUS), length, client-first.
  auto fr = read_frame(init.to_upstream);
  REQUIRE(fr.status == FrameStatus::complete);
  BodyReader r(fr.frame.body);
  CHECK(*r.cstr() == "SCRAM-SHA-256");
  auto len = *r.i32();
  std::string client_first(as_chars(r.rest()));
  CHECK(std::size_t(len) == client_first.size());
  REQUIRE(client_first.rfind("n,,n=,r=", 0) == 0);
  std::string cnonce = client_first.substr(8);

  // The server side of the exchange, computed independently of UpstreamLogin
  // with a ScramClient fed the same nonce (same math, other instance).
  std::string server_first = "r=" + cnonce + "SERVERNONCE,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
  auth::ScramClient twin("pencil", cnonce);
  auto expected_final = twin.client_final(server_first);
  REQUIRE(expected_final);

  Bytes cont = body_i32s({11});
  put_str(cont, server_first);
  auto step = feed(login, msg('R', cont));
  Bytes expected_msg;
  put_str(expected_msg, *expected_final);
  CHECK(step.to_upstream == msg('p', expected_msg));

  SECTION("a wrong server signature fails the login") {
    Bytes fin = body_i32s({12});
    put_str(fin, "v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    auto bad = feed(login, msg('R', fin));
    CHECK(bad.status == UpstreamLogin::Status::failed);
    CHECK(bad.to_client == error_response("FATAL", "08P01", "upstream SCRAM server signature did not verify"));
  }
}

TEST_CASE("upstream login: SCRAM-SHA-256-PLUS alone is refused, never used") {
  UpstreamLogin login(alice_startup(), pw("pw"), kClientKey, kAny);
  Bytes sasl = body_i32s({10});
  put_cstr(sasl, "SCRAM-SHA-256-PLUS");
  sasl.push_back(0);
  auto step = feed(login, msg('R', sasl));
  CHECK(step.status == UpstreamLogin::Status::failed);
  CHECK(step.to_upstream.empty());
}

TEST_CASE("upstream login: upstream errors reach the client unchanged") {
  UpstreamLogin login(alice_startup(), pw("wrong"), kClientKey, kAny);
  feed(login, msg('R', body_i32s({3})));
  Bytes err_body;
  for (auto [c, v] : std::initializer_list<std::pair<char, const char*>>{
           {'S', "FATAL"}, {'V', "FATAL"}, {'C', "28P01"},
           {'M', "password authentication failed for user \"alice\""}, {'F', "auth.c"}, {'L', "323"},
           {'R', "auth_failed"}}) {
    err_body.push_back(std::uint8_t(c));
    put_cstr(err_body, v);
  }
  err_body.push_back(0);
  auto step = feed(login, msg('E', err_body));
  CHECK(step.status == UpstreamLogin::Status::failed);
  CHECK(step.to_client == msg('E', err_body));
  CHECK(login.failure_reason() == "28P01 password authentication failed for user \"alice\"");
}

TEST_CASE("upstream login: 3D000 after AuthenticationOk is passed on too") {
  UpstreamLogin login(alice_startup(), std::nullopt, kClientKey, kAny);
  feed(login, msg('R', body_i32s({0})));
  auto err = error_response("FATAL", "3D000", "database \"db\" does not exist");
  auto step = feed(login, err);
  CHECK(step.status == UpstreamLogin::Status::failed);
  CHECK(step.to_client == err);
}

TEST_CASE("upstream login: unexpected messages fail cleanly") {
  UpstreamLogin login(alice_startup(), std::nullopt, kClientKey, kAny);
  auto step = feed(login, msg('D', body_i32s({0})));
  CHECK(step.status == UpstreamLogin::Status::failed);
  CHECK(step.to_client ==
        error_response("FATAL", "08P01", "unexpected message type 'D' from upstream during authentication"));

  UpstreamLogin no_pw(alice_startup(), std::nullopt, kClientKey, kAny);
  auto asked = feed(no_pw, msg('R', body_i32s({3})));
  CHECK(asked.status == UpstreamLogin::Status::failed);
  CHECK(asked.to_client ==
        error_response("FATAL", "28000", "upstream asked for a password and none is configured"));

  UpstreamLogin gss(alice_startup(), pw("pw"), kClientKey, kAny);
  CHECK(feed(gss, msg('R', body_i32s({7}))).status == UpstreamLogin::Status::failed);
}

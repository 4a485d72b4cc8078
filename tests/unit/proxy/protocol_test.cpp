// Byte-level tests of the protocol codec: startup packets, framing, messages,
// and the stream trackers used by the relay.
#include <catch2/catch.hpp>

#include "proxy/protocol/frame.hpp"
#include "proxy/protocol/messages.hpp"
#include "tests/common/pg_bytes.hpp"

using namespace tokengate::protocol;
using namespace tokengate::test;

TEST_CASE("a StartupMessage keeps every parameter in order") {
  auto pkt = startup_packet(kProtocolVersion3, startup_params({{"user", "alice"},
                                                               {"database", "db"},
                                                               {"application_name", "psql"},
                                                               {"options", "-c search_path=x"},
                                                               {"extra_float_digits", "3"}}));
  auto parsed = parse_startup_packet(pkt);
  auto* m = std::get_if<StartupMessage>(&parsed);
  REQUIRE(m != nullptr);
  CHECK(m->parameters.size() == 5);
  CHECK(*m->find("options") == "-c search_path=x");
  Bytes again;
  m->serialize(again);
  CHECK(again == pkt);
}

namespace {
// The error a parse gave, or fails the test.
StartupPacketError error_of(const StartupPacket& parsed) {
  REQUIRE(std::holds_alternative<StartupPacketError>(parsed));
  return std::get<StartupPacketError>(parsed);
}
}  // namespace

TEST_CASE("startup packets PostgreSQL would refuse are refused with its words") {
  SECTION("protocol 2.0: answered in the old format, the only one such a client reads") {
    auto err = error_of(parse_startup_packet(startup_packet(0x00020000, startup_params({{"user", "a"}}))));
    CHECK(err.old_format);
    Bytes expected{'E'};
    put_str(expected, "FATAL:  unsupported frontend protocol 2.0: server supports 3.0 to 3.0\n");
    expected.push_back(0);
    CHECK(err.answer() == expected);
  }
  SECTION("protocol 3.2 is accepted, to be negotiated down") {
    auto parsed = parse_startup_packet(startup_packet(0x00030002, startup_params({{"user", "a"}})));
    REQUIRE(std::holds_alternative<StartupMessage>(parsed));
  }
  SECTION("protocol 4.0: 0A000") {
    auto err = error_of(parse_startup_packet(startup_packet(0x00040000, startup_params({{"user", "a"}}))));
    CHECK(err.answer() == error_response("FATAL", "0A000", "unsupported frontend protocol 4.0: server supports 3.0 to 3.0"));
  }
  SECTION("no user: left to the handshake, which sends NegotiateProtocolVersion first") {
    auto parsed = parse_startup_packet(startup_packet(kProtocolVersion3, startup_params({{"database", "d"}})));
    REQUIRE(std::holds_alternative<StartupMessage>(parsed));
  }
  SECTION("missing terminator") {
    Bytes payload;
    put_cstr(payload, "user");
    put_cstr(payload, "a");
    auto err = error_of(parse_startup_packet(startup_packet(kProtocolVersion3, payload)));
    CHECK(err.answer() ==
          error_response("FATAL", "08P01", "invalid startup packet layout: expected terminator as last byte"));
  }
  SECTION("unterminated value") {
    Bytes payload;
    put_cstr(payload, "user");
    put_str(payload, "alice");
    auto err = error_of(parse_startup_packet(startup_packet(kProtocolVersion3, payload)));
    CHECK(err.sqlstate == "08P01");
  }
  SECTION("a bad replication value is named before the layout is checked") {
    Bytes payload;
    put_cstr(payload, "replication");
    put_cstr(payload, "maybe");
    put_cstr(payload, "user");
    put_str(payload, "x");  // and no terminator
    auto err = error_of(parse_startup_packet(startup_packet(kProtocolVersion3, payload)));
    auto e = ErrorResponse::make("FATAL", "22023", "invalid value for parameter \"replication\": \"maybe\"");
    e.hint = "Valid values are: \"false\", 0, \"true\", 1, \"database\".";
    Bytes expected;
    e.serialize(expected);
    CHECK(err.answer() == expected);
  }
  SECTION("cancel request of the wrong size: dropped without a word") {
    auto err = error_of(parse_startup_packet(startup_packet(kCancelRequestCode, body_i32s({1}))));
    CHECK(err.silent);
    CHECK(err.answer().empty());
  }
  SECTION("a repeated SSLRequest is an unsupported protocol version") {
    auto err = error_of(parse_startup_packet(startup_packet(kSSLRequestCode), true, false));
    CHECK(err.message == "unsupported frontend protocol 1234.5679: server supports 3.0 to 3.0");
    CHECK(err.sqlstate == "0A000");
  }
}

TEST_CASE("startup parameters: repeats are kept for the caller to judge, _pq_ options apart") {
  auto parsed = parse_startup_packet(startup_packet(
      kProtocolVersion3, startup_params({{"user", "a"}, {"_pq_.x", "1"}, {"user", "b"}, {"replication", "on"}})));
  auto* m = std::get_if<StartupMessage>(&parsed);
  REQUIRE(m != nullptr);
  const std::vector<std::pair<std::string, std::string>> expected{{"user", "a"}, {"user", "b"}, {"replication", "on"}};
  CHECK(m->parameters == expected);
  const std::vector<std::string> options{"_pq_.x"};
  CHECK(m->protocol_options == options);
}

TEST_CASE("parse_pg_bool reads what PostgreSQL's parse_bool reads") {
  for (const char* yes : {"true", "TRUE", "t", "tr", "yes", "y", "on", "ON", "1"}) CHECK(parse_pg_bool(yes) == true);
  for (const char* no : {"false", "f", "no", "n", "off", "of", "0"}) CHECK(parse_pg_bool(no) == false);
  for (const char* neither : {"", "o", "truex", "2", "01", "database", "nope"}) CHECK_FALSE(parse_pg_bool(neither));
}

TEST_CASE("SSLRequest, GSSENCRequest and CancelRequest are recognised") {
  CHECK(std::holds_alternative<SSLRequest>(parse_startup_packet(startup_packet(kSSLRequestCode))));
  CHECK(std::holds_alternative<GSSENCRequest>(parse_startup_packet(startup_packet(kGSSENCRequestCode))));
  auto parsed = parse_startup_packet(startup_packet(kCancelRequestCode, body_i32s({1234, -99})));
  auto* c = std::get_if<CancelRequest>(&parsed);
  REQUIRE(c != nullptr);
  CHECK(c->process_id == 1234);
  CHECK(c->secret_key == -99);
  Bytes out;
  c->serialize(out);
  CHECK(out == startup_packet(kCancelRequestCode, body_i32s({1234, -99})));
}

TEST_CASE("read_startup_frame asks for more, and rejects impossible lengths") {
  auto pkt = startup_packet(kSSLRequestCode);
  CHECK(read_startup_frame(ByteView(pkt.data(), 3), 10000).status == FrameStatus::need_more);
  auto partial = read_startup_frame(ByteView(pkt.data(), 6), 10000);
  CHECK(partial.status == FrameStatus::need_more);
  CHECK(partial.need == 8);
  CHECK(read_startup_frame(pkt, 10000).status == FrameStatus::complete);
  // The limit is on what follows the length word, as in PostgreSQL.
  Bytes at_limit;
  put_i32(at_limit, 10004);
  CHECK(read_startup_frame(at_limit, 10000).status == FrameStatus::need_more);
  Bytes huge;
  put_i32(huge, 10005);
  CHECK(read_startup_frame(huge, 10000).status == FrameStatus::bad_length);
  Bytes tiny;
  put_i32(tiny, 7);
  CHECK(read_startup_frame(tiny, 10000).status == FrameStatus::bad_length);
}

TEST_CASE("read_frame yields one whole message or says how much it needs") {
  auto q = msg('Q', body_cstrs({"select 1"}));
  auto two = concat({q, msg('S', {})});
  auto first = read_frame(two);
  REQUIRE(first.status == FrameStatus::complete);
  CHECK(first.frame.tag == 'Q');
  CHECK(first.frame.size == q.size());
  CHECK(as_chars(first.frame.body) == std::string_view("select 1\0", 9));
  auto short_read = read_frame(ByteView(q.data(), 7));
  CHECK(short_read.status == FrameStatus::need_more);
  CHECK(short_read.need == q.size());
  Bytes bad{'Q', 0, 0, 0, 3};
  CHECK(read_frame(bad).status == FrameStatus::bad_length);
}

TEST_CASE("ErrorResponse is written field by field and read back") {
  auto e = ErrorResponse::make("FATAL", "08P01", "invalid length of startup packet");
  Bytes out;
  e.serialize(out);
  CHECK(out == error_response("FATAL", "08P01", "invalid length of startup packet"));
  auto fr = read_frame(out);
  REQUIRE(fr.status == FrameStatus::complete);
  auto fields = ErrorFields::parse(fr.frame.body);
  REQUIRE(fields);
  CHECK(fields->sqlstate() == "08P01");
  CHECK(fields->severity() == "FATAL");
  Bytes round;
  fields->serialize(round, 'E');
  CHECK(round == out);
}

TEST_CASE("malformed bodies are rejected, not read past") {
  CHECK_FALSE(ErrorFields::parse(Bytes{'C', '0', '8'}));      // unterminated
  CHECK_FALSE(ReadyForQuery::parse(Bytes{'X'}));               // unknown status
  CHECK_FALSE(ReadyForQuery::parse(Bytes{'I', 'I'}));          // trailing byte
  CHECK_FALSE(BackendKeyData::parse(body_i32s({1})));           // short
  CHECK_FALSE(AuthenticationRequest::parse(body_i32s({5})));    // md5 without salt
  CHECK_FALSE(PasswordMessage::parse(Bytes{'a', 'b'}));          // no NUL
}

TEST_CASE("Authentication requests parse SASL mechanisms and round-trip") {
  Bytes body = body_i32s({10});
  put_cstr(body, "SCRAM-SHA-256-PLUS");
  put_cstr(body, "SCRAM-SHA-256");
  body.push_back(0);
  auto req = AuthenticationRequest::parse(body);
  REQUIRE(req);
  CHECK(req->sasl_mechanisms == std::vector<std::string>{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"});
  Bytes out;
  req->serialize(out);
  CHECK(out == msg('R', body));
}

TEST_CASE("StreamTracker follows boundaries across arbitrary chunking") {
  auto stream = concat({msg('T', Bytes(30, 'x')), msg('D', Bytes(100000, 'y')), msg('C', body_cstrs({"SELECT 1"})),
                        msg('Z', Bytes{'T'}), msg('Z', Bytes{'I'})});
  for (std::size_t chunk : {1u, 2u, 5u, 7u, 4096u, 1000000u}) {
    StreamTracker tracker;
    std::string tags, statuses;
    for (std::size_t i = 0; i < stream.size(); i += chunk) {
      auto n = std::min(chunk, stream.size() - i);
      REQUIRE(tracker.feed(ByteView(stream.data() + i, n), [&](char t, std::uint32_t) { tags += t; },
                           [&](char s) { statuses += s; }));
    }
    INFO("chunk size " << chunk);
    CHECK(tags == "TDCZZ");
    CHECK(statuses == "TI");
  }
}

// Found by the relay fuzz target: a malformed, longer ReadyForQuery used to
// report its status only when a read began at its last byte.
TEST_CASE("StreamTracker reports an overlong ReadyForQuery's last byte, however split") {
  auto stream = msg('Z', Bytes{'I', 'I', 'E'});
  for (std::size_t chunk : {1u, 2u, 7u, 1000u}) {
    StreamTracker tracker;
    std::string statuses;
    for (std::size_t i = 0; i < stream.size(); i += chunk) {
      auto n = std::min(chunk, stream.size() - i);
      REQUIRE(tracker.feed(ByteView(stream.data() + i, n), [](char, std::uint32_t) {},
                           [&](char s) { statuses += s; }));
    }
    INFO("chunk size " << chunk);
    CHECK(statuses == "E");
  }
}

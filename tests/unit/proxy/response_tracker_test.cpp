// ResponseTracker: which upstream responses end which client message, the
// skip-until-Sync rule, and suppressed ReadyForQuery, over any chunking.
#include <catch2/catch.hpp>

#include "proxy/session/response_tracker.hpp"
#include "tests/common/pg_bytes.hpp"

using namespace tokengate::test;
using tokengate::session::ResponseTracker;
using Expect = ResponseTracker::Expect;

namespace {

// Feeds `stream` in chunks of `chunk` bytes; returns the bytes passed on.
Bytes run(ResponseTracker& t, const Bytes& stream, std::size_t chunk) {
  Bytes out;
  for (std::size_t i = 0; i < stream.size(); i += chunk) {
    auto n = std::min(chunk, stream.size() - i);
    std::vector<std::pair<std::size_t, std::size_t>> ranges;
    REQUIRE(t.feed(tokengate::protocol::ByteView(stream.data() + i, n), ranges));
    for (auto [b, e] : ranges) out.insert(out.end(), stream.begin() + std::ptrdiff_t(i + b), stream.begin() + std::ptrdiff_t(i + e));
  }
  return out;
}

Bytes ready(char s) { return msg('Z', Bytes{std::uint8_t(s)}); }

}  // namespace

TEST_CASE("a simple query is outstanding until its ReadyForQuery") {
  for (std::size_t chunk : {1u, 3u, 1000u}) {
    ResponseTracker t;
    t.sent(Expect::query);
    auto body = concat({msg('T', Bytes(10, 'x')), msg('D', Bytes(20, 'y')), msg('C', body_cstrs({"SELECT 1"}))});
    CHECK(run(t, body, chunk) == body);
    CHECK_FALSE(t.idle());
    CHECK(run(t, ready('T'), chunk) == ready('T'));
    CHECK(t.idle());
    CHECK(t.tx_status() == 'T');
  }
}

TEST_CASE("a suppressed ReadyForQuery is cut out of the stream, whatever the chunking") {
  for (std::size_t chunk : {1u, 2u, 4u, 6u, 7u, 1000u}) {
    ResponseTracker t;
    t.sent(Expect::query, /*suppress_ready=*/true);
    auto before = msg('C', body_cstrs({"SELECT 1"}));
    auto notice = msg('N', body_cstrs({"SNOTICE"}));
    auto stream = concat({before, ready('E'), notice});
    INFO("chunk " << chunk);
    CHECK(run(t, stream, chunk) == concat({before, notice}));
    CHECK(t.idle());
    CHECK(t.tx_status() == 'E');
  }
}

TEST_CASE("extended messages complete one by one; an error skips the rest of the group") {
  ResponseTracker t;
  for (auto e : {Expect::parse, Expect::bind, Expect::execute, Expect::parse, Expect::bind, Expect::execute,
                 Expect::sync})
    t.sent(e);
  CHECK(t.outstanding() == 7);
  run(t, concat({msg('1', {}), msg('2', {})}), 1000);
  CHECK(t.outstanding() == 5);
  // Execute fails: the second Parse/Bind/Execute will never be answered.
  auto errors = t.errors_seen();
  run(t, error_response("ERROR", "22012", "division by zero"), 1000);
  CHECK(t.errors_seen() == errors + 1);
  CHECK(t.outstanding() == 1);  // only the Sync
  CHECK(t.skipping_until_sync() == false);  // the client already sent its Sync
  run(t, ready('I'), 1000);
  CHECK(t.idle());
}

TEST_CASE("messages sent after an error and before Sync are not waited for") {
  ResponseTracker t;
  t.sent(Expect::parse);
  run(t, error_response("ERROR", "42601", "syntax error"), 1000);
  CHECK(t.skipping_until_sync());
  t.sent(Expect::bind);
  t.sent(Expect::execute);
  CHECK(t.idle());
  t.sent(Expect::sync);
  CHECK_FALSE(t.skipping_until_sync());
  CHECK(t.outstanding() == 1);
}

TEST_CASE("an error inside a simple query does not skip: it still ends at ReadyForQuery") {
  ResponseTracker t;
  t.sent(Expect::query);
  t.sent(Expect::query);
  run(t, concat({error_response("ERROR", "22012", "division by zero"), ready('I')}), 1000);
  CHECK(t.outstanding() == 1);
}

TEST_CASE("describe ends at RowDescription or NoData; asynchronous messages pass") {
  ResponseTracker t;
  t.sent(Expect::describe);
  t.sent(Expect::describe);
  auto stream = concat({msg('t', Bytes{0, 0}), msg('A', body_cstrs({"chan"})), msg('T', Bytes{0, 0}), msg('n', {})});
  CHECK(run(t, stream, 3) == stream);
  CHECK(t.idle());
}

TEST_CASE("a local failure makes the client side skip until Sync") {
  ResponseTracker t;
  t.fail_current_group();
  CHECK(t.skipping_until_sync());
  t.sent(Expect::execute);
  CHECK(t.idle());
  t.sent(Expect::sync);
  CHECK_FALSE(t.skipping_until_sync());
}

// Found by the relay fuzz target: with a malformed ReadyForQuery longer than
// one byte, the status used to be read only when a read began at its last
// byte, so it depended on how the stream was split.
TEST_CASE("the status of an overlong ReadyForQuery does not depend on chunking") {
  auto stream = msg('Z', Bytes{'I', 'I', 'I', 'I', 'I', 'E'});
  for (std::size_t chunk : {1u, 2u, 5u, 6u, 1000u}) {
    ResponseTracker t('I');
    t.sent(Expect::sync);
    INFO("chunk " << chunk);
    CHECK(run(t, stream, chunk) == stream);
    CHECK(t.tx_status() == 'E');
  }
}

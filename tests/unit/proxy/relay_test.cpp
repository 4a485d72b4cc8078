// session::Relay as byte scripts: what the client and the upstream send, and
// exactly what goes each way. Most scripts are also re-fed with every input
// cut at every offset (split_everywhere): the bytes written must not change.
#include <catch2/catch.hpp>

#include "parser_ext/parser.hpp"
#include "proxy/protocol/result_set.hpp"
#include "proxy/session/relay.hpp"
#include "tests/common/pg_bytes.hpp"
#include "tests/common/pg_messages.hpp"
#include "tests/common/relay_script.hpp"

using namespace tokengate;
using namespace tokengate::test;
using session::LocalResult;
using session::Relay;
using session::RelayOptions;
using session::StatementRequest;

namespace {

parser_ext::Statement statement(std::string_view sql) {
  auto r = parser_ext::parse_statement(sql);
  REQUIRE(std::holds_alternative<parser_ext::Statement>(r));
  return std::get<parser_ext::Statement>(r);
}

// Results of API TOKEN statements as the token service would give them.
LocalResult done_with(std::string tag) {
  LocalResult r;
  r.command_tag = std::move(tag);
  r.executed = true;
  return r;
}
LocalResult show_tokens(std::initializer_list<std::string> names) {
  LocalResult r;
  r.columns = session::columns_of(statement("SHOW API TOKENS"));
  for (const auto& n : names)
    r.rows.push_back({n, std::string("alice"), protocol::Timestamp::from_unix_seconds(1'800'000'000),
                      protocol::Timestamp::from_unix_seconds(1'900'000'000), std::monostate{}, std::string("active"),
                      std::monostate{}, std::string("alice")});
  r.command_tag = "SHOW";
  r.executed = true;
  return r;
}
LocalResult failed(std::string sqlstate, std::string message) {
  LocalResult r;
  r.error = protocol::ErrorResponse::make("ERROR", std::move(sqlstate), std::move(message));
  return r;
}

Bytes simple(const LocalResult& r) {
  Bytes b;
  session::write_simple(b, r);
  return b;
}
Bytes executed(const LocalResult& r, std::int32_t max_rows, session::ExecuteCursor& cursor) {
  Bytes b;
  (void)session::write_execute(b, r, {}, max_rows, cursor);
  return b;
}
Bytes describe_statement(std::string_view sql) {
  Bytes b;
  session::write_describe_statement(b, statement(sql));
  return b;
}
Bytes err(std::string_view sqlstate, std::string_view message) { return pg::error(sqlstate, message); }

// The Parse tokengate injects to fail the upstream's transaction.
Bytes injected_failure() {
  return pg::parse("tokengate_failed_api_token_statement",
                   "tokengate: an API TOKEN statement failed in this transaction");
}
Bytes upstream_syntax_error() { return pg::error("42601", "syntax error at or near \"tokengate\""); }

Result answer(LocalResult r) {
  return Result{[r](const StatementRequest&) { return r; }};
}

}  // namespace

TEST_CASE("relay: ordinary traffic passes both ways unchanged, as slices of the bytes read") {
  RelayHarness h;
  auto q = pg::query("select 1");
  h.relay.on_client_bytes(q);
  REQUIRE(h.relay.to_upstream().slices() == 1);
  h.relay.to_upstream().for_each([&](protocol::ByteView v) { CHECK(v.data() == q.data()); });
  h.collect();
  CHECK(h.take_upstream() == q);
  auto answer_bytes = concat({pg::row_description({"?column?"}), pg::data_row({"1"}), pg::command_complete("SELECT 1"),
                              pg::ready('I')});
  h.relay.on_upstream_bytes(answer_bytes);
  REQUIRE(h.relay.to_client().slices() == 1);
  h.relay.to_client().for_each([&](protocol::ByteView v) {
    CHECK(v.data() == answer_bytes.data());
    CHECK(v.size() == answer_bytes.size());
  });
  h.collect();
  CHECK(h.take_client() == answer_bytes);
  CHECK(h.relay.outstanding() == 0);
  CHECK(h.relay.wants_client_bytes());
}

TEST_CASE("relay: a Query with an API TOKEN statement is answered locally and never goes upstream") {
  auto out = split_everywhere({}, {FromClient{pg::query("SHOW API TOKENS")}, answer(show_tokens({"a", "b"}))});
  CHECK(out.upstream.empty());
  CHECK(out.client == concat({simple(show_tokens({"a", "b"})), pg::ready('I')}));
  CHECK(out.requests == std::vector<std::string>{parser_ext::to_string(statement("SHOW API TOKENS"))});
}

TEST_CASE("relay: a multi-statement Query runs its parts in order with one ReadyForQuery") {
  auto out = split_everywhere(
      {}, {FromClient{pg::query("select 1; DROP API TOKEN t; select 2")},
           FromUpstream{concat({pg::row_description({"a"}), pg::data_row({"1"}), pg::command_complete("SELECT 1"),
                                pg::ready('I')})},
           answer(done_with("DROP API TOKEN")),
           FromUpstream{concat({pg::row_description({"b"}), pg::data_row({"2"}), pg::command_complete("SELECT 1"),
                                pg::ready('I')})}});
  CHECK(out.upstream == concat({pg::query("select 1"), pg::query(" select 2")}));
  CHECK(out.client == concat({pg::row_description({"a"}), pg::data_row({"1"}), pg::command_complete("SELECT 1"),
                              simple(done_with("DROP API TOKEN")), pg::row_description({"b"}), pg::data_row({"2"}),
                              pg::command_complete("SELECT 1"), pg::ready('I')}));
}

TEST_CASE("relay: the first error of a multi-statement Query stops the rest") {
  SECTION("upstream error") {
    auto out = split_everywhere({}, {FromClient{pg::query("select 1/0; DROP API TOKEN t")},
                                     FromUpstream{concat({err("22012", "division by zero"), pg::ready('I')})}});
    CHECK(out.upstream == pg::query("select 1/0"));
    CHECK(out.client == concat({err("22012", "division by zero"), pg::ready('I')}));
    CHECK(out.requests.empty());
  }
  SECTION("local error") {
    auto out = split_everywhere({}, {FromClient{pg::query("DROP API TOKEN t; select 1")},
                                     answer(failed("42704", "API token \"t\" does not exist"))});
    CHECK(out.upstream.empty());
    CHECK(out.client == concat({err("42704", "API token \"t\" does not exist"), pg::ready('I')}));
  }
  SECTION("a syntax error anywhere: nothing runs") {
    auto out = split_everywhere({}, {FromClient{pg::query("select 1; CREATE API TOKEN MAX DURATIN '1d'")}});
    CHECK(out.upstream.empty());
    REQUIRE(out.client.size() > 6);
    CHECK(out.client[0] == 'E');
    CHECK(Bytes(out.client.end() - 6, out.client.end()) == pg::ready('I'));
  }
}

TEST_CASE("relay: pipelined extended batch mixing local and forwarded messages keeps the client's order") {
  const std::string show = "SHOW API TOKENS";
  const Bytes batch = concat({pg::parse("s1", "select 1"), pg::bind("", "s1"), pg::execute(),  //
                              pg::parse("t", show), pg::bind("p", "t"), pg::describe('P', "p"), pg::execute("p"),
                              pg::parse("", "select 2"), pg::bind("", ""), pg::execute(), pg::sync()});
  const Bytes first_answers =
      concat({pg::parse_complete(), pg::bind_complete(), pg::data_row({"1"}), pg::command_complete("SELECT 1")});
  const Bytes last_answers = concat({pg::parse_complete(), pg::bind_complete(), pg::data_row({"2"}),
                                     pg::command_complete("SELECT 1"), pg::ready('I')});
  auto out = split_everywhere({}, {FromClient{batch}, FromUpstream{first_answers}, answer(show_tokens({"x"})),
                                   FromUpstream{last_answers}});
  // The first three go upstream with a Flush (the upstream holds answers
  // until Sync or Flush); the local four are answered once those are; the
  // rest follows.
  CHECK(out.upstream == concat({pg::parse("s1", "select 1"), pg::bind("", "s1"), pg::execute(), pg::flush(),
                                pg::parse("", "select 2"), pg::bind("", ""), pg::execute(), pg::sync()}));
  Bytes describe_portal;
  REQUIRE(session::write_describe_portal(describe_portal, statement(show), {}));
  session::ExecuteCursor cursor;
  CHECK(out.client == concat({first_answers, pg::parse_complete(), pg::bind_complete(), describe_portal,
                              executed(show_tokens({"x"}), 0, cursor), last_answers}));
}

TEST_CASE("relay: an upstream error mid-pipeline skips the local messages after it until Sync") {
  const Bytes batch = concat({pg::parse("", "select 1/0"), pg::bind("", ""), pg::execute(),
                              pg::parse("t", "DROP API TOKEN x"), pg::bind("", "t"), pg::execute(), pg::sync(),
                              pg::query("select 'after'")});
  auto out = split_everywhere(
      {}, {FromClient{batch},
           FromUpstream{concat({pg::parse_complete(), pg::bind_complete(), err("22012", "division by zero")})},
           FromUpstream{pg::ready('I')},
           FromUpstream{concat({pg::data_row({"after"}), pg::command_complete("SELECT 1"), pg::ready('I')})}});
  CHECK(out.requests.empty());
  CHECK(out.upstream == concat({pg::parse("", "select 1/0"), pg::bind("", ""), pg::execute(), pg::flush(),
                                pg::sync(), pg::query("select 'after'")}));
  CHECK(out.client == concat({pg::parse_complete(), pg::bind_complete(), err("22012", "division by zero"),
                              pg::ready('I'), pg::data_row({"after"}), pg::command_complete("SELECT 1"),
                              pg::ready('I')}));
}

TEST_CASE("relay: a local error mid-pipeline skips to Sync and rolls the batch back upstream") {
  // Something of the batch already ran upstream (an implicit transaction):
  // tokengate makes the upstream fail it too, so nothing of it commits.
  const Bytes batch = concat({pg::parse("", "insert into t values (1)"), pg::bind("", ""), pg::execute(),
                              pg::parse("bad", "CREATE API TOKEN MAX DURATIN '1d'"), pg::bind("", "bad"),
                              pg::execute(), pg::parse("", "insert into t values (2)"), pg::sync()});
  const Bytes upstream_answers = concat({pg::parse_complete(), pg::bind_complete(), pg::command_complete("INSERT 0 1")});
  auto out = split_everywhere({}, {FromClient{batch}, FromUpstream{upstream_answers},
                                   FromUpstream{concat({upstream_syntax_error(), pg::ready('I')})}});
  CHECK(out.upstream == concat({pg::parse("", "insert into t values (1)"), pg::bind("", ""), pg::execute(),
                                pg::flush(), injected_failure(), pg::sync()}));
  REQUIRE(out.client.size() > upstream_answers.size());
  CHECK(Bytes(out.client.begin(), out.client.begin() + std::ptrdiff_t(upstream_answers.size())) == upstream_answers);
  // Then tokengate's 42601 and the ReadyForQuery; the injected error is not shown.
  auto rest = Bytes(out.client.begin() + std::ptrdiff_t(upstream_answers.size()), out.client.end());
  CHECK(rest[0] == 'E');
  CHECK(Bytes(rest.end() - 6, rest.end()) == pg::ready('I'));
  CHECK(describe(rest).find("42601") != std::string::npos);
  CHECK(describe(rest).find("tokengate:") == std::string::npos);
}

TEST_CASE("relay: a local error with nothing forwarded in the batch injects nothing") {
  auto out = split_everywhere({}, {FromClient{concat({pg::parse("", "DROP API TOKEN $1"), pg::sync()})},
                                   FromUpstream{pg::ready('I')}});
  CHECK(out.upstream == pg::sync());
  REQUIRE(!out.client.empty());
  CHECK(describe(out.client).find("42P02") != std::string::npos);
  CHECK(Bytes(out.client.end() - 6, out.client.end()) == pg::ready('I'));
}

TEST_CASE("relay: a Parse with an API TOKEN statement after another one never goes upstream") {
  for (const char* text : {"select 1; DROP API TOKEN x", "select 1; select 2;; CREATE API TOKEN y"}) {
    auto out =
        split_everywhere({}, {FromClient{concat({pg::parse("", text), pg::sync()})}, FromUpstream{pg::ready('I')}});
    CHECK(out.upstream == pg::sync());
    REQUIRE(!out.client.empty());
    CHECK(describe(out.client).find("cannot insert multiple commands into a prepared statement") != std::string::npos);
    CHECK(Bytes(out.client.end() - 6, out.client.end()) == pg::ready('I'));
  }
}

TEST_CASE("relay: Execute with a row limit suspends forwarded and local portals alike") {
  const std::string show = "SHOW API TOKENS";
  const Bytes batch = concat({pg::parse("", "select g from generate_series(1,3) g"), pg::bind("", ""),
                              pg::execute("", 2), pg::execute("", 2), pg::parse("t", show), pg::bind("p", "t"),
                              pg::execute("p", 1), pg::execute("p", 1), pg::execute("p", 1), pg::sync()});
  const Bytes upstream_part = concat({pg::parse_complete(), pg::bind_complete(), pg::data_row({"1"}),
                                      pg::data_row({"2"}), pg::portal_suspended(), pg::data_row({"3"}),
                                      pg::command_complete("SELECT 1")});
  auto out = split_everywhere({}, {FromClient{batch}, FromUpstream{upstream_part}, answer(show_tokens({"a", "b"})),
                                   FromUpstream{pg::ready('I')}});
  session::ExecuteCursor cursor;
  auto r = show_tokens({"a", "b"});
  auto e1 = executed(r, 1, cursor);
  auto e2 = executed(r, 1, cursor);
  auto e3 = executed(r, 1, cursor);
  CHECK(describe(e1).find("s(len=4)") != std::string::npos);  // PortalSuspended
  CHECK(out.client == concat({upstream_part, pg::parse_complete(), pg::bind_complete(), e1, e2, e3, pg::ready('I')}));
  CHECK(out.requests.size() == 1);  // the statement ran once, at the first Execute
}

TEST_CASE("relay: a local portal used after the Sync that ended it is gone, as in PostgreSQL (34000)") {
  // Pipelined: the second Execute is read while the portal still exists, and
  // runs after the first Sync's ReadyForQuery ended it with its transaction.
  const Bytes batch =
      concat({pg::parse("t", "SHOW API TOKENS"), pg::bind("p", "t"), pg::execute("p", 1), pg::sync(), pg::execute("p"),
              pg::describe('P', "p"), pg::sync(), pg::bind("q", "t"), pg::execute("q", 1), pg::sync()});
  auto out =
      split_everywhere({}, {FromClient{batch}, answer(show_tokens({"a", "b"})), FromUpstream{pg::ready('I')},
                            FromUpstream{pg::ready('I')}, answer(show_tokens({"c"})), FromUpstream{pg::ready('I')}});
  session::ExecuteCursor cursor;
  auto first = executed(show_tokens({"a", "b"}), 1, cursor);
  session::ExecuteCursor cursor2;
  auto again = executed(show_tokens({"c"}), 1, cursor2);
  CHECK(out.client == concat({pg::parse_complete(), pg::bind_complete(), first, pg::ready('I'),
                              err("34000", "portal \"p\" does not exist"), pg::ready('I'), pg::bind_complete(), again,
                              pg::ready('I')}));
}

TEST_CASE("relay: COPY FROM STDIN streams the client's CopyData through unbuffered") {
  Bytes data = pg::copy_data(std::string(100000, 'x'));
  auto out = split_everywhere({}, {FromClient{pg::query("copy t from stdin")},
                                   FromUpstream{pg::copy_response('G', 1)},
                                   FromClient{concat({pg::copy_data("1\n"), pg::copy_data("2\n"), pg::copy_done()})},
                                   FromUpstream{concat({pg::command_complete("COPY 2"), pg::ready('I')})}});
  CHECK(out.upstream ==
        concat({pg::query("copy t from stdin"), pg::copy_data("1\n"), pg::copy_data("2\n"), pg::copy_done()}));
  CHECK(out.client == concat({pg::copy_response('G', 1), pg::command_complete("COPY 2"), pg::ready('I')}));

  // A large CopyData never waits to be whole: its first bytes go at once.
  RelayHarness h;
  h.client(pg::query("copy t from stdin"));
  h.upstream(pg::copy_response('G', 1));
  h.take_upstream();
  h.client(Bytes(data.begin(), data.begin() + 1000));
  CHECK(h.take_upstream() == Bytes(data.begin(), data.begin() + 1000));
  CHECK(h.relay.memory().used() < 4096);
}

TEST_CASE("relay: COPY TO STDOUT and CopyBoth pass through both ways") {
  auto out = split_everywhere(
      {}, {FromClient{pg::query("copy t to stdout")},
           FromUpstream{concat({pg::copy_response('H', 1), pg::copy_data("1\n"), pg::copy_data("2\n"), msg('c', {}),
                                pg::command_complete("COPY 2"), pg::ready('I')})}});
  CHECK(out.client == concat({pg::copy_response('H', 1), pg::copy_data("1\n"), pg::copy_data("2\n"), msg('c', {}),
                              pg::command_complete("COPY 2"), pg::ready('I')}));
  // Replication: START_REPLICATION answers CopyBothResponse, then CopyData
  // flows both ways until CopyDone.
  auto repl = split_everywhere(
      {}, {FromClient{pg::query("START_REPLICATION SLOT s LOGICAL 0/0")},
           FromUpstream{concat({pg::copy_response('W', 0), pg::copy_data("w-record")})},
           FromClient{pg::copy_data("r-status")}, FromUpstream{pg::copy_data("k-keepalive")},
           FromClient{pg::copy_done()},
           FromUpstream{concat({msg('c', {}), pg::command_complete("START_REPLICATION"), pg::ready('I')})}});
  CHECK(repl.upstream == concat({pg::query("START_REPLICATION SLOT s LOGICAL 0/0"), pg::copy_data("r-status"),
                                 pg::copy_done()}));
  CHECK(repl.client == concat({pg::copy_response('W', 0), pg::copy_data("w-record"), pg::copy_data("k-keepalive"),
                               msg('c', {}), pg::command_complete("START_REPLICATION"), pg::ready('I')}));
}

TEST_CASE("relay: asynchronous messages pass at any point, and a local answer waits for their end") {
  const Bytes note = pg::notice("hello");
  const Bytes notify = pg::notification(42, "chan", "payload");
  const Bytes param = pg::parameter_status("TimeZone", "UTC");
  SECTION("between the messages of an answer") {
    auto out = split_everywhere(
        {}, {FromClient{pg::query("select 1; SHOW API TOKENS")},
             FromUpstream{concat({note, pg::row_description({"a"}), notify, pg::data_row({"1"}), param,
                                  pg::command_complete("SELECT 1"), note, pg::ready('I')})},
             FromUpstream{notify}, answer(show_tokens({})), FromUpstream{param}});
    CHECK(out.client == concat({note, pg::row_description({"a"}), notify, pg::data_row({"1"}), param,
                                pg::command_complete("SELECT 1"), note, notify, simple(show_tokens({})),
                                pg::ready('I'), param}));
  }
  SECTION("split notification: the local answer is not written inside it") {
    // The upstream is idle; a NotificationResponse arrives in two reads, and
    // the client's local statement comes between them.
    RelayHarness h;
    h.upstream(Bytes(notify.begin(), notify.begin() + 7));
    h.client(pg::query("SHOW API TOKENS"));
    REQUIRE(h.requests.size() == 0);  // not even run while the notification is incomplete
    h.upstream(Bytes(notify.begin() + 7, notify.end()));
    REQUIRE(h.requests.size() == 1);
    h.result(show_tokens({}));
    CHECK(h.take_client() == concat({notify, simple(show_tokens({})), pg::ready('I')}));
  }
  SECTION("split notice while the statement runs") {
    RelayHarness h;
    h.client(pg::query("SHOW API TOKENS"));
    REQUIRE(h.requests.size() == 1);
    h.upstream(Bytes(note.begin(), note.begin() + 3));
    h.result(show_tokens({}));
    CHECK(h.take_client() == Bytes(note.begin(), note.begin() + 3));
    h.upstream(Bytes(note.begin() + 3, note.end()));
    CHECK(h.take_client() == concat({Bytes(note.begin() + 3, note.end()), simple(show_tokens({})), pg::ready('I')}));
  }
  SECTION("ParameterStatus updates the session settings the splitter needs") {
    RelayHarness h;
    h.upstream(concat({pg::parameter_status("standard_conforming_strings", "off"),
                       pg::parameter_status("client_encoding", "SJIS")}));
    CHECK_FALSE(h.relay.standard_conforming_strings());
    CHECK(h.relay.lex_options().encoding == parser_ext::client_encoding_from_name("SJIS"));
    CHECK(parser_ext::is_client_only(h.relay.lex_options().encoding));
  }
}

TEST_CASE("relay: local prepared statements: Describe, Close, re-Parse under the same name") {
  const std::string show = "SHOW API TOKENS";
  auto out = split_everywhere(
      {}, {FromClient{concat({pg::parse("s", show), pg::describe('S', "s"), pg::close('S', "s"),
                              pg::parse("s", "select 1"), pg::describe('S', "s"), pg::sync()})},
           FromUpstream{concat({pg::parse_complete(), msg('t', Bytes{0, 0}), pg::row_description({"?column?"}),
                                pg::ready('I')})}});
  CHECK(out.upstream == concat({pg::parse("s", "select 1"), pg::describe('S', "s"), pg::sync()}));
  CHECK(out.client == concat({pg::parse_complete(), describe_statement(show), pg::close_complete(),
                              pg::parse_complete(), msg('t', Bytes{0, 0}), pg::row_description({"?column?"}),
                              pg::ready('I')}));
}

TEST_CASE("relay: statement names are shared with the upstream's: 42P05 both ways") {
  SECTION("a token statement under a name prepared upstream") {
    RelayHarness h;
    h.client(concat({pg::parse("s1", "select 1"), pg::sync()}));
    h.upstream(concat({pg::parse_complete(), pg::ready('I')}));
    h.take_client();
    h.take_upstream();
    h.client(concat({pg::parse("s1", "SHOW API TOKENS"), pg::sync()}));
    h.upstream(pg::ready('I'));
    CHECK(h.take_upstream() == pg::sync());  // nothing ran upstream: nothing to fail
    CHECK(h.take_client() == concat({err("42P05", "prepared statement \"s1\" already exists"), pg::ready('I')}));
  }
  SECTION("an ordinary statement under a local name") {
    RelayHarness h;
    h.client(concat({pg::parse("t", "SHOW API TOKENS"), pg::parse("t", "select 1"), pg::sync()}));
    h.upstream(pg::ready('I'));
    CHECK(h.take_upstream() == pg::sync());
    CHECK(h.take_client() ==
          concat({pg::parse_complete(), err("42P05", "prepared statement \"t\" already exists"), pg::ready('I')}));
  }
  SECTION("a name whose Parse failed upstream, or that was closed, is free") {
    RelayHarness h;
    h.client(concat({pg::parse("s1", "selec 1"), pg::sync()}));
    h.upstream(concat({err("42601", "syntax error"), pg::ready('I')}));
    h.client(concat({pg::parse("s2", "select 1"), pg::close('S', "s2"), pg::sync()}));
    h.upstream(concat({pg::parse_complete(), pg::close_complete(), pg::ready('I')}));
    h.take_client();
    h.client(concat({pg::parse("s1", "SHOW API TOKENS"), pg::parse("s2", "SHOW API TOKENS"), pg::sync()}));
    h.upstream(pg::ready('I'));
    CHECK(h.take_client() == concat({pg::parse_complete(), pg::parse_complete(), pg::ready('I')}));
  }
}

TEST_CASE("relay: a failing API TOKEN statement fails the upstream's transaction block") {
  RelayOptions in_block;
  in_block.tx_status = 'T';
  SECTION("simple protocol: the client sees the error and ReadyForQuery E, as PostgreSQL") {
    auto out = split_everywhere(
        in_block, {FromClient{pg::query("DROP API TOKEN nope")}, answer(failed("42704", "API token \"nope\" does not exist")),
                   FromUpstream{concat({upstream_syntax_error(), pg::ready('E')})}});
    CHECK(out.upstream == concat({injected_failure(), pg::sync()}));
    CHECK(out.client == concat({err("42704", "API token \"nope\" does not exist"), pg::ready('E')}));
  }
  SECTION("and then COMMIT is answered by the upstream as ROLLBACK") {
    RelayHarness h(in_block);
    h.client(pg::query("DROP API TOKEN nope"));
    h.result(failed("42704", "nope"));
    h.upstream(concat({upstream_syntax_error(), pg::ready('E')}));
    CHECK(h.relay.tx_status() == 'E');
    h.take_upstream();
    h.take_client();
    h.client(pg::query("SHOW API TOKENS"));  // 25P02 from the token service
    REQUIRE(h.requests.size() == 2);
    CHECK(h.requests[1].tx_status == 'E');
  }
  SECTION("CREATE API TOKEN inside a block is refused (25001), and fails the block") {
    auto out = split_everywhere(in_block, {FromClient{pg::query("CREATE API TOKEN t")},
                                           FromUpstream{concat({upstream_syntax_error(), pg::ready('E')})}});
    CHECK(out.requests.empty());
    CHECK(out.upstream == concat({injected_failure(), pg::sync()}));
    CHECK(out.client ==
          concat({err("25001", "CREATE API TOKEN cannot run inside a transaction block"), pg::ready('E')}));
  }
}

TEST_CASE("relay: CREATE API TOKEN is refused in a multi-statement Query, before anything runs") {
  auto out = split_everywhere({}, {FromClient{pg::query("select 1; CREATE API TOKEN t")}});
  CHECK(out.upstream.empty());
  CHECK(out.requests.empty());
  CHECK(out.client == concat({err("25001", "CREATE API TOKEN cannot run inside a transaction block"), pg::ready('I')}));
}

TEST_CASE("relay: the transaction status inside an extended batch follows BEGIN/COMMIT tags") {
  // pgjdbc with autocommit off sends BEGIN in the same batch as the statement.
  const Bytes batch = concat({pg::parse("", "BEGIN"), pg::bind("", ""), pg::execute(),
                              pg::parse("c", "CREATE API TOKEN t"), pg::bind("", "c"), pg::execute(), pg::sync()});
  auto out = split_everywhere(
      {}, {FromClient{batch},
           FromUpstream{concat({pg::parse_complete(), pg::bind_complete(), pg::command_complete("BEGIN")})},
           FromUpstream{concat({upstream_syntax_error(), pg::ready('E')})}});
  CHECK(out.requests.empty());
  CHECK(out.upstream == concat({pg::parse("", "BEGIN"), pg::bind("", ""), pg::execute(), pg::flush(),
                                injected_failure(), pg::sync()}));
  CHECK(out.client == concat({pg::parse_complete(), pg::bind_complete(), pg::command_complete("BEGIN"),
                              pg::parse_complete(), pg::bind_complete(),
                              err("25001", "CREATE API TOKEN cannot run inside a transaction block"),
                              pg::ready('E')}));

  SECTION("ROLLBACK TO SAVEPOINT and AND CHAIN keep the block") {
    CHECK(session::keeps_transaction_block("rollback to savepoint a"));
    CHECK(session::keeps_transaction_block("ROLLBACK WORK TO a"));
    CHECK(session::keeps_transaction_block("/* x */ commit and chain"));
    CHECK(session::keeps_transaction_block("ABORT TRANSACTION AND CHAIN"));
    CHECK_FALSE(session::keeps_transaction_block("commit"));
    CHECK_FALSE(session::keeps_transaction_block("rollback and no chain"));
    CHECK_FALSE(session::keeps_transaction_block("select 1"));
    RelayHarness h({.tx_status = 'T'});
    h.client(concat({pg::parse("", "ROLLBACK TO SAVEPOINT a"), pg::bind("", ""), pg::execute(),
                     pg::parse("c", "CREATE API TOKEN t"), pg::bind("", "c"), pg::execute(), pg::sync()}));
    h.upstream(concat({pg::parse_complete(), pg::bind_complete(), pg::command_complete("ROLLBACK")}));
    CHECK(describe(h.take_client()).find("25001") != std::string::npos);  // still in the block
  }
}

TEST_CASE("relay: Terminate is passed on and ends the session") {
  RelayHarness h;
  h.client(concat({pg::terminate(), pg::query("select 'never'")}));
  CHECK(h.take_upstream() == pg::terminate());
  CHECK(h.relay.finished());
  CHECK(h.relay.ending() == Relay::Ending::client_terminated);
}

TEST_CASE("relay: an impossible length from the client closes silently, as PostgreSQL does") {
  for (std::uint32_t len : {0u, 3u, 0x40000000u, 0xffffffffu}) {
    RelayHarness h;
    Bytes b{'Q'};
    b.resize(5);
    protocol::store_u32(b.data() + 1, len);
    h.client(b);
    CHECK(h.relay.finished());
    CHECK(h.relay.ending() == Relay::Ending::client_protocol_violation);
    CHECK(h.take_client().empty());
    CHECK(h.take_upstream().empty());
  }
}

TEST_CASE("relay: a header announcing a gigabyte allocates nothing until bytes arrive") {
  RelayHarness h;
  Bytes b{'Q'};
  b.resize(5);
  protocol::store_u32(b.data() + 1, 0x3fffffff);
  h.client(b);
  CHECK_FALSE(h.relay.finished());
  CHECK(h.relay.memory().used() < 1024);
  // Bytes that do arrive are buffered up to the inspect limit, then stream.
  h.client(Bytes(100, 'x'));
  CHECK(h.relay.memory().used() < 4096);
}

TEST_CASE("relay: an oversized Query streams through, holding back its last byte until checked") {
  RelayOptions opt;
  opt.max_inspected_message = 1024;
  const std::string big = "select '" + std::string(5000, 'y') + "'";
  const Bytes q = pg::query(big);
  SECTION("no word that could start an API TOKEN statement: it goes whole") {
    RelayHarness h(opt);
    h.client(Bytes(q.begin(), q.end() - 1));
    CHECK(h.take_upstream() == Bytes(q.begin(), q.end() - 1));
    h.client(Bytes(q.end() - 1, q.end()));
    CHECK(h.take_upstream() == Bytes(q.end() - 1, q.end()));
    CHECK_FALSE(h.relay.finished());
    CHECK(h.relay.outstanding() == 1);
    CHECK(h.relay.memory().used() <= 3 * 1024);
    auto out = split_everywhere(opt, {FromClient{q}});
    CHECK(out.upstream == q);
  }
  SECTION("with `api` in it, the upstream never gets the whole message and the session ends") {
    const Bytes qa = pg::query("select '" + std::string(5000, 'y') + "'; CREATE API TOKEN x");
    RelayHarness h(opt);
    h.client(qa);
    CHECK(h.take_upstream() == Bytes(qa.begin(), qa.end() - 1));
    CHECK(h.relay.finished());
    CHECK(h.relay.ending() == Relay::Ending::ended);
    CHECK(describe(h.take_client()).find("54000") != std::string::npos);
    auto out = split_everywhere(opt, {FromClient{qa}});
    CHECK(out.upstream == Bytes(qa.begin(), qa.end() - 1));
  }
}

TEST_CASE("relay: an oversized Bind streams to an upstream statement and is refused for a local one") {
  RelayOptions opt;
  opt.max_inspected_message = 1024;
  const std::string param(5000, 'p');
  RelayHarness h(opt);
  h.client(pg::parse("t", "SHOW API TOKENS"));  // a local statement: Binds are inspected from now on
  h.take_client();
  const Bytes up = pg::bind("", "s", {param});
  h.client(up);
  CHECK(h.take_upstream() == concat({up}));
  const Bytes local = concat({pg::bind("", "t", {param}), pg::sync()});
  h.client(local);
  CHECK(h.take_upstream() == pg::flush());  // the local answer waits for the first Bind's
  h.upstream(pg::bind_complete());
  CHECK(h.take_upstream() == concat({injected_failure(), pg::sync()}));  // the batch fails upstream too
  auto client = describe(h.take_client());
  CHECK(client.find("bind message supplies 1 parameters") != std::string::npos);
  CHECK(client.find("2(len=4)") == 0);
}

TEST_CASE("relay: end() waits for the end of the message the client is receiving") {
  const auto why = protocol::ErrorResponse::make("FATAL", "57P01", "API token revoked");
  Bytes fatal;
  why.serialize(fatal);
  SECTION("at a message boundary: at once") {
    RelayHarness h;
    h.relay.end(why);
    h.collect();
    CHECK(h.relay.finished());
    CHECK(h.take_client() == fatal);
  }
  SECTION("inside a DataRow: after it") {
    RelayHarness h;
    h.client(pg::query("select repeat('x', 100)"));
    const Bytes row = pg::data_row({std::string(100, 'x')});
    h.upstream(Bytes(row.begin(), row.begin() + 20));
    h.relay.end(why);
    h.collect();
    CHECK_FALSE(h.relay.finished());
    CHECK_FALSE(h.relay.wants_client_bytes());
    h.client(pg::query("select 'dropped'"));
    h.upstream(concat({Bytes(row.begin() + 20, row.end()), pg::command_complete("SELECT 1")}));
    CHECK(h.relay.finished());
    CHECK(h.take_upstream() == pg::query("select repeat('x', 100)"));
    CHECK(h.take_client() == concat({row, fatal}));
  }
}

TEST_CASE("relay: a FATAL in the answer to an injected message still reaches the client") {
  RelayHarness h({.tx_status = 'T'});
  h.client(pg::query("DROP API TOKEN nope"));
  h.result(failed("42704", "nope"));
  h.take_client();
  const Bytes fatal = pg::error("57P01", "terminating connection due to administrator command", "FATAL");
  h.upstream(fatal);
  CHECK(h.take_client() == fatal);
}

TEST_CASE("relay: password changes are refused in sessions that may not make them") {
  RelayOptions opt;
  opt.refuse_password_changes = true;
  // Ordinary statements that merely mention passwords still pass.
  auto fine = split_everywhere(opt, {FromClient{pg::query("select password from app_users")}});
  CHECK(fine.upstream == pg::query("select password from app_users"));
  auto out = split_everywhere(opt, {FromClient{pg::query("ALTER ROLE me PASSWORD 'x'")}});
  CHECK(out.upstream.empty());
  CHECK(describe(out.client).find("42501") != std::string::npos);
  auto ext = split_everywhere(opt, {FromClient{concat({pg::parse("", "ALTER ROLE me PASSWORD 'x'"), pg::bind("", ""),
                                                       pg::execute(), pg::sync()})},
                                    FromUpstream{pg::ready('I')}});
  CHECK(ext.upstream == pg::sync());
  CHECK(describe(ext.client).find("42501") != std::string::npos);
}

TEST_CASE("relay: client bytes are held while a local answer waits, and the driver is told to stop reading") {
  RelayHarness h;
  h.client(concat({pg::parse("", "select pg_sleep(1)"), pg::bind("", ""), pg::execute(),
                   pg::parse("t", "SHOW API TOKENS"), pg::sync()}));
  CHECK_FALSE(h.relay.wants_client_bytes());
  CHECK(h.take_upstream() == concat({pg::parse("", "select pg_sleep(1)"), pg::bind("", ""), pg::execute(), pg::flush()}));
  h.upstream(concat({pg::parse_complete(), pg::bind_complete(), pg::data_row({""}), pg::command_complete("SELECT 1")}));
  CHECK(h.relay.wants_client_bytes());
  CHECK(h.take_upstream() == pg::sync());
}

TEST_CASE("relay: buffers past the session's memory limit end the session with 53200") {
  RelayOptions opt;
  opt.max_inspected_message = 1024;
  opt.session_memory_limit = 4096;
  RelayHarness h(opt);
  // Pipelined messages waiting for their answers: each costs a queue entry.
  Bytes syncs;
  for (int i = 0; i < 1000; ++i) syncs = concat({syncs, pg::sync()});
  h.client(syncs);
  CHECK(h.relay.finished());
  CHECK(h.relay.ending() == Relay::Ending::ended);
  auto client = describe(h.take_client());
  CHECK(client.find("53200") != std::string::npos);
  CHECK(client.find("relay.session_memory_limit (4096 bytes)") != std::string::npos);
  CHECK(h.relay.memory().used() <= 4096);
}

TEST_CASE("relay: the process-wide budget is shared, and given back when a session ends") {
  session::MemoryBudget budget(2500);
  RelayOptions opt;
  opt.max_inspected_message = 1024;
  opt.session_memory_limit = 1 << 20;
  opt.process_memory = &budget;
  Bytes partial = pg::query(std::string(900, 'q'));
  partial.pop_back();
  {
    RelayHarness a(opt), b(opt), c(opt);
    a.client(partial);
    b.client(partial);
    CHECK_FALSE(a.relay.finished());
    CHECK_FALSE(b.relay.finished());
    c.client(partial);  // the third does not fit
    CHECK(c.relay.finished());
    CHECK(describe(c.take_client()).find("relay.memory_limit (2500 bytes)") != std::string::npos);
    CHECK(budget.used() <= 2500);
  }
  CHECK(budget.used() == 0);
}

TEST_CASE("relay: DEALLOCATE ALL and DISCARD ALL release every statement name, tokengate's too") {
  for (const char* sql : {"DEALLOCATE ALL", "DISCARD ALL"}) {
    RelayHarness h;
    h.client(concat({pg::parse("t", "SHOW API TOKENS"), pg::parse("s", "select 1"), pg::sync()}));
    h.upstream(concat({pg::parse_complete(), pg::ready('I')}));
    h.client(pg::query(sql));
    h.upstream(concat({pg::command_complete(sql), pg::ready('I')}));
    h.take_upstream();
    h.take_client();
    // "t" is no longer a local statement, and "s" is free again.
    h.client(concat({pg::describe('S', "t"), pg::parse("s", "SHOW API TOKENS"), pg::sync()}));
    CHECK(h.take_upstream() == concat({pg::describe('S', "t"), pg::flush()}));
    h.upstream(pg::error("26000", "prepared statement \"t\" does not exist"));
    CHECK(h.take_upstream() == pg::sync());
  }
}

TEST_CASE("relay: an upstream error before a local Parse in one batch, then the next Query") {
  const Bytes batch = concat({pg::parse("", "select 1/0"), pg::bind("", ""), pg::execute(),
                              pg::parse("", "CREATE API TOKEN skipped"), pg::bind("", ""), pg::execute(), pg::sync()});
  auto out = split_everywhere({}, {FromClient{batch},
                                   FromUpstream{concat({pg::parse_complete(), err("22012", "division by zero")})},
                                   FromUpstream{pg::ready('I')}, FromClient{pg::query("SHOW API TOKENS")},
                                   answer(show_tokens({"t"}))});
  CHECK(out.upstream == concat({pg::parse("", "select 1/0"), pg::bind("", ""), pg::execute(), pg::flush(), pg::sync()}));
  CHECK(out.client == concat({pg::parse_complete(), err("22012", "division by zero"), pg::ready('I'),
                              simple(show_tokens({"t"})), pg::ready('I')}));
}

// ---- a pooled upstream (pool.wire_sessions) ------------------------------------------

namespace {

RelayOptions pooled() {
  RelayOptions o;
  o.pooled_upstream = true;
  return o;
}

struct PooledOutcome {
  ScriptOutcome script;
  bool reusable = false;
  Relay::Ending ending = Relay::Ending::none;
  std::vector<std::pair<std::string, std::string>> parameters;
};

// Runs client/upstream byte steps on a pooled relay, then, if `eof`, ends the
// client's stream; every step is also cut at every offset, and the verdict
// must not change.
PooledOutcome run_pooled(const std::vector<Step>& steps, bool eof = false) {
  auto run = [&](std::size_t split_step, std::vector<std::size_t> cuts) {
    RelayHarness h(pooled());
    for (std::size_t i = 0; i < steps.size(); ++i) {
      const bool from_client = std::holds_alternative<FromClient>(steps[i]);
      const Bytes& b = from_client ? std::get<FromClient>(steps[i]).bytes : std::get<FromUpstream>(steps[i]).bytes;
      std::vector<std::size_t> at = i == split_step ? cuts : std::vector<std::size_t>{};
      at.push_back(b.size());
      std::size_t from = 0;
      for (std::size_t to : at) {
        if (to <= from || to > b.size()) continue;
        Bytes piece(b.begin() + std::ptrdiff_t(from), b.begin() + std::ptrdiff_t(to));
        if (from_client) h.client(piece);
        else h.upstream(piece);
        from = to;
      }
    }
    if (eof) {
      h.relay.on_client_eof();
      h.collect();
    }
    PooledOutcome out;
    out.script = ScriptOutcome{h.upstream_out, h.client_out, {}, h.relay.finished()};
    out.reusable = h.relay.upstream_reusable();
    out.ending = h.relay.ending();
    out.parameters = h.relay.parameter_changes();
    return out;
  };
  const PooledOutcome whole = run(SIZE_MAX, {});
  for (std::size_t i = 0; i < steps.size(); ++i) {
    const Bytes& b = std::holds_alternative<FromClient>(steps[i]) ? std::get<FromClient>(steps[i]).bytes
                                                                  : std::get<FromUpstream>(steps[i]).bytes;
    for (std::size_t k = 1; k < b.size(); ++k) {
      INFO("step " << i << " cut at " << k);
      const PooledOutcome cut = run(i, {k});
      CHECK(cut.script == whole.script);
      CHECK(cut.reusable == whole.reusable);
      CHECK(cut.parameters == whole.parameters);
      if (!(cut.script == whole.script) || cut.reusable != whole.reusable) return whole;
    }
  }
  return whole;
}

Bytes select_one_answer() {
  return concat({pg::row_description({"a"}), pg::data_row({"1"}), pg::command_complete("SELECT 1"), pg::ready('I')});
}

}  // namespace

TEST_CASE("relay, pooled: a Terminate that finds the upstream idle stays here and the backend is reusable") {
  auto out = run_pooled({FromClient{pg::query("select 1")}, FromUpstream{select_one_answer()},
                         FromClient{pg::terminate()}});
  CHECK(out.script.upstream == pg::query("select 1"));  // no Terminate
  CHECK(out.script.client == select_one_answer());
  CHECK(out.script.finished);
  CHECK(out.ending == Relay::Ending::client_terminated);
  CHECK(out.reusable);
}

TEST_CASE("relay, pooled: a client that closes its connection while idle leaves a reusable backend") {
  auto out = run_pooled({FromClient{pg::query("select 1")}, FromUpstream{select_one_answer()}}, true);
  CHECK(out.ending == Relay::Ending::client_closed);
  CHECK(out.reusable);
}

TEST_CASE("relay, pooled: a backend that is not idle gets the Terminate and is not reused") {
  SECTION("a query still running (Terminate in the same read)") {
    auto out = run_pooled({FromClient{concat({pg::query("select pg_sleep(10)"), pg::terminate()})}});
    CHECK(out.script.upstream == concat({pg::query("select pg_sleep(10)"), pg::terminate()}));
    CHECK_FALSE(out.reusable);
  }
  SECTION("inside a transaction block") {
    auto out = run_pooled({FromClient{pg::query("begin")},
                           FromUpstream{concat({pg::command_complete("BEGIN"), pg::ready('T')})},
                           FromClient{pg::terminate()}});
    CHECK(out.script.upstream == concat({pg::query("begin"), pg::terminate()}));
    CHECK_FALSE(out.reusable);
  }
  SECTION("in a failed transaction block") {
    auto out = run_pooled({FromClient{pg::query("select 1/0")},
                           FromUpstream{concat({err("22012", "division by zero"), pg::ready('E')})},
                           FromClient{pg::terminate()}});
    CHECK(out.script.upstream == concat({pg::query("select 1/0"), pg::terminate()}));
    CHECK_FALSE(out.reusable);
  }
  SECTION("an extended-protocol batch without its Sync (an implicit transaction is open)") {
    auto out = run_pooled(
        {FromClient{concat({pg::parse("", "insert into t values (1)"), pg::bind("", ""), pg::execute(), pg::flush()})},
         FromUpstream{concat({pg::parse_complete(), pg::bind_complete(), pg::command_complete("INSERT 0 1")})},
         FromClient{pg::terminate()}});
    CHECK_FALSE(out.reusable);
    CHECK(out.script.upstream.size() >= pg::terminate().size());
    CHECK(Bytes(out.script.upstream.end() - 5, out.script.upstream.end()) == pg::terminate());
  }
  SECTION("COPY FROM STDIN under way") {
    auto out = run_pooled({FromClient{pg::query("copy t from stdin")}, FromUpstream{pg::copy_response('G', 1)},
                           FromClient{pg::copy_data("1\n")}, FromClient{pg::terminate()}});
    CHECK_FALSE(out.reusable);
  }
  SECTION("COPY TO STDOUT under way") {
    auto out = run_pooled({FromClient{pg::query("copy t to stdout")},
                           FromUpstream{concat({pg::copy_response('H', 1), pg::copy_data("1\n")})},
                           FromClient{pg::terminate()}});
    CHECK_FALSE(out.reusable);
  }
  SECTION("the client closed in the middle of a message it was sending") {
    Bytes q = pg::query("select 1");
    q.resize(q.size() - 3);
    auto out = run_pooled({FromClient{q}}, true);
    CHECK(out.ending == Relay::Ending::client_closed);
    CHECK_FALSE(out.reusable);
  }
  SECTION("an upstream message partly received") {
    Bytes n = pg::notice("hello");
    n.resize(n.size() - 2);
    auto out = run_pooled({FromUpstream{n}, FromClient{pg::terminate()}});
    CHECK(out.script.upstream == pg::terminate());
    CHECK_FALSE(out.reusable);
  }
}

TEST_CASE("relay, pooled: an ended session never leaves a reusable backend") {
  RelayHarness h(pooled());
  h.client(pg::query("select 1"));
  h.upstream(select_one_answer());
  h.relay.end(protocol::ErrorResponse::make("FATAL", "57P01", "API token revoked"));
  h.collect();
  CHECK(h.relay.finished());
  CHECK(h.relay.ending() == Relay::Ending::ended);
  CHECK_FALSE(h.relay.upstream_reusable());
}

TEST_CASE("relay, pooled: reported settings are recorded, the last value of each") {
  auto out = run_pooled({FromClient{pg::query("set application_name = 'a'")},
                         FromUpstream{concat({pg::parameter_status("application_name", "a"),
                                              pg::command_complete("SET"), pg::ready('I')})},
                         FromClient{pg::query("set DateStyle = 'German'; set application_name = 'b'")},
                         FromUpstream{concat({pg::parameter_status("DateStyle", "German, DMY"),
                                              pg::command_complete("SET"),
                                              pg::parameter_status("application_name", "b"),
                                              pg::command_complete("SET"), pg::ready('I')})},
                         FromClient{pg::terminate()}});
  CHECK(out.reusable);
  CHECK(out.parameters == std::vector<std::pair<std::string, std::string>>{{"application_name", "b"},
                                                                          {"DateStyle", "German, DMY"}});
}

TEST_CASE("relay, pooled: a reported setting too long to record whole makes the backend unusable for others") {
  auto out = run_pooled({FromUpstream{pg::parameter_status("some_extension.setting", std::string(300, 'x'))},
                         FromClient{pg::terminate()}});
  CHECK(out.script.upstream == pg::terminate());
  CHECK_FALSE(out.reusable);
}

TEST_CASE("relay: without a pool, Terminate goes upstream and nothing is reusable") {
  RelayHarness h;
  h.client(pg::terminate());
  CHECK(h.take_upstream() == pg::terminate());
  CHECK(h.relay.finished());
  CHECK_FALSE(h.relay.upstream_reusable());
  CHECK(h.relay.parameter_changes().empty());
}

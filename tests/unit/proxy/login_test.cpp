// Logging in, byte by byte and decision by decision: which startup parameters
// pass and what the upstream is sent, the login policy, the throttle's turns,
// the verification queue, what reaches the log, and secrets being wiped.
#define CATCH_CONFIG_ENABLE_CHRONO_STRINGMAKER
#define CATCH_CONFIG_ENABLE_OPTIONAL_STRINGMAKER
#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <limits>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "proxy/auth/secret.hpp"
#include "proxy/auth/scram.hpp"
#include "proxy/auth/throttle.hpp"
#include "proxy/auth/verifier_queue.hpp"
#include "proxy/log_text.hpp"
#include "proxy/protocol/frame.hpp"
#include "proxy/protocol/input_buffer.hpp"
#include "proxy/session/client_handshake.hpp"
#include "proxy/session/login_policy.hpp"
#include "proxy/session/machine.hpp"
#include "proxy/session/startup_parameters.hpp"
#include "proxy/session/upstream_login.hpp"
#include "tests/common/pg_bytes.hpp"

using namespace tokengate;
using namespace tokengate::protocol;
using namespace tokengate::test;
using namespace std::chrono_literals;
using session::ClientHandshake;
using session::StartupParameters;
using session::StartupRefusal;

namespace {

using Params = std::vector<std::pair<std::string, std::string>>;

StartupMessage startup_of(Params params) {
  StartupMessage m;
  m.parameters = std::move(params);
  return m;
}

// The refusal validate_startup gives, or fails the test.
StartupRefusal refused(Params params) {
  auto r = session::validate_startup(startup_of(std::move(params)));
  REQUIRE(std::holds_alternative<StartupRefusal>(r));
  return std::get<StartupRefusal>(r);
}

StartupParameters accepted(Params params) {
  auto r = session::validate_startup(startup_of(std::move(params)));
  if (auto* no = std::get_if<StartupRefusal>(&r)) FAIL("refused: " << no->message);
  return std::get<StartupParameters>(r);
}

// The upstream's StartupMessage as bytes, for whole-message comparisons.
Bytes upstream_bytes(const StartupParameters& p, std::string_view role) {
  Bytes out;
  p.for_upstream(role).serialize(out);
  return out;
}

// Runs a handshake over `packet` and returns the action it stops with.
ClientHandshake::Action handshake_on(const Bytes& packet) {
  ClientHandshake hs;
  std::size_t consumed = 0;
  return hs.next(packet, consumed);
}

const std::string kInjectedHint = "Only configuration parameters (letters, digits and underscores) are passed on.";

}  // namespace

// ---------------------------------------------------------------- identity

TEST_CASE("identity: a repeated user is refused, never resolved (user=analyst … user=postgres)") {
  auto r = refused({{"user", "analyst"}, {"database", "d"}, {"user", "postgres"}});
  CHECK(r.sqlstate == "08P01");
  CHECK(r.message == "invalid startup packet: parameter \"user\" appears more than once");

  // Through the handshake: FATAL 08P01, no password is asked for.
  auto a = handshake_on(startup_packet(kProtocolVersion3,
                                       startup_params({{"user", "analyst"}, {"user", "postgres"}})));
  REQUIRE(std::holds_alternative<ClientHandshake::Reject>(a));
  CHECK(std::get<ClientHandshake::Reject>(a).bytes ==
        error_response("FATAL", "08P01", "invalid startup packet: parameter \"user\" appears more than once"));
}

TEST_CASE("identity: any repeated parameter is refused, names compared as PostgreSQL compares GUC names") {
  CHECK(refused({{"user", "a"}, {"database", "x"}, {"database", "y"}}).sqlstate == "08P01");
  CHECK(refused({{"user", "a"}, {"DateStyle", "ISO"}, {"datestyle", "SQL"}}).message ==
        "invalid startup packet: parameter \"datestyle\" appears more than once");
  CHECK(refused({{"user", "a"}, {"options", ""}, {"options", "-c role=x"}}).sqlstate == "08P01");
}

TEST_CASE("identity: control characters in the user or database name are refused") {
  CHECK(refused({{"user", "ana\nlyst"}}).message == "invalid startup packet: the user name contains a control character");
  CHECK(refused({{"user", "a"}, {"database", std::string("d\x1b[31m")}}).message ==
        "invalid startup packet: the database name contains a control character");
  CHECK(refused({{"user", std::string("a\x7f")}}).sqlstate == "08P01");
}

TEST_CASE("identity: parameters that would set another role are refused, in any spelling") {
  for (const char* name : {"session_authorization", "Session_Authorization", "role", "ROLE"}) {
    auto r = refused({{"user", "a"}, {name, "postgres"}});
    CHECK(r.sqlstate == "08P01");
    CHECK(r.message == "startup parameter \"" + std::string(name) + "\" is not allowed through tokengate");
    CHECK_FALSE(r.hint.empty());
  }
}

TEST_CASE("identity: names that are not configuration parameters are refused") {
  for (const char* name : {"foo bar", "x-y", "a..b", ".a", "1abc", "tab\tname", "é"}) {
    auto r = refused({{"user", "a"}, {name, "v"}});
    CHECK(r.message == "startup parameter \"" + std::string(name) + "\" is not allowed through tokengate");
    CHECK(r.hint == kInjectedHint);
  }
}

TEST_CASE("identity: what drivers send passes, and the upstream gets it rebuilt with the authenticated role") {
  auto p = accepted({{"user", "analyst"},
                     {"database", "sales"},
                     {"application_name", "psql"},
                     {"client_encoding", "UTF8"},
                     {"DateStyle", "ISO, MDY"},
                     {"TimeZone", "UTC"},
                     {"extra_float_digits", "3"},
                     {"search_path", "app, public"},
                     {"myext.tenant$id", "7"},
                     {"replication", "database"}});
  CHECK(p.user == "analyst");
  CHECK(p.application_name() == "psql");
  CHECK(upstream_bytes(p, "analyst") ==
        startup_packet(kProtocolVersion3, startup_params({{"user", "analyst"},
                                                          {"database", "sales"},
                                                          {"replication", "database"},
                                                          {"application_name", "psql"},
                                                          {"client_encoding", "UTF8"},
                                                          {"DateStyle", "ISO, MDY"},
                                                          {"TimeZone", "UTC"},
                                                          {"extra_float_digits", "3"},
                                                          {"search_path", "app, public"},
                                                          {"myext.tenant$id", "7"}})));
}

TEST_CASE("identity: user and database names are cut at 63 bytes, as PostgreSQL cuts them") {
  const std::string long_name(100, 'n');
  auto p = accepted({{"user", long_name}, {"database", long_name + "x"}});
  CHECK(p.user == std::string(63, 'n'));
  CHECK(p.database == std::string(63, 'n'));
  // Without a database, PostgreSQL opens the user's; the upstream is told nothing else.
  auto q = accepted({{"user", "u"}});
  CHECK(q.database_or_user() == "u");
  CHECK(upstream_bytes(q, "u") == startup_packet(kProtocolVersion3, startup_params({{"user", "u"}})));
}

TEST_CASE("options: -c and --name=value settings pass, rebuilt; identity and other switches are refused") {
  auto p = accepted({{"user", "u"},
                     {"options", "-c search_path=a\\ b  --statement-timeout=5s -cgeqo=off -c x.y=\\\\z"}});
  const Params expected{{"search_path", "a b"}, {"statement_timeout", "5s"}, {"geqo", "off"}, {"x.y", "\\z"}};
  CHECK(p.options == expected);
  CHECK(upstream_bytes(p, "u") ==
        startup_packet(kProtocolVersion3,
                       startup_params({{"user", "u"},
                                       {"options", "-c search_path=a\\ b -c statement_timeout=5s -c geqo=off "
                                                   "-c x.y=\\\\z"}})));
  // What the upstream will split is what was checked.
  const auto rebuilt = p.for_upstream("u");
  REQUIRE(rebuilt.find("options") != nullptr);
  auto args = session::split_options(*rebuilt.find("options"));
  const std::vector<std::string> split{"-c", "search_path=a b", "-c", "statement_timeout=5s", "-c", "geqo=off",
                                       "-c", "x.y=\\z"};
  CHECK(args == split);

  CHECK(refused({{"user", "u"}, {"options", "-c session_authorization=postgres"}}).message ==
        "startup option \"session_authorization\" is not allowed through tokengate");
  CHECK(refused({{"user", "u"}, {"options", "--role=postgres"}}).message ==
        "startup option \"role\" is not allowed through tokengate");
  CHECK(refused({{"user", "u"}, {"options", "-c\\ role=postgres"}}).sqlstate == "08P01");
  for (const char* sw : {"-P", "-d 5", "-F", "-o x", "--", "-", "postgres", "-Pc role=x", "-e"}) {
    auto r = refused({{"user", "u"}, {"options", sw}});
    CHECK(r.sqlstate == "08P01");
    CHECK(r.message.find("is not allowed through tokengate") != std::string::npos);
  }
  // PostgreSQL's own words for a setting without a value.
  CHECK(refused({{"user", "u"}, {"options", "-c geqo"}}).message == "-c geqo requires a value");
  CHECK(refused({{"user", "u"}, {"options", "--geqo"}}).sqlstate == "42601");
  CHECK(refused({{"user", "u"}, {"options", "-c"}}).sqlstate == "08P01");
}

TEST_CASE("options: split and join are inverse, whatever the spaces and backslashes") {
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
           {"-c", "a=b"}, {"x y", "\\", "\t\n", "end\\"}, {"--a=\\\\ b"}}) {
    CHECK(session::split_options(session::join_options(args)) == args);
  }
  const std::vector<std::string> split{"a", "b c", "d"};
  CHECK(session::split_options("  a   b\\ c\td\\") == split);
}

TEST_CASE("handshake: the login request carries the checked parameters") {
  ClientHandshake hs;
  std::size_t consumed = 0;
  auto a = hs.next(startup_packet(kProtocolVersion3, startup_params({{"user", "u"}, {"application_name", "t"}})),
                   consumed);
  REQUIRE(std::holds_alternative<ClientHandshake::Reply>(a));
  auto b = hs.next(msg('p', body_cstrs({"pw"})), consumed);
  REQUIRE(std::holds_alternative<ClientHandshake::LoggedIn>(b));
  const auto& in = std::get<ClientHandshake::LoggedIn>(b);
  CHECK(in.startup.user == "u");
  CHECK(in.startup.application_name() == "t");
}

// ---------------------------------------------------------------- upstream trust

namespace {

session::UpstreamAuthMethods methods(std::string_view list) {
  std::string error;
  auto m = session::UpstreamAuthMethods::parse(list, error);
  REQUIRE(m);
  return *m;
}

session::UpstreamLogin::Step feed(session::UpstreamLogin& login, const Bytes& message) {
  auto fr = read_frame(message);
  REQUIRE(fr.status == FrameStatus::complete);
  return login.on_message(fr.frame);
}

StartupMessage alice() {
  StartupMessage m;
  m.parameters = {{"user", "alice"}};
  return m;
}

std::optional<auth::SecretString> secret(std::string_view s) { return auth::SecretString(s); }

}  // namespace

TEST_CASE("upstream.require_auth: parsed like libpq's list") {
  std::string error;
  CHECK(methods("scram-sha-256").to_string() == "scram-sha-256");
  CHECK(methods("none, md5,password").to_string() == "none,password,md5");
  CHECK_FALSE(session::UpstreamAuthMethods::parse("gss", error));
  CHECK(error.find("gss") != std::string::npos);
  CHECK_FALSE(session::UpstreamAuthMethods::parse("", error));
}

TEST_CASE("upstream.require_auth: a cleartext or MD5 request it does not allow gets no answer") {
  for (auto [code, what] : {std::pair{3, "a cleartext password"}, std::pair{5, "an MD5 password"}}) {
    session::UpstreamLogin login(alice(), secret("s3cret"), {}, methods("scram-sha-256"));
    Bytes body = body_i32s({code});
    if (code == 5) body.insert(body.end(), {1, 2, 3, 4});
    auto step = feed(login, msg('R', body));
    CHECK(step.status == session::UpstreamLogin::Status::failed);
    CHECK(step.to_upstream.empty());  // the password never leaves
    CHECK(step.to_client ==
          error_response("FATAL", "28000",
                         "the upstream server asked for " + std::string(what) +
                             ", which tokengate does not answer (upstream.require_auth = scram-sha-256)"));
  }
}

TEST_CASE("upstream.require_auth: without \"none\", an upstream that asks nothing is refused") {
  session::UpstreamLogin login(alice(), secret("s3cret"), {}, methods("scram-sha-256"));
  auto step = feed(login, msg('R', body_i32s({0})));
  CHECK(step.status == session::UpstreamLogin::Status::failed);
  session::UpstreamLogin trusting(alice(), std::nullopt, {}, methods("none"));
  CHECK(feed(trusting, msg('R', body_i32s({0}))).status == session::UpstreamLogin::Status::in_progress);
}

TEST_CASE("upstream SCRAM: more iterations than allowed are refused before any PBKDF2") {
  auto allowed = methods("scram-sha-256");
  allowed.max_scram_iterations = 4096;
  session::UpstreamLogin login(alice(), secret("pencil"), {}, allowed);
  Bytes sasl = body_i32s({10});
  put_cstr(sasl, "SCRAM-SHA-256");
  sasl.push_back(0);
  auto init = feed(login, msg('R', sasl));
  auto fr = read_frame(init.to_upstream);
  BodyReader r(fr.frame.body);
  (void)r.cstr();
  (void)r.i32();
  std::string client_first(as_chars(r.rest()));
  Bytes cont = body_i32s({11});
  put_str(cont, "r=" + client_first.substr(8) + "X,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=10000000");
  const auto started = std::chrono::steady_clock::now();
  auto step = feed(login, msg('R', cont));
  CHECK(std::chrono::steady_clock::now() - started < 1s);
  CHECK(step.status == session::UpstreamLogin::Status::failed);
  CHECK(login.failure_reason() ==
        "the upstream server demands 10000000 SCRAM iterations, more than upstream.max_scram_iterations (4096)");
}

TEST_CASE("upstream SCRAM: AuthenticationOk without the server's signature is refused") {
  session::UpstreamLogin login(alice(), secret("pencil"), {}, methods("scram-sha-256"));
  Bytes sasl = body_i32s({10});
  put_cstr(sasl, "SCRAM-SHA-256");
  sasl.push_back(0);
  feed(login, msg('R', sasl));
  // An impostor that does not know the verifier skips SASLContinue/Final.
  auto step = feed(login, msg('R', body_i32s({0})));
  CHECK(step.status == session::UpstreamLogin::Status::failed);
  CHECK(step.to_client ==
        error_response("FATAL", "08P01", "upstream ended SCRAM authentication without proving its identity"));
}

// ---------------------------------------------------------------- the login policy

TEST_CASE("policy: token-form passwords are tokens, malformed ones included") {
  CHECK(session::is_token_form("eyJhbGciOiJub25lIn0.eyJ1Ijoi.x"));
  CHECK(session::is_token_form("eyJx.y"));
  CHECK_FALSE(session::is_token_form("eyJ-no-dot"));
  CHECK_FALSE(session::is_token_form("hunter2"));
}

TEST_CASE("policy: token verdicts answer as PostgreSQL answers a wrong password, except expiry") {
  tokenstore::verify_result v;
  v.status = tokenstore::verify_status::bad_signature;
  auto r = session::judge_token("alice", v);
  REQUIRE(r);
  CHECK(r->to_client == error_response("FATAL", "28P01", "password authentication failed for user \"alice\""));
  CHECK(r->reason == "bad_signature");
  CHECK(r->counts_as_failure);

  v.status = tokenstore::verify_status::expired;
  v.expires_at = 1767225600;
  r = session::judge_token("alice", v);
  REQUIRE(r);
  auto fr = read_frame(r->to_client);
  auto fields = ErrorFields::parse(fr.frame.body);
  REQUIRE(fields);
  CHECK(fields->message() == "API token expired");
  CHECK(*fields->find('D') == "The token expired at 2026-01-01 00:00:00+00.");

  v.status = tokenstore::verify_status::store_unavailable;
  r = session::judge_token("alice", v);
  REQUIRE(r);
  CHECK_FALSE(r->counts_as_failure);
  CHECK(r->outcome == "error");

  v.status = tokenstore::verify_status::ok;
  CHECK_FALSE(session::judge_token("alice", v));
}

TEST_CASE("policy: a token works only for its role as it is now") {
  const std::int64_t now = 1'800'000'000;
  session::RoleFacts role{4242, true, std::nullopt};
  CHECK_FALSE(session::judge_token_role("alice", 4242, role, now).refusal);

  auto gone = session::judge_token_role("alice", 4242, std::nullopt, now);
  REQUIRE(gone.refusal);
  CHECK(gone.refusal->reason == "the token's owner role no longer exists");

  session::RoleFacts recreated{5000, true, std::nullopt};
  auto other = session::judge_token_role("alice", 4242, recreated, now);
  REQUIRE(other.refusal);
  CHECK(other.refusal->to_client ==
        error_response("FATAL", "28P01", "password authentication failed for user \"alice\""));

  session::RoleFacts nologin{4242, false, std::nullopt};
  auto no = session::judge_token_role("alice", 4242, nologin, now);
  REQUIRE(no.refusal);
  CHECK(no.refusal->to_client == error_response("FATAL", "28000", "role \"alice\" is not permitted to log in"));

  session::RoleFacts expired{4242, true, now - 1};
  auto past = session::judge_token_role("alice", 4242, expired, now);
  REQUIRE(past.refusal);
  CHECK(past.refusal->reason == "the role's VALID UNTIL has passed");
  session::RoleFacts minus_infinity{4242, true, std::numeric_limits<std::int64_t>::min()};
  CHECK(session::judge_token_role("alice", 4242, minus_infinity, now).refusal);

  // A token from before OIDs were kept is bound at its first login.
  auto first = session::judge_token_role("alice", 0, role, now);
  CHECK_FALSE(first.refusal);
  CHECK(first.bind_oid);
}

TEST_CASE("policy: the role look-up's answer is read strictly") {
  session::QueryResult q;
  q.columns = {"oid", "rolcanlogin", "extract"};
  CHECK_FALSE(session::role_facts_from(q).facts);
  CHECK(session::role_facts_from(q).error.empty());
  q.rows = {{std::string("16384"), std::string("t"), std::string("1767225600.500000")}};
  auto a = session::role_facts_from(q);
  REQUIRE(a.facts);
  CHECK(a.facts->oid == 16384);
  CHECK(a.facts->can_login);
  CHECK(a.facts->valid_until == 1767225600);
  q.rows = {{std::string("16384"), std::string("f"), std::string("Infinity")}};
  CHECK(session::role_facts_from(q).facts->valid_until == std::nullopt);
  q.rows = {{std::string("x"), std::string("t"), std::nullopt}};
  CHECK_FALSE(session::role_facts_from(q).error.empty());
  CHECK(session::parse_epoch("-1.5") == std::optional<std::optional<std::int64_t>>(std::int64_t{-2}));
  CHECK_FALSE(session::parse_epoch("12abc"));
}

TEST_CASE("policy: passwords are judged in PostgreSQL's order, missing roles cost a dummy check") {
  const std::int64_t now = 1'800'000'000;
  CHECK(session::plan_password_check(std::nullopt).dummy);
  session::PasswordFacts nopw{std::nullopt, std::nullopt, true};
  CHECK(session::plan_password_check(nopw).dummy);
  session::PasswordFacts f{std::string("SCRAM-SHA-256$4096:xx$yy:zz"), std::nullopt, true};
  CHECK_FALSE(session::plan_password_check(f).dummy);
  CHECK(session::plan_password_check(f).verifier == "SCRAM-SHA-256$4096:xx$yy:zz");

  CHECK(session::judge_password("a", std::nullopt, auth::VerifierCheck::mismatch, now, 4096)->reason == "no such role");
  CHECK(session::judge_password("a", f, auth::VerifierCheck::mismatch, now, 4096)->reason == "wrong password");
  CHECK_FALSE(session::judge_password("a", f, auth::VerifierCheck::match, now, 4096));
  auto costly = session::judge_password("a", f, auth::VerifierCheck::too_costly, now, 4096);
  REQUIRE(costly);
  CHECK(costly->to_client == error_response("FATAL", "28P01", "password authentication failed for user \"a\""));
  session::PasswordFacts expired{f.verifier, now - 10, true};
  CHECK(session::judge_password("a", expired, auth::VerifierCheck::match, now, 4096)->reason ==
        "password expired (VALID UNTIL)");
  session::PasswordFacts nologin{f.verifier, std::nullopt, false};
  CHECK(session::judge_password("a", nologin, auth::VerifierCheck::match, now, 4096)->to_client ==
        error_response("FATAL", "28000", "role \"a\" is not permitted to log in"));
  // A wrong password for a NOLOGIN role says nothing about LOGIN.
  CHECK(session::judge_password("a", nologin, auth::VerifierCheck::mismatch, now, 4096)->reason == "wrong password");
}

TEST_CASE("verifiers: more PBKDF2 rounds than allowed are not computed") {
  // 10 million rounds would take seconds; refused at once.
  const auto started = std::chrono::steady_clock::now();
  CHECK(auth::check_password_verifier("SCRAM-SHA-256$10000000:W22ZaJ0SNY7soEsUEjb6gQ==$"
                                      "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
                                      "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=",
                                      "u", "pw", 100000) == auth::VerifierCheck::too_costly);
  CHECK(std::chrono::steady_clock::now() - started < 1s);
  CHECK(auth::verifier_iterations("SCRAM-SHA-256$4096:abc$d:e") == std::size_t{4096});
  CHECK_FALSE(auth::verifier_iterations("md5abc"));
}

TEST_CASE("verifiers: the dummy check costs about what a real default verifier costs") {
  using Clock = std::chrono::steady_clock;
  auto time = [](auto fn) {
    auto best = Clock::duration::max();
    for (int i = 0; i < 5; ++i) {
      auto t0 = Clock::now();
      fn();
      best = std::min(best, Clock::now() - t0);
    }
    return best;
  };
  const std::string verifier =
      "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
      "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=";
  auto real = time([&] { (void)auth::check_password_verifier(verifier, "u", "pw"); });
  auto dummy = time([&] { auth::dummy_verifier_check("u", "pw"); });
  // Same work (4096 rounds of PBKDF2): within a factor of two either way.
  CHECK(dummy * 2 > real);
  CHECK(dummy < real * 2);
}

// ---------------------------------------------------------------- throttle turns

namespace {
using TClock = std::chrono::steady_clock;
const TClock::time_point kT0 = TClock::time_point{} + 1000h;
using Kind = auth::LoginThrottle::Admission::Kind;
}  // namespace

TEST_CASE("throttle: under the limit every attempt is verified at once") {
  auth::LoginThrottle t;
  for (int i = 0; i < 10; ++i) {
    CHECK(t.admit("alice", "10.0.0.1", kT0, kT0 + 30s).kind == Kind::now);
    (void)t.record_failure("alice", "10.0.0.1", kT0);
  }
  // The 11th failure is over the limit: from now on, turns, the first one a
  // delay (1 s) after that failure.
  (void)t.record_failure("alice", "10.0.0.1", kT0);
  auto first = t.admit("alice", "10.0.0.1", kT0, kT0 + 30s);
  CHECK(first.kind == Kind::wait);
  CHECK(first.at == kT0 + 1s);
}

TEST_CASE("throttle: past the limit, parallel attempts get one turn each, spaced by the delay") {
  auth::ThrottleSettings s;
  s.max_failed_logins = 2;
  auth::LoginThrottle t(s);
  for (int i = 0; i < 3; ++i) (void)t.record_failure("alice", "10.0.0.1", kT0);  // 3 > 2: base delay, 1 s
  std::vector<TClock::time_point> turns;
  for (int i = 0; i < 4; ++i) {
    auto a = t.admit("alice", "10.0.0.1", kT0, kT0 + 30s);
    REQUIRE(a.kind == Kind::wait);
    turns.push_back(a.at);
  }
  // The first turn is a delay after the failure that crossed the limit.
  const std::vector<TClock::time_point> expected{kT0 + 1s, kT0 + 2s, kT0 + 3s, kT0 + 4s};
  CHECK(turns == expected);
  // A turn past the attempt's deadline: refused at once, unverified, and no turn is used up.
  CHECK(t.admit("alice", "10.0.0.1", kT0, kT0 + 4500ms).kind == Kind::refuse);
  CHECK(t.admit("alice", "10.0.0.1", kT0, kT0 + 30s).at == kT0 + 5s);
}

TEST_CASE("throttle: the right password inside a flood waits for its turn like the wrong ones") {
  auth::ThrottleSettings s;
  s.max_failed_logins = 3;
  auth::LoginThrottle t(s);
  for (int i = 0; i < 20; ++i) (void)t.record_failure("alice", "10.0.0.1", kT0);
  auto a = t.admit("alice", "10.0.0.1", kT0, kT0 + 30s);
  CHECK(a.kind == Kind::wait);
  // Another address is not held up by this one's count, but by the user's.
  CHECK(t.admit("alice", "10.9.9.9", kT0, kT0 + 30s).kind != Kind::now);
  CHECK(t.admit("bob", "10.9.9.9", kT0, kT0 + 30s).kind == Kind::now);
}

TEST_CASE("throttle: an address that logged in as the user before is not held up by the user's attackers") {
  auth::ThrottleSettings s;
  s.max_failed_logins = 3;
  auth::LoginThrottle t(s);
  t.record_success("ci", "10.0.0.5", kT0);
  for (int i = 0; i < 20; ++i) (void)t.record_failure("ci", "10.6.6.6", kT0);
  CHECK(t.admit("ci", "10.0.0.5", kT0 + 1s, kT0 + 31s).kind == Kind::now);
  CHECK(t.admit("ci", "10.7.7.7", kT0 + 1s, kT0 + 31s).kind == Kind::wait);
  // Not for ever: after success_memory the address is a stranger again.
  CHECK(t.admit("ci", "10.0.0.5", kT0 + 25h, kT0 + 25h + 30s).kind == Kind::now);  // the failures expired too
}

// ---------------------------------------------------------------- verification queue

TEST_CASE("verification queue: bounded, and fair between users") {
  std::mutex m;
  std::condition_variable cv;
  bool release = false;
  std::vector<std::string> order;
  {
    auth::VerifierQueue q(4, 1);
    // The first job holds the worker until released, so the others queue.
    REQUIRE(q.submit("mallory", [&](bool) {
      std::unique_lock lock(m);
      cv.wait(lock, [&] { return release; });
      order.push_back("mallory-0");
    }));
    // Give the worker time to take it.
    for (int i = 0; i < 100 && q.waiting() > 0; ++i) std::this_thread::sleep_for(1ms);
    for (int i = 1; i <= 3; ++i) {
      REQUIRE(q.submit("mallory", [&, i](bool) {
        std::lock_guard lock(m);
        order.push_back("mallory-" + std::to_string(i));
      }));
    }
    REQUIRE(q.submit("alice", [&](bool) {
      std::lock_guard lock(m);
      order.push_back("alice");
    }));
    CHECK_FALSE(q.submit("bob", [](bool) {}));  // full: 4 waiting
    {
      std::lock_guard lock(m);
      release = true;
    }
    cv.notify_all();
  }  // the destructor runs what is left
  // alice waited behind one of mallory's jobs, not all three.
  const std::vector<std::string> expected{"mallory-0", "mallory-1", "alice", "mallory-2", "mallory-3"};
  CHECK(order == expected);
}

// ---------------------------------------------------------------- the log

TEST_CASE("log: a newline or escape sequence in a name cannot forge or colour a line") {
  CHECK(log_text("eve\n2026-11-30 12:00:00.000 info user \"admin\" logged in") ==
        "eve\\n2026-11-30 12:00:00.000 info user \\\"admin\\\" logged in");
  CHECK(log_text("a\x1b[31mred\r\t\\") == "a\\x1b[31mred\\r\\t\\\\");
  CHECK(log_text("\xff\xfe ok \xc3\xa9") == "\\xff\\xfe ok \xc3\xa9");
  CHECK(log_text("line\xe2\x80\xa8sep\xc2\x85") == "line\\u{2028}sep\\u{0085}");
}

TEST_CASE("log: a token pasted as a name is masked, whole or cut") {
  // Token-shaped, with a made-up signature ("signature-signature"); put
  // together at run time so that no committed text has a signed token's shape.
  const std::string token = std::string("eyJhbGciOiJIUzI1NiIsImtpZCI6IjAxMjM0NTY3ODlhYmNkZWYifQ") + "." +
                            "eyJ1c2VyIjoiYW5hbHlzdCJ9" + "." + "c2lnbmF0dXJlLXNpZ25hdHVyZQ";
  CHECK(log_name(token).find("eyJhbGci") == std::string::npos);
  CHECK(log_name(token) == "eyJ\xe2\x80\xa6(masked, " + std::to_string(token.size()) + " bytes)\xe2\x80\xa6(" +
                               std::to_string(token.size()) + " bytes)");
  // What PostgreSQL keeps of it as a user name (63 bytes) is masked too.
  CHECK(log_name(token.substr(0, 63)).find("hbGci") == std::string::npos);
  CHECK(log_text("login with eyJshort") == "login with eyJshort");
}

TEST_CASE("log: long text is cut with its length said") {
  CHECK(log_name(std::string(100, 'a')) == std::string(64, 'a') + "\xe2\x80\xa6(100 bytes)");
  CHECK(log_text("short") == "short");
}

// ---------------------------------------------------------------- secrets

TEST_CASE("secrets: a SecretString zeroes its bytes when wiped, moved from or replaced") {
  auth::SecretString s("correct horse battery staple");
  const char* p = s.view().data();
  const std::size_t n = s.size();
  s.wipe();
  CHECK(s.empty());
  CHECK(std::all_of(p, p + n, [](char c) { return c == 0; }));

  auth::SecretString a("short");  // in the string's own small buffer
  const char* ap = a.view().data();
  auth::SecretString b(std::move(a));
  CHECK(b.view() == "short");
  CHECK(a.empty());  // NOLINT(bugprone-use-after-move): the point of the test
  CHECK(std::all_of(ap, ap + 5, [](char c) { return c == 0; }));

  std::string plain = "hunter2";
  auto taken = auth::SecretString::take(plain);
  CHECK(taken.view() == "hunter2");
  CHECK(plain.empty());
}

TEST_CASE("input buffer: grows with what arrives, not with what a header announces, and wipes what it drops") {
  InputBuffer in(10000);
  auto room = in.prepare();
  CHECK(room.size() == InputBuffer::kChunk);
  const Bytes pw = msg('p', body_cstrs({"secret!"}));
  std::memcpy(room.data(), pw.data(), pw.size());
  in.commit(pw.size());
  const auto* before = in.data().data();
  in.consume(pw.size());
  CHECK(in.size() == 0);
  CHECK(std::all_of(before, before + pw.size(), [](std::uint8_t c) { return c == 0; }));
  // A header announcing 1 GiB does not make the buffer any larger.
  Bytes header{'Q', 0x3f, 0xff, 0xff, 0xff};
  room = in.prepare();
  std::memcpy(room.data(), header.data(), header.size());
  in.commit(header.size());
  CHECK(in.prepare().size() <= 2 * InputBuffer::kChunk);
  // And it stops at its limit.
  InputBuffer small(10);
  small.commit(small.prepare().size());
  CHECK(small.full());
  CHECK(small.prepare().empty());
}

TEST_CASE("input buffer: one that never read can be consumed from and taken (UBSan: no memmove from null)") {
  InputBuffer in(100);
  in.consume(0);
  in.consume(5);
  CHECK(in.size() == 0);
  CHECK(in.take().empty());
}

// ---------------------------------------------------------------- one driver shape

TEST_CASE("machines: the handshake and the upstream login take the driver's one shape") {
  ClientHandshake hs;
  session::HandshakeMachine m(hs);
  InputBuffer in(1 << 17);
  auto put = [&](const Bytes& b) {
    auto room = in.prepare();
    std::memcpy(room.data(), b.data(), b.size());
    in.commit(b.size());
  };
  put(startup_packet(kProtocolVersion3, startup_params({{"user", "u"}})));
  auto s1 = m.step(in.data());
  in.consume(s1.consumed);
  CHECK(s1.next == session::MachineStep::Next::again);
  CHECK(s1.to_peer == msg('R', body_i32s({3})));
  CHECK(m.step(in.data()).next == session::MachineStep::Next::input);
  put(msg('p', body_cstrs({"pw"})));
  auto s2 = m.step(in.data());
  CHECK(s2.next == session::MachineStep::Next::stop);
  CHECK(std::holds_alternative<ClientHandshake::LoggedIn>(m.action()));

  session::UpstreamLogin login(alice(), std::nullopt, {}, methods("none"));
  session::FramedMachine<session::UpstreamLogin> up(login, 1 << 20);
  Bytes from_upstream = concat({msg('R', body_i32s({0})), msg('K', body_i32s({1, 2})), msg('Z', Bytes{'I'})});
  std::size_t at = 0;
  for (;;) {
    auto st = up.step(ByteView(from_upstream).subspan(at));
    at += st.consumed;
    if (st.next == session::MachineStep::Next::stop) break;
  }
  CHECK(up.finished());
  // The backend's real process ID, with tokengate's own secret (here 0).
  CHECK(up.take_client_bytes() ==
        concat({msg('R', body_i32s({0})), msg('K', body_i32s({1, 0})), msg('Z', Bytes{'I'})}));
}

TEST_CASE("policy: the expiry notice comes within expiry_warning and within the last fifth of the lifetime") {
  constexpr std::int64_t day = 86400, now = 1767225600;
  tokenstore::verify_result v;
  v.status = tokenstore::verify_status::ok;
  v.name = "ci";
  auto notice_for = [&](std::int64_t lifetime, std::int64_t left, std::int64_t warning = 7 * 86400) {
    v.issued_at = now + left - lifetime;
    v.expires_at = now + left;
    return session::expiry_notice(v, now, warning);
  };
  // A 7-day token, fresh or a day old: inside the 7-day window, but most of
  // its life is ahead. Silent.
  CHECK(notice_for(7 * day, 7 * day).empty());
  CHECK(notice_for(7 * day, 6 * day).empty());
  CHECK(notice_for(7 * day, 7 * day / 5 + 1).empty());
  // In its last fifth it warns, with the whole NoticeResponse.
  auto n = notice_for(7 * day, 7 * day / 5);
  auto fr = read_frame(n);
  REQUIRE(fr.frame.tag == 'N');
  CHECK(n == [&] {
    auto e = ErrorResponse::make("NOTICE", "01000", "API token \"ci\" expires at 2026-01-02 09:36:00+00");
    e.hint = "Create a new token with CREATE API TOKEN.";
    Bytes out;
    e.serialize(out, backend_tag::NoticeResponse);
    return out;
  }());
  // A year-long token: its last fifth starts 73 days out; the window (7 days) decides.
  CHECK(notice_for(365 * day, 8 * day).empty());
  CHECK_FALSE(notice_for(365 * day, 7 * day).empty());
  // expiry_warning = 0: never.
  CHECK(notice_for(7 * day, 60, 0).empty());
  // A token without iat (not issued by tokengate's own minting): the window alone.
  v.issued_at = 0;
  v.expires_at = now + 6 * day;
  CHECK_FALSE(session::expiry_notice(v, now, 7 * day).empty());
}

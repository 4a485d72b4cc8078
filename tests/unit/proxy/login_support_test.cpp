// Login support pieces: failed-login throttling, the JSON-lines audit log,
// and the PgBouncer-format userlist file.
#include <sys/stat.h>

// Readable failures : print durations and optionals, not "{?}".
#define CATCH_CONFIG_ENABLE_CHRONO_STRINGMAKER
#define CATCH_CONFIG_ENABLE_OPTIONAL_STRINGMAKER
#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "proxy/audit.hpp"
#include "proxy/auth/throttle.hpp"
#include "proxy/auth/userlist.hpp"

using namespace std::chrono_literals;
using tokengate::AuditEvent;
using tokengate::AuditLog;
using tokengate::looks_like_jwt;
using tokengate::auth::LoginThrottle;
using tokengate::auth::ThrottleSettings;
using tokengate::auth::Userlist;
using tokengate::auth::UserlistError;

namespace {

using Clock = std::chrono::steady_clock;
const Clock::time_point kT0 = Clock::time_point{} + 1000h;  // any fixed point: time is passed in

// A mkdtemp directory, removed with its contents on destruction.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/tg-login-support-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}

boost::json::object parse_line(const std::string& line) {
  INFO("line: " << line);
  boost::json::error_code ec;
  auto v = boost::json::parse(line, ec);
  REQUIRE_FALSE(ec);
  REQUIRE(v.is_object());
  return v.as_object();
}

std::string field(const boost::json::object& o, const char* key) {
  auto* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->as_string()) : std::string("<absent>");
}

// A real-looking token (header {"alg":"HS256","typ":"JWT","kid":"k1"}).
constexpr const char* kJwt =
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImsxIn0."
    "eyJ1c2VyIjoiYWxpY2UiLCJ0aWQiOiIwMTIzIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ";

// The value (moved out: a Userlist cannot be copied), or fails the test.
template <class T>
T ok(std::variant<T, UserlistError> r) {
  if (auto* e = std::get_if<UserlistError>(&r)) FAIL("unexpected error: " << e->message);
  return std::get<T>(std::move(r));
}
std::string error_of(const std::variant<Userlist, UserlistError>& r) {
  if (auto* e = std::get_if<UserlistError>(&r)) return e->message;
  return "<no error>";
}

}  // namespace

// ---------------------------------------------------------------- throttle

TEST_CASE("throttle: ten failures are free, the 11th waits the base delay, then doubling to the cap") {
  LoginThrottle t;  // defaults: 10 per minute, 1 s doubling to 30 s
  for (int i = 1; i <= 10; ++i) {
    INFO("failure " << i);
    CHECK(t.record_failure("alice", "10.0.0.1", kT0 + i * 10ms) == 0ms);
  }
  CHECK(t.record_failure("alice", "10.0.0.1", kT0 + 110ms) == 1s);
  CHECK(t.delay_before_answer("alice", "10.0.0.1", kT0 + 110ms) == 1s);
  CHECK(t.record_failure("alice", "10.0.0.1", kT0 + 120ms) == 2s);
  CHECK(t.record_failure("alice", "10.0.0.1", kT0 + 130ms) == 4s);
  CHECK(t.record_failure("alice", "10.0.0.1", kT0 + 140ms) == 8s);
  CHECK(t.record_failure("alice", "10.0.0.1", kT0 + 150ms) == 16s);
  CHECK(t.record_failure("alice", "10.0.0.1", kT0 + 160ms) == 30s);  // 32 s, capped
  for (int i = 0; i < 1000; ++i) (void)t.record_failure("alice", "10.0.0.1", kT0 + 170ms);
  CHECK(t.delay_before_answer("alice", "10.0.0.1", kT0 + 170ms) == 30s);
  CHECK(t.failure_counts("alice", "10.0.0.1", kT0 + 170ms).user == 1016);
}

TEST_CASE("throttle: settings are honoured") {
  ThrottleSettings s;
  s.max_failed_logins = 2;
  s.base_delay = 250ms;
  s.max_delay = 600ms;
  LoginThrottle t(s);
  CHECK(t.record_failure("u", "a", kT0) == 0ms);
  CHECK(t.record_failure("u", "a", kT0) == 0ms);
  CHECK(t.record_failure("u", "a", kT0) == 250ms);
  CHECK(t.record_failure("u", "a", kT0) == 500ms);
  CHECK(t.record_failure("u", "a", kT0) == 600ms);

  s.max_failed_logins = 0;  // off
  t.reconfigure(s);
  CHECK(t.tracked_keys() == 0);
  for (int i = 0; i < 50; ++i) CHECK(t.record_failure("u", "a", kT0) == 0ms);
}

TEST_CASE("throttle: failures leave the window after a minute") {
  LoginThrottle t;
  for (int i = 0; i < 11; ++i) (void)t.record_failure("bob", "10.0.0.2", kT0);
  CHECK(t.delay_before_answer("bob", "10.0.0.2", kT0) == 1s);
  CHECK(t.delay_before_answer("bob", "10.0.0.2", kT0 + 59s) == 1s);  // still within the minute
  // Counted for at least the window and at most a twelfth of it more.
  CHECK(t.delay_before_answer("bob", "10.0.0.2", kT0 + 65s) == 0ms);
  CHECK(t.failure_counts("bob", "10.0.0.2", kT0 + 65s).user == 0);
  // A sliding window, not a fixed one: half of the failures age out first.
  for (int i = 0; i < 6; ++i) (void)t.record_failure("carol", "10.0.0.3", kT0 + 100s);
  for (int i = 0; i < 6; ++i) (void)t.record_failure("carol", "10.0.0.3", kT0 + 130s);
  CHECK(t.failure_counts("carol", "10.0.0.3", kT0 + 130s).user == 12);
  CHECK(t.delay_before_answer("carol", "10.0.0.3", kT0 + 130s) == 2s);
  CHECK(t.failure_counts("carol", "10.0.0.3", kT0 + 170s).user == 6);
  CHECK(t.delay_before_answer("carol", "10.0.0.3", kT0 + 170s) == 0ms);
  CHECK(t.failure_counts("carol", "10.0.0.3", kT0 + 200s).user == 0);
}

TEST_CASE("throttle: counted per user across addresses and per address across users") {
  LoginThrottle t;
  SECTION("one user from many addresses") {
    for (int i = 0; i < 10; ++i) (void)t.record_failure("dave", "10.1.0." + std::to_string(i), kT0);
    CHECK(t.record_failure("dave", "10.1.0.99", kT0) == 1s);
    CHECK(t.failure_counts("dave", "10.1.0.99", kT0).address == 1);
    // Another user from a fresh address is not affected.
    CHECK(t.record_failure("erin", "10.2.0.1", kT0) == 0ms);
  }
  SECTION("one address trying many users (password spraying)") {
    for (int i = 0; i < 10; ++i) (void)t.record_failure("user" + std::to_string(i), "192.0.2.7", kT0);
    CHECK(t.record_failure("user99", "192.0.2.7", kT0) == 1s);
    CHECK(t.failure_counts("user99", "192.0.2.7", kT0).user == 1);
    CHECK(t.record_failure("user99", "192.0.2.8", kT0) == 0ms);  // other address: user99 has 2
  }
}

TEST_CASE("throttle: a success is never slowed and forgives only its own user and address") {
  LoginThrottle t;
  // A CI job's user is hammered from an attacker's address.
  for (int i = 0; i < 20; ++i) (void)t.record_failure("ci", "203.0.113.9", kT0);
  // The CI job's own login succeeds: nothing for it to wait for, by design
  // the caller does not ask; its success does not reset the attacker's count.
  t.record_success("ci", "10.0.0.50", kT0 + 1s);
  CHECK(t.record_failure("ci", "203.0.113.9", kT0 + 2s) == 30s);

  // A person who mistyped from their own address, then got it right.
  for (int i = 0; i < 11; ++i) (void)t.record_failure("frank", "10.0.0.6", kT0);
  CHECK(t.delay_before_answer("frank", "10.0.0.6", kT0) == 1s);
  t.record_success("frank", "10.0.0.6", kT0 + 1s);
  CHECK(t.failure_counts("frank", "10.0.0.6", kT0 + 1s).user == 0);
  CHECK(t.failure_counts("frank", "10.0.0.6", kT0 + 1s).address == 0);
  CHECK(t.record_failure("frank", "10.0.0.6", kT0 + 2s) == 0ms);

  // A sprayer who owns one account cannot launder the address's count.
  for (int i = 0; i < 11; ++i) (void)t.record_failure("victim" + std::to_string(i), "198.51.100.1", kT0);
  t.record_success("mallory", "198.51.100.1", kT0 + 1s);
  CHECK(t.failure_counts("x", "198.51.100.1", kT0 + 1s).address == 11);
  CHECK(t.delay_before_answer("anyone", "198.51.100.1", kT0 + 1s) == 1s);
}

TEST_CASE("throttle: memory is bounded, and throttled keys outlive quiet ones") {
  ThrottleSettings s;
  s.max_tracked_keys = 300;
  LoginThrottle t(s);
  for (int i = 0; i < 11; ++i) (void)t.record_failure("target", "203.0.113.1", kT0);
  // An attacker with many addresses and user names fills the table.
  for (int i = 0; i < 5000; ++i)
    (void)t.record_failure("u" + std::to_string(i), "2001:db8::" + std::to_string(i), kT0 + 1s);
  CHECK(t.tracked_keys() <= 300);
  CHECK(t.failure_counts("target", "203.0.113.1", kT0 + 1s).user == 11);
  CHECK(t.delay_before_answer("target", "203.0.113.1", kT0 + 1s) == 1s);
  // Expired windows go first once the table is full again.
  for (int i = 0; i < 400; ++i) (void)t.record_failure("late" + std::to_string(i), "192.0.2.1", kT0 + 200s);
  CHECK(t.tracked_keys() <= 300);
  CHECK(t.failure_counts("late399", "192.0.2.1", kT0 + 200s).address == 400);
}

TEST_CASE("throttle: long user names do not make long keys, and threads may share it") {
  LoginThrottle t;
  const std::string huge(10000, 'x');
  for (int i = 0; i < 11; ++i) (void)t.record_failure(huge, "10.9.9.9", kT0);
  CHECK(t.delay_before_answer(huge, "10.9.9.9", kT0) == 1s);

  LoginThrottle shared;
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k)
    threads.emplace_back([&shared, k] {
      for (int i = 0; i < 500; ++i) {
        (void)shared.record_failure("t", "addr" + std::to_string(k), kT0);
        shared.record_success("t" + std::to_string(i % 7), "addr" + std::to_string(k), kT0);
      }
    });
  for (auto& th : threads) th.join();
  CHECK(shared.failure_counts("t", "addr0", kT0).user == 2000);
  CHECK(shared.failure_counts("t", "addr0", kT0).address == 500);
}

// ---------------------------------------------------------------- audit log

TEST_CASE("audit: lines parse back with every non-empty field, in order, and the time in RFC 3339") {
  TempDir dir;
  AuditLog log(dir.file("audit.log"));
  REQUIRE_FALSE(log.open());
  AuditEvent e;
  e.event = "login";
  e.actor = "alice";
  e.owner = "alice";
  e.token_name = "ci";
  e.tid = "0123456789abcdef0123456789abcdef";
  e.client_address = "10.0.0.1";
  e.application_name = "psql";
  e.method = "token";
  e.outcome = "ok";
  // 2026-11-28T17:25:26.123Z
  const auto when = std::chrono::system_clock::time_point{} + std::chrono::milliseconds(1795886726123);
  log.write(e, when);
  AuditEvent revoke{.event = "revoke_token", .actor = "admin", .owner = "bob", .token_name = "old"};
  revoke.outcome = "denied";
  revoke.reason = "permission denied: \"quoted\"\nand a newline";
  log.write(revoke, when + 1ms);

  auto lines = read_lines(log.path());
  REQUIRE(lines.size() == 2);
  CHECK(lines[0] ==
        R"({"time":"2026-11-28T17:25:26.123Z","event":"login","actor":"alice","owner":"alice",)"
        R"("token_name":"ci","tid":"0123456789abcdef0123456789abcdef","client_address":"10.0.0.1",)"
        R"("application_name":"psql","method":"token","outcome":"ok"})");
  auto second = parse_line(lines[1]);
  CHECK(field(second, "time") == "2026-11-28T17:25:26.124Z");
  CHECK(field(second, "event") == "revoke_token");
  CHECK(field(second, "reason") == "permission denied: \"quoted\"\nand a newline");
  // Empty fields are left out, not written as "".
  CHECK(second.size() == 7);
  CHECK_FALSE(second.contains("tid"));
  CHECK_FALSE(second.contains("method"));
  CHECK(log.refused_values() == 0);
  CHECK(log.failed_writes() == 0);
}

TEST_CASE("audit: the file is created 0600 and appended to") {
  TempDir dir;
  const auto path = dir.file("audit.log");
  {
    std::ofstream(path) << "{\"earlier\":true}\n";
    ::chmod(path.c_str(), 0640);  // an existing file keeps the mode it was given
    AuditLog log(path);
    REQUIRE_FALSE(log.open());
    log.write({.event = "list_tokens", .actor = "alice"});
    CHECK(read_lines(path).size() == 2);
    struct stat st {};
    REQUIRE(::stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0640);
  }
  const auto fresh = dir.file("new.log");
  AuditLog log(fresh);
  REQUIRE_FALSE(log.open());
  log.write({.event = "list_tokens", .actor = "alice"});
  struct stat st {};
  REQUIRE(::stat(fresh.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(read_lines(fresh).size() == 1);
}

TEST_CASE("audit: reopen() follows a rotated file, and a failed reopen keeps the old one") {
  TempDir dir;
  const auto path = dir.file("audit.log");
  AuditLog log(path);
  REQUIRE_FALSE(log.open());
  log.write({.event = "create_token", .actor = "a"});
  std::filesystem::rename(path, path + ".1");  // logrotate
  log.write({.event = "set_comment", .actor = "a"});  // still the old file until SIGHUP
  REQUIRE_FALSE(log.reopen());
  log.write({.event = "set_policy", .actor = "a"});
  auto old_lines = read_lines(path + ".1");
  auto new_lines = read_lines(path);
  REQUIRE(old_lines.size() == 2);
  REQUIRE(new_lines.size() == 1);
  CHECK(field(parse_line(new_lines[0]), "event") == "set_policy");

  // The directory becomes unwritable for the new file: keep writing the old one.
  std::filesystem::rename(path, path + ".2");
  std::filesystem::create_directory(path);  // the path is now a directory: open() fails
  auto err = log.reopen();
  REQUIRE(err);
  CHECK(err->message.find(path) != std::string::npos);
  log.write({.event = "reset_policy", .actor = "a"});
  CHECK(read_lines(path + ".2").size() == 2);
}

TEST_CASE("audit: an empty path disables the log; a missing directory is an error") {
  AuditLog off("");
  CHECK_FALSE(off.enabled());
  CHECK_FALSE(off.open());
  off.write({.event = "login"});
  CHECK(off.failed_writes() == 0);

  TempDir dir;
  AuditLog bad(dir.file("no/such/dir/audit.log"));
  auto err = bad.open();
  REQUIRE(err);
  CHECK(err->message.find("no/such/dir/audit.log") != std::string::npos);
  bad.write({.event = "login"});
  CHECK(bad.failed_writes() == 1);
}

TEST_CASE("audit: values that look like a token are refused and counted, the event is kept") {
  CHECK(looks_like_jwt(kJwt));
  CHECK(looks_like_jwt(std::string("bad token ") + kJwt + " seen"));
  CHECK(looks_like_jwt("eyJhbGciOiJub25lIn0.eyJ1c2VyIjoiYSJ9."));  // alg none: empty signature
  CHECK(looks_like_jwt("eyJ.."));
  CHECK_FALSE(looks_like_jwt("eyJhbGciOiJIUzI1NiJ9"));          // one segment
  CHECK_FALSE(looks_like_jwt("eyJhbGciOiJIUzI1NiJ9.eyJ1c2Vy"));  // one dot
  CHECK_FALSE(looks_like_jwt("psql"));
  CHECK_FALSE(looks_like_jwt("eyJ a.b.c"));
  CHECK_FALSE(looks_like_jwt("v1.2.3"));

  TempDir dir;
  AuditLog log(dir.file("audit.log"));
  REQUIRE_FALSE(log.open());
  AuditEvent e{.event = "login", .actor = "alice", .client_address = "10.0.0.1"};
  e.application_name = kJwt;
  e.outcome = "denied";
  e.reason = std::string("token for another user: ") + kJwt;
  log.write(e);
  CHECK(log.refused_values() == 2);

  auto lines = read_lines(log.path());
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].find("eyJ") == std::string::npos);
  auto o = parse_line(lines[0]);
  CHECK(field(o, "event") == "login");
  CHECK(field(o, "outcome") == "denied");
  CHECK_FALSE(o.contains("application_name"));
  CHECK_FALSE(o.contains("reason"));
  REQUIRE(o.contains("redacted"));
  CHECK(boost::json::serialize(o.at("redacted")) == R"(["application_name","reason"])");
}

TEST_CASE("audit: a token's start (a user name cut at 63 bytes) is refused as well") {
  const std::string start = std::string(kJwt).substr(0, 63);  // no dot left: not JWT-shaped
  REQUIRE_FALSE(looks_like_jwt(start));
  TempDir dir;
  AuditLog log(dir.file("audit.log"));
  REQUIRE_FALSE(log.open());
  log.write({.event = "login", .actor = start, .outcome = "denied"});
  CHECK(log.refused_values() == 1);
  auto lines = read_lines(log.path());
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].find("eyJ") == std::string::npos);
  auto o = parse_line(lines[0]);
  CHECK_FALSE(o.contains("actor"));
  CHECK(boost::json::serialize(o.at("redacted")) == R"(["actor"])");
  // An ordinary name that merely starts like one is kept.
  log.write({.event = "login", .actor = "eyJohnson", .outcome = "ok"});
  CHECK(field(parse_line(read_lines(log.path()).at(1)), "actor") == "eyJohnson");
}

TEST_CASE("audit: invalid UTF-8 and huge values still make a JSON line") {
  TempDir dir;
  AuditLog log(dir.file("audit.log"));
  REQUIRE_FALSE(log.open());
  AuditEvent e{.event = "login"};
  e.application_name = "caf\xC3\xA9 \xFF\xC0\xAF \xED\xA0\x80 end";  // é, bad byte, overlong, surrogate
  e.reason = std::string(5000, 'r');
  log.write(e);
  auto lines = read_lines(log.path());
  REQUIRE(lines.size() == 1);
  auto o = parse_line(lines[0]);
  CHECK(field(o, "application_name") ==
        "caf\xC3\xA9 \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD end");
  const auto reason = field(o, "reason");
  CHECK(reason.size() <= AuditLog::kMaxFieldBytes);
  CHECK(reason.substr(reason.size() - 3) == "\xE2\x80\xA6");
}

TEST_CASE("audit: lines from many threads never interleave") {
  TempDir dir;
  AuditLog log(dir.file("audit.log"));
  REQUIRE_FALSE(log.open());
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k)
    threads.emplace_back([&log, k] {
      for (int i = 0; i < 250; ++i)
        log.write({.event = "login", .actor = "t" + std::to_string(k), .reason = std::string(300, 'a' + k)});
    });
  for (auto& th : threads) th.join();
  auto lines = read_lines(log.path());
  REQUIRE(lines.size() == 1000);
  for (const auto& l : lines) {
    auto o = parse_line(l);
    const auto actor = field(o, "actor");
    CHECK(field(o, "reason") == std::string(300, static_cast<char>('a' + (actor.back() - '0'))));
  }
}

// ---------------------------------------------------------------- userlist

TEST_CASE("userlist: quotes, doubled quotes, comments, blank lines and extra fields") {
  const auto list = ok(Userlist::parse(
      "; PgBouncer-style comment\n"
      "# and this kind\n"
      "\n"
      "   \t\n"
      "\"alice\" \"secret\"\n"
      "  \"bob\"\t\"pa ss\"\"word\"  \"ignored third field\" trailing junk\r\n"
      "\"we\"\"ird user\" \"x;#y\"\n"
      "\"carol\"\"\"  \"c\"\n"  // user: carol"
      "\"dave\" \"md5f3b8d4b9b6cc1bd5d42a0aa0d6f3bd0e\"\n"
      "\"erin\" \"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d:wfPL\"\n"
      "\"frank\" \"\"\n"
      "\"gina\" \"md5notreallyaverifier\"\n"
      "\"alice\" \"later wins\"",  // no final newline
      "/etc/tg/users.txt"));
  CHECK(list.size() == 8);
  CHECK(list.password_for("alice") == "later wins");
  CHECK(list.password_for("bob") == "pa ss\"word");
  CHECK(list.password_for("we\"ird user") == "x;#y");
  CHECK(list.password_for("carol\"") == "c");
  CHECK(list.entry("carol") == Userlist::Entry::absent);
  CHECK(list.entry("gina") == Userlist::Entry::plaintext);  // not md5 + 32 hex: a password
  CHECK(list.source() == "/etc/tg/users.txt");
}

TEST_CASE("userlist: verifier and empty entries give no password, with a message naming the setting") {
  const auto list = ok(Userlist::parse(
      "\"dave\" \"md5f3b8d4b9b6cc1bd5d42a0aa0d6f3bd0e\"\n"
      "\"erin\" \"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d:wfPL\"\n"
      "\"frank\" \"\"\n",
      "/etc/tg/users.txt"));
  CHECK(list.entry("dave") == Userlist::Entry::verifier);
  CHECK(list.entry("erin") == Userlist::Entry::verifier);
  CHECK(list.entry("frank") == Userlist::Entry::empty);
  CHECK_FALSE(list.password_for("dave"));
  CHECK_FALSE(list.password_for("erin"));
  CHECK_FALSE(list.password_for("frank"));
  CHECK_FALSE(list.password_for("nobody"));
  CHECK(list.why_no_password("dave") ==
        "no plaintext password for user \"dave\" in auth.userlist (\"/etc/tg/users.txt\"): it holds an MD5 "
        "verifier, and tokengate must send the password itself to log in upstream");
  CHECK(list.why_no_password("erin").find("a SCRAM-SHA-256 verifier") != std::string::npos);
  CHECK(list.why_no_password("frank").find("the password is empty") != std::string::npos);
  CHECK(list.why_no_password("nobody") ==
        "no plaintext password for user \"nobody\" in auth.userlist (\"/etc/tg/users.txt\"): the user is not listed");
  CHECK(Userlist{}.why_no_password("x").find("the setting is not set") != std::string::npos);
  // Messages never carry a password or verifier.
  CHECK(list.why_no_password("dave").find("f3b8d4") == std::string::npos);
}

TEST_CASE("userlist: syntax errors name the file and the line, never the password") {
  auto err = [](const char* text) { return error_of(Userlist::parse(text, "/etc/u.txt")); };
  CHECK(err("\"a\" \"b\"\nalice secret\n") ==
        "userlist file \"/etc/u.txt\", line 2: expected a double-quoted user name");
  CHECK(err("; c\n\n\"alice\" \"sec\"ret\n\"bob\" \"unterminated\n") ==
        "userlist file \"/etc/u.txt\", line 4: the password's closing quote is missing");
  CHECK(err("\"alice\n") == "userlist file \"/etc/u.txt\", line 1: the user name's closing quote is missing");
  CHECK(err("\"alice\"\n") ==
        "userlist file \"/etc/u.txt\", line 1: expected a double-quoted password after the user name");
  CHECK(err("\"alice\" secret\n") ==
        "userlist file \"/etc/u.txt\", line 1: expected a double-quoted password after the user name");
  CHECK(err("\r\n\"\" \"x\"\n") == "userlist file \"/etc/u.txt\", line 2: empty user name");
  CHECK(err("\"bob\" \"hunter2\n").find("hunter2") == std::string::npos);
  CHECK(ok(Userlist::parse("", "x")).size() == 0);
}

TEST_CASE("userlist: bounded lines and names, NUL bytes refused, each with its line number") {
  auto err = [](const std::string& text) { return error_of(Userlist::parse(text, "/etc/u.txt")); };
  const std::string long_line = "\"alice\" \"" + std::string(9000, 'p') + "\"\n";
  CHECK(err("; fine\n" + long_line) == "userlist file \"/etc/u.txt\", line 2: longer than 8192 bytes");
  CHECK(err("\"" + std::string(64, 'u') + "\" \"pw\"\n") ==
        "userlist file \"/etc/u.txt\", line 1: the user name is longer than 63 bytes, PostgreSQL's longest");
  CHECK(ok(Userlist::parse("\"" + std::string(63, 'u') + "\" \"pw\"\n", "x")).size() == 1);
  CHECK(err(std::string("\"a\" \"p\0w\"\n", 10)) == "userlist file \"/etc/u.txt\", line 1: contains a NUL byte");
}

TEST_CASE("userlist: load() reads a file and reports one it cannot read") {
  TempDir dir;
  const auto path = dir.file("userlist.txt");
  std::ofstream(path) << "\"alice\" \"secret\"\n\"bob\" \"md5f3b8d4b9b6cc1bd5d42a0aa0d6f3bd0e\"\n";
  const auto list = ok(Userlist::load(path));
  CHECK(list.size() == 2);
  CHECK(list.password_for("alice") == "secret");
  CHECK(list.source() == path);

  std::ofstream(path) << "\"alice\" \"secret\"\nbroken\n";
  CHECK(error_of(Userlist::load(path)) == "userlist file \"" + path + "\", line 2: expected a double-quoted user name");

  const auto missing = dir.file("missing.txt");
  CHECK(error_of(Userlist::load(missing)) ==
        "cannot open userlist file \"" + missing + "\" (setting auth.userlist): No such file or directory");
}

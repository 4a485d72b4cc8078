// Memory stays bounded whatever the Query's size: peak RSS measured in a child process, and the limits.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>

#include "parser_ext/role_password.hpp"
#include "test_support.hpp"

using namespace parser_ext_test;

namespace {

constexpr std::size_t mib = 1024 * 1024;

// VmHWM (peak resident set) of this process, KiB; -1 if unreadable.
long peak_rss_kib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

// Runs `build` then `run` in a forked child and returns how far the peak
// resident set rose during `run` (KiB), so that neither this process's
// history nor the test's own input counts. `run` returns false to flag a
// wrong answer (reported as -2).
long extra_peak_kib(const std::function<void()>& build, const std::function<bool()>& run) {
  int fds[2];
  if (pipe(fds) != 0) return -1;
  const pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    build();
    const long before = peak_rss_kib();
    const bool ok = run();
    const long after = peak_rss_kib();
    const long result = !ok ? -2 : (before < 0 || after < 0) ? -1 : after - before;
    const ssize_t w = write(fds[1], &result, sizeof result);
    _exit(w == static_cast<ssize_t>(sizeof result) ? 0 : 1);
  }
  close(fds[1]);
  long result = -1;
  if (read(fds[0], &result, sizeof result) != static_cast<ssize_t>(sizeof result)) result = -1;
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return result;
}

// A Query of about `size` bytes: `head`, then a string constant full of the
// words that make the pre-filters look (API TOKEN, PASSWORD), then `tail`.
std::string& big_query() {
  static std::string q;
  return q;
}
void build_big(const std::string& head, std::size_t size, const std::string& tail) {
  std::string& q = big_query();
  q.reserve(size + head.size() + tail.size());
  q = head;
  const std::string chunk = "CREATE API TOKEN x; ALTER ROLE r PASSWORD p; -- /* $$ \" ";  // no quote
  while (q.size() + chunk.size() < size) q += chunk;
  q += tail;
}

// What the pre-parser may use beyond its input, whatever the input's size:
// one candidate statement (64 KiB) several times over, and the plan. The
// scanner-based splitter it replaces needed about six times the Query.
constexpr long bound_kib = 8 * 1024;

}  // namespace

TEST_CASE("a 100 MiB literal full of API TOKEN costs the planner almost no memory", "[memory]") {
  const long extra = extra_peak_kib(
      [] { build_big("SELECT '", 100 * mib, "'; SELECT 1"); },
      [] {
        const auto plan = plan_query(big_query());
        const auto* parts = std::get_if<std::vector<QueryPart>>(&plan);
        return parts != nullptr && parts->size() == 1 && std::holds_alternative<OrdinarySql>((*parts)[0]);
      });
  INFO("extra peak RSS: " << extra << " KiB");
  REQUIRE(extra >= 0);
  CHECK(extra < bound_kib);
}

TEST_CASE("a 100 MiB API TOKEN statement is refused without copying it", "[memory]") {
  const long plan_extra = extra_peak_kib(
      [] { build_big("SELECT 1; CREATE API TOKEN t COMMENT '", 100 * mib, "'; SELECT 2"); },
      [] {
        const auto plan = plan_query(big_query());
        const auto* e = std::get_if<ParseError>(&plan);
        return e != nullptr && e->code == ParseErrc::program_limit_exceeded;
      });
  INFO("plan_query extra peak RSS: " << plan_extra << " KiB");
  REQUIRE(plan_extra >= 0);
  CHECK(plan_extra < bound_kib);

  const long parse_extra = extra_peak_kib(
      [] { build_big("CREATE API TOKEN t COMMENT '", 100 * mib, "'"); },
      [] {
        const auto r = parse_statement(big_query());
        const auto* e = std::get_if<ParseError>(&r);
        return e != nullptr && e->code == ParseErrc::program_limit_exceeded;
      });
  INFO("parse_statement extra peak RSS: " << parse_extra << " KiB");
  REQUIRE(parse_extra >= 0);
  CHECK(parse_extra < bound_kib);
}

TEST_CASE("changes_role_password on 100 MiB costs almost no memory", "[memory]") {
  const long ordinary = extra_peak_kib([] { build_big("SELECT '", 100 * mib, "'"); },
                                       [] { return !changes_role_password(big_query()); });
  INFO("ordinary: extra peak RSS " << ordinary << " KiB");
  REQUIRE(ordinary >= 0);
  CHECK(ordinary < bound_kib);
  // Too long to parse: refused (true), still without copying it.
  const long role = extra_peak_kib([] { build_big("ALTER ROLE me PASSWORD '", 100 * mib, "'"); },
                                   [] { return changes_role_password(big_query()); });
  INFO("role statement: extra peak RSS " << role << " KiB");
  REQUIRE(role >= 0);
  CHECK(role < bound_kib);
}

TEST_CASE("the longest API TOKEN statement: 64 KiB from its first token to its last", "[limits]") {
  const std::string head = "CREATE API TOKEN t COMMENT '";
  std::string exact = head + std::string(max_api_token_statement_bytes - head.size() - 1, 'c') + "'";
  REQUIRE(exact.size() == max_api_token_statement_bytes);
  // Comments and whitespace around it do not count.
  const std::string q = "/* lead */  " + exact + "  -- trail\n;";
  const auto ok = plan_query(q);
  REQUIRE(std::holds_alternative<std::vector<QueryPart>>(ok));
  const std::string over = head + std::string(max_api_token_statement_bytes - head.size(), 'c') + "'";
  const auto too_long = plan_query("SELECT 1; " + over);
  REQUIRE(std::holds_alternative<ParseError>(too_long));
  const auto& e = std::get<ParseError>(too_long);
  CHECK(sqlstate(e.code) == "54000");
  CHECK(e.message == "API TOKEN statement is too long");
  CHECK(e.detail == "An API TOKEN statement may be at most 65536 bytes long.");
  CHECK(e.position == 0);
  CHECK(e.byte_offset == 10);
  CHECK(error_summary(parse_statement(over)) == "54000 API TOKEN statement is too long @0");
}

TEST_CASE("at most 64 API TOKEN statements in one Query", "[limits]") {
  std::string q;
  for (std::size_t k = 0; k < max_api_token_statements_per_query; ++k) q += "SHOW API TOKENS; SELECT 1;";
  const auto ok = plan_query(q);
  REQUIRE(std::holds_alternative<std::vector<QueryPart>>(ok));
  CHECK(std::get<std::vector<QueryPart>>(ok).size() == 2 * max_api_token_statements_per_query);
  q += "SHOW API TOKENS";
  const auto over = plan_query(q);
  REQUIRE(std::holds_alternative<ParseError>(over));
  CHECK(error_summary(ParseResult{std::get<ParseError>(over)}) ==
        "54000 too many API TOKEN statements in one Query @0");
}

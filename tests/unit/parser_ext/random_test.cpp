// Randomised checks: the classifier is a superset of the grammar, and nothing crashes.
#include <random>
#include <string>
#include <vector>

#include "parser_ext/classifier.hpp"
#include "parser_ext/lexical.hpp"
#include "parser_ext/pg_query_handles.hpp"
#include "test_support.hpp"

using namespace parser_ext_test;

namespace {

// Fragments that steer random text towards the grammar's edges.
const std::vector<std::string> fragments = {
    "CREATE", "create", "ALTER", "DROP", "SHOW", "ALL", "API", "api", "Api", "TOKEN",
    "TOKENS", "token", "USER", "ROLE", "SET", "RESET", "x", "\"X y\"", "U&\"x\"", "u&'s'",
    "api_token", "api.x", ".", ";", "=", "'s'", "E'\\n'", "$$d$$", "$1", "/* c */", "-- c\n",
    "\n", "FOR", "MAX", "DURATION", "COMMENT", "NULL", "IF", "EXISTS", "POLICIES", "USERS",
    "UESCAPE", "'!'", "'unterminated", "\"", "/*", "(", ")", ",", "é", "SELECT", "1"};

std::string random_sql(std::mt19937& rng) {
  std::uniform_int_distribution<std::size_t> pick(0, fragments.size() - 1);
  std::uniform_int_distribution<int> len(1, 9);
  std::uniform_int_distribution<int> sep(0, 5);
  std::string s;
  const int n = len(rng);
  for (int k = 0; k < n; ++k) {
    if (k > 0) s += sep(rng) == 0 ? "" : (sep(rng) == 1 ? "\t" : " ");
    s += fragments[pick(rng)];
  }
  return s;
}

}  // namespace

TEST_CASE("the classifier never rejects a statement the grammar claims", "[random]") {
  std::mt19937 rng(20261128);  // fixed: failures reproduce
  int claimed = 0;
  for (int iter = 0; iter < 30'000; ++iter) {
    const std::string sql = random_sql(rng);
    const ParseResult unfiltered = detail::parse_statement_unfiltered(sql, 0, sql.size());
    // Lexical errors come from the scanner before any grammar: not a claim.
    const bool lexical_error = ScanResult::scan(sql.c_str()).error() != nullptr;
    if (std::holds_alternative<NotApiTokenStatement>(unfiltered) || lexical_error) continue;
    ++claimed;
    INFO("sql: " << sql << "\nparsed: " << to_string(unfiltered));
    REQUIRE(could_be_api_token_statement(sql));
    REQUIRE(parse_statement(sql) == unfiltered);
  }
  CHECK(claimed > 100);  // the generator does reach the grammar
}

TEST_CASE("random Query strings plan without crashing and with sane positions", "[random]") {
  std::mt19937 rng(7);
  for (int iter = 0; iter < 10'000; ++iter) {
    std::string q = random_sql(rng) + ";" + random_sql(rng) + ";" + random_sql(rng);
    const auto plan = plan_query(q);
    const int max_position = lexical::char_position(q, q.size());
    if (const auto* e = std::get_if<ParseError>(&plan)) {
      INFO("query: " << q << "\nerror: " << to_string(*e));
      REQUIRE(e->position <= max_position);
      REQUIRE(e->byte_offset <= q.size());
      continue;
    }
    for (const QueryPart& p : std::get<std::vector<QueryPart>>(plan)) {
      const StatementSpan span = std::visit([](const auto& x) { return x.span; }, p);
      INFO("query: " << q);
      REQUIRE(span.begin <= span.end);
      REQUIRE(span.end <= q.size());
    }
  }
}

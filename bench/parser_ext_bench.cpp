// Micro-benchmark of parser_ext: classifier, whole-query pre-filter, parse and plan costs.
#include <chrono>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "parser_ext/classifier.hpp"
#include "parser_ext/lexer.hpp"
#include "parser_ext/parser.hpp"
#include "parser_ext/role_password.hpp"
#include "parser_ext/split.hpp"

namespace {

using namespace tokengate::parser_ext;
using clock_type = std::chrono::steady_clock;

// Runs f over the inputs `rounds` times; prints and returns ns per call.
template <typename F>
double measure(const char* label, const std::vector<std::string>& inputs, int rounds, F&& f) {
  std::size_t sink = 0;
  const auto start = clock_type::now();
  for (int r = 0; r < rounds; ++r)
    for (const auto& s : inputs) sink += static_cast<std::size_t>(f(s));
  const auto ns = std::chrono::duration<double, std::nano>(clock_type::now() - start).count();
  const double per = ns / (static_cast<double>(rounds) * static_cast<double>(inputs.size()));
  std::printf("%-58s %10.1f ns/call  (sink %zu)\n", label, per, sink);
  return per;
}

}  // namespace

int main() {
  const std::vector<std::string> ordinary = {
      "SELECT 1",
      "select * from accounts where id = $1",
      "INSERT INTO events (kind, payload) VALUES ($1, $2)",
      "UPDATE accounts SET balance = balance - 10 WHERE id = 42",
      "BEGIN",
      "COMMIT",
      "  /* app=web */ SELECT now()",
      "-- psql comment\nSELECT relname FROM pg_class",
      "CREATE TABLE api (token text)",
      "ALTER ROLE app SET search_path = public",
      "SHOW search_path",
      "SET application_name = 'x'",
      "DROP TABLE IF EXISTS tmp_results",
      "WITH t AS (SELECT 1) SELECT * FROM t",
  };
  const std::vector<std::string> candidates = {
      "CREATE API TOKEN ci_pipeline MAX DURATION '30d' COMMENT 'Деплой из CI'",
      "SHOW API TOKENS",
      "DROP API TOKEN IF EXISTS report_bot FOR USER analyst",
      "ALTER USER analyst SET API TOKEN MAX DURATION '24h'",
  };
  std::string big;
  for (int k = 0; k < 40; ++k)
    big += "SELECT p.id, p.name FROM public.products p WHERE p.price > " + std::to_string(k) +
           ";\n";
  const std::vector<std::string> big_query = {big};
  const std::vector<std::string> mixed = {"SELECT 1; CREATE API TOKEN x; SELECT 2"};

  measure("could_be_api_token_statement (ordinary)", ordinary, 2'000'000,
          [](const std::string& s) { return could_be_api_token_statement(s); });
  measure("could_be_api_token_statement (candidates)", candidates, 2'000'000,
          [](const std::string& s) { return could_be_api_token_statement(s); });
  measure("query_may_contain_api_token_statement (ordinary)", ordinary, 2'000'000,
          [](const std::string& s) { return query_may_contain_api_token_statement(s); });
  measure("query_may_contain_api_token_statement (40 stmts, 2.5 KB, many 'p')", big_query, 100'000,
          [](const std::string& s) { return query_may_contain_api_token_statement(s); });
  measure("parse_statement (ordinary, classifier rejects)", ordinary, 2'000'000,
          [](const std::string& s) { return parse_statement(s).index(); });
  measure("parse_statement (API TOKEN statements: scan + parse)", candidates, 20'000,
          [](const std::string& s) { return parse_statement(s).index(); });
  measure("plan_query (SELECT 1; CREATE API TOKEN x; SELECT 2)", mixed, 20'000,
          [](const std::string& s) { return plan_query(s).index(); });
  const LexOptions sjis_off{false, ClientEncoding::sjis};
  measure("plan_query (same, SJIS, standard_conforming_strings off)", mixed, 20'000,
          [&sjis_off](const std::string& s) { return plan_query(s, sjis_off).index(); });
  measure("changes_role_password (ordinary)", ordinary, 2'000'000,
          [](const std::string& s) { return changes_role_password(s); });
  const std::vector<std::string> role = {"ALTER ROLE app PASSWORD 'x'"};
  measure("changes_role_password (ALTER ROLE … PASSWORD: parse)", role, 20'000,
          [](const std::string& s) { return changes_role_password(s); });
  const std::vector<std::string> tx = {"BEGIN", "COMMIT", "ROLLBACK TO SAVEPOINT s",
                                       "SELECT 1", "INSERT INTO t VALUES (1)"};
  measure("classify_transaction_control", tx, 2'000'000,
          [](const std::string& s) { return static_cast<int>(classify_transaction_control(s)); });

  // The splitter's throughput on a large Query that the pre-filter lets
  // through: a 64 MiB literal full of 'api', and 64 MiB of small statements.
  const auto throughput = [](const char* label, const std::string& q, const LexOptions& o) {
    const auto start = clock_type::now();
    const auto r = plan_query(q, o);
    const double s = std::chrono::duration<double>(clock_type::now() - start).count();
    std::printf("%-58s %10.0f MB/s  (%zu parts)\n", label, static_cast<double>(q.size()) / s / 1e6,
                r.index() == 0 ? std::get<0>(r).size() : 0);
  };
  std::string literal = "SELECT '";
  while (literal.size() < (64u << 20)) literal += "an api token in a long literal, é; ";
  literal += "'";
  throughput("plan_query, 64 MiB literal (UTF-8)", literal, LexOptions{});
  throughput("plan_query, 64 MiB literal (SJIS)", literal, LexOptions{true, ClientEncoding::sjis});
  std::string many;
  while (many.size() < (64u << 20)) many += "SELECT api, \"x\", $$y$$ FROM t WHERE z = 'w'; ";
  throughput("plan_query, 64 MiB of short statements", many, LexOptions{});
  return 0;
}

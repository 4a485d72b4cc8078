// Corpus test: thousands of real PostgreSQL statements, none taken for an API TOKEN statement.
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "parser_ext/classifier.hpp"
#include "test_support.hpp"

using namespace parser_ext_test;

#ifndef CORPUS_PATH
#error "meson passes CORPUS_PATH (tests/unit/parser_ext/corpus.sql)"
#endif

namespace {

std::string read_corpus() {
  std::ifstream in(CORPUS_PATH, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

TEST_CASE("no statement of the corpus is an API TOKEN statement", "[corpus]") {
  const std::string corpus = read_corpus();
  INFO("corpus: " << CORPUS_PATH);
  REQUIRE(corpus.size() > 100'000);
  const auto split = split_statements(corpus);
  REQUIRE(std::holds_alternative<std::vector<StatementSpan>>(split));
  const auto& spans = std::get<std::vector<StatementSpan>>(split);
  REQUIRE(spans.size() >= 1000);

  std::size_t candidates = 0;
  std::vector<std::string> misclassified;
  for (const StatementSpan& s : spans) {
    const std::string_view text = std::string_view(corpus).substr(s.begin, s.end - s.begin);
    if (could_be_api_token_statement(text)) ++candidates;
    const ParseResult r = parse_statement(corpus, s.begin, s.end);
    if (!std::holds_alternative<NotApiTokenStatement>(r))
      misclassified.push_back(std::string(text) + "  =>  " + to_string(r));
  }
  CHECK(misclassified == std::vector<std::string>{});
  // The classifier alone keeps (almost) all of them off the scanner.
  CHECK(candidates == 0);
}

TEST_CASE("the whole corpus as one Query plans to a single ordinary run", "[corpus]") {
  const std::string corpus = read_corpus();
  const auto plan = plan_query(corpus);
  REQUIRE(std::holds_alternative<std::vector<QueryPart>>(plan));
  const auto& parts = std::get<std::vector<QueryPart>>(plan);
  REQUIRE(parts.size() == 1);
  CHECK(std::holds_alternative<OrdinarySql>(parts[0]));
}

TEST_CASE("API TOKEN statements hidden among the corpus are all found, in order", "[corpus]") {
  const std::string corpus = read_corpus();
  const auto split = split_statements(corpus);
  REQUIRE(std::holds_alternative<std::vector<StatementSpan>>(split));
  const auto& spans = std::get<std::vector<StatementSpan>>(split);
  const std::vector<std::string> token_statements = {
      "CREATE API TOKEN t1", "SHOW API TOKENS", "DROP API TOKEN t1",
      "/* c */ ALTER ROLE r SET API TOKEN MAX DURATION '1d'", "DROP ALL API TOKENS"};
  std::string q;
  std::size_t inserted = 0;
  for (std::size_t k = 0; k < spans.size() && k < 500; ++k) {
    q += corpus.substr(spans[k].begin, spans[k].end - spans[k].begin) + ";\n";
    if (k % 100 == 50) q += token_statements[inserted++ % token_statements.size()] + ";\n";
  }
  const auto plan = plan_query(q);
  REQUIRE(std::holds_alternative<std::vector<QueryPart>>(plan));
  std::vector<std::string> found;
  std::size_t ordinary_runs = 0;
  for (const QueryPart& p : std::get<std::vector<QueryPart>>(plan)) {
    if (const auto* t = std::get_if<ApiTokenSql>(&p)) {
      std::string text = q.substr(t->span.begin, t->span.end - t->span.begin);
      found.push_back(text.substr(text.find_first_not_of(" \n")));
    } else {
      ++ordinary_runs;
    }
  }
  CHECK(found == token_statements);
  CHECK(ordinary_runs == inserted + 1);
}

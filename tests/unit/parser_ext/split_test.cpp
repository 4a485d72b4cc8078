// Splitting Query strings and planning ordinary runs vs. API TOKEN statements.
#include <string>
#include <vector>

#include "parser_ext/pg_query_handles.hpp"
#include "test_support.hpp"

using namespace parser_ext_test;

namespace {

// Renders a plan as "ordinary[SELECT 1; SELECT 2] | token[CreateApiToken{...}]".
std::string render(std::string_view q, const std::variant<std::vector<QueryPart>, ParseError>& p) {
  if (const auto* e = std::get_if<ParseError>(&p)) return to_string(*e);
  std::string out;
  for (const QueryPart& part : std::get<std::vector<QueryPart>>(p)) {
    if (!out.empty()) out += " | ";
    if (const auto* o = std::get_if<OrdinarySql>(&part)) {
      out += "ordinary[" + std::string(q.substr(o->span.begin, o->span.end - o->span.begin)) + "]";
    } else {
      const auto& t = std::get<ApiTokenSql>(part);
      out += "token[" + std::string(q.substr(t.span.begin, t.span.end - t.span.begin)) + " => " +
             to_string(t.statement) + "]";
    }
  }
  return out.empty() ? "<empty>" : out;
}

std::string plan(std::string_view q) { return render(q, plan_query(q)); }

}  // namespace

TEST_CASE("split_statements gives byte spans without the ';'", "[split]") {
  const std::string q = "SELECT 'a;b'; /* ; */ SELECT $$;$$;;\nCREATE API TOKEN x";
  const auto r = split_statements(q);
  REQUIRE(std::holds_alternative<std::vector<StatementSpan>>(r));
  const auto& spans = std::get<std::vector<StatementSpan>>(r);
  std::vector<std::string> texts;
  for (const auto& s : spans) texts.emplace_back(q.substr(s.begin, s.end - s.begin));
  CHECK(texts == std::vector<std::string>{"SELECT 'a;b'", " /* ; */ SELECT $$;$$",
                                          "\nCREATE API TOKEN x"});
}

TEST_CASE("split_statements reports lexical errors with PostgreSQL's position", "[split]") {
  const auto r = split_statements("SELECT 'é'; SELECT 'open");
  REQUIRE(std::holds_alternative<ParseError>(r));
  const auto& e = std::get<ParseError>(r);
  CHECK(e.message == "unterminated quoted string at or near \"'open\"");
  CHECK(e.position == 20);
  CHECK(e.byte_offset == 20);
}

TEST_CASE("plan_query: fast path, runs of ordinary SQL, token statements in order", "[split]") {
  CHECK(plan("SELECT 1; SELECT 2") == "ordinary[SELECT 1; SELECT 2]");
  CHECK(plan("") == "ordinary[]");
  CHECK(plan("CREATE API TOKEN x") ==
        "token[CREATE API TOKEN x => CreateApiToken{name=\"x\", for_user=null, "
        "max_duration=null, comment=null}]");
  CHECK(plan("SELECT 1; CREATE API TOKEN x") ==
        "ordinary[SELECT 1] | token[ CREATE API TOKEN x => CreateApiToken{name=\"x\", "
        "for_user=null, max_duration=null, comment=null}]");
  CHECK(plan("SELECT 1; SELECT 2; SHOW API TOKENS; SELECT 3; SELECT 4; DROP API TOKEN x;") ==
        "ordinary[SELECT 1; SELECT 2] | token[ SHOW API TOKENS => ShowApiTokens{for_user=null, "
        "all_users=false}] | ordinary[ SELECT 3; SELECT 4] | token[ DROP API TOKEN x => "
        "DropApiToken{name=\"x\", if_exists=false, for_user=null}]");
  CHECK(plan("SHOW API TOKENS; SHOW API TOKEN POLICIES") ==
        "token[SHOW API TOKENS => ShowApiTokens{for_user=null, all_users=false}] | "
        "token[ SHOW API TOKEN POLICIES => ShowApiTokenPolicies{for_user=null}]");
  // Only ';' and comments: nothing to run.
  CHECK(plan("; -- api\n;") == "<empty>");
  // Look-alikes stay ordinary and are merged with their neighbours.
  CHECK(plan("SHOW api.x; ALTER ROLE r SET api = 1; CREATE TABLE api (token text)") ==
        "ordinary[SHOW api.x; ALTER ROLE r SET api = 1; CREATE TABLE api (token text)]");
  // BEGIN ATOMIC bodies, which the scanner splits, are re-joined.
  CHECK(plan("CREATE FUNCTION api() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT 2; "
             "END; DROP ALL API TOKENS") ==
        "ordinary[CREATE FUNCTION api() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT "
        "2; END] | token[ DROP ALL API TOKENS => DropAllApiTokens{for_user=null}]");
}

TEST_CASE("plan_query: a lexical error before any API TOKEN statement is PostgreSQL's to report",
          "[split]") {
  // Nothing of ours runs, so the Query goes upstream whole and PostgreSQL
  // answers with its own error.
  CHECK(plan("SELECT 'api'; SELECT 'open") == "ordinary[SELECT 'api'; SELECT 'open]");
  CHECK(plan("SELECT api; SELECT 1e") == "ordinary[SELECT api; SELECT 1e]");
}

TEST_CASE("plan_query: an error anywhere means nothing runs", "[split]") {
  CHECK(error_summary(plan_query("SELECT 1; CREATE API TOKEN x y; SELECT 2")) ==
        "42601 syntax error at or near \"y\" @30");
  CHECK(error_summary(plan_query("SELECT 'é'; CREATE API TOKEN x FOR")) ==
        "42601 syntax error at end of input @35");
  CHECK(error_summary(plan_query("SELECT 1; CREATE API TOKEN x FOR; SELECT 2")) ==
        "42601 syntax error at or near \";\" @33");
  CHECK(error_summary(plan_query("SELECT 1; CREATE API TOKEN x; SELECT 'open")) ==
        "42601 unterminated quoted string at or near \"'open\" @38");
  CHECK(error_summary(plan_query("CREATE API TOKEN x COMMENT 'open")) ==
        "42601 unterminated quoted string at or near \"'open\" @28");
  CHECK(error_summary(plan_query("DROP API TOKEN $1; SELECT 1")) ==
        "42P02 there is no parameter $1 @16");
}

TEST_CASE("RAII handles are movable and free once", "[handles]") {
  ScanResult a = ScanResult::scan("SELECT 1 -- c");
  REQUIRE(a.error() == nullptr);
  CHECK(a.tokens().size() == 3);
  ScanResult b = std::move(a);
  CHECK(b.tokens().size() == 3);
  CHECK(a.tokens().empty());  // NOLINT(bugprone-use-after-move): moved-from is empty
  a = std::move(b);
  CHECK(a.tokens().size() == 3);
  const ScanResult bad = ScanResult::scan("SELECT 'x");
  REQUIRE(bad.error() != nullptr);
  CHECK(std::string(bad.error()->message) == "unterminated quoted string at or near \"'x\"");
  CHECK(bad.tokens().empty());

  SplitResult s = SplitResult::split_with_scanner("SELECT 1; SELECT 2");
  CHECK(s.statements().size() == 2);
  SplitResult t = std::move(s);
  CHECK(t.statements().size() == 2);
  CHECK(s.statements().empty());  // NOLINT(bugprone-use-after-move)
}

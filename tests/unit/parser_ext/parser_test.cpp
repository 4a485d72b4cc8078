// Grammar tests: every API TOKEN form, clause orders, identifiers, errors with positions.
#include <algorithm>
#include <array>
#include <string>
#include <vector>

#include "parser_ext/classifier.hpp"
#include "test_support.hpp"

using namespace parser_ext_test;

namespace {

ParseResult ok(Statement s) { return ParseResult{std::move(s)}; }
const ParseResult not_api{NotApiTokenStatement{}};

}  // namespace

TEST_CASE("every form of the API TOKEN grammar parses into its AST", "[parser]") {
  struct Case {
    const char* sql;
    ParseResult expected;
  };
  const std::vector<Case> cases = {
      {"CREATE API TOKEN", ok(CreateApiToken{})},
      {"CREATE API TOKEN;", ok(CreateApiToken{})},
      {"create api token ci_pipeline", ok(CreateApiToken{"ci_pipeline", {}, {}, {}})},
      {"CREATE API TOKEN ci_pipeline MAX DURATION '30d' COMMENT 'Деплой из CI'",
       ok(CreateApiToken{"ci_pipeline", {}, "30d", "Деплой из CI"})},
      {"CREATE API TOKEN report_bot FOR USER analyst MAX DURATION '90d' COMMENT 'weekly'",
       ok(CreateApiToken{"report_bot", "analyst", "90d", "weekly"})},
      {"CREATE API TOKEN FOR USER analyst", ok(CreateApiToken{{}, "analyst", {}, {}})},
      {"CREATE API TOKEN MAX DURATION '1 year'", ok(CreateApiToken{{}, {}, "1 year", {}})},
      {"CREATE API TOKEN COMMENT ''", ok(CreateApiToken{{}, {}, {}, ""})},
      {"SHOW API TOKENS", ok(ShowApiTokens{})},
      {"SHOW API TOKENS FOR USER analyst", ok(ShowApiTokens{"analyst", false})},
      {"SHOW API TOKENS FOR ALL USERS", ok(ShowApiTokens{{}, true})},
      {"ALTER API TOKEN ci SET COMMENT 'new'", ok(AlterApiTokenSetComment{"ci", {}, "new"})},
      {"ALTER API TOKEN ci SET COMMENT NULL", ok(AlterApiTokenSetComment{"ci", {}, {}})},
      {"ALTER API TOKEN ci FOR USER bob SET COMMENT 'x'",
       ok(AlterApiTokenSetComment{"ci", "bob", "x"})},
      {"DROP API TOKEN ci", ok(DropApiToken{"ci", false, {}})},
      {"DROP API TOKEN IF EXISTS ci", ok(DropApiToken{"ci", true, {}})},
      {"DROP API TOKEN IF EXISTS report_bot FOR USER analyst",
       ok(DropApiToken{"report_bot", true, "analyst"})},
      {"DROP API TOKEN report_bot FOR USER analyst",
       ok(DropApiToken{"report_bot", false, "analyst"})},
      {"DROP ALL API TOKENS", ok(DropAllApiTokens{})},
      {"DROP ALL API TOKENS FOR USER analyst", ok(DropAllApiTokens{"analyst"})},
      {"ALTER USER analyst SET API TOKEN MAX DURATION '24h'",
       ok(AlterRoleSetApiTokenMaxDuration{"analyst", "24h"})},
      {"ALTER ROLE service_accounts SET API TOKEN MAX DURATION '30d'",
       ok(AlterRoleSetApiTokenMaxDuration{"service_accounts", "30d"})},
      {"ALTER USER analyst RESET API TOKEN MAX DURATION",
       ok(AlterRoleResetApiTokenMaxDuration{"analyst"})},
      {"ALTER ROLE \"Service Accounts\" RESET API TOKEN MAX DURATION;",
       ok(AlterRoleResetApiTokenMaxDuration{"Service Accounts"})},
      {"SHOW API TOKEN POLICIES", ok(ShowApiTokenPolicies{})},
      {"SHOW API TOKEN POLICIES FOR USER analyst", ok(ShowApiTokenPolicies{"analyst"})},
      {"SHOW TOKENGATE INSTANCES", ok(ShowTokengateInstances{})},
      {"show tokengate instances;", ok(ShowTokengateInstances{})},
  };
  for (const auto& c : cases) {
    INFO("sql: " << c.sql);
    CHECK(parse_statement(c.sql) == c.expected);
  }
}

TEST_CASE("kinds and command tags", "[parser]") {
  const auto kind = [](const char* sql) {
    return kind_of(std::get<Statement>(parse_statement(sql)));
  };
  CHECK(command_tag(kind("CREATE API TOKEN")) == "CREATE API TOKEN");
  CHECK(command_tag(kind("SHOW API TOKENS")) == "SHOW");
  CHECK(command_tag(kind("ALTER API TOKEN a SET COMMENT NULL")) == "ALTER API TOKEN");
  CHECK(command_tag(kind("DROP API TOKEN a")) == "DROP API TOKEN");
  CHECK(command_tag(kind("DROP ALL API TOKENS")) == "DROP API TOKENS");
  CHECK(command_tag(kind("ALTER USER a SET API TOKEN MAX DURATION '1d'")) == "ALTER ROLE");
  CHECK(command_tag(kind("ALTER ROLE a RESET API TOKEN MAX DURATION")) == "ALTER ROLE");
  CHECK(command_tag(kind("SHOW API TOKEN POLICIES")) == "SHOW");
  CHECK(kind_name(kind("DROP ALL API TOKENS")) == "DropAllApiTokens");
}

TEST_CASE("CREATE API TOKEN accepts its clauses in every order, with or without a name",
          "[parser]") {
  const std::array<std::string, 3> clauses = {"FOR USER bob", "MAX DURATION '2w'",
                                              "COMMENT 'c'"};
  // Every non-empty subset in every order.
  std::vector<std::vector<int>> orders;
  for (int mask = 1; mask < 8; ++mask) {
    std::vector<int> idx;
    for (int k = 0; k < 3; ++k)
      if (mask & (1 << k)) idx.push_back(k);
    do orders.push_back(idx);
    while (std::next_permutation(idx.begin(), idx.end()));
  }
  REQUIRE(orders.size() == 15);
  for (const bool named : {false, true}) {
    for (const auto& order : orders) {
      std::string sql = named ? "CREATE API TOKEN t1" : "CREATE API TOKEN";
      CreateApiToken expected;
      if (named) expected.name = "t1";
      for (int k : order) {
        sql += " " + clauses[static_cast<std::size_t>(k)];
        if (k == 0) expected.for_user = "bob";
        if (k == 1) expected.max_duration = "2w";
        if (k == 2) expected.comment = "c";
      }
      INFO("sql: " << sql);
      CHECK(parse_statement(sql) == ok(expected));
    }
  }
}

TEST_CASE("a clause given twice is 'conflicting or redundant options' at the second one",
          "[parser]") {
  const std::vector<std::pair<std::string, ExpectedError>> cases = {
      {"CREATE API TOKEN t FOR USER a FOR USER b",
       {"42601", "conflicting or redundant options", 31}},
      {"CREATE API TOKEN MAX DURATION '1d' COMMENT 'x' MAX DURATION '2d'",
       {"42601", "conflicting or redundant options", 48}},
      {"CREATE API TOKEN COMMENT 'x' COMMENT 'x'",
       {"42601", "conflicting or redundant options", 30}},
      // A syntax error later in the statement wins, as in PostgreSQL.
      {"CREATE API TOKEN COMMENT 'x' COMMENT 'x' oops",
       {"42601", "syntax error at or near \"oops\"", 42}},
  };
  for (const auto& [sql, expected] : cases) {
    INFO("sql: " << sql);
    CHECK(error_summary(parse_statement(sql)) == error_summary(expected));
  }
}

TEST_CASE("syntax errors carry PostgreSQL's message and 1-based position", "[parser]") {
  const std::vector<std::pair<std::string, ExpectedError>> cases = {
      {"CREATE API TOKN x", {"42601", "syntax error at or near \"TOKN\"", 12}},
      {"CREATE API", {"42601", "syntax error at end of input", 11}},
      {"CREATE API ", {"42601", "syntax error at end of input", 12}},
      {"CREATE API;", {"42601", "syntax error at or near \";\"", 11}},
      {"CREATE API TOKENS", {"42601", "syntax error at or near \"TOKENS\"", 12}},
      {"CREATE API TOKEN x y", {"42601", "syntax error at or near \"y\"", 20}},
      {"CREATE API TOKEN x FOR", {"42601", "syntax error at end of input", 23}},
      {"CREATE API TOKEN x FOR ROLE r", {"42601", "syntax error at or near \"ROLE\"", 24}},
      {"CREATE API TOKEN x FOR USER", {"42601", "syntax error at end of input", 28}},
      {"CREATE API TOKEN x FOR USER ;", {"42601", "syntax error at or near \";\"", 29}},
      {"CREATE API TOKEN x MAX '1d'", {"42601", "syntax error at or near \"'1d'\"", 24}},
      {"CREATE API TOKEN x MAX DURATION 30", {"42601", "syntax error at or near \"30\"", 33}},
      {"CREATE API TOKEN x MAX DURATION", {"42601", "syntax error at end of input", 32}},
      {"CREATE API TOKEN x COMMENT", {"42601", "syntax error at end of input", 27}},
      {"CREATE API TOKEN x COMMENT NULL", {"42601", "syntax error at or near \"NULL\"", 28}},
      {"CREATE API TOKEN select", {"42601", "syntax error at or near \"select\"", 18}},
      {"CREATE API TOKEN x COMMENT B'101'", {"42601", "syntax error at or near \"B'101'\"", 28}},
      // N'…' is NCHAR + string, which PostgreSQL rejects where a plain string is required.
      {"CREATE API TOKEN COMMENT N'x'", {"42601", "syntax error at or near \"N\"", 26}},
      {"CREATE API TOKEN x COMMENT 'a' UESCAPE '!'",
       {"42601", "syntax error at or near \"UESCAPE\"", 32}},
      {"SHOW API TOKEN", {"42601", "syntax error at end of input", 15}},
      {"SHOW API TOKEN x", {"42601", "syntax error at or near \"x\"", 16}},
      {"SHOW API TOKENS FOR ALL", {"42601", "syntax error at end of input", 24}},
      {"SHOW API TOKENS FOR ALL USER", {"42601", "syntax error at or near \"USER\"", 25}},
      {"SHOW API TOKENS FOR bob", {"42601", "syntax error at or near \"bob\"", 21}},
      {"SHOW API TOKENS x", {"42601", "syntax error at or near \"x\"", 17}},
      {"SHOW API KEYS", {"42601", "syntax error at or near \"KEYS\"", 10}},
      {"ALTER API TOKEN", {"42601", "syntax error at end of input", 16}},
      {"ALTER API TOKEN x", {"42601", "syntax error at end of input", 18}},
      {"ALTER API TOKEN x SET", {"42601", "syntax error at end of input", 22}},
      {"ALTER API TOKEN x SET COMMENT", {"42601", "syntax error at end of input", 30}},
      {"ALTER API TOKEN x SET NAME 'y'", {"42601", "syntax error at or near \"NAME\"", 23}},
      {"ALTER API TOKEN x RENAME TO y", {"42601", "syntax error at or near \"RENAME\"", 19}},
      {"ALTER API TOKEN x SET COMMENT 'a' 'b'", {"42601", "syntax error at or near \"'b'\"", 35}},
      {"ALTER API TOKEN x SET COMMENT 'a' FOR USER b",
       {"42601", "syntax error at or near \"FOR\"", 35}},
      {"DROP API TOKEN", {"42601", "syntax error at end of input", 15}},
      {"DROP API TOKENS", {"42601", "syntax error at or near \"TOKENS\"", 10}},
      {"DROP API TOKEN IF EXISTS", {"42601", "syntax error at end of input", 25}},
      {"DROP API TOKEN x CASCADE", {"42601", "syntax error at or near \"CASCADE\"", 18}},
      {"DROP API TOKEN x, y", {"42601", "syntax error at or near \",\"", 17}},
      {"DROP ALL API TOKEN", {"42601", "syntax error at or near \"TOKEN\"", 14}},
      {"DROP ALL API TOKENS FOR ALL USERS", {"42601", "syntax error at or near \"ALL\"", 25}},
      {"ALTER USER bob SET API TOKEN MAX DURATION", {"42601", "syntax error at end of input", 42}},
      {"ALTER USER bob SET API TOKEN MAX DURATION NULL",
       {"42601", "syntax error at or near \"NULL\"", 43}},
      {"ALTER USER bob SET API TOKEN DURATION '1d'",
       {"42601", "syntax error at or near \"DURATION\"", 30}},
      {"ALTER USER bob RESET API TOKEN MAX DURATION '1d'",
       {"42601", "syntax error at or near \"'1d'\"", 45}},
      {"ALTER USER all SET API TOKEN MAX DURATION '1d'",
       {"42601", "syntax error at or near \"all\"", 12}},
      // Positions count characters, not bytes, as PostgreSQL does.
      {"CREATE API TOKEN x COMMENT 'ééé' oops", {"42601", "syntax error at or near \"oops\"", 34}},
      // Comments do not move positions away from the original text.
      {"/* lead */ CREATE /* a */ API -- b\n TOKEN x y",
       {"42601", "syntax error at or near \"y\"", 45}},
  };
  for (const auto& [sql, expected] : cases) {
    INFO("sql: " << sql);
    CHECK(error_summary(parse_statement(sql)) == error_summary(expected));
  }
}

TEST_CASE("lexical errors from the scanner are 42601 with the scanner's position", "[parser]") {
  CHECK(error_summary(parse_statement("CREATE API TOKEN x COMMENT 'abc")) ==
        "42601 unterminated quoted string at or near \"'abc\" @28");
  CHECK(error_summary(parse_statement("CREATE API TOKEN \"abc")) ==
        "42601 unterminated quoted identifier at or near \"\"abc\" @18");
  CHECK(error_summary(parse_statement("CREATE API TOKEN \"\"")) ==
        "42601 zero-length delimited identifier at or near \"\"\"\" @18");
  CHECK(error_summary(parse_statement("CREATE API TOKEN x /* open")) ==
        "42601 unterminated /* comment at or near \"/* open\" @20");
  // In a multi-statement query the position is in the whole string.
  const std::string q = "SELECT 'é'; CREATE API TOKEN x COMMENT $$abc";
  const auto begin = q.find("CREATE");
  CHECK(error_summary(parse_statement(q, begin, q.size())) ==
        "42601 unterminated dollar-quoted string at or near \"$$abc\" @40");
}

TEST_CASE("$n parameters are 42P02 at the parameter", "[parser]") {
  CHECK(error_summary(parse_statement("CREATE API TOKEN $1")) ==
        "42P02 there is no parameter $1 @18");
  CHECK(error_summary(parse_statement("CREATE API TOKEN x COMMENT $2")) ==
        "42P02 there is no parameter $2 @28");
  CHECK(error_summary(parse_statement("CREATE API TOKEN x MAX DURATION $1 COMMENT $2")) ==
        "42P02 there is no parameter $1 @33");
  CHECK(error_summary(parse_statement("DROP API TOKEN x FOR USER $1")) ==
        "42P02 there is no parameter $1 @27");
  CHECK(error_summary(parse_statement("ALTER API TOKEN $3 SET COMMENT 'x'")) ==
        "42P02 there is no parameter $3 @17");
  CHECK(error_summary(parse_statement("ALTER ROLE r SET API TOKEN MAX DURATION $1")) ==
        "42P02 there is no parameter $1 @41");
  // Syntax errors are reported first, as PostgreSQL parses before it analyses.
  CHECK(error_summary(parse_statement("CREATE API TOKEN x COMMENT $1 junk")) ==
        "42601 syntax error at or near \"junk\" @31");
}

TEST_CASE("names longer than 63 bytes are 42622", "[parser]") {
  const std::string n63(63, 'a');
  const std::string n64(64, 'a');
  CHECK(parse_statement("CREATE API TOKEN " + n63) == ok(CreateApiToken{n63, {}, {}, {}}));
  const auto r = parse_statement("CREATE API TOKEN " + n64);
  CHECK(error_summary(r) == "42622 token name \"" + n64 + "\" is too long @18");
  REQUIRE(std::holds_alternative<ParseError>(r));
  CHECK(std::get<ParseError>(r).detail == "Token names are limited to 63 bytes.");
  // 32 two-byte characters = 64 bytes.
  std::string cyr;
  for (int k = 0; k < 32; ++k) cyr += "ж";
  CHECK(error_summary(parse_statement("DROP API TOKEN \"" + cyr + "\"")) ==
        "42622 token name \"" + cyr + "\" is too long @16");
  CHECK(error_summary(parse_statement("SHOW API TOKENS FOR USER " + n64)) ==
        "42622 role name \"" + n64 + "\" is too long @26");
  CHECK(error_summary(parse_statement("ALTER ROLE " + n64 + " RESET API TOKEN MAX DURATION")) ==
        "42622 role name \"" + n64 + "\" is too long @12");
}

TEST_CASE("identifiers fold like PostgreSQL's", "[parser][identifiers]") {
  const auto name = [](const std::string& sql) -> std::string {
    const auto r = parse_statement(sql);
    if (const auto* s = std::get_if<Statement>(&r))
      if (const auto* d = std::get_if<DropApiToken>(s)) return d->name;
    return "<" + to_string(r) + ">";
  };
  CHECK(name("DROP API TOKEN CI_Pipeline") == "ci_pipeline");
  CHECK(name("DROP API TOKEN \"CI_Pipeline\"") == "CI_Pipeline");
  CHECK(name("DROP API TOKEN \"with \"\"quotes\"\" and space\"") == "with \"quotes\" and space");
  CHECK(name("DROP API TOKEN ТокенЖ") == "ТокенЖ");  // only ASCII folds
  CHECK(name("DROP API TOKEN ABC$1") == "abc$1");
  CHECK(name("DROP API TOKEN U&\"d\\0061t\\+000061\"") == "data");
  CHECK(name("DROP API TOKEN u&\"d!0061t!+000061\" UESCAPE '!'") == "data");
  CHECK(name("DROP API TOKEN U&\"\\0416\"") == "Ж");
  // Unreserved and column-name keywords are names, as in PostgreSQL's ColId.
  CHECK(name("DROP API TOKEN comment") == "comment");
  CHECK(name("DROP API TOKEN duration") == "duration");
  CHECK(name("DROP API TOKEN Token") == "token");
  CHECK(name("DROP API TOKEN if") == "if");
  CHECK(name("DROP API TOKEN IF EXISTS if") == "if");
  CHECK(name("DROP API TOKEN \"select\"") == "select");
  CHECK(error_summary(parse_statement("DROP API TOKEN select")) ==
        "42601 syntax error at or near \"select\" @16");
  CHECK(error_summary(parse_statement("DROP API TOKEN U&\"\\zzzz\"")) ==
        "42601 invalid Unicode escape @19");
  CHECK(error_summary(parse_statement("DROP API TOKEN U&\"x\" UESCAPE 'ab'")) ==
        "42601 invalid Unicode escape character @30");
  CHECK(error_summary(parse_statement("DROP API TOKEN U&\"x\" UESCAPE")) ==
        "42601 UESCAPE must be followed by a simple string literal @29");
}

TEST_CASE("CREATE's optional name versus clause keywords", "[parser]") {
  CHECK(parse_statement("CREATE API TOKEN comment") == ok(CreateApiToken{"comment", {}, {}, {}}));
  CHECK(parse_statement("CREATE API TOKEN comment 'x'") == ok(CreateApiToken{{}, {}, {}, "x"}));
  CHECK(parse_statement("CREATE API TOKEN comment comment 'x'") ==
        ok(CreateApiToken{"comment", {}, {}, "x"}));
  CHECK(parse_statement("CREATE API TOKEN max") == ok(CreateApiToken{"max", {}, {}, {}}));
  CHECK(parse_statement("CREATE API TOKEN max max duration '1d'") ==
        ok(CreateApiToken{"max", {}, "1d", {}}));
  CHECK(parse_statement("CREATE API TOKEN \"for\" for user \"USER\"") ==
        ok(CreateApiToken{"for", "USER", {}, {}}));
}

TEST_CASE("keywords are case-insensitive; comments and whitespace go anywhere", "[parser]") {
  const std::vector<std::string> variants = {
      "create api token t for user u max duration '1d' comment 'c'",
      "CrEaTe ApI tOkEn t FoR uSeR u MaX dUrAtIoN '1d' CoMmEnT 'c';",
      "/*a*/CREATE/*b*/API/*c*/TOKEN/*d*/t/*e*/FOR/*f*/USER/*g*/u/*h*/MAX/*i*/DURATION/*j*/'1d'"
      "/*k*/COMMENT/*l*/'c'/*m*/;/*n*/",
      "-- leading\nCREATE -- x\n API\tTOKEN\r\nt\fFOR USER u /* /* nested */ */ MAX DURATION"
      " '1d' COMMENT 'c' ; -- trailing",
      "\n\n  CREATE API TOKEN t FOR USER u MAX DURATION '1d' COMMENT 'c' ;;  \n",
  };
  for (const auto& sql : variants) {
    INFO("sql: " << sql);
    CHECK(parse_statement(sql) == ok(CreateApiToken{"t", "u", "1d", "c"}));
  }
}

TEST_CASE("look-alike statements are not API TOKEN statements", "[parser][classifier]") {
  const std::vector<std::string> lookalikes = {
      "ALTER ROLE x SET search_path = public, pg_catalog",
      "ALTER ROLE x SET api = 1",
      "ALTER ROLE x SET api.token TO 'x'",
      "ALTER ROLE x SET api.token_max_duration = '1d'",
      "ALTER USER api SET api.token = 1",
      "ALTER ROLE x RESET api",
      "ALTER ROLE x RESET api.token",
      "ALTER ROLE x RESET ALL",
      "ALTER ROLE x IN DATABASE d SET api TOKEN MAX DURATION '1d'",
      "ALTER ROLE api RENAME TO token",
      "ALTER USER \"x\" WITH PASSWORD 'api token'",
      "ALTER TABLE api ADD COLUMN token text",
      "CREATE TABLE api (token text)",
      "CREATE TABLE api_token (id int)",
      "CREATE API_TOKEN x",
      "CREATE \"API\" TOKEN x",
      "CREATE apitoken",
      "CREATE SCHEMA api",
      "CREATE ROLE api",
      "SHOW api_token",
      "SHOW api",
      "SHOW api;",
      "SHOW api -- nothing more",
      "SHOW api.tokens",
      "SHOW api . tokens",
      "SHOW \"api\" tokens",
      "SHOW tokengate",
      "SHOW tokengate.instances",
      "SHOW tokengate;",
      "DROP TABLE tokens",
      "DROP TABLE api",
      "DROP ROLE api",
      "DROP OWNED BY api",
      "DROP api_token x",
      "COMMENT ON TABLE api IS 'API TOKEN'",
      "SELECT 'CREATE API TOKEN x'",
      "SELECT * FROM api WHERE token = $1",
      "-- CREATE API TOKEN x\nSELECT 1",
      "/* CREATE API TOKEN */ SELECT 1",
      "GRANT SELECT ON api TO token",
      "",
      "   ",
      ";",
      "-- only a comment",
  };
  for (const auto& sql : lookalikes) {
    INFO("sql: " << sql);
    CHECK(parse_statement(sql) == not_api);
  }
}

TEST_CASE("statements inside a multi-statement query report whole-query positions",
          "[parser]") {
  const std::string q = "SELECT 'ü';\nCREATE API TOKEN x FOR;\nSELECT 2";
  const std::size_t b = q.find("CREATE");
  const std::size_t e = q.find(";\nSELECT 2");
  // Statement ends at the ';': PostgreSQL reports that token.
  CHECK(error_summary(parse_statement(q, b, e)) == "42601 syntax error at or near \";\" @35");
  const std::string q2 = "SELECT 1; CREATE API TOKEN x FOR USER  -- no role\n";
  CHECK(error_summary(parse_statement(q2, q2.find("CREATE"), q2.size())) ==
        "42601 syntax error at end of input @51");
}

TEST_CASE("an API TOKEN statement followed by another in one Parse is rejected as PostgreSQL does",
          "[parser]") {
  CHECK(error_summary(parse_statement("CREATE API TOKEN x; SELECT 1")) ==
        "42601 cannot insert multiple commands into a prepared statement @0");
  CHECK(error_summary(parse_statement("DROP API TOKEN x;; -- c\n;DROP API TOKEN y")) ==
        "42601 cannot insert multiple commands into a prepared statement @0");
  CHECK(parse_statement("DROP API TOKEN x;; -- c\n;") == ok(DropApiToken{"x", false, {}}));
}

TEST_CASE("SHOW TOKENGATE INSTANCES: found as a Query's first statement, other words refused", "[parser][classifier]") {
  CHECK(tokengate::parser_ext::could_be_api_token_statement("SHOW TOKENGATE INSTANCES"));
  CHECK(tokengate::parser_ext::query_may_contain_api_token_statement("  show tokengate instances"));
  CHECK_FALSE(tokengate::parser_ext::query_may_contain_api_token_statement("SHOW tokengate.x"));
  CHECK_FALSE(tokengate::parser_ext::query_may_contain_api_token_statement("SELECT 'tokengate instances'"));
  auto r = parse_statement("SHOW TOKENGATE SESSIONS");
  REQUIRE(std::holds_alternative<ParseError>(r));
  CHECK(std::get<ParseError>(r).code == ParseErrc::syntax_error);
}

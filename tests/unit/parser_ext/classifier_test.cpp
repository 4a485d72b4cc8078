// Classifier and whole-query pre-filter: candidates, look-alikes, and the "never miss" rule.
#include <string>
#include <vector>

#include "parser_ext/classifier.hpp"
#include "test_support.hpp"

using namespace parser_ext_test;

TEST_CASE("the classifier accepts every API TOKEN statement", "[classifier]") {
  const std::vector<std::string> candidates = {
      "CREATE API TOKEN",
      "create api token x",
      "  \n\t-- c\n/* a /* nested */ b */CREATE/**/API TOKEN",
      "CREATE API",  // a syntax error, but ours: no PostgreSQL statement starts so
      "CREATE API TOKN x",
      "DROP API TOKEN x",
      "DROP ALL API TOKENS",
      "drop all -- c\n api tokens",
      "ALTER API TOKEN x SET COMMENT NULL",
      "SHOW API TOKENS",
      "SHOW API TOKEN POLICIES",
      "SHOW API KEYS",
      "ALTER USER bob SET API TOKEN MAX DURATION '1d'",
      "ALTER ROLE \"Bob \"\"B\"\"\" RESET API TOKEN MAX DURATION",
      "ALTER ROLE U&\"b\\0062\" RESET API TOKEN MAX DURATION",
  };
  for (const auto& sql : candidates) {
    INFO("sql: " << sql);
    CHECK(could_be_api_token_statement(sql));
    CHECK(query_may_contain_api_token_statement(sql));
  }
}

TEST_CASE("the classifier rejects ordinary statements early", "[classifier]") {
  const std::vector<std::string> ordinary = {
      "SELECT 1",
      "select * from api",
      "INSERT INTO api VALUES (1)",
      "CREATE TABLE api (token text)",
      "CREATE api_token",
      "CREATE \"API\" TOKEN",
      "CREATEAPI TOKEN",
      "DROP TABLE api",
      "DROP ALL TOKENS",
      "SHOW api",
      "SHOW api;",
      "SHOW api.token",
      "SHOW api /* c */ . token",
      "SHOW api_token",
      "ALTER ROLE x SET search_path = public",
      "ALTER ROLE x SET api.token = 1",
      "ALTER ROLE x SET api = 1",
      "ALTER ROLE x RESET api",
      "ALTER ROLE x IN DATABASE d SET api TOKEN",
      "ALTER USER x WITH LOGIN",
      "ALTER TABLE api RENAME TO token",
      "ALTER ROLE \"unterminated SET api",
      "/* unterminated CREATE API TOKEN",
      "COMMENT ON TABLE api IS 'x'",
      "",
      " ",
      "c",
      "create",
      "(CREATE API TOKEN)",
  };
  for (const auto& sql : ordinary) {
    INFO("sql: " << sql);
    CHECK_FALSE(could_be_api_token_statement(sql));
  }
}

TEST_CASE("the whole-query pre-filter finds API TOKEN statements after the first",
          "[classifier]") {
  CHECK(query_may_contain_api_token_statement("SELECT 1; CREATE API TOKEN x"));
  CHECK(query_may_contain_api_token_statement("SELECT 1;CREATE/**/API TOKEN x"));
  CHECK(query_may_contain_api_token_statement("SELECT 1;\nDROP ALL\tApI\nTOKENS"));
  CHECK(query_may_contain_api_token_statement("api"));
  CHECK(query_may_contain_api_token_statement("x.API."));
  CHECK_FALSE(query_may_contain_api_token_statement("SELECT 1; SELECT 2"));
  CHECK_FALSE(query_may_contain_api_token_statement("SELECT api_key, rapid, apis FROM t"));
  CHECK_FALSE(query_may_contain_api_token_statement("SELECT $api$x$api$"));
  CHECK_FALSE(query_may_contain_api_token_statement(""));
  CHECK_FALSE(query_may_contain_api_token_statement("ap"));
}

TEST_CASE("the pre-filter finds `api` at every offset, across its 32-byte blocks",
          "[classifier]") {
  for (std::size_t pad = 0; pad < 70; ++pad) {
    const std::string hit = std::string(pad, ' ') + "Api";
    const std::string miss = std::string(pad, 'p') + "apix";
    const std::string hit_before_text = std::string(pad, ' ') + "API " + std::string(pad, 'P');
    INFO("pad: " << pad);
    CHECK(query_may_contain_api_token_statement(hit));
    CHECK(query_may_contain_api_token_statement(hit_before_text));
    CHECK_FALSE(query_may_contain_api_token_statement(miss));
  }
}

TEST_CASE("transaction control by leading keywords", "[classifier][tx]") {
  const std::vector<std::pair<std::string, TxControl>> cases = {
      {"BEGIN", TxControl::begin},
      {"begin work isolation level serializable", TxControl::begin},
      {"  /* c */ -- c\nBEGIN TRANSACTION READ ONLY", TxControl::begin},
      {"START TRANSACTION", TxControl::begin},
      {"START", TxControl::none},
      {"COMMIT", TxControl::commit},
      {"commit work", TxControl::commit},
      {"END TRANSACTION", TxControl::commit},
      {"COMMIT AND NO CHAIN", TxControl::commit},
      {"COMMIT AND CHAIN", TxControl::commit_and_chain},
      {"END WORK AND CHAIN", TxControl::commit_and_chain},
      {"ROLLBACK", TxControl::rollback},
      {"ABORT", TxControl::rollback},
      {"ROLLBACK TRANSACTION AND NO CHAIN", TxControl::rollback},
      {"ROLLBACK AND CHAIN", TxControl::rollback_and_chain},
      {"ABORT WORK AND CHAIN", TxControl::rollback_and_chain},
      {"ROLLBACK TO SAVEPOINT s", TxControl::rollback_to_savepoint},
      {"ROLLBACK WORK TO s", TxControl::rollback_to_savepoint},
      {"SAVEPOINT s", TxControl::savepoint},
      {"RELEASE SAVEPOINT s", TxControl::release_savepoint},
      {"RELEASE s", TxControl::release_savepoint},
      {"PREPARE TRANSACTION 'gid'", TxControl::prepare_transaction},
      {"PREPARE TRANSACTION E'gid'", TxControl::prepare_transaction},
      {"PREPARE transaction AS SELECT 1", TxControl::none},
      {"PREPARE transaction (int) AS SELECT $1", TxControl::none},
      {"PREPARE q AS SELECT 1", TxControl::none},
      {"COMMIT PREPARED 'gid'", TxControl::commit_prepared},
      {"ROLLBACK PREPARED 'gid'", TxControl::rollback_prepared},
      {"SELECT 1", TxControl::none},
      {"\"BEGIN\"", TxControl::none},
      {"BEGINNING", TxControl::none},
      {"", TxControl::none},
      {"/* unterminated", TxControl::none},
  };
  for (const auto& [sql, want] : cases) {
    INFO("sql: " << sql);
    CHECK(tx_control_name(classify_transaction_control(sql)) == tx_control_name(want));
  }
}

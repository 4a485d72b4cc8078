// changes_role_password: every way to set a password, the look-alikes, the session settings, failing closed.
#include <string>
#include <vector>

#include "parser_ext/role_password.hpp"
#include "test_support.hpp"

using namespace parser_ext_test;

TEST_CASE("role statements that set a password", "[role_password]") {
  const std::vector<std::string> changes = {
      "ALTER ROLE me PASSWORD 'x'",
      "ALTER ROLE me WITH PASSWORD 'x'",
      "alter user me with encrypted password 'SCRAM-SHA-256$4096:...'",
      "ALTER USER CURRENT_USER PASSWORD 'x'",
      "ALTER ROLE me PASSWORD NULL",
      "ALTER ROLE me LOGIN PASSWORD 'x' VALID UNTIL 'infinity'",
      "CREATE ROLE r LOGIN PASSWORD 'x'",
      "CREATE USER u WITH PASSWORD 'x'",
      "CREATE GROUP g WITH PASSWORD 'x'",
      "ALTER ROLE me PASSWORD $$x$$",
      "ALTER ROLE me PASSWORD E'x\\'y'",
      "/* c */ ALTER -- c\n ROLE \"Me\" PassWord 'x';",
      "SELECT 1; ALTER ROLE me PASSWORD 'x'; SELECT 2",
      ";;ALTER ROLE me PASSWORD 'x'",
      // A body statement of BEGIN ATOMIC is split off and seen (PostgreSQL
      // rejects utility statements there anyway).
      "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; ALTER ROLE me PASSWORD "
      "'x'; END",
  };
  for (const auto& sql : changes) {
    INFO("sql: " << sql);
    CHECK(query_may_change_role_password(sql));
    CHECK(changes_role_password(sql));
  }
}

TEST_CASE("look-alikes that set no password", "[role_password]") {
  const std::vector<std::string> same = {
      "SELECT 1",
      "SELECT password FROM users",
      "UPDATE users SET password = 'x' WHERE id = 1",
      "ALTER ROLE me SET password_encryption = 'scram-sha-256'",
      "ALTER ROLE me RENAME TO password",
      "ALTER ROLE me SET search_path = 'password'",
      "ALTER ROLE me VALID UNTIL 'infinity'",
      "CREATE USER MAPPING FOR me SERVER s OPTIONS (user 'u', password 'p')",
      "ALTER USER MAPPING FOR me SERVER s OPTIONS (SET password 'p')",
      "COMMENT ON ROLE me IS 'password'",
      "SELECT 'ALTER ROLE me PASSWORD ''x'''",
      "SELECT $$ALTER ROLE me PASSWORD 'x'$$",
      "-- ALTER ROLE me PASSWORD 'x'\nSELECT 1",
      "DO $$ BEGIN NULL; END $$ -- password",
      "CREATE TABLE t (password text)",
      "ALTER ROLE me PASSWORDS",
  };
  for (const auto& sql : same) {
    INFO("sql: " << sql);
    CHECK_FALSE(changes_role_password(sql));
  }
}

TEST_CASE("the pre-filter: the bare word password", "[role_password]") {
  CHECK(query_may_change_role_password("password"));
  CHECK(query_may_change_role_password("x.PASSWORD"));
  CHECK(query_may_change_role_password("(password)"));
  CHECK_FALSE(query_may_change_role_password("passwords"));
  CHECK_FALSE(query_may_change_role_password("_password"));
  CHECK_FALSE(query_may_change_role_password("password_encryption"));
  CHECK_FALSE(query_may_change_role_password("pass word"));
  CHECK_FALSE(query_may_change_role_password(""));
  for (std::size_t pad = 0; pad < 70; ++pad) {
    INFO("pad " << pad);
    CHECK(query_may_change_role_password(std::string(pad, ' ') + "PassWord" + std::string(pad, 's')) ==
          (pad == 0));
    CHECK(query_may_change_role_password(std::string(pad, ' ') + "password"));
  }
}

TEST_CASE("statements are delimited under the session's settings", "[role_password]") {
  const std::string q = "SELECT 'a\\'; ALTER ROLE me PASSWORD 'x'; --'";
  // standard_conforming_strings on: a SELECT, then ALTER ROLE.
  CHECK(changes_role_password(q, LexOptions{true, ClientEncoding::utf8}));
  // Off: one SELECT whose string holds the rest.
  CHECK_FALSE(changes_role_password(q, LexOptions{false, ClientEncoding::utf8}));
  // In SJIS, 0x95 0x5C is a character: E'…' ends at the quote after it.
  const std::string sjis = "SELECT E'\x95\x5c'; ALTER ROLE me PASSWORD 'x'; --'";
  CHECK(changes_role_password(sjis, LexOptions{true, ClientEncoding::sjis}));
  CHECK(changes_role_password("ALTER ROLE \"\x95\x5c\" PASSWORD '\x83\x65'",
                              LexOptions{true, ClientEncoding::sjis}));
}

TEST_CASE("what cannot be parsed is taken to change a password", "[role_password]") {
  CHECK(changes_role_password("ALTER ROLE me PASSWORD 'x' junk"));
  CHECK(changes_role_password("ALTER ROLE me PASSWORD 'x"));
  CHECK(changes_role_password("ALTER ROLE me PASSWORD 'x' /* open"));
  CHECK(changes_role_password("ALTER ROLE me UNENCRYPTED PASSWORD 'x'"));
  CHECK(changes_role_password("ALTER ROLE me PASSWORD '" + std::string(max_api_token_statement_bytes, 'x') +
                              "'"));
  CHECK(changes_role_password("ALTER ROLE me PASSWORD '\xe9'", LexOptions{true, ClientEncoding::unknown}));
  // More candidates than are worth parsing.
  std::string many;
  for (std::size_t k = 0; k <= max_api_token_statements_per_query; ++k)
    many += "ALTER ROLE me RENAME TO password;";
  CHECK(changes_role_password(many));
  many.resize(many.size() - std::string("ALTER ROLE me RENAME TO password;").size());
  CHECK_FALSE(changes_role_password(many));
  // An error in another statement: PostgreSQL runs nothing of the Query.
  CHECK_FALSE(changes_role_password("SELECT password; SELECT 'open"));
  CHECK_FALSE(changes_role_password("SELECT password FROM t WHERE x = '\xff'"));
}

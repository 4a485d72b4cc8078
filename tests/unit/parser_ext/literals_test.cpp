// String-constant decoding (all PostgreSQL forms) through the full parser and directly.
#include <string>
#include <vector>

#include "parser_ext/literals.hpp"
#include "test_support.hpp"

using namespace parser_ext_test;

namespace {

// The decoded COMMENT of `CREATE API TOKEN COMMENT <literal>`, or a description.
std::string comment_of(const std::string& literal) {
  const auto r = parse_statement("CREATE API TOKEN COMMENT " + literal);
  if (const auto* s = std::get_if<Statement>(&r))
    if (const auto* c = std::get_if<CreateApiToken>(s))
      if (c->comment) return *c->comment;
  return "<" + to_string(r) + ">";
}

}  // namespace

TEST_CASE("string constants decode as PostgreSQL's do", "[literals]") {
  struct Case {
    std::string literal;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"'plain'", "plain"},
      {"''", ""},
      {"'it''s'", "it's"},
      {"''''", "'"},
      {"'back\\slash'", "back\\slash"},  // standard_conforming_strings: no escapes
      {"'Деплой из CI'", "Деплой из CI"},
      {"'multi\nline'", "multi\nline"},
      {"E'a\\nb\\tc\\\\d\\'e'", "a\nb\tc\\d'e"},
      {"e'\\b\\f\\r'", "\b\f\r"},
      {"E'it''s'", "it's"},
      {"E'\\101\\60\\7'", "A0\x07"},
      {"E'\\x41\\x4a\\x4Z'", "AJ\x04Z"},
      {"E'\\u0416\\U0001F600'", "Ж\xF0\x9F\x98\x80"},
      {"E'\\uD83D\\uDE00'", "\xF0\x9F\x98\x80"},  // surrogate pair
      {"E'\\q\\\"'", "q\""},                       // unknown escapes stand for the char
      {"U&'d\\0061t\\+000061'", "data"},
      {"u&'\\0416\\\\'", "Ж\\"},
      {"U&'d!0061t!!' UESCAPE '!'", "dat!"},
      {"U&'it''s'", "it's"},
      {"U&'\\D83D\\DE00'", "\xF0\x9F\x98\x80"},
      {"$$dollar 'quoted' \\n$$", "dollar 'quoted' \\n"},
      {"$tag$has $$ inside$tag$", "has $$ inside"},
      {"$a$$a$", ""},
      {"$Ж$x$Ж$", "x"},
      {"'con'\n'tinued'", "continued"},
      {"'con' \t\r\n  'tin'  -- comment\n 'ued'", "continued"},
      {"'a' -- one\n -- two\n 'b' -- three\n'c'", "abc"},  // what PostgreSQL 15 does
      {"E'\\n' -- c\n'\\t'", "\n\t"},
      {"E'a\\n'\n'\\n'", "a\n\n"},  // continuation keeps E-string escapes
      {"U&'\\0041'\n'\\0042'", "AB"},
      // UESCAPE governs the whole continued constant (checked against PostgreSQL 15).
      {"U&'\\0041' -- c\n'\\0042' -- d\n '!0043' UESCAPE '!'", "\\0041\\0042C"},
      {"U&'\\0041' -- c\n'\\0042'", "AB"},
  };
  for (const auto& c : cases) {
    INFO("literal: " << c.literal);
    CHECK(comment_of(c.literal) == c.expected);
  }
}

TEST_CASE("adjacent constants without a newline are two tokens: a syntax error", "[literals]") {
  CHECK(error_summary(parse_statement("CREATE API TOKEN COMMENT 'a' 'b'")) ==
        "42601 syntax error at or near \"'b'\" @30");
  CHECK(error_summary(parse_statement("CREATE API TOKEN COMMENT 'a' /* c */\n'b'")) ==
        "42601 syntax error at or near \"'b'\" @38");
}

TEST_CASE("bad Unicode escapes in U& strings are 42601", "[literals]") {
  CHECK(error_summary(parse_statement("CREATE API TOKEN COMMENT U&'\\12'")) ==
        "42601 invalid Unicode escape @29");
  CHECK(error_summary(parse_statement("CREATE API TOKEN COMMENT U&'\\D83D'")) ==
        "42601 invalid Unicode surrogate pair @29");
  CHECK(error_summary(parse_statement("CREATE API TOKEN COMMENT U&'\\+110000'")) ==
        "42601 invalid Unicode escape value @29");
  CHECK(error_summary(parse_statement("CREATE API TOKEN COMMENT U&'x' UESCAPE '+'")) ==
        "42601 invalid Unicode escape character @40");
  // E-string escapes are checked by the scanner itself, with its own SQLSTATE.
  CHECK(error_summary(parse_statement("CREATE API TOKEN COMMENT E'\\uZZ'")) ==
        "22025 invalid Unicode escape @28");
}

TEST_CASE("decode_string_constant and decode_identifier directly", "[literals]") {
  CHECK(decode_string_constant("'a''b'").value == "a'b");
  CHECK(decode_string_constant("U&'x#0041' ", '#').value == "xA");
  CHECK(decode_string_constant("'abc").error == "unterminated quoted string");
  CHECK(decode_identifier("MiXeD").value == "mixed");
  CHECK(decode_identifier("\"MiXeD\"").value == "MiXeD");
  CHECK(decode_identifier("\"\"").error == "zero-length delimited identifier");
  CHECK(decode_identifier("U&\"#0041\"", '#').value == "A");
}

TEST_CASE("invalid UTF-8 and NUL are 22021 without a position, as in PostgreSQL",
          "[literals]") {
  CHECK(error_summary(parse_statement("CREATE API TOKEN COMMENT E'\\xff'")) ==
        "22021 invalid byte sequence for encoding \"UTF8\": 0xff @0");
  CHECK(error_summary(parse_statement("CREATE API TOKEN COMMENT E'\\0'")) ==
        "22021 invalid byte sequence for encoding \"UTF8\": 0x00 @0");
  CHECK(error_summary(parse_statement("CREATE API TOKEN COMMENT E'\\xc3\\xa9'")) ==
        "not an error: CreateApiToken{name=null, for_user=null, max_duration=null, "
        "comment=\"\xc3\xa9\"}");
  // Raw bytes in the query text itself.
  CHECK(error_summary(parse_statement("CREATE API TOKEN COMMENT '\xc3\x28'")) ==
        "22021 invalid byte sequence for encoding \"UTF8\": 0xc3 0x28 @0");
  CHECK(error_summary(parse_statement("CREATE API TOKEN \"\xed\xa0\x80\"")) ==
        "22021 invalid byte sequence for encoding \"UTF8\": 0xed 0xa0 0x80 @0");
  CHECK(error_summary(parse_statement("CREATE API TOKEN \"\xf4\x90\x80\x80\"")) ==
        "22021 invalid byte sequence for encoding \"UTF8\": 0xf4 0x90 0x80 0x80 @0");
  CHECK(error_summary(parse_statement("CREATE API TOKEN COMMENT '\xf0\x9f\x98\x80'")) ==
        "not an error: CreateApiToken{name=null, for_user=null, max_duration=null, "
        "comment=\"\xf0\x9f\x98\x80\"}");
}

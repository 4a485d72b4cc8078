// The lexer, case by case: tokens and errors as PostgreSQL 15's scan.l gives them (checked against a server).
#include <string>
#include <vector>

#include "parser_ext/lexer.hpp"
#include "test_support.hpp"

using namespace parser_ext_test;

namespace {

std::string kind_tag(TokenKind k) {
  switch (k) {
    case TokenKind::line_comment: return "--";
    case TokenKind::block_comment: return "/**/";
    case TokenKind::word: return "w";
    case TokenKind::quoted_identifier: return "qi";
    case TokenKind::unicode_identifier: return "ui";
    case TokenKind::string: return "s";
    case TokenKind::extended_string: return "es";
    case TokenKind::unicode_string: return "us";
    case TokenKind::bit_string: return "bs";
    case TokenKind::hex_string: return "xs";
    case TokenKind::dollar_string: return "ds";
    case TokenKind::number: return "n";
    case TokenKind::parameter: return "p";
    case TokenKind::operator_: return "op";
    case TokenKind::punctuation: return "pu";
  }
  return "?";
}

// "w:SELECT s:'a' pu:;" or, after the tokens, "ERROR <sqlstate> <message> @<position>".
std::string lex(std::string_view text, LexOptions options = {}) {
  Lexer lexer(text, options);
  Token t;
  std::string out;
  while (lexer.next(t)) {
    if (!out.empty()) out += ' ';
    out += kind_tag(t.kind) + ":" + std::string(text.substr(t.begin, t.end - t.begin));
  }
  if (const LexError* e = lexer.error()) {
    const ParseError p = to_parse_error(text, *e, options);
    if (!out.empty()) out += ' ';
    out += "ERROR " + std::string(sqlstate(p.code)) + " " + p.message + " @" +
           std::to_string(p.position);
  }
  return out;
}

LexOptions scs_off() { return LexOptions{false, ClientEncoding::utf8}; }
LexOptions in(ClientEncoding e) { return LexOptions{true, e}; }

}  // namespace

TEST_CASE("whitespace and comments", "[lexer]") {
  CHECK(lex("  \t\r\n\f") == "");
  CHECK(lex("a -- c\nb") == "w:a --:-- c w:b");
  CHECK(lex("a --c") == "w:a --:--c");
  CHECK(lex("a\r--c\rb") == "w:a --:--c w:b");
  CHECK(lex("/* a /* nested */ b */x") == "/**/:/* a /* nested */ b */ w:x");
  CHECK(lex("/*/ still open */x") == "/**/:/*/ still open */ w:x");
  CHECK(lex("/* **/x") == "/**/:/* **/ w:x");
  CHECK(lex("/* a */* b") == "/**/:/* a */ op:* w:b");
  CHECK(lex("/* ; ' \" $$ */;") == "/**/:/* ; ' \" $$ */ pu:;");
  // \v is not whitespace in PostgreSQL 15.
  CHECK(lex("a\vb") == "w:a pu:\v w:b");
  CHECK(lex("/* open") == "ERROR 42601 unterminated /* comment at or near \"/* open\" @1");
  CHECK(lex("x /* a /* b */") ==
        "w:x ERROR 42601 unterminated /* comment at or near \"/* a /* b */\" @3");
}

TEST_CASE("operators end where a comment starts; trailing + and - split off", "[lexer]") {
  CHECK(lex("a+-- c\nb") == "w:a op:+ --:-- c w:b");
  CHECK(lex("a*/* c */b") == "w:a op:* /**/:/* c */ w:b");
  CHECK(lex("a<=-b") == "w:a op:<= op:- w:b");
  CHECK(lex("a?-b") == "w:a op:?- w:b");
  CHECK(lex("a @- b") == "w:a op:@- w:b");
  CHECK(lex("a::int") == "w:a op::: w:int");
  CHECK(lex("1..2") == "n:1 op:.. n:2");
  CHECK(lex("a:=b") == "w:a op::= w:b");
  CHECK(lex(std::string(63, '~')) == "op:" + std::string(63, '~'));
  CHECK(lex("1 " + std::string(64, '~')) ==
        "n:1 ERROR 42601 operator too long at or near \"" + std::string(64, '~') + "\" @3");
  // Trailing +s are split off before the length is checked.
  CHECK(lex(std::string(70, '+')).substr(0, 5) == "op:+ ");
}

TEST_CASE("string constants in every form", "[lexer]") {
  CHECK(lex("'a;b' ;") == "s:'a;b' pu:;");
  CHECK(lex("'it''s'") == "s:'it''s'");
  CHECK(lex("'a\\'") == "s:'a\\'");  // standard_conforming_strings on: no escapes
  CHECK(lex("E'a\\'b' x") == "es:E'a\\'b' w:x");
  CHECK(lex("e'\\\\' x") == "es:e'\\\\' w:x");
  CHECK(lex("E'\\x41\\101\\n' x") == "es:E'\\x41\\101\\n' w:x");
  CHECK(lex("N'x'") == "w:N s:'x'");
  CHECK(lex("B'101' X'ff'") == "bs:B'101' xs:X'ff'");
  CHECK(lex("B'1''0'") == "bs:B'1' s:'0'");  // no doubling in bit strings
  CHECK(lex("U&'d\\0061t' UESCAPE '!'") == "us:U&'d\\0061t' w:UESCAPE s:'!'");
  CHECK(lex("U&\"d\\0061t\"") == "ui:U&\"d\\0061t\"");
  CHECK(lex("U&x") == "w:U op:& w:x");
  // A prefix letter only counts at the start of a token.
  CHECK(lex("xe'a\\'") == "w:xe s:'a\\'");
  CHECK(lex("'abc") == "ERROR 42601 unterminated quoted string at or near \"'abc\" @1");
  CHECK(lex("E'abc\\'") == "ERROR 42601 unterminated quoted string at or near \"E'abc\\'\" @1");
  CHECK(lex("B'1") == "ERROR 42601 unterminated bit string literal at or near \"B'1\" @1");
  CHECK(lex("X'1") == "ERROR 42601 unterminated hexadecimal string literal at or near \"X'1\" @1");
}

TEST_CASE("quoted strings continue across newlines and comments", "[lexer]") {
  CHECK(lex("'a'\n'b'") == "s:'a'\n'b'");
  CHECK(lex("'a' -- c\n 'b' x") == "s:'a' -- c\n 'b' w:x");
  CHECK(lex("'a'\n-- c\n'b'") == "s:'a'\n-- c\n'b'");
  CHECK(lex("E'\\''\n'\\''") == "es:E'\\''\n'\\''");  // the continuation keeps E's escapes
  CHECK(lex("'a' 'b'") == "s:'a' s:'b'");          // no newline: two constants
  CHECK(lex("'a' /* c */\n'b'") == "s:'a' /**/:/* c */ s:'b'");
  CHECK(lex("'a'\n-- c") == "s:'a' --:-- c");
  CHECK(lex("B'1'\n'0'") == "bs:B'1'\n'0'");
}

TEST_CASE("E'' escapes: Unicode, surrogate pairs and their errors", "[lexer]") {
  CHECK(lex("E'\\u00e9\\U0001F600\\uD83D\\uDE00'") == "es:E'\\u00e9\\U0001F600\\uD83D\\uDE00'");
  CHECK(lex("SELECT E'\\uZZ'") ==
        "w:SELECT ERROR 22025 invalid Unicode escape @10");
  CHECK(lex("SELECT E'\\u0000'") ==
        "w:SELECT ERROR 42601 invalid Unicode escape value at or near \"\\u0000\" @10");
  CHECK(lex("SELECT E'\\U00110000'") ==
        "w:SELECT ERROR 42601 invalid Unicode escape value at or near \"\\U00110000\" @10");
  CHECK(lex("SELECT E'\\uDC00'") ==
        "w:SELECT ERROR 42601 invalid Unicode surrogate pair at or near \"\\uDC00\" @10");
  CHECK(lex("SELECT E'\\uD800'") ==
        "w:SELECT ERROR 42601 invalid Unicode surrogate pair at or near \"'\" @16");
  CHECK(lex("SELECT E'\\uD800x'") ==
        "w:SELECT ERROR 42601 invalid Unicode surrogate pair at or near \"x\" @16");
  CHECK(lex("SELECT E'\\uD800") ==
        "w:SELECT ERROR 42601 invalid Unicode surrogate pair at end of input @16");
  CHECK(lex("SELECT E'\\uD800\\u0041'") ==
        "w:SELECT ERROR 42601 invalid Unicode surrogate pair at or near \"\\u0041\" @16");
  // A backslash just before the end.
  CHECK(lex("E'\\") == "ERROR 42601 unterminated quoted string at or near \"E'\\\" @1");
}

TEST_CASE("standard_conforming_strings off: '' takes escapes, U&'' is refused", "[lexer]") {
  CHECK(lex("'x\\'; SELECT 'smuggled'; --'", scs_off()) == "s:'x\\'; SELECT ' w:smuggled s:'; --'");
  CHECK(lex("'a\\\\'; SELECT 2", scs_off()) == "s:'a\\\\' pu:; w:SELECT n:2");
  CHECK(lex("'a''b'", scs_off()) == "s:'a''b'");
  CHECK(lex("SELECT U&'x'", scs_off()) ==
        "w:SELECT ERROR 0A000 unsafe use of string constant with Unicode escapes @8");
  // Identifiers and dollar quotes are not affected.
  CHECK(lex("\"a\\\" $$\\$$", scs_off()) == "qi:\"a\\\" ds:$$\\$$");
  // Unicode escapes in plain strings are checked too when they are escapes.
  CHECK(lex("'\\uZ'", scs_off()) == "ERROR 22025 invalid Unicode escape @2");
}

TEST_CASE("quoted identifiers", "[lexer]") {
  CHECK(lex("\"a;b\" x") == "qi:\"a;b\" w:x");
  CHECK(lex("\"a\"\"b\"") == "qi:\"a\"\"b\"");
  CHECK(lex("\"a\\\"") == "qi:\"a\\\"");
  CHECK(lex("SELECT \"\"") ==
        "w:SELECT ERROR 42601 zero-length delimited identifier at or near \"\"\"\" @8");
  CHECK(lex("U&\"\"") == "ERROR 42601 zero-length delimited identifier at or near \"U&\"\"\" @1");
  CHECK(lex("\"\"\"\"") == "qi:\"\"\"\"");
  CHECK(lex("\"abc") == "ERROR 42601 unterminated quoted identifier at or near \"\"abc\" @1");
}

TEST_CASE("dollar quotes: tags, look-alikes and parameters", "[lexer]") {
  CHECK(lex("$$a;'b$$ x") == "ds:$$a;'b$$ w:x");
  CHECK(lex("$a$x$ab$y$a$") == "ds:$a$x$ab$y$a$");
  CHECK(lex("$a$x$b$a$") == "ds:$a$x$b$a$");
  CHECK(lex("$é$x$é$") == "ds:$é$x$é$");
  CHECK(lex("$_1$x$_1$") == "ds:$_1$x$_1$");
  // $ inside an identifier never starts a quote.
  CHECK(lex("a$$b; c") == "w:a$$b pu:; w:c");
  CHECK(lex("$1; $12") == "p:$1 pu:; p:$12");
  CHECK(lex("$1$$x$$") == "p:$1 ds:$$x$$");
  CHECK(lex("$a b") == "pu:$ w:a w:b");  // scan.l dolqfailed
  CHECK(lex("$ 1") == "pu:$ n:1");
  CHECK(lex("$1ab$c") == "ERROR 42601 trailing junk after parameter at or near \"$1ab$c\" @1");
  CHECK(lex("SELECT $a$x") ==
        "w:SELECT ERROR 42601 unterminated dollar-quoted string at or near \"$a$x\" @8");
}

TEST_CASE("numbers and trailing junk, by flex's longest match", "[lexer]") {
  CHECK(lex("1 1.5 .5 1. 1e3 1.e5 1E-3 1e+3") == "n:1 n:1.5 n:.5 n:1. n:1e3 n:1.e5 n:1E-3 n:1e+3");
  CHECK(lex("1.5$") == "n:1.5 pu:$");
  CHECK(lex("1$") == "n:1 pu:$");
  CHECK(lex("SELECT 1e") == "w:SELECT ERROR 42601 trailing junk after numeric literal at or near \"1e\" @8");
  CHECK(lex("SELECT 1e+") ==
        "w:SELECT ERROR 42601 trailing junk after numeric literal at or near \"1e+\" @8");
  CHECK(lex("SELECT 1e5ab") ==
        "w:SELECT ERROR 42601 trailing junk after numeric literal at or near \"1e5ab\" @8");
  CHECK(lex("SELECT 1e1$") ==
        "w:SELECT ERROR 42601 trailing junk after numeric literal at or near \"1e1$\" @8");
  CHECK(lex("SELECT 1.5ab$x") ==
        "w:SELECT ERROR 42601 trailing junk after numeric literal at or near \"1.5ab$x\" @8");
  CHECK(lex("SELECT 0x1F") ==
        "w:SELECT ERROR 42601 trailing junk after numeric literal at or near \"0x1F\" @8");
  CHECK(lex("SELECT 1_000") ==
        "w:SELECT ERROR 42601 trailing junk after numeric literal at or near \"1_000\" @8");
  // 1e'…' is junk, not a number and an E'' string.
  CHECK(lex("1e'\\''") == "ERROR 42601 trailing junk after numeric literal at or near \"1e\" @1");
}

TEST_CASE("positions count characters of the client encoding", "[lexer]") {
  CHECK(lex("'é' 'open") == "s:'é' ERROR 42601 unterminated quoted string at or near \"'open\" @5");
  CHECK(lex("'\x95\x5c' 'open", in(ClientEncoding::sjis)) ==
        "s:'\x95\x5c' ERROR 42601 unterminated quoted string at or near \"'open\" @5");
  CHECK(lex("'\xe9' 'open", in(ClientEncoding::latin1)) ==
        "s:'\xe9' ERROR 42601 unterminated quoted string at or near \"'open\" @5");
}

TEST_CASE("long excerpts in error messages are cut at a character boundary", "[lexer]") {
  const std::string text = "'" + std::string(max_error_excerpt_bytes, 'a') + "é";
  const std::string got = lex(text);
  const std::string want = "ERROR 42601 unterminated quoted string at or near \"'" +
                           std::string(max_error_excerpt_bytes - 1, 'a') + "\" @1";
  CHECK(got == want);
}

TEST_CASE("invalid byte sequences are 22021 without a position, wherever they are", "[lexer]") {
  CHECK(lex("SELECT '\xff'") == "w:SELECT ERROR 22021 invalid byte sequence for encoding \"UTF8\": 0xff @0");
  CHECK(lex("SELECT '\xc3\x28'") ==
        "w:SELECT ERROR 22021 invalid byte sequence for encoding \"UTF8\": 0xc3 0x28 @0");
  CHECK(lex("-- \xed\xa0\x80\n") == "ERROR 22021 invalid byte sequence for encoding \"UTF8\": 0xed 0xa0 0x80 @0");
  CHECK(lex(std::string("a\0b", 3)) == "w:a ERROR 22021 invalid byte sequence for encoding \"UTF8\": 0x00 @0");
  // PostgreSQL checks the whole string before it lexes: a bad byte after a
  // lexical error is still the error.
  CHECK(lex("SELECT 1e; SELECT '\xff'") ==
        "w:SELECT ERROR 22021 invalid byte sequence for encoding \"UTF8\": 0xff @0");
  CHECK(lex("SELECT 'open \xff") ==
        "w:SELECT ERROR 22021 invalid byte sequence for encoding \"UTF8\": 0xff @0");
}

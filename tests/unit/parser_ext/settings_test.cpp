// The session's standard_conforming_strings and client_encoding: where statements end, and the API TOKEN grammar.
#include <string>
#include <vector>

#include "parser_ext/encoding.hpp"
#include "test_support.hpp"

using namespace parser_ext_test;

namespace {

LexOptions scs_off() { return LexOptions{false, ClientEncoding::utf8}; }
LexOptions in(ClientEncoding e, bool scs = true) { return LexOptions{scs, e}; }

// "ordinary[…] | token[…]" as in split_test, or the error.
std::string plan(std::string_view q, const LexOptions& o = {}) {
  const auto p = plan_query(q, o);
  if (const auto* e = std::get_if<ParseError>(&p)) return error_summary(ParseResult{*e});
  std::string out;
  for (const QueryPart& part : std::get<std::vector<QueryPart>>(p)) {
    if (!out.empty()) out += " | ";
    if (const auto* ord = std::get_if<OrdinarySql>(&part)) {
      out += "ordinary[" + std::string(q.substr(ord->span.begin, ord->span.end - ord->span.begin)) + "]";
    } else {
      const auto& t = std::get<ApiTokenSql>(part);
      out += "token[" + to_string(t.statement) + "]";
    }
  }
  return out.empty() ? "<empty>" : out;
}

std::vector<std::string> statements(std::string_view q, const LexOptions& o) {
  const auto r = split_statements(q, o);
  if (const auto* e = std::get_if<ParseError>(&r)) return {"ERROR " + to_string(*e)};
  std::vector<std::string> out;
  for (const auto& s : std::get<std::vector<StatementSpan>>(r))
    out.emplace_back(q.substr(s.begin, s.end - s.begin));
  return out;
}

}  // namespace

TEST_CASE("standard_conforming_strings off: the smuggling attempt is one statement", "[settings]") {
  // The acceptance case: PostgreSQL sees one string 'x\'; SELECT ' and then
  // the word smuggled, so this is one (broken) API TOKEN statement and
  // nothing of it may run, least of all SELECT 'smuggled'.
  const std::string q = "CREATE API TOKEN t COMMENT 'x\\'; SELECT 'smuggled'; --'";
  CHECK(plan(q, scs_off()) == "42601 syntax error at or near \"smuggled\" @42");
  CHECK(statements(q, scs_off()) == std::vector<std::string>{q});
  // With standard_conforming_strings on, the same bytes are three statements.
  // (the last statement is only a comment)
  CHECK(statements(q, {}) == std::vector<std::string>{"CREATE API TOKEN t COMMENT 'x\\'",
                                                       " SELECT 'smuggled'"});
  CHECK(plan(q, {}) ==
        "token[CreateApiToken{name=\"t\", for_user=null, max_duration=null, comment=\"x\\\"}] | "
        "ordinary[ SELECT 'smuggled']");
}

TEST_CASE("standard_conforming_strings off: escapes in the grammar's strings", "[settings]") {
  CHECK(plan("CREATE API TOKEN t COMMENT 'it\\'s\\n'", scs_off()) ==
        "token[CreateApiToken{name=\"t\", for_user=null, max_duration=null, comment=\"it's\n\"}]");
  CHECK(plan("CREATE API TOKEN t COMMENT 'a\\\\'; SHOW API TOKENS", scs_off()) ==
        "token[CreateApiToken{name=\"t\", for_user=null, max_duration=null, comment=\"a\\\"}] | "
        "token[ShowApiTokens{for_user=null, all_users=false}]");
  CHECK(plan("DROP API TOKEN U&\"x\"", scs_off()) ==
        "token[DropApiToken{name=\"x\", if_exists=false, for_user=null}]");
  CHECK(plan("CREATE API TOKEN t COMMENT U&'x'", scs_off()) ==
        "0A000 unsafe use of string constant with Unicode escapes @28");
  // An ordinary statement hiding a would-be token statement in a string.
  CHECK(plan("SELECT 'a\\'; DROP ALL API TOKENS; --'", scs_off()) ==
        "ordinary[SELECT 'a\\'; DROP ALL API TOKENS; --']");
  CHECK(plan("SELECT 'a\\'; DROP ALL API TOKENS; --'", {}) ==
        "ordinary[SELECT 'a\\'] | token[DropAllApiTokens{for_user=null}]");
}

TEST_CASE("client-only encodings: a second byte 0x5C is no backslash", "[settings]") {
  // 0x95 0x5C is 表 in SJIS; PostgreSQL converts it before lexing, so
  // E'表' ends at its quote and the token statement after it is real.
  const std::string sjis = "SELECT E'\x95\x5c'; DROP API TOKEN x";
  CHECK(plan(sjis, in(ClientEncoding::sjis)) ==
        "ordinary[SELECT E'\x95\x5c'] | token[DropApiToken{name=\"x\", if_exists=false, for_user=null}]");
  // Read as UTF-8 bytes the same text is one statement (and invalid).
  CHECK(plan(sjis, in(ClientEncoding::utf8)) == "ordinary[" + sjis + "]");
  // The other way round: what a byte-wise splitter would take for an escaped
  // quote is a character and a closing quote, then a second statement.
  const std::string trap = "SELECT E'\x95\x5c'; SELECT '--'; CREATE API TOKEN y; --'";
  CHECK(statements(trap, in(ClientEncoding::sjis)).size() == 3);
  struct Case {
    ClientEncoding encoding;
    std::string character;  // a character whose second byte is '\' (or one with an ASCII byte)
  };
  const std::vector<Case> cases = {
      {ClientEncoding::sjis, "\x95\x5c"},           {ClientEncoding::shift_jis_2004, "\x95\x5c"},
      {ClientEncoding::big5, "\xa5\x5c"},           {ClientEncoding::gbk, "\x81\x5c"},
      {ClientEncoding::gb18030, "\x81\x5c"},        {ClientEncoding::gb18030, "\x81\x30\x81\x30"},
      {ClientEncoding::uhc, "\x81\x41"},            {ClientEncoding::johab, "\xd9\xa1"},
  };
  for (const auto& c : cases) {
    INFO("encoding " << encoding_name(c.encoding));
    const std::string q = "SELECT E'" + c.character + "'; SHOW API TOKENS";
    CHECK(plan(q, in(c.encoding)) ==
          "ordinary[SELECT E'" + c.character + "'] | token[ShowApiTokens{for_user=null, all_users=false}]");
    // Dollar tags and identifiers step over whole characters too.
    CHECK(statements("SELECT $" + c.character + "$;$" + c.character + "$; SELECT \"" + c.character +
                         "\"",
                     in(c.encoding))
              .size() == 2);
  }
}

TEST_CASE("client-only encodings: \\' is refused as PostgreSQL refuses it", "[settings]") {
  CHECK(plan("CREATE API TOKEN COMMENT E'a\\'b'", in(ClientEncoding::sjis)) ==
        "22P06 unsafe use of \\' in a string literal @26");
  // In an ASCII-safe encoding it is an escaped quote.
  CHECK(plan("CREATE API TOKEN COMMENT E'a\\'b'", in(ClientEncoding::latin1)) ==
        "token[CreateApiToken{name=null, for_user=null, max_duration=null, comment=\"a'b\"}]");
  const auto r = parse_statement("DROP API TOKEN x; SELECT E'\\''", in(ClientEncoding::big5));
  REQUIRE(std::holds_alternative<ParseError>(r));
  CHECK(std::get<ParseError>(r).hint ==
        "Use '' to write quotes in strings. \\' is insecure in client-only encodings.");
}

TEST_CASE("invalid byte sequences: PostgreSQL's 22021 with the encoding's name", "[settings]") {
  CHECK(plan("CREATE API TOKEN x; SELECT '\x95'", in(ClientEncoding::sjis)) ==
        "22021 invalid byte sequence for encoding \"SJIS\": 0x95 0x27 @0");
  CHECK(plan("SHOW API TOKENS; SELECT '\x81 '", in(ClientEncoding::sjis)) ==
        "22021 invalid byte sequence for encoding \"SJIS\": 0x81 0x20 @0");
  CHECK(plan("SHOW API TOKENS; SELECT '\x88\x61'", in(ClientEncoding::johab)) ==
        "22021 invalid byte sequence for encoding \"JOHAB\": 0x88 0x61 @0");
  CHECK(plan("SHOW API TOKENS; SELECT '\xa4'", in(ClientEncoding::euc_jp)) ==
        "22021 invalid byte sequence for encoding \"EUC_JP\": 0xa4 0x27 @0");
  // BIG5, GBK, UHC: PostgreSQL's check lets a second byte below 0x40 pass, but
  // no conversion maps it: 22P05, as PostgreSQL says for a UTF-8 server.
  CHECK(plan("SHOW API TOKENS; SELECT '\xa5''", in(ClientEncoding::big5)) ==
        "22P05 character with byte sequence 0xa5 0x27 in encoding \"BIG5\" has no equivalent in "
        "encoding \"UTF8\" @0");
  // 0x80 leads a two-byte character for PostgreSQL, which has none for
  // 0x80 0x80; glibc's BIG5 maps 0x80 alone, and must not be believed (the
  // fuzzer found positions past the end from two characters counted as one).
  CHECK(plan("CREATE API TOKEN \"\x80\x80\" COMMENT 'x'", in(ClientEncoding::big5)) ==
        "22P05 character with byte sequence 0x80 0x80 in encoding \"BIG5\" has no equivalent in "
        "encoding \"UTF8\" @0");
  // With no API TOKEN statement before it, PostgreSQL reports it itself.
  CHECK(plan("SELECT '\x95'; SHOW API TOKENS", in(ClientEncoding::sjis)) ==
        "ordinary[SELECT '\x95'; SHOW API TOKENS]");
  // A syntax error in a token statement comes after the encoding check of the
  // whole string, as in PostgreSQL.
  CHECK(plan("DROP API TOKEN x y; SELECT '\x95'", in(ClientEncoding::sjis)) ==
        "22021 invalid byte sequence for encoding \"SJIS\": 0x95 0x27 @0");
  CHECK(error_summary(parse_statement("DROP API TOKEN x y; SELECT '\xff'")) ==
        "22021 invalid byte sequence for encoding \"UTF8\": 0xff @0");
}

TEST_CASE("non-UTF-8 text of token statements becomes UTF-8; errors stay in the client's", "[settings]") {
  // SJIS 0x95 0x5C is 表 (U+8868), 0x83 0x65 is テ (U+30C6).
  CHECK(plan("CREATE API TOKEN \"\x95\x5c\" COMMENT '\x83\x65'", in(ClientEncoding::sjis)) ==
        "token[CreateApiToken{name=\"表\", for_user=null, max_duration=null, comment=\"テ\"}]");
  CHECK(plan("CREATE API TOKEN t COMMENT 'caf\xe9'", in(ClientEncoding::latin1)) ==
        "token[CreateApiToken{name=\"t\", for_user=null, max_duration=null, comment=\"café\"}]");
  CHECK(plan("CREATE API TOKEN t COMMENT 'caf\xe9'", in(ClientEncoding::win1252)) ==
        "token[CreateApiToken{name=\"t\", for_user=null, max_duration=null, comment=\"café\"}]");
  CHECK(plan("CREATE API TOKEN t COMMENT '\xa4\xa2'", in(ClientEncoding::euc_jp)) ==
        "token[CreateApiToken{name=\"t\", for_user=null, max_duration=null, comment=\"あ\"}]");
  // Positions count the client's characters; the quoted token is in SJIS.
  CHECK(plan("SELECT '\x95\x5c'; DROP API TOKEN \x95\x5c oops", in(ClientEncoding::sjis)) ==
        "42601 syntax error at or near \"oops\" @30");
  const auto e = plan_query("DROP API TOKEN \x95\x5c\x95\x5c x", in(ClientEncoding::sjis));
  REQUIRE(std::holds_alternative<ParseError>(e));
  CHECK(std::get<ParseError>(e).message == "syntax error at or near \"x\"");
  CHECK(std::get<ParseError>(e).position == 19);
  CHECK(std::get<ParseError>(e).byte_offset == 20);
  const auto far = plan_query("DROP API TOKEN \x95\x5c\x95\x5c \x83\x65x", in(ClientEncoding::sjis));
  REQUIRE(std::holds_alternative<ParseError>(far));
  CHECK(std::get<ParseError>(far).message == "syntax error at or near \"\x83\x65x\"");
  // MULE_INTERNAL has no conversion to UTF-8 in PostgreSQL either.
  CHECK(plan("CREATE API TOKEN t COMMENT '\x81\xe9'", in(ClientEncoding::mule_internal)) ==
        "0A000 conversion between MULE_INTERNAL and UTF8 is not supported @0");
  // SQL_ASCII: PostgreSQL checks the text against the server's encoding; the
  // token store's is UTF-8.
  CHECK(plan("CREATE API TOKEN t COMMENT 'é'", in(ClientEncoding::sql_ascii)) ==
        "token[CreateApiToken{name=\"t\", for_user=null, max_duration=null, comment=\"é\"}]");
  CHECK(plan("CREATE API TOKEN t COMMENT '\xff'", in(ClientEncoding::sql_ascii)) ==
        "22021 invalid byte sequence for encoding \"UTF8\": 0xff @0");
}

TEST_CASE("an unknown client_encoding lexes ASCII and refuses anything else", "[settings]") {
  const LexOptions unknown = in(ClientEncoding::unknown);
  CHECK(plan("SELECT 1; DROP API TOKEN x", unknown) ==
        "ordinary[SELECT 1] | token[DropApiToken{name=\"x\", if_exists=false, for_user=null}]");
  CHECK(plan("DROP API TOKEN x; SELECT '\xe9'", unknown) ==
        "0A000 tokengate does not know this client_encoding and cannot split a Query holding "
        "the byte 0xe9 @0");
  // Nothing of ours before it: PostgreSQL, which knows its encoding, decides.
  CHECK(plan("SELECT '\xe9'; DROP API TOKEN x", unknown) ==
        "ordinary[SELECT '\xe9'; DROP API TOKEN x]");
}

TEST_CASE("client_encoding names as PostgreSQL reports and accepts them", "[settings][encoding]") {
  CHECK(client_encoding_from_name("UTF8") == ClientEncoding::utf8);
  CHECK(client_encoding_from_name("utf-8") == ClientEncoding::utf8);
  CHECK(client_encoding_from_name("Unicode") == ClientEncoding::utf8);
  CHECK(client_encoding_from_name("SQL_ASCII") == ClientEncoding::sql_ascii);
  CHECK(client_encoding_from_name("LATIN1") == ClientEncoding::latin1);
  CHECK(client_encoding_from_name("ISO-8859-1") == ClientEncoding::latin1);
  CHECK(client_encoding_from_name("iso_8859_5") == ClientEncoding::iso_8859_5);
  CHECK(client_encoding_from_name("SJIS") == ClientEncoding::sjis);
  CHECK(client_encoding_from_name("Shift_JIS") == ClientEncoding::sjis);
  CHECK(client_encoding_from_name("win932") == ClientEncoding::sjis);
  CHECK(client_encoding_from_name("SHIFT_JIS_2004") == ClientEncoding::shift_jis_2004);
  CHECK(client_encoding_from_name("BIG5") == ClientEncoding::big5);
  CHECK(client_encoding_from_name("GBK") == ClientEncoding::gbk);
  CHECK(client_encoding_from_name("UHC") == ClientEncoding::uhc);
  CHECK(client_encoding_from_name("GB18030") == ClientEncoding::gb18030);
  CHECK(client_encoding_from_name("JOHAB") == ClientEncoding::johab);
  CHECK(client_encoding_from_name("EUC_JP") == ClientEncoding::euc_jp);
  CHECK(client_encoding_from_name("EUC_JIS_2004") == ClientEncoding::euc_jis_2004);
  CHECK(client_encoding_from_name("MULE_INTERNAL") == ClientEncoding::mule_internal);
  CHECK(client_encoding_from_name("KOI8R") == ClientEncoding::koi8r);
  CHECK(client_encoding_from_name("WIN1252") == ClientEncoding::win1252);
  CHECK(client_encoding_from_name("") == ClientEncoding::unknown);
  CHECK(client_encoding_from_name("EBCDIC") == ClientEncoding::unknown);
  CHECK(client_encoding_from_name(std::string(64, 'u')) == ClientEncoding::unknown);
  // Every canonical name maps back to itself.
  for (int k = 0; k < static_cast<int>(ClientEncoding::unknown); ++k) {
    const auto e = static_cast<ClientEncoding>(k);
    INFO("encoding " << encoding_name(e));
    CHECK(client_encoding_from_name(encoding_name(e)) == e);
  }
  CHECK(is_client_only(ClientEncoding::sjis));
  CHECK(is_client_only(ClientEncoding::shift_jis_2004));
  CHECK_FALSE(is_client_only(ClientEncoding::euc_jp));
  CHECK_FALSE(is_client_only(ClientEncoding::utf8));
}

TEST_CASE("from_utf8 gives results back in the client encoding", "[settings][encoding]") {
  std::string out;
  CHECK(encoding::from_utf8(ClientEncoding::sjis, "表テx", out));
  CHECK(out == "\x95\x5c\x83\x65x");
  CHECK(encoding::from_utf8(ClientEncoding::latin1, "café", out));
  CHECK(out == "caf\xe9");
  CHECK_FALSE(encoding::from_utf8(ClientEncoding::latin1, "表", out));
  CHECK(encoding::from_utf8(ClientEncoding::utf8, "表", out));
  CHECK(out == "表");
}

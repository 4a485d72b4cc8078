// libFuzzer target `grammar`: one statement (the text of a Parse message)
// through parser_ext::parse_statement, the API TOKEN grammar, under the
// session's client_encoding and standard_conforming_strings.
//
// Input: <settings byte> <statement text, any bytes>; see sql_options.hpp.
//
// Properties besides "no crash, no UB, no leak":
// - the cheap classifier never turns away a statement the grammar accepts, and
//   whenever it lets one through, the result is the unfiltered parse's;
// - errors carry a known SQLSTATE, a message, and positions inside the text;
// - a parsed statement, written back as SQL (names as quoted identifiers,
//   strings as standard literals, UTF-8), parses to the same statement;
// - the same statement after "SELECT 1; " parses the same way, its error
//   positions moved by exactly those 10 characters.
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "fuzz_support.hpp"
#include "parser_ext/classifier.hpp"
#include "parser_ext/encoding.hpp"
#include "parser_ext/parser.hpp"
#include "sql_options.hpp"

using namespace tokengate::parser_ext;
using tokengate::fuzz::describe;
using tokengate::fuzz::printable;

namespace {

LexOptions g_options;

std::string where(std::string_view q) { return printable(q) + "\n(" + describe(g_options) + ")"; }

std::string ident(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string literal(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += '\'';
    out += c;
  }
  return out + "'";
}

std::string for_user(const std::optional<std::string>& role) {
  return role ? " FOR USER " + ident(*role) : "";
}

// The statement as SQL that must parse back to it.
struct Render {
  std::string operator()(const CreateApiToken& s) const {
    std::string q = "CREATE API TOKEN";
    if (s.name) q += " " + ident(*s.name);
    q += for_user(s.for_user);
    if (s.max_duration) q += " MAX DURATION " + literal(*s.max_duration);
    if (s.comment) q += " COMMENT " + literal(*s.comment);
    return q;
  }
  std::string operator()(const ShowApiTokens& s) const {
    return std::string(s.include_ended ? "SHOW ALL API TOKENS" : "SHOW API TOKENS") + (s.all_users ? " FOR ALL USERS" : for_user(s.for_user));
  }
  std::string operator()(const AlterApiTokenSetComment& s) const {
    return "ALTER API TOKEN " + ident(s.name) + for_user(s.for_user) + " SET COMMENT " +
           (s.comment ? literal(*s.comment) : "NULL");
  }
  std::string operator()(const DropApiToken& s) const {
    return std::string("DROP API TOKEN ") + (s.if_exists ? "IF EXISTS " : "") + ident(s.name) + for_user(s.for_user);
  }
  std::string operator()(const DropAllApiTokens& s) const { return "DROP ALL API TOKENS" + for_user(s.for_user); }
  std::string operator()(const AlterRoleSetApiTokenMaxDuration& s) const {
    return "ALTER ROLE " + ident(s.role) + " SET API TOKEN MAX DURATION " + literal(s.max_duration);
  }
  std::string operator()(const AlterRoleResetApiTokenMaxDuration& s) const {
    return "ALTER ROLE " + ident(s.role) + " RESET API TOKEN MAX DURATION";
  }
  std::string operator()(const ShowApiTokenPolicies& s) const {
    return "SHOW API TOKEN POLICIES" + for_user(s.for_user);
  }
  std::string operator()(const ShowTokengateInstances&) const { return "SHOW TOKENGATE INSTANCES"; }
  std::string operator()(const ShowTokengateView& s) const {
    switch (s.view) {
      case ShowTokengateView::View::sessions: return "SHOW TOKENGATE SESSIONS";
      case ShowTokengateView::View::status: return "SHOW TOKENGATE STATUS";
      case ShowTokengateView::View::config: return "SHOW TOKENGATE CONFIG";
    }
    return "";
  }
};

void check_error(const ParseError& e, std::string_view q, std::string_view what) {
  auto show = [&] { return std::string(what) + ": " + to_string(e) + "\nquery: " + where(q); };
  FUZZ_CHECK(sqlstate(e.code) != "XX000", show());
  FUZZ_CHECK(!e.message.empty(), show());
  FUZZ_CHECK(e.byte_offset <= q.size(), show());
  FUZZ_CHECK(e.position >= 0 && std::size_t(e.position) <= encoding::char_count(g_options.encoding, q) + 1, show());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  g_options = tokengate::fuzz::sql_options(data[0]);
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  const ParseResult r = parse_statement(text, g_options);
  const ParseResult unfiltered = detail::parse_statement_unfiltered(text, 0, text.size(), g_options);
  const std::string copy(text);

  // The classifier is a superset of the grammar: whatever the grammar accepts
  // as an API TOKEN statement, the classifier lets through (else it would go
  // upstream). Errors are not checked: the classifier may leave a statement
  // the grammar would refuse to PostgreSQL, which refuses it too ("SHOW
  // api.4": `.4` is a number, both say 42601 at ".4").
  if (std::holds_alternative<Statement>(unfiltered)) {
    FUZZ_CHECK(could_be_api_token_statement(text), "the classifier rejects " + where(text) + ", which parses as " +
                                                      to_string(unfiltered));
  }
  if (could_be_api_token_statement(text))
    FUZZ_CHECK(r == unfiltered, "filtered " + to_string(r) + " vs unfiltered " + to_string(unfiltered));

  if (const auto* e = std::get_if<ParseError>(&r)) check_error(*e, text, "parse_statement");

  if (const auto* s = std::get_if<Statement>(&r)) {
    // The statement's strings are UTF-8 whatever the client encoding: read
    // the SQL back as UTF-8 with standard strings.
    const std::string sql = std::visit(Render{}, *s);
    const ParseResult again = parse_statement(sql);
    FUZZ_CHECK(again == r, "statement " + to_string(*s) + " written as " + printable(sql) + " parses as " +
                               to_string(again) + "\nquery: " + where(text));
  }

  // After an earlier statement in the same string, positions move, nothing else.
  static constexpr std::string_view prefix = "SELECT 1; ";
  const std::string shifted = std::string(prefix) + copy;
  const ParseResult r2 = parse_statement(shifted, prefix.size(), shifted.size(), g_options);
  auto show = [&] { return "alone: " + to_string(r) + "\nafter SELECT 1: " + to_string(r2) + "\nquery: " + where(text); };
  FUZZ_CHECK(r.index() == r2.index(), show());
  if (const auto* e = std::get_if<ParseError>(&r)) {
    const auto& e2 = std::get<ParseError>(r2);
    check_error(e2, shifted, "parse_statement after SELECT 1");
    FUZZ_CHECK(e->code == e2.code && e->message == e2.message && e->detail == e2.detail && e->hint == e2.hint,
               show());
    FUZZ_CHECK(e2.byte_offset == e->byte_offset + prefix.size(), show());
    FUZZ_CHECK(e->position == 0 ? e2.position == 0 : e2.position == e->position + int(prefix.size()), show());
  } else {
    FUZZ_CHECK(r == r2, show());
  }
  return 0;
}

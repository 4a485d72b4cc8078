// libFuzzer target `splitter`: a simple-protocol Query string through
// parser_ext::split_statements and parser_ext::plan_query, which decide which
// bytes go upstream and which statements tokengate answers itself, under the
// session's client_encoding and standard_conforming_strings.
//
// Input: <settings byte> <query text, any bytes>; see sql_options.hpp.
//
// Properties besides "no crash, no UB, no leak":
// - statement spans are non-empty, in order, without overlap, inside the text;
// - errors carry a known SQLSTATE and positions inside the text (counted in
//   characters of the client encoding);
// - when the quick `api` word search says no, the plan is the whole string as
//   one ordinary part, and indeed no statement in it is an API TOKEN statement;
// - when the string does not lex, the plan is an error or the whole string as
//   one ordinary part (PostgreSQL then reports the error and runs nothing);
// - every planned part starts and ends on statement boundaries; API TOKEN parts
//   are exactly one statement each and parse to the planned statement; no
//   ordinary run holds an API TOKEN statement; two ordinary runs never touch;
//   no statement is left out of the plan;
// - planning twice gives the same plan.
#include <algorithm>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "fuzz_support.hpp"
#include "parser_ext/classifier.hpp"
#include "parser_ext/encoding.hpp"
#include "parser_ext/split.hpp"
#include "sql_options.hpp"

using namespace tokengate::parser_ext;
using tokengate::fuzz::describe;
using tokengate::fuzz::printable;

namespace {

LexOptions g_options;

std::string where(std::string_view q) { return printable(q) + "\n(" + describe(g_options) + ")"; }

void check_error(const ParseError& e, std::string_view q, std::string_view what) {
  auto show = [&] { return std::string(what) + ": " + to_string(e) + "\nquery: " + where(q); };
  FUZZ_CHECK(sqlstate(e.code) != "XX000", show());
  FUZZ_CHECK(!e.message.empty(), show());
  FUZZ_CHECK(e.byte_offset <= q.size(), show());
  FUZZ_CHECK(e.position >= 0 && std::size_t(e.position) <= encoding::char_count(g_options.encoding, q) + 1, show());
}

std::string show_spans(const std::vector<StatementSpan>& spans) {
  std::string s;
  for (auto sp : spans) s += " [" + std::to_string(sp.begin) + "," + std::to_string(sp.end) + ")";
  return s;
}

bool whole_string_forwarded(const std::vector<QueryPart>& parts, std::size_t size) {
  return parts.size() == 1 && std::holds_alternative<OrdinarySql>(parts.front()) &&
         std::get<OrdinarySql>(parts.front()).span == (StatementSpan{0, size});
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  g_options = tokengate::fuzz::sql_options(data[0]);
  const std::string_view q(reinterpret_cast<const char*>(data + 1), size - 1);

  const auto split = split_statements(q, g_options);
  const std::vector<StatementSpan>* spans = std::get_if<std::vector<StatementSpan>>(&split);
  if (spans != nullptr) {
    std::size_t at = 0;
    for (auto sp : *spans) {
      FUZZ_CHECK(sp.begin >= at && sp.begin < sp.end && sp.end <= q.size(),
                 "bad statement spans" + show_spans(*spans) + " in " + where(q));
      at = sp.end;
    }
  } else {
    check_error(std::get<ParseError>(split), q, "split_statements");
  }

  const bool may = query_may_contain_api_token_statement(q);
  const auto plan = plan_query(q, g_options);
  FUZZ_CHECK(plan == plan_query(q, g_options), "plan_query is not deterministic on " + where(q));

  if (!may) {
    const auto* parts = std::get_if<std::vector<QueryPart>>(&plan);
    FUZZ_CHECK(parts != nullptr && whole_string_forwarded(*parts, q.size()),
               "the fast path must forward the whole string: " + where(q));
    // ...and it is right to: no statement here is an API TOKEN statement.
    if (spans != nullptr)
      for (auto sp : *spans) {
        auto r = parse_statement(q, sp.begin, sp.end, g_options);
        FUZZ_CHECK(std::holds_alternative<NotApiTokenStatement>(r),
                   "no word `api`, yet statement [" + std::to_string(sp.begin) + "," + std::to_string(sp.end) +
                       ") parses as " + to_string(r) + ": " + where(q));
      }
    return 0;
  }

  if (const auto* e = std::get_if<ParseError>(&plan)) {
    check_error(*e, q, "plan_query");
    return 0;
  }
  const auto& parts = std::get<std::vector<QueryPart>>(plan);
  if (spans == nullptr) {
    // A lexical error before any API TOKEN statement: PostgreSQL reports it.
    FUZZ_CHECK(whole_string_forwarded(parts, q.size()),
               "a Query that does not lex is planned in parts: " + where(q) + "\nsplit error: " +
                   to_string(std::get<ParseError>(split)));
    return 0;
  }
  std::set<std::size_t> begins, ends;
  for (auto sp : *spans) {
    begins.insert(sp.begin);
    ends.insert(sp.end);
  }
  std::size_t at = 0;
  bool previous_ordinary = false;
  for (const auto& p : parts) {
    const StatementSpan sp = std::visit([](const auto& x) { return x.span; }, p);
    auto show = [&] {
      return "part [" + std::to_string(sp.begin) + "," + std::to_string(sp.end) + ") of " + where(q) +
             "\nstatements:" + show_spans(*spans);
    };
    FUZZ_CHECK(sp.begin >= at && sp.begin < sp.end && sp.end <= q.size(), show());
    FUZZ_CHECK(begins.count(sp.begin) && ends.count(sp.end), "a part does not fall on statement boundaries: " + show());
    at = sp.end;
    if (const auto* api = std::get_if<ApiTokenSql>(&p)) {
      FUZZ_CHECK(std::find(spans->begin(), spans->end(), sp) != spans->end(),
                 "an API TOKEN part spans more than one statement: " + show());
      auto again = parse_statement(q, sp.begin, sp.end, g_options);
      FUZZ_CHECK(std::holds_alternative<Statement>(again) && std::get<Statement>(again) == api->statement,
                 "the planned statement differs from its parse " + to_string(again) + ": " + show());
      previous_ordinary = false;
    } else {
      FUZZ_CHECK(!previous_ordinary, "two ordinary runs next to each other: " + show());
      previous_ordinary = true;
      for (auto s : *spans)
        if (s.begin >= sp.begin && s.end <= sp.end) {
          auto r = parse_statement(q, s.begin, s.end, g_options);
          FUZZ_CHECK(std::holds_alternative<NotApiTokenStatement>(r),
                     "an ordinary run holds " + to_string(r) + ": " + show());
        }
    }
  }
  // No statement is lost: each one lies inside a part.
  for (auto s : *spans) {
    bool covered = std::any_of(parts.begin(), parts.end(), [&](const QueryPart& p) {
      const StatementSpan sp = std::visit([](const auto& x) { return x.span; }, p);
      return sp.begin <= s.begin && s.end <= sp.end;
    });
    FUZZ_CHECK(covered, "statement [" + std::to_string(s.begin) + "," + std::to_string(s.end) +
                            ") is in no part of the plan: " + where(q));
  }
  return 0;
}

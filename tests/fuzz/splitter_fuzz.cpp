// libFuzzer target `splitter`: a simple-protocol Query string through
// parser_ext::split_statements and parser_ext::plan_query, which decide which
// bytes go upstream and which statements tokengate answers itself.
//
// Input: the query text, any bytes.
//
// Properties besides "no crash, no UB, no leak":
// - statement spans are non-empty, in order, without overlap, inside the text;
// - errors carry a known SQLSTATE and positions inside the text;
// - when the quick `api` word search says no, the plan is the whole string as
//   one ordinary part, and indeed no statement in it is an API TOKEN statement;
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
#include "parser_ext/lexical.hpp"
#include "parser_ext/split.hpp"

using namespace tokengate::parser_ext;
using tokengate::fuzz::printable;

namespace {

void check_error(const ParseError& e, std::string_view q, std::string_view what) {
  auto show = [&] { return std::string(what) + ": " + to_string(e) + "\nquery: " + printable(q); };
  FUZZ_CHECK(sqlstate(e.code) != "XX000", show());
  FUZZ_CHECK(!e.message.empty(), show());
  FUZZ_CHECK(e.byte_offset <= q.size(), show());
  // Open finding (parser_ext, reported): on invalid UTF-8, split_statements
  // passes on the scanner's position, which counts bytes, not characters
  // ("\x8a\x8a|'" gives position 4 of 3); PostgreSQL refuses such a Query
  // with 22021 before splitting. Checked once the splitter verifies encodings.
  if (lexical::invalid_utf8_at(q) != lexical::npos) return;
  FUZZ_CHECK(e.position >= 0 && e.position <= lexical::char_position(q, q.size()), show());
}

std::string show_spans(const std::vector<StatementSpan>& spans) {
  std::string s;
  for (auto sp : spans) s += " [" + std::to_string(sp.begin) + "," + std::to_string(sp.end) + ")";
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view q(reinterpret_cast<const char*>(data), size);

  const auto split = split_statements(q);
  const std::vector<StatementSpan>* spans = std::get_if<std::vector<StatementSpan>>(&split);
  if (spans != nullptr) {
    std::size_t at = 0;
    for (auto sp : *spans)
      FUZZ_CHECK(sp.begin >= at && sp.begin < sp.end && sp.end <= q.size(),
                 "bad statement spans" + show_spans(*spans) + " in " + printable(q));
    for (auto sp : *spans) at = sp.end;
  } else {
    check_error(std::get<ParseError>(split), q, "split_statements");
  }

  const bool may = query_may_contain_api_token_statement(q);
  const auto plan = plan_query(q);
  FUZZ_CHECK(plan == plan_query(q), "plan_query is not deterministic on " + printable(q));

  if (!may) {
    const auto* parts = std::get_if<std::vector<QueryPart>>(&plan);
    FUZZ_CHECK(parts != nullptr && parts->size() == 1 &&
                   std::get_if<OrdinarySql>(&parts->front()) != nullptr &&
                   std::get<OrdinarySql>(parts->front()).span == (StatementSpan{0, q.size()}),
               "the fast path must forward the whole string: " + printable(q));
    // ...and it is right to: no statement here is an API TOKEN statement.
    if (spans != nullptr)
      for (auto sp : *spans) {
        auto r = parse_statement(q, sp.begin, sp.end);
        FUZZ_CHECK(std::holds_alternative<NotApiTokenStatement>(r),
                   "no word `api`, yet statement [" + std::to_string(sp.begin) + "," + std::to_string(sp.end) +
                       ") parses as " + to_string(r) + ": " + printable(q));
      }
    return 0;
  }

  if (const auto* e = std::get_if<ParseError>(&plan)) {
    check_error(*e, q, "plan_query");
    return 0;
  }
  FUZZ_CHECK(spans != nullptr, "plan_query succeeded where split_statements failed: " + printable(q));
  const auto& parts = std::get<std::vector<QueryPart>>(plan);
  std::set<std::size_t> begins, ends;
  for (auto sp : *spans) {
    begins.insert(sp.begin);
    ends.insert(sp.end);
  }
  std::size_t at = 0;
  bool previous_ordinary = false;
  for (const auto& p : parts) {
    const StatementSpan sp = std::visit([](const auto& x) { return x.span; }, p);
    auto show = [&] { return "part [" + std::to_string(sp.begin) + "," + std::to_string(sp.end) + ") of " + printable(q) + "\nstatements:" + show_spans(*spans); };
    FUZZ_CHECK(sp.begin >= at && sp.begin < sp.end && sp.end <= q.size(), show());
    FUZZ_CHECK(begins.count(sp.begin) && ends.count(sp.end), "a part does not fall on statement boundaries: " + show());
    at = sp.end;
    if (const auto* api = std::get_if<ApiTokenSql>(&p)) {
      FUZZ_CHECK(std::find(spans->begin(), spans->end(), sp) != spans->end(),
                 "an API TOKEN part spans more than one statement: " + show());
      auto again = parse_statement(q, sp.begin, sp.end);
      FUZZ_CHECK(std::holds_alternative<Statement>(again) && std::get<Statement>(again) == api->statement,
                 "the planned statement differs from its parse " + to_string(again) + ": " + show());
      previous_ordinary = false;
    } else {
      FUZZ_CHECK(!previous_ordinary, "two ordinary runs next to each other: " + show());
      previous_ordinary = true;
      for (auto s : *spans)
        if (s.begin >= sp.begin && s.end <= sp.end) {
          auto r = parse_statement(q, s.begin, s.end);
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
                            ") is in no part of the plan: " + printable(q));
  }
  return 0;
}

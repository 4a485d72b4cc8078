// Catch2 printers and helpers shared by the parser_ext unit tests.
#pragma once

#include <catch2/catch.hpp>

#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "parser_ext/ast.hpp"
#include "parser_ext/parser.hpp"
#include "parser_ext/split.hpp"

namespace Catch {
template <>
struct StringMaker<tokengate::parser_ext::Statement> {
  static std::string convert(const tokengate::parser_ext::Statement& s) {
    return tokengate::parser_ext::to_string(s);
  }
};
template <>
struct StringMaker<tokengate::parser_ext::ParseResult> {
  static std::string convert(const tokengate::parser_ext::ParseResult& r) {
    return tokengate::parser_ext::to_string(r);
  }
};
template <>
struct StringMaker<tokengate::parser_ext::ParseError> {
  static std::string convert(const tokengate::parser_ext::ParseError& e) {
    return tokengate::parser_ext::to_string(e);
  }
};
}  // namespace Catch

namespace parser_ext_test {

using namespace tokengate::parser_ext;

// A ParseError as tests write it: SQLSTATE, message, 1-based position.
struct ExpectedError {
  std::string sqlstate;
  std::string message;
  int position;
};

inline std::string describe(const ParseResult& r) { return to_string(r); }

// "42601 syntax error at or near "x" @12" for readable comparisons.
inline std::string error_summary(const ParseResult& r) {
  if (const auto* e = std::get_if<ParseError>(&r))
    return std::string(sqlstate(e->code)) + " " + e->message + " @" +
           std::to_string(e->position);
  return "not an error: " + to_string(r);
}
inline std::string error_summary(const std::variant<std::vector<QueryPart>, ParseError>& p) {
  if (const auto* e = std::get_if<ParseError>(&p)) return error_summary(ParseResult{*e});
  return "not an error: a plan of " +
         std::to_string(std::get<std::vector<QueryPart>>(p).size()) + " part(s)";
}
inline std::string error_summary(const ExpectedError& e) {
  return e.sqlstate + " " + e.message + " @" + std::to_string(e.position);
}

}  // namespace parser_ext_test

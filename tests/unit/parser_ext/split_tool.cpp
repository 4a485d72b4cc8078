// Test helper: splits Query strings read from stdin and prints the statements, for comparing with PostgreSQL.
//
// Input, one request per line: "<scs 0|1> <client_encoding> <hex of the query bytes>".
// Output, one line per request: "ok <n> <b1>-<e1> <b2>-<e2> …" (statement spans,
// bytes, as split_statements gives them) or "error <SQLSTATE> <position> <hex of message>".
#include <iostream>
#include <sstream>
#include <string>

#include "parser_ext/split.hpp"

namespace {

std::string from_hex(const std::string& h) {
  std::string out;
  for (std::size_t i = 0; i + 1 < h.size(); i += 2)
    out += static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16));
  return out;
}

std::string to_hex(const std::string& s) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

}  // namespace

int main() {
  using namespace tokengate::parser_ext;
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    int scs = 1;
    std::string encoding, hex;
    in >> scs >> encoding >> hex;
    const std::string query = from_hex(hex);
    const LexOptions options{scs != 0, client_encoding_from_name(encoding)};
    const auto r = split_statements(query, options);
    if (const auto* e = std::get_if<ParseError>(&r)) {
      std::cout << "error " << sqlstate(e->code) << ' ' << e->position << ' ' << to_hex(e->message)
                << '\n';
    } else {
      const auto& spans = std::get<std::vector<StatementSpan>>(r);
      std::cout << "ok " << spans.size();
      for (const auto& s : spans) std::cout << ' ' << s.begin << '-' << s.end;
      std::cout << '\n';
    }
    std::cout.flush();
  }
  return 0;
}

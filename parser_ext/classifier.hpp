// Cheap pre-filters that decide whether SQL text could hold an API TOKEN statement.
#pragma once

#include <string_view>

namespace tokengate::parser_ext {

// True if the statement starting at the beginning of `sql` (after whitespace and
// comments) could be an API TOKEN statement, judged by its leading keywords:
//   CREATE API …, ALTER API …, DROP API …, DROP ALL API …, SHOW API <word> …,
//   ALTER {USER|ROLE} <role> {SET|RESET} API TOKEN …, SHOW TOKENGATE <word> …
// Never false for a statement that parse_statement would accept or reject as an
// API TOKEN statement (the parser is the authority; a true here only means
// "scan and parse it"). Looks only at `sql` during the call; no allocation.
// Ordinary statements are rejected after the first keyword or two.
[[nodiscard]] bool could_be_api_token_statement(std::string_view sql) noexcept;

// True if any statement of a multi-statement Query string could be an API
// TOKEN statement. Implemented as a search for the bare word `api` (ASCII case
// insensitive, not part of a longer identifier): every API TOKEN statement
// contains it, so false means the whole string can go upstream without
// splitting. SHOW TOKENGATE INSTANCES, which has no `api`, is found only as
// the Query's first statement. False positives (a column named api, a string mentioning it) only
// cost a split. O(size), no allocation.
[[nodiscard]] bool query_may_contain_api_token_statement(std::string_view query) noexcept;

}  // namespace tokengate::parser_ext

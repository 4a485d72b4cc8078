// Does a Query set a role's password? (CREATE/ALTER ROLE|USER|GROUP … PASSWORD), lexed as PostgreSQL would.
#pragma once

#include <string_view>

#include "parser_ext/lexer.hpp"

namespace tokengate::parser_ext {

// True if any statement of `sql` (a simple-protocol Query or a Parse text) is
// CREATE or ALTER ROLE|USER|GROUP with a PASSWORD option: PASSWORD 'p',
// ENCRYPTED PASSWORD 'p' or PASSWORD NULL.
//
// Exact where it can be: statements are delimited by the same lexer as
// plan_query, under the session's settings, and each candidate is parsed by
// libpg_query (PostgreSQL 15's grammar). Fails closed (true) where it cannot
// be: a candidate that does not parse, is longer than
// max_api_token_statement_bytes, or cannot be lexed (unknown client
// encoding, an unterminated literal inside it), and a Query with more than
// max_api_token_statements_per_query candidates.
//
// Cost: a Query without the bare word `password` (ASCII case-insensitive,
// not inside a longer identifier) is rejected by one pass at memchr-like
// speed, with no lexing and no allocation. Otherwise O(size) time and O(1)
// memory beyond one candidate statement.
//
// It sees only statements as they are written. Dynamic SQL (a DO block or a
// function running EXECUTE 'ALTER ROLE …') changes a password without any
// such statement in the Query; no pre-parser can see that.
[[nodiscard]] bool changes_role_password(std::string_view sql, const LexOptions& options = {});

// The pre-filter alone: the bare word `password` occurs somewhere in `sql`.
[[nodiscard]] bool query_may_change_role_password(std::string_view sql) noexcept;

}  // namespace tokengate::parser_ext

// Cheap pre-filters that decide whether SQL text could hold an API TOKEN statement.
#pragma once

#include <string_view>

namespace tokengate::parser_ext {

// True if the statement starting at the beginning of `sql` (after whitespace,
// comments and empty statements `;`) could be an API TOKEN statement, judged
// by its leading keywords:
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

// What a transaction-control statement does, by PostgreSQL 15's grammar
// (TransactionStmt and TransactionStmtLegacy in gram.y).
enum class TxControl {
  none,                   // not a transaction-control statement
  begin,                  // BEGIN [WORK|TRANSACTION] …, START TRANSACTION …
  commit,                 // COMMIT|END [WORK|TRANSACTION] [AND NO CHAIN]
  rollback,               // ROLLBACK|ABORT [WORK|TRANSACTION] [AND NO CHAIN]
  commit_and_chain,       // COMMIT|END … AND CHAIN
  rollback_and_chain,     // ROLLBACK|ABORT … AND CHAIN
  rollback_to_savepoint,  // ROLLBACK [WORK|TRANSACTION] TO [SAVEPOINT] name
  savepoint,              // SAVEPOINT name
  release_savepoint,      // RELEASE [SAVEPOINT] name
  prepare_transaction,    // PREPARE TRANSACTION 'gid'
  commit_prepared,        // COMMIT PREPARED 'gid'
  rollback_prepared,      // ROLLBACK PREPARED 'gid'
};

// Classifies ONE statement (split a multi-statement Query first) by its
// leading keywords, after whitespace and comments; keywords are unquoted
// words in any case. Looks no further than the keywords that decide the
// kind, so a statement with a syntax error later on is still classified by
// its start (PostgreSQL would reject it). No allocation, O(1) beyond leading
// comments. `PREPARE transaction AS …` (a prepared statement named
// "transaction") is none.
[[nodiscard]] TxControl classify_transaction_control(std::string_view sql) noexcept;

// "none", "begin", "commit_and_chain", … for logs and tests. Static storage.
[[nodiscard]] std::string_view tx_control_name(TxControl t) noexcept;

}  // namespace tokengate::parser_ext

// PostgreSQL 15's SQL lexer (scan.l) for statement boundaries: session settings, O(1) memory.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "parser_ext/encoding.hpp"
#include "parser_ext/errors.hpp"

namespace tokengate::parser_ext {

// The session settings that change how PostgreSQL lexes a Query. Track them
// from the upstream's ParameterStatus messages. PostgreSQL lexes a whole
// Query string with the settings in force when it arrives, so a `SET` inside
// the same Query only affects the next one.
struct LexOptions {
  // standard_conforming_strings: off makes '…' strings take backslash escapes
  // ('x\'' is one string), and U&'…' an error.
  bool standard_conforming_strings = true;
  // client_encoding: how the bytes form characters. In client-only encodings
  // (SJIS, BIG5, GBK, UHC, GB18030, JOHAB) the second byte of a character may
  // be a backslash, which then does not escape anything.
  ClientEncoding encoding = ClientEncoding::utf8;
  bool operator==(const LexOptions&) const = default;
};

// Token classes, as far as statement boundaries and tests need them.
enum class TokenKind {
  line_comment,        // -- … (up to, not including, the newline)
  block_comment,       // /* … */, nested
  word,                // identifier or keyword, unquoted (also the N of N'…')
  quoted_identifier,   // "…"
  unicode_identifier,  // U&"…"
  string,              // '…' (with backslash escapes when standard_conforming_strings is off)
  extended_string,     // E'…'
  unicode_string,      // U&'…'
  bit_string,          // B'…'
  hex_string,          // X'…'
  dollar_string,       // $tag$…$tag$
  number,              // 1, 1.5, .5, 1e10
  parameter,           // $1
  operator_,           // + - * / < > = ~ ! @ # % ^ & | ` ? and runs of them, :: := => <= >= <> != ..
  punctuation,         // ; ( ) , [ ] . : and any other single character
};

// One token: bytes [begin, end) of the text. A string token runs from its
// prefix or opening quote to its closing quote, including every part it is
// continued with ('a'⏎'b' is one token).
struct Token {
  TokenKind kind = TokenKind::punctuation;
  std::size_t begin = 0;
  std::size_t end = 0;
};

// What went wrong where; turned into PostgreSQL's ErrorResponse fields by
// to_parse_error, which allocates (the lexer itself never does).
enum class LexErrc {
  invalid_character,      // a byte sequence PostgreSQL's verifier rejects (22021)
  no_equivalent,          // a character no conversion maps (22P05)
  unsupported_encoding,   // non-ASCII in ClientEncoding::unknown (0A000)
  unterminated_comment,
  unterminated_bit_string,
  unterminated_hex_string,
  unterminated_string,
  unterminated_dollar_string,
  unterminated_identifier,
  zero_length_identifier,
  unicode_string_without_scs,  // U&'…' with standard_conforming_strings off (0A000)
  unsafe_backslash_quote,      // \' in a client-only encoding (22P06)
  invalid_unicode_escape,      // E'\u12' (22025)
  invalid_unicode_escape_value,  // E'\u0000'
  invalid_surrogate_pair,
  trailing_junk_number,
  trailing_junk_parameter,
  operator_too_long,
};

struct LexError {
  LexErrc code = LexErrc::invalid_character;
  std::size_t at = 0;        // where PostgreSQL puts the error cursor (a byte offset)
  std::size_t near_end = 0;  // the "at or near" text is [at, near_end); at == size(): end of input
  std::size_t token_begin = 0;  // where the token being lexed began
};

// Converts a lexer error into the ErrorResponse fields PostgreSQL sends.
// `text` is the whole Query string the lexer ran on (positions count from its
// start). The quoted "at or near" text is cut to max_error_excerpt_bytes.
[[nodiscard]] ParseError to_parse_error(std::string_view text, const LexError& e,
                                        const LexOptions& options);

// The first byte sequence at or after `from` that the client encoding rejects
// (PostgreSQL checks the whole Query before it lexes any of it), or nullopt.
// O(size), no allocation.
[[nodiscard]] std::optional<LexError> verify_encoding(std::string_view text,
                                                      const LexOptions& options,
                                                      std::size_t from = 0) noexcept;

// The most bytes of the query an error message quotes ("at or near …").
// PostgreSQL quotes everything from the token to the end of the string, which
// for an unterminated literal is the rest of a Query of any size; 1 KiB keeps
// the message readable and the allocation small.
inline constexpr std::size_t max_error_excerpt_bytes = 1024;

// PostgreSQL's lexer, run lazily over `text` from byte `pos`: each next() is
// one token (comments included). It keeps no more than a few offsets, never
// allocates, and reads every byte at most a few times, so it costs the same
// whatever the text's size. It checks the text against the client encoding as
// it goes, as PostgreSQL does before lexing, and steps over whole characters:
// a multibyte character is, to every rule, one letter.
class Lexer {
 public:
  Lexer(std::string_view text, const LexOptions& options, std::size_t pos = 0) noexcept
      : s_(text), o_(options), i_(pos < text.size() ? pos : text.size()) {}

  // The next token; false at the end of the text or on an error (see error()).
  bool next(Token& out) noexcept;
  [[nodiscard]] const LexError* error() const noexcept { return failed_ ? &err_ : nullptr; }
  // Byte offset of the next unread byte.
  [[nodiscard]] std::size_t position() const noexcept { return i_; }

 private:
  // Length of the character at i (1 for ASCII); 0 after recording an error.
  std::size_t char_at(std::size_t i) noexcept;
  bool fail(LexErrc code, std::size_t at, std::size_t near_end, std::size_t token_begin) noexcept;
  bool quoted(Token& out, std::size_t begin, std::size_t quote, TokenKind kind) noexcept;
  bool quoted_identifier(Token& out, std::size_t begin, std::size_t quote, TokenKind kind) noexcept;
  bool dollar_quoted(Token& out, std::size_t begin, std::size_t tag_end) noexcept;
  bool block_comment(Token& out, std::size_t begin) noexcept;
  // End of the identifier characters (scan.l ident_cont) from k; npos on an encoding error.
  std::size_t identifier_end(std::size_t k) noexcept;
  bool number(Token& out, std::size_t begin) noexcept;
  bool operator_run(Token& out, std::size_t begin) noexcept;
  bool backslash_escape(std::size_t& i, std::size_t token_begin, char32_t& high_surrogate) noexcept;
  // After a closing quote at q: the quote that continues the string, or npos.
  [[nodiscard]] std::size_t continuation(std::size_t after_quote) const noexcept;

  std::string_view s_;
  LexOptions o_;
  std::size_t i_;
  bool failed_ = false;
  LexError err_;
};

// Splits text into statements at the `;` tokens outside parentheses, which is
// where PostgreSQL's grammar can end one (a `;` inside parentheses belongs to
// a CREATE RULE action list). Like the lexer, it uses O(1) memory.
//
// One place where PostgreSQL's grammar does not end a statement at such a
// `;`: the body of CREATE FUNCTION … BEGIN ATOMIC … END. The splitter ends it
// there anyway. That never runs anything PostgreSQL would not: the part before
// such a `;` is not a complete statement, so PostgreSQL rejects it when it is
// sent upstream on its own, and tokengate stops at the first error.
class StatementSplitter {
 public:
  StatementSplitter(std::string_view text, const LexOptions& options, std::size_t pos = 0) noexcept
      : s_(text), lexer_(text, options, pos), begin_(pos < text.size() ? pos : text.size()) {}

  // The next statement that holds a token: from just after the previous `;`
  // (or the start) to just before the next `;` (or the end), leading and
  // trailing comments and whitespace included. Statements with no token
  // (";;", a lone comment) are skipped. False at the end or on an error.
  bool next(std::size_t& begin, std::size_t& end) noexcept;
  // Of the statement next() returned last: its first and last token.
  [[nodiscard]] std::size_t first_token() const noexcept { return first_; }
  [[nodiscard]] std::size_t last_token_end() const noexcept { return last_end_; }
  // On an error: where the statement in which it happened began, and the
  // error. The text from statement_begin() to the error lexes fine.
  [[nodiscard]] const LexError* error() const noexcept { return lexer_.error(); }
  [[nodiscard]] std::size_t statement_begin() const noexcept { return begin_; }
  // Where the statement began, not counting comments and whitespace (the
  // error position if no token came before it).
  [[nodiscard]] std::size_t statement_first_token() const noexcept;
  // Byte offset of the next unread byte.
  [[nodiscard]] std::size_t position() const noexcept { return lexer_.position(); }

 private:
  std::string_view s_;
  Lexer lexer_;
  std::size_t begin_;
  std::size_t first_ = 0;
  std::size_t last_end_ = 0;
  bool has_token_ = false;
};

}  // namespace tokengate::parser_ext

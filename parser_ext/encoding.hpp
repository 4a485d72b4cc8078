// PostgreSQL's client encodings: names, PostgreSQL's byte-sequence checks, conversion to UTF-8.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "parser_ext/errors.hpp"

namespace tokengate::parser_ext {

// Every encoding PostgreSQL 15 accepts as client_encoding, in the order of its
// `pg_enc` enum (src/include/mb/pg_wchar.h), plus `unknown`.
enum class ClientEncoding : unsigned char {
  sql_ascii, euc_jp, euc_cn, euc_kr, euc_tw, euc_jis_2004, utf8, mule_internal,
  latin1, latin2, latin3, latin4, latin5, latin6, latin7, latin8, latin9, latin10,
  win1256, win1258, win866, win874, koi8r, win1251, win1252,
  iso_8859_5, iso_8859_6, iso_8859_7, iso_8859_8,
  win1250, win1253, win1254, win1255, win1257, koi8u,
  // Client-only encodings: the second byte of a character may be an ASCII
  // byte such as a backslash. PostgreSQL lexes the text after converting it
  // to the server encoding, so these bytes never act as ASCII there.
  sjis, big5, gbk, uhc, gb18030, johab, shift_jis_2004,
  // A name tokengate does not know (a newer PostgreSQL, or garbage). The
  // splitter lexes ASCII exactly and refuses to split a Query that holds any
  // other byte: every PostgreSQL encoding is a superset of ASCII, so ASCII
  // text means the same in all of them, and nothing else can be trusted.
  unknown,
};

// The encoding for a name as PostgreSQL reports it in ParameterStatus
// `client_encoding` ("UTF8", "SJIS", "LATIN1", ...) or accepts in SET
// client_encoding ("utf-8", "Shift_JIS", "win932", ...): case and anything
// but letters and digits are ignored, as in PostgreSQL's pg_char_to_encoding.
// Unrecognised names give ClientEncoding::unknown (see there why that is safe).
[[nodiscard]] ClientEncoding client_encoding_from_name(std::string_view name) noexcept;

// PostgreSQL's name ("UTF8", "SHIFT_JIS_2004", ...); "unknown" for unknown.
// Static storage.
[[nodiscard]] std::string_view encoding_name(ClientEncoding e) noexcept;

// PostgreSQL's PG_ENCODING_IS_CLIENT_ONLY: SJIS, BIG5, GBK, UHC, GB18030,
// JOHAB, SHIFT_JIS_2004.
[[nodiscard]] constexpr bool is_client_only(ClientEncoding e) noexcept {
  return e >= ClientEncoding::sjis && e <= ClientEncoding::shift_jis_2004;
}

namespace encoding {

// Result of checking the character at the start of a byte range.
enum : int {
  invalid = -1,         // PostgreSQL's verifier rejects it (22021)
  no_equivalent = -2,   // accepted by the verifier, but no conversion maps it (22P05)
  unsupported = -3,     // non-ASCII byte in an unknown encoding
};

// PostgreSQL's pg_encoding_verifymbchar (plus its NUL check) for the character
// at s[0..len): its length in bytes, or one of the negative codes above.
// len must be > 0. For BIG5, GBK and UHC a second byte below 0x40 is
// `no_equivalent`: PostgreSQL's verifier lets it through, but no conversion
// table maps it, so PostgreSQL always rejects the Query; refusing it here keeps
// the quote, semicolon and comment bytes from ever hiding inside a character.
[[nodiscard]] int verify_char(ClientEncoding e, const unsigned char* s, std::size_t len) noexcept;

// Length of the character at s[0..len) by its first byte(s), never more than
// len and at least 1 (PostgreSQL's pg_encoding_mblen, bounded).
[[nodiscard]] std::size_t char_length(ClientEncoding e, const unsigned char* s,
                                      std::size_t len) noexcept;

// Characters in s, counted as PostgreSQL counts them for error positions
// (pg_mbstrlen_with_len on the converted text: one per character). Bytes that
// do not form a valid character count one each.
[[nodiscard]] std::size_t char_count(ClientEncoding e, std::string_view s) noexcept;

// Byte offset of the character `chars` characters after byte offset `from`.
[[nodiscard]] std::size_t advance_chars(ClientEncoding e, std::string_view s, std::size_t from,
                                        std::size_t chars) noexcept;

// PostgreSQL's error for a rejected character at s[0..len) (code from
// verify_char), e.g. 22021 `invalid byte sequence for encoding "SJIS": 0x81
// 0x20`. No position: PostgreSQL gives none for these.
[[nodiscard]] ParseError character_error(ClientEncoding e, int code, const unsigned char* s,
                                         std::size_t len);

// "0x81 0x27": the bytes PostgreSQL prints for a character (at most 8).
[[nodiscard]] std::string byte_sequence_text(const unsigned char* s, std::size_t len);

// Converts text in the client encoding to UTF-8 (the token store's encoding)
// into `out`. ASCII bytes are copied as they are (PostgreSQL treats them as
// ASCII in every encoding); other characters go through iconv. On failure
// returns the error (with byte_offset relative to `in`, position 0) and
// leaves `out` unspecified. SQL_ASCII text is taken to be UTF-8 already and is
// only checked. Allocates at most a small multiple of in.size().
[[nodiscard]] std::optional<ParseError> to_utf8(ClientEncoding e, std::string_view in,
                                                std::string& out);

// Converts UTF-8 text (a token name, a comment, an error message) into the
// client encoding, for results and errors sent to the client. ASCII is copied;
// false if some character has no equivalent (or the encoding has no
// conversion), and then `out` is unspecified. SQL_ASCII gets the UTF-8 bytes.
[[nodiscard]] bool from_utf8(ClientEncoding e, std::string_view utf8, std::string& out);

}  // namespace encoding

}  // namespace tokengate::parser_ext

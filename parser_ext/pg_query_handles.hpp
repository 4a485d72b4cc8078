// Thin RAII owners of libpg_query results (scanner tokens and statement splits).
#pragma once

#include <pg_query.h>

#include <cstddef>
#include <span>

struct PgQuery__ScanResult;
struct PgQuery__ScanToken;
struct PgQuery__ParseResult;
struct PgQuery__RawStmt;

namespace tokengate::parser_ext {

// Owns a PgQueryScanResult and its unpacked protobuf message.
// Movable, not copyable; the destructor frees both.
class ScanResult {
 public:
  // Runs pg_query_scan. `nul_terminated` must stay alive only for the call:
  // tokens carry byte offsets into it, not pointers.
  [[nodiscard]] static ScanResult scan(const char* nul_terminated);

  ScanResult() noexcept = default;
  ScanResult(ScanResult&& other) noexcept;
  ScanResult& operator=(ScanResult&& other) noexcept;
  ScanResult(const ScanResult&) = delete;
  ScanResult& operator=(const ScanResult&) = delete;
  ~ScanResult();

  // The scanner's error (message, 1-based character cursorpos), or nullptr.
  // Valid as long as this object lives. Also non-null when unpacking failed.
  [[nodiscard]] const PgQueryError* error() const noexcept;
  // The tokens, comments included, in order. Empty when error() is set.
  // The span and the pointed-to tokens live as long as this object.
  [[nodiscard]] std::span<PgQuery__ScanToken* const> tokens() const noexcept;

 private:
  void reset() noexcept;
  PgQueryScanResult raw_{};
  PgQuery__ScanResult* unpacked_ = nullptr;
  bool owns_raw_ = false;
  PgQueryError unpack_error_{};
};

// Sets libpg_query's scanner settings for the calls made while it lives, and
// restores the previous ones. They are thread-local variables inside
// libpg_query (PostgreSQL's GUCs standard_conforming_strings and
// escape_string_warning), read when a scan or parse starts.
class ScannerSettings {
 public:
  explicit ScannerSettings(bool standard_conforming_strings) noexcept;
  ScannerSettings(const ScannerSettings&) = delete;
  ScannerSettings& operator=(const ScannerSettings&) = delete;
  ~ScannerSettings();

 private:
  bool saved_scs_;
  bool saved_warning_;
};

// Owns a PgQueryProtobufParseResult and its unpacked parse tree.
class ParseTree {
 public:
  // Runs pg_query_parse_protobuf on a NUL-terminated string.
  [[nodiscard]] static ParseTree parse(const char* nul_terminated);

  ParseTree() noexcept = default;
  ParseTree(ParseTree&& other) noexcept;
  ParseTree& operator=(ParseTree&& other) noexcept;
  ParseTree(const ParseTree&) = delete;
  ParseTree& operator=(const ParseTree&) = delete;
  ~ParseTree();

  // The parser's error, or nullptr; also non-null when unpacking failed.
  [[nodiscard]] const PgQueryError* error() const noexcept;
  // The statements; empty when error() is set. Valid as long as this object lives.
  [[nodiscard]] std::span<PgQuery__RawStmt* const> statements() const noexcept;

 private:
  void reset() noexcept;
  PgQueryProtobufParseResult raw_{};
  PgQuery__ParseResult* unpacked_ = nullptr;
  bool owns_raw_ = false;
  PgQueryError unpack_error_{};
};

// Owns a PgQuerySplitResult (from pg_query_split_with_scanner).
class SplitResult {
 public:
  // Runs pg_query_split_with_scanner; offsets refer to `nul_terminated`.
  [[nodiscard]] static SplitResult split_with_scanner(const char* nul_terminated);

  SplitResult() noexcept = default;
  SplitResult(SplitResult&& other) noexcept;
  SplitResult& operator=(SplitResult&& other) noexcept;
  SplitResult(const SplitResult&) = delete;
  SplitResult& operator=(const SplitResult&) = delete;
  ~SplitResult();

  // Valid as long as this object lives; nullptr on success.
  [[nodiscard]] const PgQueryError* error() const noexcept;
  // Statements (byte location and length); valid as long as this object lives.
  [[nodiscard]] std::span<PgQuerySplitStmt* const> statements() const noexcept;

 private:
  void reset() noexcept;
  PgQuerySplitResult raw_{};
  bool owns_raw_ = false;
};

}  // namespace tokengate::parser_ext

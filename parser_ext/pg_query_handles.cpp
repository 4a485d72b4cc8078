// RAII owners of libpg_query results: implementation.
#include "parser_ext/pg_query_handles.hpp"

#include <pg_query/pg_query.pb-c.h>

#include <cstring>
#include <utility>

// libpg_query's copies of PostgreSQL's lexer GUCs (src/backend/parser/scan.l),
// thread-local in libpg_query.so.
extern "C" {
extern __thread bool standard_conforming_strings;
extern __thread bool escape_string_warning;
}

namespace tokengate::parser_ext {

ScannerSettings::ScannerSettings(bool scs) noexcept
    : saved_scs_(standard_conforming_strings), saved_warning_(escape_string_warning) {
  standard_conforming_strings = scs;
  // The warnings would only go to libpg_query's captured stderr.
  escape_string_warning = false;
}

ScannerSettings::~ScannerSettings() {
  standard_conforming_strings = saved_scs_;
  escape_string_warning = saved_warning_;
}

ParseTree ParseTree::parse(const char* nul_terminated) {
  ParseTree r;
  r.raw_ = pg_query_parse_protobuf(nul_terminated);
  r.owns_raw_ = true;
  if (r.raw_.error == nullptr) {
    r.unpacked_ = pg_query__parse_result__unpack(
        nullptr, r.raw_.parse_tree.len, reinterpret_cast<const uint8_t*>(r.raw_.parse_tree.data));
    if (r.unpacked_ == nullptr) {
      static char message[] = "could not unpack the parse tree";
      static char funcname[] = "pg_query__parse_result__unpack";
      r.unpack_error_.message = message;
      r.unpack_error_.funcname = funcname;
      r.unpack_error_.cursorpos = 0;
    }
  }
  return r;
}

ParseTree::ParseTree(ParseTree&& other) noexcept
    : raw_(other.raw_),
      unpacked_(std::exchange(other.unpacked_, nullptr)),
      owns_raw_(std::exchange(other.owns_raw_, false)),
      unpack_error_(other.unpack_error_) {}

ParseTree& ParseTree::operator=(ParseTree&& other) noexcept {
  if (this != &other) {
    reset();
    raw_ = other.raw_;
    unpacked_ = std::exchange(other.unpacked_, nullptr);
    owns_raw_ = std::exchange(other.owns_raw_, false);
    unpack_error_ = other.unpack_error_;
  }
  return *this;
}

ParseTree::~ParseTree() { reset(); }

void ParseTree::reset() noexcept {
  if (unpacked_ != nullptr) pg_query__parse_result__free_unpacked(unpacked_, nullptr);
  if (owns_raw_) pg_query_free_protobuf_parse_result(raw_);
  unpacked_ = nullptr;
  owns_raw_ = false;
  raw_ = {};
}

const PgQueryError* ParseTree::error() const noexcept {
  if (raw_.error != nullptr) return raw_.error;
  if (owns_raw_ && unpacked_ == nullptr) return &unpack_error_;
  return nullptr;
}

std::span<PgQuery__RawStmt* const> ParseTree::statements() const noexcept {
  if (unpacked_ == nullptr) return {};
  return {unpacked_->stmts, unpacked_->n_stmts};
}

ScanResult ScanResult::scan(const char* nul_terminated) {
  ScanResult r;
  r.raw_ = pg_query_scan(nul_terminated);
  r.owns_raw_ = true;
  if (r.raw_.error == nullptr) {
    r.unpacked_ = pg_query__scan_result__unpack(
        nullptr, r.raw_.pbuf.len, reinterpret_cast<const uint8_t*>(r.raw_.pbuf.data));
    if (r.unpacked_ == nullptr) {
      static char message[] = "could not unpack the scanner result";
      static char funcname[] = "pg_query__scan_result__unpack";
      r.unpack_error_.message = message;
      r.unpack_error_.funcname = funcname;
      r.unpack_error_.cursorpos = 0;
    }
  }
  return r;
}

ScanResult::ScanResult(ScanResult&& other) noexcept
    : raw_(other.raw_),
      unpacked_(std::exchange(other.unpacked_, nullptr)),
      owns_raw_(std::exchange(other.owns_raw_, false)),
      unpack_error_(other.unpack_error_) {}

ScanResult& ScanResult::operator=(ScanResult&& other) noexcept {
  if (this != &other) {
    reset();
    raw_ = other.raw_;
    unpacked_ = std::exchange(other.unpacked_, nullptr);
    owns_raw_ = std::exchange(other.owns_raw_, false);
    unpack_error_ = other.unpack_error_;
  }
  return *this;
}

ScanResult::~ScanResult() { reset(); }

void ScanResult::reset() noexcept {
  if (unpacked_ != nullptr) pg_query__scan_result__free_unpacked(unpacked_, nullptr);
  if (owns_raw_) pg_query_free_scan_result(raw_);
  unpacked_ = nullptr;
  owns_raw_ = false;
  raw_ = {};
}

const PgQueryError* ScanResult::error() const noexcept {
  if (raw_.error != nullptr) return raw_.error;
  if (owns_raw_ && unpacked_ == nullptr) return &unpack_error_;
  return nullptr;
}

std::span<PgQuery__ScanToken* const> ScanResult::tokens() const noexcept {
  if (unpacked_ == nullptr) return {};
  return {unpacked_->tokens, unpacked_->n_tokens};
}

SplitResult SplitResult::split_with_scanner(const char* nul_terminated) {
  SplitResult r;
  r.raw_ = pg_query_split_with_scanner(nul_terminated);
  r.owns_raw_ = true;
  return r;
}

SplitResult::SplitResult(SplitResult&& other) noexcept
    : raw_(other.raw_), owns_raw_(std::exchange(other.owns_raw_, false)) {}

SplitResult& SplitResult::operator=(SplitResult&& other) noexcept {
  if (this != &other) {
    reset();
    raw_ = other.raw_;
    owns_raw_ = std::exchange(other.owns_raw_, false);
  }
  return *this;
}

SplitResult::~SplitResult() { reset(); }

void SplitResult::reset() noexcept {
  if (owns_raw_) pg_query_free_split_result(raw_);
  owns_raw_ = false;
  raw_ = {};
}

const PgQueryError* SplitResult::error() const noexcept { return raw_.error; }

std::span<PgQuerySplitStmt* const> SplitResult::statements() const noexcept {
  if (!owns_raw_ || raw_.error != nullptr || raw_.stmts == nullptr) return {};
  return {raw_.stmts, static_cast<std::size_t>(raw_.n_stmts)};
}

}  // namespace tokengate::parser_ext

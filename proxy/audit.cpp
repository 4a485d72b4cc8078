// The JSON-lines audit log (see audit.hpp). Boost.JSON stays in this file.
#include "proxy/audit.hpp"
#include "proxy/log_text.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <utility>

namespace tokengate {

namespace {

bool is_base64url(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_';
}

// Copies `in` as valid UTF-8 (each invalid byte becomes U+FFFD), cut to at
// most `max_bytes` with "…" marking the cut.
std::string valid_utf8(std::string_view in, std::size_t max_bytes) {
  static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  static constexpr std::string_view kEllipsis = "\xE2\x80\xA6";
  std::string out;
  out.reserve(in.size());
  std::size_t i = 0;
  while (i < in.size()) {
    const auto b0 = static_cast<unsigned char>(in[i]);
    std::size_t len = 0;
    std::uint32_t cp = 0;
    if (b0 < 0x80) {
      len = 1;
      cp = b0;
    } else if (b0 >= 0xC2 && b0 <= 0xDF) {
      len = 2;
      cp = b0 & 0x1F;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
      len = 3;
      cp = b0 & 0x0F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
      len = 4;
      cp = b0 & 0x07;
    }
    bool ok = len != 0 && i + len <= in.size();
    for (std::size_t k = 1; ok && k < len; ++k) {
      const auto b = static_cast<unsigned char>(in[i + k]);
      ok = (b & 0xC0) == 0x80;
      cp = (cp << 6) | (b & 0x3F);
    }
    // Overlong forms, surrogates and code points past U+10FFFF.
    if (ok && ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
               (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))))
      ok = false;
    out += ok ? in.substr(i, len) : kReplacement;
    i += ok ? len : 1;
  }
  if (out.size() > max_bytes) {
    std::size_t keep = max_bytes - kEllipsis.size();
    while (keep > 0 && (static_cast<unsigned char>(out[keep]) & 0xC0) == 0x80) --keep;  // a whole character
    out.resize(keep);
    out += kEllipsis;
  }
  return out;
}

// RFC 3339, UTC, milliseconds: 2026-11-28T17:25:26.123Z
std::string rfc3339_utc_ms(std::chrono::system_clock::time_point now) {
  const std::int64_t ms = std::chrono::floor<std::chrono::milliseconds>(now.time_since_epoch()).count();
  std::int64_t secs = ms / 1000, frac = ms % 1000;
  if (frac < 0) {
    frac += 1000;
    --secs;
  }
  const std::time_t t = static_cast<std::time_t>(secs);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(frac));
  return buf;
}

std::optional<AuditError> open_append(const std::string& path, int& fd) {
  fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
  if (fd < 0) return AuditError{"cannot open audit log " + path + ": " + std::strerror(errno)};
  return std::nullopt;
}

}  // namespace

bool looks_like_jwt(std::string_view text) {
  for (auto at = text.find("eyJ"); at != std::string_view::npos; at = text.find("eyJ", at + 1)) {
    std::size_t i = at + 3;
    while (i < text.size() && is_base64url(text[i])) ++i;
    if (i >= text.size() || text[i] != '.') continue;
    ++i;
    while (i < text.size() && is_base64url(text[i])) ++i;
    if (i < text.size() && text[i] == '.') return true;
  }
  return false;
}

AuditLog::AuditLog(std::string path) : path_(std::move(path)) {}

AuditLog::~AuditLog() {
  if (fd_ >= 0) ::close(fd_);
}

std::optional<AuditError> AuditLog::open() { return reopen(); }

std::optional<AuditError> AuditLog::reopen() {
  if (path_.empty()) return std::nullopt;
  int fresh = -1;
  if (auto err = open_append(path_, fresh)) return err;
  int old = -1;
  {
    std::lock_guard lock(mutex_);
    old = std::exchange(fd_, fresh);
  }
  if (old >= 0) ::close(old);
  return std::nullopt;
}

void AuditLog::write(const AuditEvent& e, std::chrono::system_clock::time_point now) {
  if (path_.empty()) return;

  boost::json::object line;
  boost::json::array redacted;
  line["time"] = rfc3339_utc_ms(now);
  const std::pair<const char*, const std::string*> fields[] = {
      {"event", &e.event},
      {"actor", &e.actor},
      {"owner", &e.owner},
      {"token_name", &e.token_name},
      {"tid", &e.tid},
      {"client_address", &e.client_address},
      {"application_name", &e.application_name},
      {"method", &e.method},
      {"outcome", &e.outcome},
      {"reason", &e.reason},
  };
  for (const auto& [name, value] : fields) {
    if (value->empty()) continue;
    // Checked before cutting, which could hide a token's tail; a token-shaped
    // run counts too, since a value may hold only a token's start (a user name
    // is cut at 63 bytes before it gets here).
    if (looks_like_jwt(*value) || has_token_run(*value)) {
      redacted.emplace_back(name);
      refused_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    line[name] = valid_utf8(*value, kMaxFieldBytes);
  }
  if (!redacted.empty()) line["redacted"] = std::move(redacted);

  std::string text = boost::json::serialize(line);
  text += '\n';

  std::lock_guard lock(mutex_);
  const auto mono = std::chrono::steady_clock::now();
  if (fd_ < 0) {
    note_failure(EBADF, mono);
    return;
  }
  // Another process (the command line) may append to the same file: hold the
  // file lock from finding the end to the truncate that undoes a torn line.
  while (::flock(fd_, LOCK_EX) != 0 && errno == EINTR) {
  }
  const off_t start = ::lseek(fd_, 0, SEEK_END);
  std::size_t done = 0;
  int err = 0;
  while (done < text.size()) {
    const auto n = ::write(fd_, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      err = n < 0 ? errno : ENOSPC;  // 0 bytes for a non-empty write: out of space
      break;
    }
    done += static_cast<std::size_t>(n);
  }
  // A line is whole or absent: cut off what part of it got in.
  if (done < text.size() && done > 0 && start >= 0) (void)!::ftruncate(fd_, start);
  ::flock(fd_, LOCK_UN);
  if (done < text.size()) {
    note_failure(err, mono);
    return;
  }
  if (failing_) {
    failing_ = false;
    spdlog::warn("audit log {}: writing again; {} line(s) were lost in all", path_, failed_writes_.load());
    unreported_failures_ = 0;
  }
}

void AuditLog::note_failure(int err, std::chrono::steady_clock::time_point now) {
  failed_writes_.fetch_add(1, std::memory_order_relaxed);
  ++unreported_failures_;
  failing_ = true;
  if (last_failure_log_ != std::chrono::steady_clock::time_point{} && now - last_failure_log_ < kFailureLogInterval)
    return;
  last_failure_log_ = now;
  spdlog::error("audit log {}: cannot write ({}); {} line(s) lost since the last report, {} in all", path_,
                err == EBADF ? "the file is not open" : std::strerror(err), unreported_failures_,
                failed_writes_.load());
  unreported_failures_ = 0;
}

}  // namespace tokengate

// The audit log (issue 5): one JSON line per token operation and per
// login attempt, appended to a file an operator can rotate. Never a token,
// password or key: there is no field for one, and values that look like a
// token are refused.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

namespace tokengate {

// One audited event. Empty fields are left out of the line. Every field is
// plain text about who did what; none may hold a secret. The `{}`
// initialisers let callers name only the fields they set
// (`AuditEvent{.event = "login", .actor = user}`) without -Wextra warnings.
struct AuditEvent {
  // "login", "create_token", "revoke_token", "revoke_all_tokens",
  // "set_comment", "set_policy", "reset_policy", "list_tokens", ...
  std::string event{};
  std::string actor{};             // the role that acted (the session's user)
  std::string owner{};             // the role owning the token concerned
  std::string token_name{};
  std::string tid{};               // the token id, hex
  std::string client_address{};    // IP without the port, or "[local]"
  std::string application_name{};  // as the client sent it
  std::string method{};            // logins: "token" or "password"
  std::string outcome{};           // "ok", "denied" or "error"
  std::string reason{};            // why it was denied or failed
};

struct AuditError {
  std::string message;  // names the file and the system's reason
};

// Thread-safe. Each event is one write(2) of one whole line to a file opened
// with O_APPEND, under an flock(2) shared with other processes that write the
// same file (`tokengate tokens …`), so lines never interleave, and nothing is
// buffered in the process: a line is in the file (the page cache) when
// write() returns. Not fsync'd.
//
// A line that cannot be written whole (disk full, quota, I/O error) is never
// left torn: whatever part of it reached the file is cut off again. It is
// counted (failed_writes()), and the server log says so, at most once per
// kFailureLogInterval, and once more when lines are written again.
//
// Each line: {"time":"2026-11-28T17:25:26.123Z","event":...,...} with the
// time in RFC 3339, UTC, milliseconds, then the non-empty fields in the
// order of AuditEvent. Field values are cut to kMaxFieldBytes and made valid
// UTF-8, so every line parses as JSON whatever a client put in its
// application_name.
class AuditLog {
 public:
  // Longer values (a client's application_name, an upstream error text) are
  // cut here: enough for any real name or reason, and it bounds a line.
  static constexpr std::size_t kMaxFieldBytes = 1024;
  // A full disk can fail every login's line: the server log hears about it
  // this often at most, with the count lost so far.
  static constexpr std::chrono::seconds kFailureLogInterval{10};

  // `path` empty: a disabled log; write() does nothing, open() succeeds.
  // Nothing is opened until open().
  explicit AuditLog(std::string path);
  ~AuditLog();
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  // Opens the file for appending, creating it with mode 0600 (an existing
  // file keeps its mode, as logrotate's `create` set it). Call once at
  // start-up; a failure there should stop tokengate.
  [[nodiscard]] std::optional<AuditError> open();

  // Opens the path again, for log rotation (SIGHUP): lines written after it
  // returns go to the file now at the path. If the path cannot be opened,
  // the old file is kept and the error returned.
  [[nodiscard]] std::optional<AuditError> reopen();

  // Writes one line. `now` is a parameter for tests. A field value that
  // looks like a JWT (`eyJ…` with two dots), or holds a token-shaped run
  // (`eyJ` and 17 more base64url characters or dots: a token's start), is
  // refused: the field is left
  // out, named in a "redacted" list on the line, and counted. The event
  // itself is still written, so a client cannot hide its login attempt by
  // putting a token-like text in its application_name.
  void write(const AuditEvent& event,
             std::chrono::system_clock::time_point now = std::chrono::system_clock::now());

  [[nodiscard]] bool enabled() const { return !path_.empty(); }
  [[nodiscard]] const std::string& path() const { return path_; }

  // Field values refused because they looked like a token.
  [[nodiscard]] std::uint64_t refused_values() const { return refused_.load(); }
  // Lines that could not be written (disk full, no file open, ...), since
  // start: for the metrics endpoint.
  [[nodiscard]] std::uint64_t failed_writes() const { return failed_writes_.load(); }

 private:
  // Counts a lost line and logs it (rate-limited); mutex_ held.
  void note_failure(int err, std::chrono::steady_clock::time_point now);

  std::string path_;
  std::mutex mutex_;  // guards fd_, the failure bookkeeping, and orders the writes
  int fd_ = -1;
  // Failure reporting: lines lost since the last log line about them, when
  // that was, and whether the last line failed (to say when writing works again).
  std::uint64_t unreported_failures_ = 0;
  std::chrono::steady_clock::time_point last_failure_log_{};
  bool failing_ = false;
  std::atomic<std::uint64_t> refused_{0};
  std::atomic<std::uint64_t> failed_writes_{0};
};

// True when `text` contains something shaped like a compact JWT: "eyJ"
// (base64url of `{"`), base64url characters, a dot, base64url characters, a
// dot. Used by AuditLog; exposed for other log paths and for tests.
[[nodiscard]] bool looks_like_jwt(std::string_view text);

}  // namespace tokengate

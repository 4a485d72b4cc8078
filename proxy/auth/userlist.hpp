// The `auth.userlist` file (`upstream.auth = password`): the
// passwords token sessions use to log in upstream as their owner, in
// PgBouncer's auth_file format.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>

namespace tokengate::auth {

struct UserlistError {
  std::string message;  // names the file and, for a syntax error, the line
};

// The format, as PgBouncer reads it:
//   "user" "password" [anything else, ignored]
// Both fields double-quoted; inside quotes `""` is one literal quote. Blank
// lines and lines whose first non-blank character is `;` or `#` are ignored.
// A user listed twice keeps the later password (as in PgBouncer).
//
// A password may be plaintext or a verifier as pg_authid holds it
// ("md5" + 32 hex digits, "SCRAM-SHA-256$…"). tokengate has to answer the
// upstream's challenge *as the client*, which a verifier cannot do (it lets
// one check a password, not produce it), so only plaintext entries are
// usable; see password_for().
class Userlist {
 public:
  enum class Entry {
    absent,     // the user is not in the file
    plaintext,  // usable
    verifier,   // an md5 or SCRAM-SHA-256 verifier: not usable to log in
    empty,      // "": PostgreSQL never accepts an empty password
  };

  Userlist() = default;
  // The passwords are zeroed when the list goes (a reload replaces it).
  ~Userlist();
  Userlist(Userlist&&) noexcept = default;
  Userlist& operator=(Userlist&&) noexcept;
  Userlist(const Userlist&) = delete;
  Userlist& operator=(const Userlist&) = delete;

  // Reads and parses `path`. Errors name the file, and the line for syntax
  // errors: `userlist file "/etc/tg/users.txt", line 3: …`.
  [[nodiscard]] static std::variant<Userlist, UserlistError> load(const std::string& path);

  // Parses file contents; `source` is the path used in error messages.
  [[nodiscard]] static std::variant<Userlist, UserlistError> parse(std::string_view text,
                                                                   std::string source = {});

  // The plaintext password to log in upstream as `user`, or nullopt when
  // the user is absent, or listed with a verifier or an empty password.
  // Returns a copy: the Userlist may be replaced on SIGHUP.
  [[nodiscard]] std::optional<std::string> password_for(std::string_view user) const;

  [[nodiscard]] Entry entry(std::string_view user) const;

  // When password_for(user) is nullopt: a message for the log and the
  // client's error, naming the setting and the file, never the password,
  // e.g. `no plaintext password for user "alice" in auth.userlist
  // ("/etc/tg/users.txt"): it holds an MD5 verifier, and tokengate must
  // send the password itself to log in upstream`.
  [[nodiscard]] std::string why_no_password(std::string_view user) const;

  [[nodiscard]] std::size_t size() const { return passwords_.size(); }
  [[nodiscard]] const std::string& source() const { return source_; }

 private:
  std::string source_;
  std::unordered_map<std::string, std::string> passwords_;
};

// Files larger than this are refused: a userlist has one short line per
// role, and PgBouncer's own limits (MAX_USERNAME, MAX_PASSWORD) keep lines
// under 3 KiB; 16 MiB is thousands of times any real file.
inline constexpr std::size_t kMaxUserlistBytes = std::size_t{16} << 20;
// A longer line is refused with its number: over twice PgBouncer's longest
// (a 128-byte name and a 2 KiB password), so no real line comes close.
inline constexpr std::size_t kMaxUserlistLineBytes = 8192;
// PostgreSQL role names are at most NAMEDATALEN - 1 bytes: a longer name can
// never match a role, so it is a mistake in the file.
inline constexpr std::size_t kMaxUserlistNameBytes = 63;

}  // namespace tokengate::auth

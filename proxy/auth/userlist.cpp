// Parsing of the PgBouncer-format userlist file (see userlist.hpp).
#include "proxy/auth/userlist.hpp"

#include "proxy/auth/secret.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace tokengate::auth {

namespace {

// The setting that names the file, for messages.
constexpr std::string_view kSetting = "auth.userlist";

std::string quoted(std::string_view s) {
  std::string out = "\"";
  out += s;
  out += '"';
  return out;
}

std::string where(const std::string& source) {
  return source.empty() ? std::string("userlist") : "userlist file " + quoted(source);
}

bool is_blank(char c) { return c == ' ' || c == '\t'; }

bool is_md5_verifier(std::string_view p) {
  // As PostgreSQL's get_password_type(): "md5" and 32 lower-case hex digits.
  if (p.size() != 35 || p.substr(0, 3) != "md5") return false;
  for (char c : p.substr(3))
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

bool is_scram_verifier(std::string_view p) { return p.substr(0, 14) == "SCRAM-SHA-256$"; }

// Reads a "…" field starting at line[pos] == '"'; `""` is a literal quote.
// On success sets `out`, moves `pos` past the closing quote.
bool read_quoted(std::string_view line, std::size_t& pos, std::string& out) {
  out.clear();
  for (std::size_t i = pos + 1; i < line.size(); ++i) {
    if (line[i] != '"') {
      out += line[i];
    } else if (i + 1 < line.size() && line[i + 1] == '"') {
      out += '"';
      ++i;
    } else {
      pos = i + 1;
      return true;
    }
  }
  return false;
}

}  // namespace

Userlist::~Userlist() {
  for (auto& [user, password] : passwords_) wipe(password);
}

Userlist& Userlist::operator=(Userlist&& other) noexcept {
  if (this != &other) {
    for (auto& [user, password] : passwords_) wipe(password);
    source_ = std::move(other.source_);
    passwords_ = std::move(other.passwords_);
  }
  return *this;
}

std::variant<Userlist, UserlistError> Userlist::parse(std::string_view text, std::string source) {
  Userlist list;
  list.source_ = std::move(source);
  std::size_t line_no = 0;
  auto fail = [&](std::string_view what) {
    return UserlistError{where(list.source_) + ", line " + std::to_string(line_no) + ": " + std::string(what)};
  };
  std::string user, password;
  while (!text.empty()) {
    ++line_no;
    const auto eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text = eol == std::string_view::npos ? std::string_view{} : text.substr(eol + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() > kMaxUserlistLineBytes)
      return fail("longer than " + std::to_string(kMaxUserlistLineBytes) + " bytes");
    if (line.find('\0') != std::string_view::npos) return fail("contains a NUL byte");

    std::size_t pos = 0;
    while (pos < line.size() && is_blank(line[pos])) ++pos;
    if (pos == line.size() || line[pos] == ';' || line[pos] == '#') continue;

    if (line[pos] != '"') return fail("expected a double-quoted user name");
    if (!read_quoted(line, pos, user)) return fail("the user name's closing quote is missing");
    if (user.empty()) return fail("empty user name");
    if (user.size() > kMaxUserlistNameBytes)
      return fail("the user name is longer than " + std::to_string(kMaxUserlistNameBytes) +
                  " bytes, PostgreSQL's longest");
    while (pos < line.size() && is_blank(line[pos])) ++pos;
    if (pos == line.size() || line[pos] != '"')
      return fail("expected a double-quoted password after the user name");
    // Never quote the password in a message: the error may reach a log.
    if (!read_quoted(line, pos, password)) return fail("the password's closing quote is missing");
    // The rest of the line is ignored; a user listed twice keeps the later
    // password, and the earlier one is wiped.
    if (auto it = list.passwords_.find(user); it != list.passwords_.end()) wipe(it->second);
    list.passwords_.insert_or_assign(user, password);
  }
  wipe(password);
  return list;
}

std::variant<Userlist, UserlistError> Userlist::load(const std::string& path) {
  auto io_error = [&](std::string_view doing) {
    return UserlistError{"cannot " + std::string(doing) + " userlist file " + quoted(path) + " (setting " +
                         std::string(kSetting) + "): " + std::strerror(errno)};
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return io_error("open");
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    auto err = io_error("stat");
    ::close(fd);
    return err;
  }
  if (static_cast<std::size_t>(st.st_size) > kMaxUserlistBytes) {
    ::close(fd);
    return UserlistError{"userlist file " + quoted(path) + " is larger than " +
                         std::to_string(kMaxUserlistBytes >> 20) + " MiB"};
  }
  std::string text;
  char buf[65536];
  // The file holds passwords: what was read is zeroed on every way out.
  struct Wipe {
    std::string& text;
    char* buf;
    std::size_t n;
    ~Wipe() {
      wipe(text);
      wipe(buf, n);
    }
  } wiped{text, buf, sizeof buf};
  if (st.st_size > 0) text.reserve(static_cast<std::size_t>(st.st_size));  // no stale copies left by growth
  for (;;) {
    const auto n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      auto err = io_error("read");
      ::close(fd);
      return err;
    }
    if (n == 0) break;
    text.append(buf, static_cast<std::size_t>(n));
    if (text.size() > kMaxUserlistBytes) {  // grew while we read it
      ::close(fd);
      return UserlistError{"userlist file " + quoted(path) + " is larger than " +
                           std::to_string(kMaxUserlistBytes >> 20) + " MiB"};
    }
  }
  ::close(fd);
  return parse(text, path);
}

Userlist::Entry Userlist::entry(std::string_view user) const {
  auto it = passwords_.find(std::string(user));
  if (it == passwords_.end()) return Entry::absent;
  if (it->second.empty()) return Entry::empty;
  if (is_md5_verifier(it->second) || is_scram_verifier(it->second)) return Entry::verifier;
  return Entry::plaintext;
}

std::optional<std::string> Userlist::password_for(std::string_view user) const {
  if (entry(user) != Entry::plaintext) return std::nullopt;
  return passwords_.find(std::string(user))->second;
}

std::string Userlist::why_no_password(std::string_view user) const {
  std::string msg = "no plaintext password for user " + quoted(user) + " in " + std::string(kSetting);
  if (!source_.empty()) msg += " (" + quoted(source_) + ")";
  switch (entry(user)) {
    case Entry::absent:
      if (source_.empty()) return msg + ": the setting is not set, and upstream.auth = password needs it";
      return msg + ": the user is not listed";
    case Entry::verifier: {
      const auto& p = passwords_.find(std::string(user))->second;
      return msg + ": it holds " + (is_md5_verifier(p) ? "an MD5" : "a SCRAM-SHA-256") +
             " verifier, and tokengate must send the password itself to log in upstream";
    }
    case Entry::empty:
      return msg + ": the password is empty";
    case Entry::plaintext:
      break;
  }
  return {};
}

}  // namespace tokengate::auth

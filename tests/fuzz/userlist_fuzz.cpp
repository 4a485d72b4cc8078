// libFuzzer target `userlist`: the auth.userlist parser (auth::Userlist::parse,
// PgBouncer's auth_file format: "user" "password" lines).
//
// Input: <mode byte> <rest>; mode & 1:
//   0  rest is the file's text, parsed as is;
//   1  rest describes entries, each <style byte> <user> NUL <password> NUL;
//      the target writes them as a file (quotes doubled; style bits add blank
//      and comment lines, CRLF, blanks, trailing text, or break the line by
//      leaving the password's closing quote out) and knows what it must read.
// Passwords in mode 1 start with \x01, which no message text contains, unless
// style bit 7 is set (then they may be empty or verifiers).
//
// Properties besides "no crash, no UB, no leak":
// - a written file reads back: every user's last password, classified as
//   plaintext, verifier (md5…/SCRAM-SHA-256$…) or empty, and nothing else;
// - a broken line is reported with its number and the file's name;
// - no message (parse error or why_no_password) ever contains a password.
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <variant>

#include "fuzz_support.hpp"
#include "proxy/auth/userlist.hpp"

using tokengate::auth::Userlist;
using tokengate::auth::UserlistError;
using tokengate::fuzz::printable;

namespace {

constexpr const char* kSource = "/etc/tokengate/users.txt";

std::string quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

Userlist::Entry classify(const std::string& p) {
  if (p.empty()) return Userlist::Entry::empty;
  bool md5 = p.size() == 35 && p.rfind("md5", 0) == 0 &&
             p.find_first_not_of("0123456789abcdef", 3) == std::string::npos;
  if (md5 || p.rfind("SCRAM-SHA-256$", 0) == 0) return Userlist::Entry::verifier;
  return Userlist::Entry::plaintext;
}

void raw(std::string_view text) {
  auto r = Userlist::parse(text, kSource);
  if (auto* e = std::get_if<UserlistError>(&r)) {
    FUZZ_CHECK(e->message.find(kSource) != std::string::npos, "error without the file name: " + e->message);
    return;
  }
  const auto& list = std::get<Userlist>(r);
  (void)list.entry("postgres");
  (void)list.why_no_password("postgres");
}

void structured(std::string_view rest) {
  std::string file;
  std::map<std::string, std::string> expected;  // user -> last password
  std::size_t line = 0, broken_line = 0;
  std::size_t i = 0;
  auto take = [&](std::size_t limit) {
    std::string s;
    while (i < rest.size() && rest[i] != '\0') {
      char c = rest[i++];
      if (c != '\n' && c != '\x01' && s.size() < limit) s += c;
    }
    if (i < rest.size()) ++i;  // the NUL
    return s;
  };
  while (i < rest.size() && broken_line == 0) {
    std::uint8_t style = std::uint8_t(rest[i++]);
    // Role names as PostgreSQL's (kMaxUserlistNameBytes), passwords under
    // PgBouncer's 2 KiB.
    std::string user = take(tokengate::auth::kMaxUserlistNameBytes);
    std::string password = (style & 128 ? "" : "\x01") + take(1000);
    if (user.empty()) continue;
    if (style & 1) file += "\n", ++line;
    if (style & 2) file += (style & 16 ? "  # a comment\n" : ";comment \"x\" \"y\"\n"), ++line;
    ++line;
    if (style & 16) file += " \t";
    file += quote(user);
    file += (style & 64) ? "\t" : " ";
    if (style & 32) {
      file += quote(password).substr(0, quote(password).size() - 1);  // no closing quote
      broken_line = line;
    } else {
      file += quote(password);
      if (style & 8) file += " trailing text, ignored";
      expected[user] = password;
    }
    file += (style & 4) ? "\r\n" : "\n";
  }

  auto r = Userlist::parse(file, kSource);
  if (broken_line != 0) {
    auto* e = std::get_if<UserlistError>(&r);
    FUZZ_CHECK(e != nullptr, "a line without the password's closing quote was accepted:\n" + printable(file));
    FUZZ_CHECK(e->message.find('\x01') == std::string::npos, "a password reached an error message: " + printable(e->message));
    FUZZ_CHECK(e->message.find(kSource) != std::string::npos &&
                   e->message.find("line " + std::to_string(broken_line) + ":") != std::string::npos,
               "the error does not name the file and line " + std::to_string(broken_line) + ": " +
                   printable(e->message) + "\nfile:\n" + printable(file));
    return;
  }
  auto* e = std::get_if<UserlistError>(&r);
  FUZZ_CHECK(e == nullptr, "a well-formed file was refused: " + (e ? printable(e->message) : "") + "\nfile:\n" + printable(file));
  FUZZ_CHECK(e == nullptr || e->message.find('\x01') == std::string::npos, "a password reached an error message");
  const auto& list = std::get<Userlist>(r);
  FUZZ_CHECK(list.size() == expected.size(), "read " + std::to_string(list.size()) + " users, wrote " +
                                                 std::to_string(expected.size()) + "\nfile:\n" + printable(file));
  for (const auto& [user, password] : expected) {
    auto kind = classify(password);
    FUZZ_CHECK(list.entry(user) == kind, "user " + printable(user) + " is classified differently");
    auto got = list.password_for(user);
    if (kind == Userlist::Entry::plaintext)
      FUZZ_CHECK(got && *got == password, "user " + printable(user) + " reads back another password");
    else
      FUZZ_CHECK(!got, "user " + printable(user) + " has no usable password, yet password_for gives one");
    auto why = list.why_no_password(user);
    // The message names the user, and a user name may contain the verifier's
    // text: look for the password only in what follows the name.
    const auto after_name = why.rfind(" in auth.userlist (");
    FUZZ_CHECK(kind == Userlist::Entry::plaintext || after_name != std::string::npos,
               "why_no_password names no source: " + printable(why));
    FUZZ_CHECK(why.find('\x01') == std::string::npos &&
                   (kind != Userlist::Entry::verifier || why.find(password, after_name) == std::string::npos),
               "why_no_password shows the password: " + printable(why));
  }
  // Mode 1 never writes \x01 into a user name.
  FUZZ_CHECK(list.entry("\x01not listed") == Userlist::Entry::absent, "an unlisted user is found");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  if (data[0] & 1)
    structured(rest);
  else
    raw(rest);
  return 0;
}

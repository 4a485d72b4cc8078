// Checks of startup parameters and the StartupMessage rebuilt for the
// upstream (see startup_parameters.hpp).
#include "proxy/session/startup_parameters.hpp"

#include <algorithm>
#include <cctype>
#include <set>

namespace tokengate::session {

using namespace tokengate::protocol;

namespace {

bool has_control_character(std::string_view s) {
  return std::any_of(s.begin(), s.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  });
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = char(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// A GUC name as PostgreSQL accepts one: core names are letters, digits and
// '_'; custom ones (`myext.setting`) are such parts joined by dots, and may
// hold '$' (valid_custom_variable_name in guc.c).
bool guc_shaped(std::string_view name) {
  if (name.empty()) return false;
  std::size_t start = 0;
  for (;;) {
    const auto dot = name.find('.', start);
    const auto part = name.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (part.empty()) return false;
    const auto first = static_cast<unsigned char>(part[0]);
    if (!std::isalpha(first) && first != '_') return false;
    for (char c : part.substr(1)) {
      const auto u = static_cast<unsigned char>(c);
      if (!std::isalnum(u) && u != '_' && u != '$') return false;
    }
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

// Settings that would make the session another role than the one tokengate
// authenticated. SET ROLE and SET SESSION AUTHORIZATION stay possible after
// login, where PostgreSQL checks them against the logged-in role and where
// they are ordinary statements of the session.
std::optional<StartupRefusal> identity_setting(std::string_view name, std::string_view where) {
  const auto l = lower(name);
  if (l != "session_authorization" && l != "role") return std::nullopt;
  return StartupRefusal{
      "08P01",
      std::string(where) + " \"" + std::string(name) + "\" is not allowed through tokengate",
      l == "role" ? "Log in as the role itself, or use SET ROLE after logging in."
                  : "tokengate decides the session's user: log in as that user."};
}

std::optional<StartupRefusal> check_setting_name(std::string_view name, std::string_view where) {
  if (!guc_shaped(name))
    return StartupRefusal{"08P01", std::string(where) + " \"" + std::string(name) + "\" is not allowed through tokengate",
                          "Only configuration parameters (letters, digits and underscores) are passed on."};
  return identity_setting(name, where);
}

std::string cut_name(std::string_view s) { return std::string(s.substr(0, kMaxNameLength)); }

// `options`: what PostgreSQL's process_postgres_switches() would take from a
// client that PostgreSQL itself would apply as settings; anything else is
// refused rather than passed on unread.
std::optional<StartupRefusal> parse_options(std::string_view value,
                                            std::vector<std::pair<std::string, std::string>>& out) {
  const auto args = split_options(value);
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    std::string setting;
    bool long_form = false;
    if (a.size() > 2 && a.compare(0, 2, "--") == 0) {
      setting = a.substr(2);
      long_form = true;
    } else if (a.compare(0, 2, "-c") == 0) {
      if (a.size() > 2) {
        setting = a.substr(2);
      } else if (i + 1 < args.size()) {
        setting = args[++i];
      } else {
        return StartupRefusal{"08P01", "startup option \"-c\" is not followed by a setting", ""};
      }
    } else {
      return StartupRefusal{"08P01", "startup option \"" + a + "\" is not allowed through tokengate",
                            "Only -c name=value and --name=value settings are passed on."};
    }
    const auto eq = setting.find('=');
    if (eq == std::string::npos)
      // ParseLongOption() without '=': PostgreSQL's words and SQLSTATE.
      return StartupRefusal{"42601", (long_form ? "--" : "-c ") + setting + " requires a value", ""};
    std::string name = setting.substr(0, eq);
    std::replace(name.begin(), name.end(), '-', '_');
    if (auto refused = check_setting_name(name, "startup option")) return refused;
    out.emplace_back(std::move(name), setting.substr(eq + 1));
  }
  return std::nullopt;
}

}  // namespace

std::vector<std::string> split_options(std::string_view s) {
  // pg_split_opts() in src/backend/utils/init/postinit.c.
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    if (i == s.size()) break;
    std::string arg;
    bool escaped = false;
    for (; i < s.size(); ++i) {
      const char c = s[i];
      if (std::isspace(static_cast<unsigned char>(c)) && !escaped) break;
      if (!escaped && c == '\\') {
        escaped = true;
      } else {
        escaped = false;
        arg += c;
      }
    }
    out.push_back(std::move(arg));
  }
  return out;
}

std::string join_options(const std::vector<std::string>& args) {
  std::string out;
  for (const auto& a : args) {
    if (!out.empty()) out += ' ';
    for (char c : a) {
      if (c == '\\' || std::isspace(static_cast<unsigned char>(c))) out += '\\';
      out += c;
    }
  }
  return out;
}

std::string StartupParameters::setting(std::string_view name) const {
  for (const auto& [k, v] : settings)
    if (k == name) return v;
  return {};
}

StartupMessage StartupParameters::for_upstream(std::string_view role) const {
  StartupMessage m;
  m.protocol_version = kProtocolVersion3;
  m.parameters.emplace_back("user", std::string(role));
  if (!database.empty()) m.parameters.emplace_back("database", database);
  if (!replication.empty()) m.parameters.emplace_back("replication", replication);
  for (const auto& kv : settings) m.parameters.push_back(kv);
  if (!options.empty()) {
    std::vector<std::string> args;
    for (const auto& [k, v] : options) {
      args.emplace_back("-c");
      args.push_back(k + "=" + v);
    }
    m.parameters.emplace_back("options", join_options(args));
  }
  return m;
}

std::variant<StartupParameters, StartupRefusal> validate_startup(const StartupMessage& m) {
  StartupParameters p;
  std::set<std::string> seen;
  for (const auto& [name, value] : m.parameters) {
    if (!seen.insert(lower(name)).second)
      return StartupRefusal{"08P01", "invalid startup packet: parameter \"" + name + "\" appears more than once",
                            ""};
    if (name == "user" || name == "database") {
      if (has_control_character(value))
        return StartupRefusal{"08P01", "invalid startup packet: the " + name + " name contains a control character",
                              ""};
      (name == "user" ? p.user : p.database) = cut_name(value);
    } else if (name == "options") {
      if (auto refused = parse_options(value, p.options)) return *refused;
    } else if (name == "replication") {
      p.replication = value;  // its value was checked as PostgreSQL does while parsing
    } else {
      if (auto refused = check_setting_name(name, "startup parameter")) return *refused;
      p.settings.emplace_back(name, value);
    }
  }
  if (p.user.empty())
    return StartupRefusal{"28000", "no PostgreSQL user name specified in startup packet", ""};
  return p;
}

}  // namespace tokengate::session

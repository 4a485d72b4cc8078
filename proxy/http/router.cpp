// Route table and request-target parsing (see router.hpp).
#include "proxy/http/router.hpp"

#include <algorithm>
#include <stdexcept>

namespace tokengate::http {

namespace {

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// "/a/b/" → {"a", "b", ""}; "/" → {""}. The path starts with '/'.
std::vector<std::string_view> split_path(std::string_view path) {
  std::vector<std::string_view> out;
  std::size_t start = 1;
  for (;;) {
    auto slash = path.find('/', start);
    if (slash == std::string_view::npos) {
      out.push_back(path.substr(start));
      return out;
    }
    out.push_back(path.substr(start, slash - start));
    start = slash + 1;
  }
}

}  // namespace

std::optional<std::string> percent_decode(std::string_view text, bool plus_is_space) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '%') {
      if (i + 2 >= text.size()) return std::nullopt;
      const int hi = hex_value(text[i + 1]);
      const int lo = hex_value(text[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(char(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::optional<Target> parse_target(std::string_view target, TargetError& error) {
  if (target.empty() || target.front() != '/') {
    error.message = "the request target must be a path starting with \"/\"";
    return std::nullopt;
  }
  Target t;
  const auto q = target.find('?');
  t.path = std::string(target.substr(0, q));
  if (q == std::string_view::npos) return t;
  std::string_view rest = target.substr(q + 1);
  // A fragment is never sent by a client; cut it as a URL parser would.
  if (auto hash = rest.find('#'); hash != std::string_view::npos) rest = rest.substr(0, hash);
  while (!rest.empty()) {
    const auto amp = rest.find('&');
    std::string_view pair = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view{} : rest.substr(amp + 1);
    if (pair.empty()) continue;  // "a=1&&b=2"
    const auto eq = pair.find('=');
    auto name = percent_decode(pair.substr(0, eq), true);
    auto value = percent_decode(eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1), true);
    if (!name || !value) {
      error.message = "malformed percent-encoding in the query string";
      return std::nullopt;
    }
    for (const auto& [k, v] : t.query) {
      if (k == *name) {
        error.message = "query parameter \"" + *name + "\" is given more than once";
        return std::nullopt;
      }
    }
    t.query.emplace_back(std::move(*name), std::move(*value));
  }
  return t;
}

std::size_t Router::add(std::string_view method, std::string_view pattern) {
  if (method.empty() || pattern.empty() || pattern.front() != '/')
    throw std::invalid_argument("route pattern must start with '/': " + std::string(pattern));
  Route r;
  r.method = std::string(method);
  r.pattern = std::string(pattern);
  for (auto seg : split_path(pattern)) {
    Segment s;
    if (seg.size() >= 2 && seg.front() == '{' && seg.back() == '}') {
      s.param = true;
      s.text = std::string(seg.substr(1, seg.size() - 2));
      if (s.text.empty()) throw std::invalid_argument("empty parameter name in route " + std::string(pattern));
    } else {
      if (seg.find_first_of("{}") != std::string_view::npos)
        throw std::invalid_argument("malformed route pattern " + std::string(pattern));
      s.text = std::string(seg);
    }
    r.segments.push_back(std::move(s));
  }
  for (const auto& other : routes_) {
    if (other.method == r.method && other.pattern == r.pattern)
      throw std::invalid_argument("route registered twice: " + r.method + " " + r.pattern);
  }
  routes_.push_back(std::move(r));
  return routes_.size() - 1;
}

Router::Match Router::match(std::string_view method, std::string_view path) const {
  Match m;
  if (path.empty() || path.front() != '/') return m;
  const auto segments = split_path(path);
  bool path_matched = false;
  std::vector<std::string> allowed;
  for (std::size_t i = 0; i < routes_.size(); ++i) {
    const Route& r = routes_[i];
    if (r.segments.size() != segments.size()) continue;
    std::vector<std::pair<std::string, std::string>> params;
    bool ok = true;
    for (std::size_t k = 0; k < segments.size() && ok; ++k) {
      const Segment& s = r.segments[k];
      if (!s.param) {
        ok = s.text == segments[k];
        continue;
      }
      if (segments[k].empty()) {
        ok = false;
        continue;
      }
      auto decoded = percent_decode(segments[k], false);
      if (!decoded) {
        Match bad;
        bad.status = Match::Status::bad_path;
        return bad;
      }
      params.emplace_back(s.text, std::move(*decoded));
    }
    if (!ok) continue;
    path_matched = true;
    if (r.method == method) {
      m.status = Match::Status::found;
      m.route = i;
      m.params = std::move(params);
      return m;
    }
    if (std::find(allowed.begin(), allowed.end(), r.method) == allowed.end()) allowed.push_back(r.method);
  }
  for (const auto& a : allowed) {
    if (!m.allow.empty()) m.allow += ", ";
    m.allow += a;
  }
  m.status = path_matched ? Match::Status::method_not_allowed : Match::Status::not_found;
  return m;
}

}  // namespace tokengate::http

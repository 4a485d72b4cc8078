// The gateway's route table and request-target parsing, sans-io: which route
// a method and path select (with its `{name}` segments decoded), or why none
// does (404, 405 with the methods that would work, 400 for a malformed path).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tokengate::http {

// Percent-decoding (RFC 3986 §2.1). `plus_is_space` for query strings, where
// HTML forms encode a space as '+'. nullopt for a '%' not followed by two hex
// digits.
[[nodiscard]] std::optional<std::string> percent_decode(std::string_view text, bool plus_is_space);

// An origin-form request-target split into path and decoded query parameters.
struct Target {
  std::string path;  // still percent-encoded: segments are decoded one by one
  std::vector<std::pair<std::string, std::string>> query;
};
struct TargetError {
  std::string message;  // for a 400 answer
};
// Only the origin form ("/path?query") is accepted: it is what clients send to
// a server that is not a proxy. A parameter named twice is refused, so that
// `?user=alice&user=bob` cannot mean one thing here and another elsewhere.
[[nodiscard]] std::optional<Target> parse_target(std::string_view target, TargetError& error);

class Router {
 public:
  // Registers `method` on `pattern`: literal segments and `{name}` segments,
  // each of which matches one non-empty path segment ("/api/tokens/{name}").
  // Returns the route's index, counted from 0 in the order of add(). A
  // malformed pattern or a method+pattern registered twice is a programming
  // error: std::invalid_argument (at start-up, before anything is served).
  std::size_t add(std::string_view method, std::string_view pattern);

  struct Match {
    enum class Status {
      found,
      not_found,           // no pattern matches the path
      method_not_allowed,  // some do, for other methods: see `allow`
      bad_path,            // a segment is not valid percent-encoding
    };
    Status status = Status::not_found;
    std::size_t route = 0;                                    // with found
    std::vector<std::pair<std::string, std::string>> params;  // with found: decoded
    std::string allow;  // with method_not_allowed: "GET, POST", for the Allow header
  };
  // `path` as in Target::path (percent-encoded). Literal segments compare
  // with the encoded text; `{name}` segments are decoded, so a token name may
  // hold "/" as %2F.
  [[nodiscard]] Match match(std::string_view method, std::string_view path) const;

  [[nodiscard]] std::size_t size() const noexcept { return routes_.size(); }

 private:
  struct Segment {
    std::string text;  // literal, or the parameter name
    bool param = false;
  };
  struct Route {
    std::string method;
    std::string pattern;
    std::vector<Segment> segments;
  };
  std::vector<Route> routes_;
};

}  // namespace tokengate::http

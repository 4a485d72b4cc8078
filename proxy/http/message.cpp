// JSON error bodies, SQLSTATE → HTTP status, and small text helpers for the gateway's routes.
#include "proxy/http/message.hpp"

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <cctype>
#include <ctime>

namespace tokengate::http {

namespace {

char lower(char c) noexcept { return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c; }

template <typename List>
const std::string* find_value(const List& list, std::string_view name) noexcept {
  for (const auto& [k, v] : list)
    if (k == name) return &v;
  return nullptr;
}

}  // namespace

bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

const std::string* HttpRequest::header(std::string_view name) const noexcept {
  for (const auto& h : headers)
    if (iequals(h.name, name)) return &h.value;
  return nullptr;
}

const std::string* HttpRequest::query_param(std::string_view name) const noexcept { return find_value(query, name); }

const std::string* HttpRequest::param(std::string_view name) const noexcept { return find_value(params, name); }

std::string application_name(const HttpRequest& request) {
  const std::string* agent = request.header("User-Agent");
  return "http: " + (agent ? agent->substr(0, 200) : std::string());
}

HttpResponse json_response(int status, std::string body) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

HttpResponse json_error(int status, std::string_view sqlstate, std::string_view message, std::string_view detail,
                        std::string_view hint) {
  boost::json::object o;
  o["code"] = sqlstate;
  o["message"] = message;
  if (!detail.empty()) o["detail"] = detail;
  if (!hint.empty()) o["hint"] = hint;
  return json_response(status, boost::json::serialize(o));
}

HttpResponse sql_error(std::string_view sqlstate, std::string_view message, std::string_view detail,
                       std::string_view hint) {
  return json_error(status_for_sqlstate(sqlstate), sqlstate, message, detail, hint);
}

int status_for_sqlstate(std::string_view s) noexcept {
  if (s.size() != 5) return 500;
  const std::string_view cls = s.substr(0, 2);
  if (cls == "28") return 401;  // invalid authorization specification, invalid password
  if (s == "42501") return 403;
  if (s == "42704") return 404;
  if (s == "42710") return 409;
  if (s == "54000") return 413;
  if (cls == "22" || s == "42601" || s == "42622" || s == "42P02") return 422;
  if (cls == "08" || cls == "53" || cls == "57" || cls == "58") return 503;
  return 500;
}

std::string_view reason_phrase(int status) noexcept {
  switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
  }
  return "";
}

std::string rfc3339(std::int64_t unix_seconds) {
  std::time_t t = unix_seconds;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

bool valid_text(std::string_view s) noexcept {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == 0) return false;
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t n;
    std::uint32_t cp;
    if ((c & 0xE0) == 0xC0) n = 1, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0) n = 2, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0) n = 3, cp = c & 0x07;
    else return false;
    if (i + n >= s.size()) return false;  // truncated sequence
    for (std::size_t k = 1; k <= n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    // Overlong forms, surrogates and values beyond U+10FFFF are not UTF-8.
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += n + 1;
  }
  return true;
}

}  // namespace tokengate::http

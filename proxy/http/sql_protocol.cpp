// The @neondatabase/serverless SQL-over-HTTP protocol: requests and JSON answers (see sql_protocol.hpp).
#include "proxy/http/sql_protocol.hpp"

#include <algorithm>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <charconv>

#include "proxy/http/router.hpp"

namespace tokengate::http {

namespace json = boost::json;

namespace {

// ---- connection strings ----

bool starts_with_ci(std::string_view s, std::string_view prefix) noexcept {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

std::optional<std::string> decode(std::string_view part, std::string_view what, std::string& error) {
  auto d = percent_decode(part, false);
  if (!d) {
    error = "malformed percent-encoding in the connection string's " + std::string(what);
    return std::nullopt;
  }
  if (d->find('\0') != std::string::npos) {
    error = "the connection string's " + std::string(what) + " contains a NUL byte";
    return std::nullopt;
  }
  return d;
}

// ---- parameters ----

void append_number(std::string& out, const json::value& v) {
  char buf[64];
  std::to_chars_result r{};
  if (v.is_int64()) r = std::to_chars(buf, buf + sizeof buf, v.get_int64());
  else if (v.is_uint64()) r = std::to_chars(buf, buf + sizeof buf, v.get_uint64());
  // The shortest text that reads back as the same double, as JavaScript
  // prints numbers ("1.25", not Boost.JSON's "1.25E0").
  else r = std::to_chars(buf, buf + sizeof buf, v.get_double());
  out.append(buf, r.ptr);
}

// A scalar or object as its JSON text (numbers as JavaScript prints them).
std::string scalar_text(const json::value& v) {
  if (v.is_bool()) return v.get_bool() ? "true" : "false";
  if (v.is_number()) {
    std::string s;
    append_number(s, v);
    return s;
  }
  return json::serialize(v);
}

// An element of a PostgreSQL array literal: strings are double-quoted with
// `"` and `\` escaped (array_in's rules, as node-postgres writes them).
void append_array_element(std::string& out, const json::value& v) {
  auto quoted = [&out](std::string_view s) {
    out += '"';
    for (char c : s) {
      if (c == '"' || c == '\\') out += '\\';
      out += c;
    }
    out += '"';
  };
  switch (v.kind()) {
    case json::kind::null: out += "NULL"; break;
    case json::kind::array: {
      out += '{';
      bool first = true;
      for (const auto& e : v.get_array()) {
        if (!first) out += ',';
        first = false;
        append_array_element(out, e);
      }
      out += '}';
      break;
    }
    case json::kind::string: quoted(std::string_view(v.get_string())); break;
    case json::kind::object: quoted(json::serialize(v)); break;
    default: out += scalar_text(v); break;
  }
}

std::optional<std::string> parameter_text(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null: return std::nullopt;
    case json::kind::string: return std::string(v.get_string());
    case json::kind::array: {
      std::string s;
      append_array_element(s, v);
      return s;
    }
    default: return scalar_text(v);
  }
}

bool header_true(const HttpRequest& r, std::string_view name) {
  const std::string* v = r.header(name);
  return v != nullptr && *v == "true";
}

SqlRequestError bad_request(std::string message, std::string sqlstate = "08P01") {
  return {400, std::move(sqlstate), std::move(message)};
}

// One {"query", "params", "arrayMode"} object.
std::variant<SqlQuery, SqlRequestError> read_query(const json::object& o, std::string_view where) {
  SqlQuery q;
  const json::value* text = o.if_contains("query");
  if (text == nullptr || !text->is_string())
    return bad_request(std::string(where) + ": \"query\" must be a string");
  q.text = std::string(text->get_string());
  // Parse carries the query as a C string: a NUL would cut it short. PostgreSQL
  // refuses the byte in any text with the same words.
  if (q.text.find('\0') != std::string::npos)
    return bad_request("invalid byte sequence for encoding \"UTF8\": 0x00", "22021");
  if (const json::value* params = o.if_contains("params"); params != nullptr && !params->is_null()) {
    if (!params->is_array()) return bad_request(std::string(where) + ": \"params\" must be an array");
    const auto& list = params->get_array();
    if (list.size() > kMaxSqlParams)
      return bad_request(std::string(where) + ": " + std::to_string(list.size()) + " parameters; at most " +
                             std::to_string(kMaxSqlParams) + " are possible",
                         "54023");
    q.params.reserve(list.size());
    for (const auto& p : list) q.params.push_back(parameter_text(p));
  }
  if (const json::value* mode = o.if_contains("arrayMode"); mode != nullptr && !mode->is_null()) {
    if (!mode->is_bool()) return bad_request(std::string(where) + ": \"arrayMode\" must be true or false");
    q.array_mode = mode->get_bool();
  }
  return q;
}

// ---- typed output ----

constexpr std::uint32_t kBool = 16, kInt2 = 21, kInt4 = 23, kFloat4 = 700, kFloat8 = 701, kJson = 114,
                        kJsonb = 3802, kBox = 603;

struct ArrayType {
  std::uint32_t array_oid;
  std::uint32_t element_oid;
};
// The array types of PostgreSQL 15's pg_type (typcategory 'A', built in)
// and their element types, without int2vector and oidvector (printed with
// spaces, not braces). Arrays of other (user-defined) types stay text.
constexpr ArrayType kArrayTypes[] = {
    {143, 142}, {199, 114}, {210, 71}, {270, 75}, {271, 5069}, {272, 81}, {273, 83}, {629, 628}, {651, 650},
    {719, 718}, {775, 774}, {791, 790}, {1000, 16}, {1001, 17}, {1002, 18}, {1003, 19}, {1005, 21}, {1006, 22},
    {1007, 23}, {1008, 24}, {1009, 25}, {1010, 27}, {1011, 28}, {1012, 29}, {1013, 30}, {1014, 1042},
    {1015, 1043}, {1016, 20}, {1017, 600}, {1018, 601}, {1019, 602}, {1020, 603}, {1021, 700}, {1022, 701},
    {1027, 604}, {1028, 26}, {1034, 1033}, {1040, 829}, {1041, 869}, {1115, 1114}, {1182, 1082}, {1183, 1083},
    {1185, 1184}, {1187, 1186}, {1231, 1700}, {1263, 2275}, {1270, 1266}, {1561, 1560}, {1563, 1562},
    {2201, 1790}, {2207, 2202}, {2208, 2203}, {2209, 2204}, {2210, 2205}, {2211, 2206}, {2949, 2970},
    {2951, 2950}, {3221, 3220}, {3643, 3614}, {3644, 3642}, {3645, 3615}, {3735, 3734}, {3770, 3769},
    {3807, 3802}, {3905, 3904}, {3907, 3906}, {3909, 3908}, {3911, 3910}, {3913, 3912}, {3927, 3926},
    {4073, 4072}, {4090, 4089}, {4097, 4096}, {4192, 4191}, {5039, 5038}, {6150, 4451}, {6151, 4532},
    {6152, 4533}, {6153, 4534}, {6155, 4535}, {6157, 4536}};

std::optional<std::uint32_t> element_type(std::uint32_t oid) noexcept {
  for (const auto& t : kArrayTypes)
    if (t.array_oid == oid) return t.element_oid;
  return std::nullopt;
}

bool is_json_number(std::string_view s) noexcept {
  std::size_t i = 0, n = s.size();
  if (i < n && s[i] == '-') ++i;
  if (i >= n) return false;
  if (s[i] == '0') ++i;
  else if (s[i] >= '1' && s[i] <= '9') while (i < n && s[i] >= '0' && s[i] <= '9') ++i;
  else return false;
  if (i < n && s[i] == '.') {
    ++i;
    std::size_t d = i;
    while (i < n && s[i] >= '0' && s[i] <= '9') ++i;
    if (i == d) return false;
  }
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < n && (s[i] == '+' || s[i] == '-')) ++i;
    std::size_t d = i;
    while (i < n && s[i] >= '0' && s[i] <= '9') ++i;
    if (i == d) return false;
  }
  return i == n;
}

bool is_json_text(std::string_view s) {
  boost::system::error_code ec;
  json::parse_options options;
  options.max_depth = 10000;  // PostgreSQL's json nests deeper than Boost's default 32
  json::parse(s, ec, {}, options);
  return !ec;
}

void scalar_typed(std::string& out, std::string_view text, std::uint32_t type_oid) {
  switch (type_oid) {
    case kBool: out += text == "t" ? "true" : "false"; return;
    case kInt2:
    case kInt4:
    case kFloat4:
    case kFloat8:
      // PostgreSQL prints these as JSON numbers, except NaN and ±Infinity,
      // which JSON cannot hold: they stay strings.
      if (is_json_number(text)) out += text;
      else append_json_string(out, text);
      return;
    case kJson:
    case kJsonb:
      if (is_json_text(text)) out += text;
      else append_json_string(out, text);
      return;
    default: append_json_string(out, text); return;
  }
}

std::string_view trim_front(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\n' || s.front() == '\r' ||
                        s.front() == '\f' || s.front() == '\v'))
    s.remove_prefix(1);
  return s;
}
std::string_view trim_back(std::string_view s) noexcept {
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n' || s.back() == '\r' ||
                        s.back() == '\f' || s.back() == '\v'))
    s.remove_suffix(1);
  return s;
}

// array_out's text: {a,b}, {{1,2},{3,4}}, elements double-quoted when they
// hold delimiters, braces, quotes, backslashes or spaces, or spell NULL;
// optionally preceded by dimensions ([0:1]={…}), which JSON cannot express.
// Returns the rest after the array, or nullopt when the text is malformed.
// Nesting is bounded by the depth PostgreSQL allows (MAXDIM = 6).
constexpr int kMaxArrayDepth = 6;

std::optional<std::string_view> parse_array(std::string& out, std::string_view s, std::uint32_t element,
                                            char delimiter, int depth) {
  if (depth > kMaxArrayDepth || s.empty() || s.front() != '{') return std::nullopt;
  s.remove_prefix(1);
  out += '[';
  std::string unquoted;
  // An empty array is "{}".
  if (!trim_front(s).empty() && trim_front(s).front() == '}') {
    s = trim_front(s);
    s.remove_prefix(1);
    out += ']';
    return trim_front(s);
  }
  for (bool first = true;; first = false) {
    if (!first) out += ',';
    s = trim_front(s);
    if (!s.empty() && s.front() == '{') {
      auto rest = parse_array(out, s, element, delimiter, depth + 1);
      if (!rest) return std::nullopt;
      s = *rest;
    } else if (!s.empty() && s.front() == '"') {
      s.remove_prefix(1);
      unquoted.clear();
      for (;;) {
        if (s.empty()) return std::nullopt;
        char c = s.front();
        s.remove_prefix(1);
        if (c == '"') break;
        if (c == '\\') {
          if (s.empty()) return std::nullopt;
          c = s.front();
          s.remove_prefix(1);
        }
        unquoted += c;
      }
      scalar_typed(out, unquoted, element);
      s = trim_front(s);
    } else {
      auto end = s.find_first_of(std::string_view{delimiter == ';' ? ";}" : ",}"});
      if (end == std::string_view::npos) return std::nullopt;
      auto item = trim_back(s.substr(0, end));
      s.remove_prefix(end);
      if (item == "NULL") out += "null";
      else scalar_typed(out, item, element);
    }
    if (!s.empty() && s.front() == delimiter) {
      s.remove_prefix(1);
      continue;
    }
    break;
  }
  if (s.empty() || s.front() != '}') return std::nullopt;
  s.remove_prefix(1);
  out += ']';
  return trim_front(s);
}

// ---- error fields ----

struct ErrorKey {
  char code;
  std::string_view name;
};
// The driver's names for ErrorResponse fields (its NeonDbError), in the order
// the driver's own server writes them.
constexpr ErrorKey kErrorKeys[] = {
    {'M', "message"},  {'C', "code"},        {'D', "detail"},     {'H', "hint"},         {'P', "position"},
    {'p', "internalPosition"},                {'q', "internalQuery"}, {'S', "severity"}, {'W', "where"},
    {'t', "table"},    {'c', "column"},      {'s', "schema"},     {'d', "dataType"},     {'n', "constraint"},
    {'F', "file"},     {'L', "line"},        {'R', "routine"}};

}  // namespace

// ---- connection strings ---------------------------------------------------------

std::optional<ConnectionString> parse_connection_string(std::string_view text, std::string& error) {
  std::string_view rest;
  if (starts_with_ci(text, "postgresql://")) rest = text.substr(13);
  else if (starts_with_ci(text, "postgres://")) rest = text.substr(11);
  else {
    error = "the connection string must start with postgresql:// or postgres://";
    return std::nullopt;
  }
  if (auto hash = rest.find('#'); hash != std::string_view::npos) rest = rest.substr(0, hash);
  const auto authority_end = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, authority_end);
  std::string_view path, query;
  if (authority_end != std::string_view::npos) {
    std::string_view tail = rest.substr(authority_end);
    const auto q = tail.find('?');
    path = tail.substr(0, q);
    if (q != std::string_view::npos) query = tail.substr(q + 1);
  }

  ConnectionString cs;
  // The last '@' ends the user information, as URL parsers read it.
  if (const auto at = authority.rfind('@'); at != std::string_view::npos) {
    std::string_view userinfo = authority.substr(0, at);
    const auto colon = userinfo.find(':');
    auto user = decode(userinfo.substr(0, colon), "user", error);
    if (!user) return std::nullopt;
    cs.user = std::move(*user);
    if (colon != std::string_view::npos) {
      auto password = decode(userinfo.substr(colon + 1), "password", error);
      if (!password) return std::nullopt;
      if (!password->empty()) cs.password = std::move(*password);
    }
  }
  if (!path.empty()) {
    auto db = decode(path.substr(1), "database", error);
    if (!db) return std::nullopt;
    cs.database = std::move(*db);
  }

  std::optional<std::string> options, application_name;
  while (!query.empty()) {
    const auto amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (pair.empty()) continue;
    const auto eq = pair.find('=');
    auto key = decode(pair.substr(0, eq), "parameter name", error);
    if (!key) return std::nullopt;
    auto value = decode(eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1),
                        "parameter " + *key, error);
    if (!value) return std::nullopt;
    // libpq lets these parameters stand for the URI's parts.
    if (*key == "user") cs.user = std::move(*value);
    else if (*key == "password") cs.password = value->empty() ? std::nullopt : std::optional(std::move(*value));
    else if (*key == "dbname") cs.database = std::move(*value);
    else if (*key == "options") options = std::move(*value);
    else if (*key == "application_name") application_name = std::move(*value);
  }
  if (options) cs.parameters.emplace_back("options", std::move(*options));
  if (application_name) cs.parameters.emplace_back("application_name", std::move(*application_name));
  return cs;
}

// ---- requests ----------------------------------------------------------------------

std::optional<std::string> json_parameter_text(std::string_view text, std::string& error) {
  boost::system::error_code ec;
  auto v = json::parse(text, ec);
  if (ec) {
    error = ec.message();
    return std::nullopt;
  }
  return parameter_text(v);
}

std::variant<SqlRequest, SqlRequestError> parse_sql_request(const HttpRequest& request) {
  SqlRequest r;
  if (const std::string* cs = request.header(kConnectionStringHeader)) {
    std::string error;
    r.connection = parse_connection_string(*cs, error);
    if (!r.connection) return bad_request(error);
  }
  r.raw_text_output = header_true(request, kRawTextOutputHeader);
  r.array_mode = header_true(request, kArrayModeHeader);
  r.read_only = header_true(request, kReadOnlyHeader);
  r.deferrable = header_true(request, kDeferrableHeader);
  if (const std::string* level = request.header(kIsolationLevelHeader)) {
    if (*level == "Serializable") r.isolation = IsolationLevel::serializable;
    else if (*level == "RepeatableRead") r.isolation = IsolationLevel::repeatable_read;
    else if (*level == "ReadCommitted") r.isolation = IsolationLevel::read_committed;
    else if (*level == "ReadUncommitted") r.isolation = IsolationLevel::read_uncommitted;
    else
      return bad_request("invalid isolation level: " + std::string(kIsolationLevelHeader) +
                         " must be ReadUncommitted, ReadCommitted, RepeatableRead or Serializable");
  }

  if (request.body.empty()) return bad_request("the request body must be a JSON object with \"query\"");
  boost::system::error_code ec;
  json::parse_options options;
  // Parameters may be nested arrays (at most PostgreSQL's 6 dimensions) of
  // objects; 64 levels leave room without letting a body exhaust the stack.
  options.max_depth = 64;
  auto body = json::parse(request.body, ec, {}, options);
  if (ec) return bad_request("the request body is not valid JSON: " + ec.message());
  if (!body.is_object()) return bad_request("the request body must be a JSON object with \"query\"");
  const auto& o = body.get_object();
  if (o.contains("query")) {
    auto q = read_query(o, "the request");
    if (auto* e = std::get_if<SqlRequestError>(&q)) return std::move(*e);
    r.queries.push_back(std::move(std::get<SqlQuery>(q)));
    return r;
  }
  const json::value* queries = o.if_contains("queries");
  if (queries == nullptr)
    return bad_request("the request body must hold \"query\" (one statement) or \"queries\" (a transaction)");
  if (!queries->is_array()) return bad_request("\"queries\" must be an array");
  const auto& list = queries->get_array();
  if (list.size() > kMaxBatchQueries)
    return bad_request(std::to_string(list.size()) + " queries in one transaction; at most " +
                           std::to_string(kMaxBatchQueries) + " are accepted",
                       "54000");
  std::size_t total_params = 0;
  for (const auto& q : list)
    if (const auto* p = q.is_object() ? q.get_object().if_contains("params") : nullptr; p != nullptr && p->is_array())
      total_params += p->get_array().size();
  if (total_params > kMaxRequestParams)
    return bad_request(std::to_string(total_params) + " parameters in one transaction; at most " +
                           std::to_string(kMaxRequestParams) + " are accepted",
                       "54000");
  r.batch = true;
  r.queries.reserve(list.size());
  for (std::size_t i = 0; i < list.size(); ++i) {
    const std::string where = "queries[" + std::to_string(i) + "]";
    if (!list[i].is_object()) return bad_request(where + " must be an object with \"query\"");
    auto q = read_query(list[i].get_object(), where);
    if (auto* e = std::get_if<SqlRequestError>(&q)) return std::move(*e);
    r.queries.push_back(std::move(std::get<SqlQuery>(q)));
  }
  return r;
}

std::string begin_statement(const SqlRequest& request) {
  std::string s = "BEGIN";
  if (request.isolation) {
    s += " ISOLATION LEVEL ";
    switch (*request.isolation) {
      case IsolationLevel::read_uncommitted: s += "READ UNCOMMITTED"; break;
      case IsolationLevel::read_committed: s += "READ COMMITTED"; break;
      case IsolationLevel::repeatable_read: s += "REPEATABLE READ"; break;
      case IsolationLevel::serializable: s += "SERIALIZABLE"; break;
    }
  }
  if (request.read_only) s += request.isolation ? ", READ ONLY" : " READ ONLY";
  if (request.deferrable) s += (request.isolation || request.read_only) ? ", DEFERRABLE" : " DEFERRABLE";
  return s;
}

// ---- answers ------------------------------------------------------------------------

CommandTag parse_command_tag(std::string_view tag) noexcept {
  CommandTag out;
  const auto space = tag.find(' ');
  out.command = tag.substr(0, space);
  if (space == std::string_view::npos) return out;
  std::string_view count = tag.substr(space + 1);
  if (out.command == "INSERT") {
    // INSERT oid rows
    const auto second = count.find(' ');
    if (second == std::string_view::npos) return out;
    count = count.substr(second + 1);
  }
  std::int64_t n = 0;
  auto [p, ec] = std::from_chars(count.data(), count.data() + count.size(), n);
  if (ec == std::errc{} && p == count.data() + count.size() && !count.empty()) out.row_count = n;
  return out;
}

void append_json_string(std::string& out, std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  std::size_t i = 0;
  const std::size_t n = s.size();
  while (i < n) {
    // Runs of plain ASCII are copied at once.
    std::size_t j = i;
    while (j < n) {
      const auto c = static_cast<unsigned char>(s[j]);
      if (c < 0x20 || c == '"' || c == '\\' || c >= 0x80) break;
      ++j;
    }
    out.append(s.data() + i, j - i);
    i = j;
    if (i >= n) break;
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        default:
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 15];
      }
      ++i;
      continue;
    }
    // A UTF-8 sequence (RFC 3629: no overlong forms, no surrogates, ≤ U+10FFFF).
    std::size_t len = 0;
    std::uint32_t cp = 0;
    if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07;
    bool ok = len != 0 && i + len <= n;
    for (std::size_t k = 1; ok && k < len; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) ok = false;
      else cp = (cp << 6) | (cc & 0x3F);
    }
    if (ok && ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
               (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))))
      ok = false;
    if (ok) {
      out.append(s.data() + i, len);
      i += len;
    } else {
      out += "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER
      ++i;
    }
  }
  out += '"';
}

void append_typed_value(std::string& out, std::string_view text, std::uint32_t type_oid) {
  if (auto element = element_type(type_oid)) {
    const std::size_t mark = out.size();
    std::string_view s = text;
    if (!s.empty() && s.front() == '[') {
      // Dimension decoration: [1:2]={…}.
      const auto eq = s.find('=');
      s = eq == std::string_view::npos ? std::string_view{} : s.substr(eq + 1);
    }
    auto rest = parse_array(out, trim_front(s), *element, *element == kBox ? ';' : ',', 1);
    if (!rest || !rest->empty()) {
      out.resize(mark);
      append_json_string(out, text);
    }
    return;
  }
  scalar_typed(out, text, type_oid);
}

void ResultWriter::begin_batch() {
  out_ += "{\"results\":[";
  first_result_ = true;
}

void ResultWriter::begin_result(bool array_mode, bool raw_text_output) {
  if (!first_result_) out_ += ',';
  first_result_ = false;
  array_mode_ = array_mode;
  raw_ = raw_text_output;
  fields_.clear();
  first_row_ = true;
  out_ += array_mode ? "{\"rowAsArray\":true,\"fields\":" : "{\"rowAsArray\":false,\"fields\":";
}

void ResultWriter::fields(std::span<const FieldDescription> fields) {
  fields_.assign(fields.begin(), fields.end());
  out_ += '[';
  bool first = true;
  for (const auto& f : fields) {
    if (!first) out_ += ',';
    first = false;
    out_ += "{\"name\":";
    append_json_string(out_, f.name);
    out_ += ",\"dataTypeID\":" + std::to_string(f.type_oid);
    out_ += ",\"tableID\":" + std::to_string(f.table_oid);
    out_ += ",\"columnID\":" + std::to_string(f.column_id);
    out_ += ",\"dataTypeSize\":" + std::to_string(f.type_size);
    out_ += ",\"dataTypeModifier\":" + std::to_string(f.type_modifier);
    out_ += ",\"format\":\"text\"}";
  }
  out_ += "],\"rows\":[";
}

void ResultWriter::value(const std::optional<std::string_view>& v, std::uint32_t type_oid) {
  if (!v) out_ += "null";
  else if (raw_) append_json_string(out_, *v);
  else append_typed_value(out_, *v, type_oid);
}

bool ResultWriter::row(std::span<const std::optional<std::string_view>> values) {
  if (!first_row_) out_ += ',';
  first_row_ = false;
  out_ += array_mode_ ? '[' : '{';
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out_ += ',';
    const std::uint32_t type = i < fields_.size() ? fields_[i].type_oid : 0;
    if (!array_mode_) {
      append_json_string(out_, i < fields_.size() ? std::string_view(fields_[i].name) : std::string_view{});
      out_ += ':';
    }
    value(values[i], type);
  }
  out_ += array_mode_ ? ']' : '}';
  return out_.size() <= max_bytes_;
}

void ResultWriter::end_result(std::string_view command_tag) {
  const auto tag = parse_command_tag(command_tag);
  out_ += "],\"command\":";
  append_json_string(out_, tag.command);
  out_ += ",\"rowCount\":";
  out_ += tag.row_count ? std::to_string(*tag.row_count) : std::string("null");
  out_ += '}';
}

void ResultWriter::end_batch() { out_ += "]}"; }

std::string error_json(const protocol::ErrorFields& fields) {
  std::string out = "{";
  for (const auto& key : kErrorKeys) {
    const std::string* v = fields.find(key.code);
    if (v == nullptr) continue;
    if (out.size() > 1) out += ',';
    append_json_string(out, key.name);
    out += ':';
    append_json_string(out, *v);
  }
  out += '}';
  return out;
}

std::string error_json(const protocol::ErrorResponse& e) {
  protocol::ErrorFields f;
  f.fields.emplace_back('S', e.severity);
  f.fields.emplace_back('C', e.sqlstate);
  f.fields.emplace_back('M', e.message);
  if (!e.detail.empty()) f.fields.emplace_back('D', e.detail);
  if (!e.hint.empty()) f.fields.emplace_back('H', e.hint);
  if (e.position > 0) f.fields.emplace_back('P', std::to_string(e.position));
  return error_json(f);
}

std::string error_json(std::string_view sqlstate, std::string_view message, std::string_view detail,
                       std::string_view hint) {
  auto e = protocol::ErrorResponse::make("ERROR", std::string(sqlstate), std::string(message));
  e.detail = std::string(detail);
  e.hint = std::string(hint);
  return error_json(e);
}

}  // namespace tokengate::http

// Answers for the web page's embedded files, with their security headers (see web_ui.hpp).
#include "proxy/http/web_ui.hpp"

namespace tokengate::http {

namespace {

// Whether an If-None-Match value (a list of entity tags, or "*") names `etag`.
// Weak comparison, as RFC 9110 (section 13.1.2) asks for If-None-Match.
bool etag_matches(std::string_view header, std::string_view etag) {
  while (!header.empty()) {
    const auto comma = header.find(',');
    std::string_view tag = header.substr(0, comma);
    header = comma == std::string_view::npos ? std::string_view{} : header.substr(comma + 1);
    while (!tag.empty() && (tag.front() == ' ' || tag.front() == '\t')) tag.remove_prefix(1);
    while (!tag.empty() && (tag.back() == ' ' || tag.back() == '\t')) tag.remove_suffix(1);
    if (tag.substr(0, 2) == "W/") tag.remove_prefix(2);
    if (tag == "*" || tag == etag) return true;
  }
  return false;
}

void add_page_headers(HttpResponse& r) {
  r.headers.push_back({"Content-Security-Policy", std::string(kWebUiCsp)});
  // Older browsers that ignore frame-ancestors.
  r.headers.push_back({"X-Frame-Options", "DENY"});
  r.headers.push_back({"Referrer-Policy", "no-referrer"});
  // No other site's window keeps a handle on this one, nor loads its files.
  r.headers.push_back({"Cross-Origin-Opener-Policy", "same-origin"});
  r.headers.push_back({"Cross-Origin-Resource-Policy", "same-origin"});
  r.headers.push_back({"Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=(), usb=()"});
}

}  // namespace

HttpResponse web_ui_response(std::string_view name, const HttpRequest& request) {
  const EmbeddedFile* found = nullptr;
  for (const auto& f : embedded_files())
    if (f.name == name) found = &f;
  const bool is_index = name == kWebUiIndex;
  // The document is served on / only: /ui/index.html would be a second
  // address whose relative links and bookmarks behave differently.
  if (found == nullptr || (is_index && request.path != "/")) {
    auto r = json_error(404, "08P01", "no such file: " + std::string(name.substr(0, 64)));
    add_page_headers(r);
    return r;
  }
  HttpResponse r;
  r.content_type = std::string(found->content_type);
  add_page_headers(r);
  r.headers.push_back({"ETag", std::string(found->etag)});
  // The document: never kept (the gateway's default no-store), so that a
  // page shown after logout or with a new token is not restored from a cache.
  // Its scripts and styles: kept, but checked with the ETag on every load, so
  // a new binary's page is never mixed with an old one's script.
  if (!is_index) r.headers.push_back({"Cache-Control", "no-cache"});
  const std::string* inm = request.header("If-None-Match");
  if (!is_index && inm != nullptr && etag_matches(*inm, found->etag)) {
    r.status = 304;
    return r;
  }
  r.body = std::string(found->body);
  return r;
}

}  // namespace tokengate::http

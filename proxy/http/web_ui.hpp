// The Settings › API Tokens web page: its files, built into the binary from
// proxy/http/ui/ (embed.py generates the table at build time), and the
// answers to GET / and GET /ui/{file} with their security headers. Sans-io;
// add_web_ui() registers the routes on the gateway.
#pragma once

#include <span>
#include <string_view>

#include "proxy/http/message.hpp"

namespace tokengate::http {

class Gateway;

struct EmbeddedFile {
  std::string_view name;          // "app.js": the last segment of /ui/{file}
  std::string_view content_type;  // "text/javascript; charset=utf-8"
  std::string_view body;
  std::string_view etag;          // a quoted hash of the body: "\"3f9a…\""
};

// Every file of the page, in the order meson lists them (generated code).
[[nodiscard]] std::span<const EmbeddedFile> embedded_files();

// The page's HTML document, answered on GET /.
inline constexpr std::string_view kWebUiIndex = "index.html";

// Every script and style comes from the page's own origin, as files (no inline
// code, no eval), it talks only to its origin, and nothing may frame it or
// take its forms elsewhere. Trusted Types with no policy: the page builds its
// DOM with textContent only, so any string reaching innerHTML is refused.
inline constexpr std::string_view kWebUiCsp =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
    "require-trusted-types-for 'script'; trusted-types 'none'";

// The answer to GET / (name == kWebUiIndex) or GET /ui/{name}: 200 with the
// file, 304 when If-None-Match names its ETag, 404 for an unknown name (or
// /ui/index.html: the page has one address). Every answer carries the
// Content-Security-Policy and the other headers of a page that holds
// credentials.
[[nodiscard]] HttpResponse web_ui_response(std::string_view name, const HttpRequest& request);

// Registers GET / and GET /ui/{file} (no credentials needed).
void add_web_ui(Gateway& gateway);

}  // namespace tokengate::http

// The web page's embedded files and their answers (proxy/http/web_ui.hpp): the bytes are those of
// proxy/http/ui/, and every answer carries the page's security headers; ETag revalidation.
#include <catch2/catch.hpp>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <sstream>

#include "proxy/http/web_ui.hpp"

using namespace tokengate::http;

namespace {

HttpRequest get(std::string path, std::vector<Header> headers = {}) {
  HttpRequest r;
  r.method = "GET";
  r.target = path;
  r.path = std::move(path);
  r.headers = std::move(headers);
  return r;
}

std::string source_file(const std::string& name) {
  std::ifstream in(std::string(TG_UI_SOURCE_DIR) + "/" + name, std::ios::binary);
  REQUIRE(in);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::string headers_of(const HttpResponse& r) {
  std::ostringstream out;
  out << r.status << " " << r.content_type << "\n";
  for (const auto& h : r.headers) out << h.name << ": " << h.value << "\n";
  return out.str();
}

const std::string* header(const HttpResponse& r, std::string_view name) {
  for (const auto& h : r.headers)
    if (iequals(h.name, name)) return &h.value;
  return nullptr;
}

const EmbeddedFile& file(std::string_view name) {
  for (const auto& f : embedded_files())
    if (f.name == name) return f;
  FAIL("no embedded file " << name);
  throw;
}

}  // namespace

TEST_CASE("web ui: the embedded files are the sources, byte for byte", "[http][web_ui]") {
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"index.html", "text/html; charset=utf-8"},
      {"app.css", "text/css; charset=utf-8"},
      {"app.js", "text/javascript; charset=utf-8"},
      {"favicon.svg", "image/svg+xml"},
  };
  REQUIRE(embedded_files().size() == expected.size());
  std::vector<std::string> etags;
  for (const auto& [name, type] : expected) {
    INFO(name);
    const auto& f = file(name);
    CHECK(f.content_type == type);
    CHECK(f.body == source_file(name));
    REQUIRE(f.etag.size() == 22);  // a quoted 20-digit hex hash
    CHECK(f.etag.front() == '"');
    CHECK(f.etag.back() == '"');
    etags.emplace_back(f.etag);
  }
  std::sort(etags.begin(), etags.end());
  CHECK(std::unique(etags.begin(), etags.end()) == etags.end());
}

TEST_CASE("web ui: GET / answers the document with the page's headers", "[http][web_ui]") {
  auto r = web_ui_response(kWebUiIndex, get("/"));
  INFO(headers_of(r));
  CHECK(r.status == 200);
  CHECK(r.content_type == "text/html; charset=utf-8");
  CHECK(r.body == file("index.html").body);
  REQUIRE(header(r, "Content-Security-Policy"));
  CHECK(*header(r, "Content-Security-Policy") ==
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'; "
        "require-trusted-types-for 'script'; trusted-types 'none'");
  CHECK(*header(r, "X-Frame-Options") == "DENY");
  CHECK(*header(r, "Referrer-Policy") == "no-referrer");
  CHECK(*header(r, "Cross-Origin-Opener-Policy") == "same-origin");
  CHECK(*header(r, "ETag") == file("index.html").etag);
  // The document is never cached (the gateway's default, no-store): no Cache-Control of its own here.
  CHECK(header(r, "Cache-Control") == nullptr);
  // Nor revalidated: a page shown after a logout must come from tokengate.
  auto again = web_ui_response(kWebUiIndex, get("/", {{"If-None-Match", std::string(file("index.html").etag)}}));
  CHECK(again.status == 200);
}

TEST_CASE("web ui: assets, ETag revalidation, unknown names", "[http][web_ui]") {
  const auto& js = file("app.js");
  auto r = web_ui_response("app.js", get("/ui/app.js"));
  INFO(headers_of(r));
  CHECK(r.status == 200);
  CHECK(r.body == js.body);
  CHECK(*header(r, "Cache-Control") == "no-cache");
  REQUIRE(header(r, "Content-Security-Policy"));

  const std::string tag(js.etag);
  for (const std::string& inm : {tag, "W/" + tag, "\"other\", " + tag, " \"x\" ,\t" + tag + " ", std::string("*")}) {
    INFO("If-None-Match: " << inm);
    auto cached = web_ui_response("app.js", get("/ui/app.js", {{"If-None-Match", inm}}));
    CHECK(cached.status == 304);
    CHECK(cached.body.empty());
    CHECK(*header(cached, "ETag") == tag);
  }
  for (const std::string& inm : {std::string("\"other\""), tag.substr(1), std::string(""), tag + "x"}) {
    INFO("If-None-Match: " << inm);
    CHECK(web_ui_response("app.js", get("/ui/app.js", {{"If-None-Match", inm}})).status == 200);
  }

  for (std::string_view name : {"index.html", "missing.js", "", "../app.js", "APP.JS"}) {
    INFO(name);
    auto missing = web_ui_response(name, get("/ui/" + std::string(name)));
    CHECK(missing.status == 404);
    CHECK(missing.content_type == "application/json");
    CHECK(missing.body.find("\"code\":\"08P01\"") != std::string::npos);
    CHECK(header(missing, "Content-Security-Policy") != nullptr);
  }
}

// GET / and GET /ui/{file}: the web page's routes on the gateway (see web_ui.hpp).
#include <boost/asio/awaitable.hpp>

#include "proxy/http/gateway.hpp"
#include "proxy/http/web_ui.hpp"

// GCC 12 warns that Asio's coroutine frames are freed by a mismatched
// operator delete; a known false positive for class-specific operator new
// in coroutine frames (GCC bug 109224), fixed in later releases.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

namespace tokengate::http {

void add_web_ui(Gateway& gateway) {
  RouteOptions page;
  page.auth = Auth::none;  // the page logs in through POST /api/login
  page.max_body = 0;
  gateway.add_route("GET", "/", page, [](HttpRequest& req) -> boost::asio::awaitable<HttpResponse> {
    co_return web_ui_response(kWebUiIndex, req);
  });
  gateway.add_route("GET", "/ui/{file}", page, [](HttpRequest& req) -> boost::asio::awaitable<HttpResponse> {
    const std::string* file = req.param("file");
    co_return web_ui_response(file ? std::string_view(*file) : std::string_view{}, req);
  });
}

}  // namespace tokengate::http

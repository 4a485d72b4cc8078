// Text that came from a peer (user and database names, an upstream's error
// message) made safe for the server log, which has one line per event: no
// byte a client sends can start a line of its own or pass for a quote, a
// token pasted where a name belongs is not written out, and long text is cut.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace tokengate {

// Escapes control characters (C0, DEL, C1, U+2028/U+2029) as \n, \t, \xNN or
// \u{NNNN}, a backslash and a double quote with a backslash, and bytes that
// are not UTF-8 as \xNN; masks every run that looks like a token ("eyJ" then
// base64url characters or dots, 20 or more in all) as "eyJ…(masked, N
// bytes)"; cuts the result after `max_bytes` of input with "…(N bytes)".
[[nodiscard]] std::string log_text(std::string_view text, std::size_t max_bytes = 256);

// Whether `text` holds a run that log_text would mask as a token: "eyJ" then
// base64url characters or dots, 20 or more in all. A token cut short (a
// user name is cut at 63 bytes) still matches where a JWT's shape would not.
[[nodiscard]] bool has_token_run(std::string_view text);

// log_text for a role or database name: PostgreSQL's names are at most 63
// bytes, so anything longer is cut there.
[[nodiscard]] inline std::string log_name(std::string_view name) { return log_text(name, 64); }

}  // namespace tokengate

// Error codes of the token service, their std::error_category, and their SQLSTATEs.
#pragma once

#include <string>
#include <string_view>
#include <system_error>

namespace tokengate::tokenstore {

// What went wrong in a token-service operation. Each value maps to exactly one
// SQLSTATE (see sqlstate()); the SQL front end and the HTTP API both turn an
// `error` into a client-visible message with it.
enum class errc {
    ok = 0,
    invalid_name,        // empty name or a NUL byte in it               -> 42602
    name_too_long,       // token name over 63 bytes                     -> 42622
    name_in_use,         // an active token of the owner has that name   -> 42710
    token_not_found,     // no active token with that name               -> 42704
    role_not_found,      // the role does not exist upstream             -> 42704
    bad_duration,        // unparsable, zero, negative or > 100 years    -> 22023
    comment_too_long,    // comment over max_comment_bytes               -> 22001
    duration_above_max,  // above the owner's effective maximum          -> 22023
    permission_denied,   // FOR USER someone else / admin-only statement -> 42501
    store_unavailable,   // LMDB or key-file failure                     -> 58030
    too_many_tokens,     // the owner has max_tokens_per_user active ones -> 53400
};

const std::error_category& tokenstore_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept
{
    return {static_cast<int>(e), tokenstore_category()};
}

// The five-character SQLSTATE for a code ("00000" for ok).
[[nodiscard]] std::string_view sqlstate(errc e) noexcept;

// An error with the text a client sees, PostgreSQL style: `message` is a
// lower-case sentence without a trailing period, `detail` and `hint` (may be
// empty) full sentences. None ever contains a token value or key material.
struct error {
    errc code = errc::ok;
    std::string message;
    std::string detail;
    std::string hint;

    [[nodiscard]] std::string_view sqlstate() const noexcept { return tokenstore::sqlstate(code); }
    [[nodiscard]] std::error_code error_code() const noexcept { return make_error_code(code); }
};

// Builders for the common messages, so every front end words them alike.
[[nodiscard]] error make_error(errc code, std::string message, std::string detail = {});
[[nodiscard]] error token_not_found_error(std::string_view name);
[[nodiscard]] error role_not_found_error(std::string_view role);
[[nodiscard]] error permission_denied_error(std::string_view what, std::string detail = {}, std::string hint = {});
[[nodiscard]] error store_unavailable_error(std::string_view why);

}  // namespace tokengate::tokenstore

template <>
struct std::is_error_code_enum<tokengate::tokenstore::errc> : std::true_type {};

// Error category and SQLSTATE mapping for tokenstore::errc.
#include "tokenstore/errors.hpp"

namespace tokengate::tokenstore {

namespace {

class category final : public std::error_category {
public:
    const char* name() const noexcept override { return "tokengate.tokenstore"; }

    std::string message(int ev) const override
    {
        switch (static_cast<errc>(ev)) {
        case errc::ok: return "success";
        case errc::invalid_name: return "invalid token name";
        case errc::name_too_long: return "token name too long";
        case errc::name_in_use: return "token name already in use";
        case errc::token_not_found: return "API token does not exist";
        case errc::role_not_found: return "role does not exist";
        case errc::bad_duration: return "invalid duration";
        case errc::comment_too_long: return "comment too long";
        case errc::duration_above_max: return "duration above the effective maximum";
        case errc::permission_denied: return "permission denied";
        case errc::store_unavailable: return "token store unavailable";
        case errc::too_many_tokens: return "too many API tokens";
        }
        return "unknown tokenstore error";
    }
};

}  // namespace

const std::error_category& tokenstore_category() noexcept
{
    static const category instance;
    return instance;
}

std::string_view sqlstate(errc e) noexcept
{
    switch (e) {
    case errc::ok: return "00000";
    case errc::invalid_name: return "42602";         // invalid_name
    case errc::name_too_long: return "42622";        // name_too_long
    case errc::name_in_use: return "42710";          // duplicate_object
    case errc::token_not_found: return "42704";      // undefined_object
    case errc::role_not_found: return "42704";       // undefined_object
    case errc::bad_duration: return "22023";         // invalid_parameter_value
    case errc::comment_too_long: return "22001";     // string_data_right_truncation
    case errc::duration_above_max: return "22023";   // invalid_parameter_value
    case errc::permission_denied: return "42501";    // insufficient_privilege
    case errc::store_unavailable: return "58030";    // io_error
    case errc::too_many_tokens: return "53400";      // configuration_limit_exceeded
    }
    return "XX000";
}

error make_error(errc code, std::string message, std::string detail)
{
    return error{code, std::move(message), std::move(detail), {}};
}

error token_not_found_error(std::string_view name)
{
    return make_error(errc::token_not_found, "API token \"" + std::string(name) + "\" does not exist");
}

error role_not_found_error(std::string_view role)
{
    return make_error(errc::role_not_found, "role \"" + std::string(role) + "\" does not exist");
}

error permission_denied_error(std::string_view what, std::string detail, std::string hint)
{
    auto e = make_error(errc::permission_denied, "permission denied to " + std::string(what), std::move(detail));
    e.hint = std::move(hint);
    return e;
}

error store_unavailable_error(std::string_view why)
{
    return make_error(errc::store_unavailable, "API token store unavailable", std::string(why));
}

}  // namespace tokengate::tokenstore

// Shared helpers for tokenstore tests: temporary data directories, clocks, Catch2 printers.
#pragma once

#include <catch2/catch.hpp>

#include <filesystem>
#include <string>

#include "tokenstore/errors.hpp"
#include "tokenstore/jwt.hpp"
#include "tokenstore/service.hpp"

namespace tokengate::tokenstore::test {

// A mkdtemp directory under $TMPDIR (or /tmp), removed with everything in it on destruction.
class temp_dir {
public:
    temp_dir();
    ~temp_dir();
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
    [[nodiscard]] const std::filesystem::path& path() const { return path_; }

private:
    std::filesystem::path path_;
};

// A fixed "now" far from the epoch so subtraction never underflows.
inline constexpr std::int64_t t0 = 1'800'000'000;

// Store + keyring + service in one temp dir; MDB_NOSYNC unless durable.
struct fixture {
    explicit fixture(bool durable = false, service_config cfg = {});
    temp_dir dir;
    keyring keys;
    store st;
    token_service svc;
};

}  // namespace tokengate::tokenstore::test

// Readable failures: print enums by name.
namespace Catch {
template <>
struct StringMaker<tokengate::tokenstore::verify_status> {
    static std::string convert(tokengate::tokenstore::verify_status s)
    {
        return std::string(tokengate::tokenstore::to_string(s));
    }
};
template <>
struct StringMaker<tokengate::tokenstore::errc> {
    static std::string convert(tokengate::tokenstore::errc e)
    {
        return "errc::" + tokengate::tokenstore::make_error_code(e).message() + " (" +
               std::string(tokengate::tokenstore::sqlstate(e)) + ")";
    }
};
template <>
struct StringMaker<tokengate::tokenstore::token_status> {
    static std::string convert(tokengate::tokenstore::token_status s)
    {
        return std::string(tokengate::tokenstore::to_string(s));
    }
};
}  // namespace Catch

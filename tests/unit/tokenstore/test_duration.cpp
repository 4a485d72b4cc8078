// Duration strings: accepted forms, precise errors, formatting.
#include "tests/unit/tokenstore/test_helpers.hpp"
#include "tokenstore/duration.hpp"

using namespace tokengate::tokenstore;

namespace {
std::int64_t secs(std::string_view text)
{
    auto r = parse_duration(text);
    INFO("duration '" << text << "': " << (r ? std::string("ok") : r.error_value().detail));
    REQUIRE(r.code() == errc::ok);
    return r->count();
}
std::string detail_of(std::string_view text)
{
    auto r = parse_duration(text);
    REQUIRE(r.code() == errc::bad_duration);
    CHECK(r.error_value().sqlstate() == "22023");
    CHECK(r.error_value().message == "invalid duration \"" + std::string(text) + "\"");
    return r.error_value().detail;
}
}  // namespace

TEST_CASE("documented duration forms parse to seconds", "[duration]")
{
    CHECK(secs("30d") == 30 * 86400);
    CHECK(secs("24h") == 86400);
    CHECK(secs("90m") == 5400);
    CHECK(secs("45s") == 45);
    CHECK(secs("2w") == 14 * 86400);
    CHECK(secs("1d12h") == 36 * 3600);
    CHECK(secs("1d 12h 30m 5s") == 86400 + 12 * 3600 + 1800 + 5);
    CHECK(secs("30 days") == 30 * 86400);
    CHECK(secs("12 hours") == 12 * 3600);
    CHECK(secs("1 year") == 365 * 86400);
    CHECK(secs("1 month") == 30 * 86400);
    CHECK(secs("2 Months") == 60 * 86400);
    CHECK(secs("1 DAY") == 86400);
    CHECK(secs(" 5 minutes ") == 300);
    CHECK(secs("100 years") == 100LL * 365 * 86400);
}

TEST_CASE("bad durations say exactly what is wrong", "[duration]")
{
    CHECK(detail_of("") == "A duration such as '30d', '12h' or '1 year' is required.");
    CHECK(detail_of("   ") == "A duration such as '30d', '12h' or '1 year' is required.");
    CHECK(detail_of("30") == "Missing unit after 30; use s, m, h, d, w, month or year.");
    CHECK(detail_of("3 fortnights") == "Unknown unit \"fortnights\"; use s, m, h, d, w, month or year.");
    CHECK(detail_of("d30") == "Expected a number at position 1.");
    CHECK(detail_of("-5d") == "Expected a number at position 1.");
    CHECK(detail_of("1.5d") == "Unexpected character \".\" at position 2; use whole numbers with units, as in '1d12h'.");
    CHECK(detail_of("0d") == "The duration must be positive.");
    CHECK(detail_of("0s 0m") == "The duration must be positive.");
    CHECK(detail_of("101 years") == "The duration must be at most 100 years.");
    CHECK(detail_of("100y1s") == "The duration must be at most 100 years.");
    CHECK(detail_of("99999999999999999999999s") == "The duration must be at most 100 years.");
}

TEST_CASE("durations format compactly", "[duration]")
{
    CHECK(format_duration(std::chrono::seconds(365 * 86400)) == "365d");
    CHECK(format_duration(std::chrono::seconds(36 * 3600)) == "1d12h");
    CHECK(format_duration(std::chrono::seconds(5400)) == "1h30m");
    CHECK(format_duration(std::chrono::seconds(45)) == "45s");
}

TEST_CASE("hostile durations: long texts are refused unparsed and quoted cut short", "[duration][hostile]")
{
    // 100 MB of digits or letters is refused without being read, and the
    // message does not echo it.
    const std::string digits(100 * 1000 * 1000, '9');
    auto r = parse_duration(digits);
    REQUIRE(r.code() == errc::bad_duration);
    CHECK(r.error_value().detail == "A duration is at most 100 bytes long.");
    CHECK(r.error_value().message.size() < 200);
    CHECK(r.error_value().message == "invalid duration \"" + std::string(100, '9') + "\xE2\x80\xA6\"");

    const std::string letters = "1" + std::string(200, 'd');
    CHECK(parse_duration(letters).code() == errc::bad_duration);

    // A cut never splits a character: 51 two-byte characters are 102 bytes.
    std::string cyrillic;
    for (int i = 0; i < 51; ++i) cyrillic += "\xD0\xB4";
    auto c = parse_duration(cyrillic);
    REQUIRE(c.code() == errc::bad_duration);
    CHECK(c.error_value().message == "invalid duration \"" + cyrillic.substr(0, 100) + "\xE2\x80\xA6\"");

    // Exactly at the bound it is still parsed.
    std::string at_bound = "1d" + std::string(98, ' ');
    CHECK(secs(at_bound) == 86400);
    // A multi-byte character is quoted whole in the detail.
    CHECK(detail_of("1\xD0\xB4") == "Unexpected character \"\xD0\xB4\" at position 2; use whole numbers with units, "
                                   "as in '1d12h'.");
    CHECK(detail_of("1d\xD0\xB4") == "Expected a number at position 3.");
}

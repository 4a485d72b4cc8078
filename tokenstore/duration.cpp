// Duration parsing and formatting for MAX DURATION and policies.
#include "tokenstore/duration.hpp"

#include <array>
#include <cctype>
#include <cstdint>
#include <utility>

namespace tokengate::tokenstore {

namespace {

struct unit {
    std::string_view name;
    std::int64_t seconds;
};

constexpr std::array<unit, 24> units{{
    {"s", 1},          {"sec", 1},          {"secs", 1},        {"second", 1},     {"seconds", 1},
    {"m", 60},         {"min", 60},         {"mins", 60},       {"minute", 60},    {"minutes", 60},
    {"h", 3600},       {"hr", 3600},        {"hrs", 3600},      {"hour", 3600},    {"hours", 3600},
    {"d", 86400},      {"day", 86400},      {"days", 86400},    {"w", 604800},     {"week", 604800},
    {"weeks", 604800}, {"month", 2592000},  {"months", 2592000}, {"y", 31536000},
}};
constexpr std::array<unit, 4> more_units{{{"yr", 31536000}, {"yrs", 31536000}, {"year", 31536000}, {"years", 31536000}}};

// Length of the UTF-8 sequence starting at s[i] (1 for anything malformed), so
// messages never cut a character in two.
std::size_t char_length(std::string_view s, std::size_t i)
{
    const auto b = static_cast<unsigned char>(s[i]);
    std::size_t n = b >= 0xF0 ? 4 : b >= 0xE0 ? 3 : b >= 0xC0 ? 2 : 1;
    if (i + n > s.size()) return 1;
    for (std::size_t k = 1; k < n; ++k)
        if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return 1;
    return n;
}

// The text as quoted in a message: whole characters, at most max_duration_text bytes.
std::string quoted(std::string_view text)
{
    if (text.size() <= max_duration_text) return std::string(text);
    std::size_t keep = 0;
    while (keep < text.size()) {
        std::size_t n = char_length(text, keep);
        if (keep + n > max_duration_text) break;
        keep += n;
    }
    return std::string(text.substr(0, keep)) + "\xE2\x80\xA6";  // …
}

error bad(std::string_view text, std::string detail)
{
    return make_error(errc::bad_duration, "invalid duration \"" + quoted(text) + "\"", std::move(detail));
}

std::int64_t unit_seconds(std::string_view name)
{
    for (const auto& u : units)
        if (u.name == name) return u.seconds;
    for (const auto& u : more_units)
        if (u.name == name) return u.seconds;
    return 0;
}

}  // namespace

result<std::chrono::seconds> parse_duration(std::string_view text)
{
    const std::int64_t limit = max_token_duration.count();
    if (text.size() > max_duration_text)
        return bad(text, "A duration is at most " + std::to_string(max_duration_text) + " bytes long.");
    std::int64_t total = 0;
    std::size_t i = 0;
    auto skip_spaces = [&] {
        while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    };
    skip_spaces();
    if (i == text.size()) return bad(text, "A duration such as '30d', '12h' or '1 year' is required.");
    while (i < text.size()) {
        if (!std::isdigit(static_cast<unsigned char>(text[i])))
            return bad(text, "Expected a number at position " + std::to_string(i + 1) + ".");
        std::int64_t n = 0;
        while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
            n = n * 10 + (text[i] - '0');
            if (n > limit) return bad(text, "The duration must be at most 100 years.");
            ++i;
        }
        skip_spaces();
        if (i < text.size() && !std::isalpha(static_cast<unsigned char>(text[i])))
            return bad(text, "Unexpected character \"" + std::string(text.substr(i, char_length(text, i))) +
                                 "\" at position " +
                                 std::to_string(i + 1) + "; use whole numbers with units, as in '1d12h'.");
        std::size_t start = i;
        std::string name;
        while (i < text.size() && std::isalpha(static_cast<unsigned char>(text[i])))
            name += static_cast<char>(std::tolower(static_cast<unsigned char>(text[i++])));
        if (name.empty())
            return bad(text, "Missing unit after " + std::to_string(n) +
                                 "; use s, m, h, d, w, month or year.");
        std::int64_t mult = unit_seconds(name);
        if (mult == 0)
            return bad(text, "Unknown unit \"" + std::string(text.substr(start, i - start)) +
                                 "\"; use s, m, h, d, w, month or year.");
        if (n > limit / mult || total + n * mult > limit)
            return bad(text, "The duration must be at most 100 years.");
        total += n * mult;
        skip_spaces();
    }
    if (total <= 0) return bad(text, "The duration must be positive.");
    return std::chrono::seconds(total);
}

std::string format_duration(std::chrono::seconds d)
{
    std::int64_t s = d.count();
    if (s <= 0) return "0s";
    std::string out;
    const std::pair<std::int64_t, char> parts[] = {{86400, 'd'}, {3600, 'h'}, {60, 'm'}, {1, 's'}};
    for (auto [size, suffix] : parts) {
        if (s >= size) {
            out += std::to_string(s / size);
            out += suffix;
            s %= size;
        }
    }
    return out;
}

}  // namespace tokengate::tokenstore

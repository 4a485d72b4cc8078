// JWT minting and stateless verification with Botan HMAC-SHA-256; JSON through Boost.JSON on a stack arena.
#include "tokenstore/jwt.hpp"

#include <botan/hash.h>
#include <botan/mac.h>
#include <botan/mem_ops.h>
#include <botan/system_rng.h>

#include <boost/json.hpp>
#include <memory>

namespace tokengate::tokenstore {

namespace {

constexpr char b64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

constexpr std::array<std::int8_t, 256> make_b64_table()
{
    std::array<std::int8_t, 256> t{};
    for (auto& v : t) v = -1;
    for (int i = 0; i < 64; ++i) t[static_cast<unsigned char>(b64_alphabet[i])] = static_cast<std::int8_t>(i);
    return t;
}
constexpr auto b64_table = make_b64_table();

// Botan objects are not thread-safe; one per thread avoids an allocation per call.
Botan::MessageAuthenticationCode& thread_hmac()
{
    thread_local auto mac = Botan::MessageAuthenticationCode::create_or_throw("HMAC(SHA-256)");
    return *mac;
}

Botan::HashFunction& thread_sha256()
{
    thread_local auto h = Botan::HashFunction::create_or_throw("SHA-256");
    return *h;
}

void hmac(const signing_key& key, std::string_view signing_input, std::uint8_t out[32])
{
    auto& mac = thread_hmac();
    // Botan's HMAC re-primes itself with the key after final(), so the key
    // schedule is only needed when the key changes. Compared by value: a
    // keyring's address may be reused by another one.
    thread_local std::array<std::uint8_t, 32> keyed_with{};
    thread_local bool keyed = false;
    if (!keyed || keyed_with != key.secret) {
        mac.set_key(key.secret.data(), key.secret.size());
        keyed_with = key.secret;
        keyed = true;
    }
    mac.update(reinterpret_cast<const std::uint8_t*>(signing_input.data()), signing_input.size());
    mac.final(out);
}

void append_json_string(std::string& out, std::string_view s)
{
    out += '"';
    for (char c : s) {
        auto u = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (u < 0x20) {
            static constexpr char hex[] = "0123456789abcdef";
            out += "\\u00";
            out += hex[u >> 4];
            out += hex[u & 15];
        } else {
            out += c;
        }
    }
    out += '"';
}

bool b64_part_ok(std::string_view s) noexcept
{
    if (s.empty()) return false;
    for (char c : s)
        if (b64_table[static_cast<unsigned char>(c)] < 0) return false;
    return true;
}

// Upper bound of a decoded header/payload we bother parsing. Ours are under
// 200 bytes (a 63-byte user name included).
constexpr std::size_t max_json_part = 1024;
// The parsed form lives in a fixed arena on the stack. A hostile 1 KiB part
// (`[0,0,0,…]`) could need more than this; then the parse fails, as it
// should, instead of allocating.
constexpr std::size_t json_arena_bytes = 4 * max_json_part;
// Our header and payload are flat objects: anything nested deeper is not ours.
constexpr std::size_t max_json_depth = 1;

// Parses `text` as a JSON object with its storage in `mr`; a null value on
// any failure (syntax, depth, arena exhausted, not an object). Never throws:
// the arena's exhaustion is an exception inside Boost.JSON, caught here. The
// result is move-constructed, so it keeps `mr` as its storage: declare the
// value after `mr`.
boost::json::value parse_object(std::string_view text, boost::json::static_resource& mr) noexcept
{
    try {
        boost::json::parse_options opt;
        opt.max_depth = max_json_depth;
        boost::system::error_code ec;
        boost::json::value v = boost::json::parse(text, ec, &mr, opt);
        if (!ec && v.is_object()) return v;
    } catch (...) {
    }
    return nullptr;
}

// Fast paths for the exact bytes mint_token writes. Anything else (other key
// order, spaces, escapes, a different alg) falls back to the full JSON parse,
// which gives the same answer, just slower.
constexpr std::string_view canonical_header_prefix = R"({"alg":"HS256","typ":"JWT","kid":")";

bool fast_header(std::string_view h, std::string_view& kid)
{
    if (h.size() != canonical_header_prefix.size() + 16 + 2 || h.substr(0, canonical_header_prefix.size()) != canonical_header_prefix ||
        h.substr(h.size() - 2) != "\"}")
        return false;
    kid = h.substr(canonical_header_prefix.size(), 16);
    return kid.find_first_of("\\\"") == std::string_view::npos;
}

bool take(std::string_view& s, std::string_view lit)
{
    if (s.substr(0, lit.size()) != lit) return false;
    s.remove_prefix(lit.size());
    return true;
}

bool take_int(std::string_view& s, std::int64_t& v)
{
    std::size_t i = 0;
    v = 0;
    // 15 digits: far beyond any exp, and no overflow to think about.
    while (i < s.size() && i < 15 && s[i] >= '0' && s[i] <= '9') v = v * 10 + (s[i++] - '0');
    if (i == 0 || (i > 1 && s[0] == '0') || (i < s.size() && s[i] >= '0' && s[i] <= '9')) return false;
    s.remove_prefix(i);
    return true;
}

bool fast_payload(std::string_view p, token_claims& out)
{
    if (!take(p, R"({"user":")")) return false;
    auto end = p.find('"');
    if (end == std::string_view::npos) return false;
    std::string_view user = p.substr(0, end);
    for (char c : user)
        if (c == '\\' || static_cast<unsigned char>(c) < 0x20) return false;
    p.remove_prefix(end);
    if (!take(p, R"(","tid":")") || p.size() < 32) return false;
    auto tid = tid_from_hex(p.substr(0, 32));
    if (!tid) return false;
    p.remove_prefix(32);
    std::int64_t iat = 0, exp = 0;
    if (!take(p, R"(","iat":)") || !take_int(p, iat) || !take(p, R"(,"exp":)") || !take_int(p, exp) || p != "}")
        return false;
    out.user.assign(user.data(), user.size());
    out.tid = *tid;
    out.iat = iat;
    out.exp = exp;
    return true;
}

}  // namespace

tid_t random_tid()
{
    tid_t t;
    Botan::system_rng().randomize(t.data(), t.size());
    return t;
}

std::string tid_to_hex(const tid_t& tid)
{
    static constexpr char digits[] = "0123456789abcdef";
    std::string out(32, '\0');
    for (std::size_t i = 0; i < tid.size(); ++i) {
        out[2 * i] = digits[tid[i] >> 4];
        out[2 * i + 1] = digits[tid[i] & 15];
    }
    return out;
}

std::optional<tid_t> tid_from_hex(std::string_view hex)
{
    if (hex.size() != 32) return std::nullopt;
    auto val = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        return -1;
    };
    tid_t t;
    for (std::size_t i = 0; i < t.size(); ++i) {
        int hi = val(hex[2 * i]);
        int lo = val(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return std::nullopt;
        t[i] = static_cast<std::uint8_t>(hi << 4 | lo);
    }
    return t;
}

std::string base64url_encode(std::span<const std::uint8_t> in)
{
    std::string out;
    out.reserve((in.size() * 4 + 2) / 3);
    std::size_t i = 0;
    for (; i + 3 <= in.size(); i += 3) {
        std::uint32_t v = std::uint32_t(in[i]) << 16 | std::uint32_t(in[i + 1]) << 8 | in[i + 2];
        out += b64_alphabet[v >> 18 & 63];
        out += b64_alphabet[v >> 12 & 63];
        out += b64_alphabet[v >> 6 & 63];
        out += b64_alphabet[v & 63];
    }
    std::size_t rest = in.size() - i;
    if (rest == 1) {
        std::uint32_t v = std::uint32_t(in[i]) << 16;
        out += b64_alphabet[v >> 18 & 63];
        out += b64_alphabet[v >> 12 & 63];
    } else if (rest == 2) {
        std::uint32_t v = std::uint32_t(in[i]) << 16 | std::uint32_t(in[i + 1]) << 8;
        out += b64_alphabet[v >> 18 & 63];
        out += b64_alphabet[v >> 12 & 63];
        out += b64_alphabet[v >> 6 & 63];
    }
    return out;
}

bool base64url_decode(std::string_view text, std::string& out)
{
    if (text.size() % 4 == 1) {
        out.clear();
        return false;
    }
    out.resize(text.size() * 3 / 4);  // exact for unpadded base64
    std::size_t o = 0;
    std::uint32_t acc = 0;
    int bits = 0;
    for (char c : text) {
        int v = b64_table[static_cast<unsigned char>(c)];
        if (v < 0) return false;
        acc = (acc << 6) | static_cast<std::uint32_t>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = static_cast<char>((acc >> bits) & 0xff);
        }
    }
    out.resize(o);
    // Leftover bits must be zero, so each token has exactly one encoding.
    return (acc & ((1u << bits) - 1)) == 0;
}

std::string mint_token(const signing_key& key, const token_claims& claims)
{
    std::string header = R"({"alg":"HS256","typ":"JWT","kid":)";
    append_json_string(header, key.kid);
    header += '}';
    std::string payload = R"({"user":)";
    append_json_string(payload, claims.user);
    payload += R"(,"tid":")";
    payload += tid_to_hex(claims.tid);
    payload += R"(","iat":)";
    payload += std::to_string(claims.iat);
    payload += R"(,"exp":)";
    payload += std::to_string(claims.exp);
    payload += '}';

    auto bytes = [](const std::string& s) {
        return std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
    };
    std::string token = base64url_encode(bytes(header));
    token += '.';
    token += base64url_encode(bytes(payload));
    std::uint8_t sig[32];
    hmac(key, token, sig);
    token += '.';
    token += base64url_encode(std::span<const std::uint8_t>(sig, sizeof sig));
    return token;
}

sha256_t token_hash(std::string_view token)
{
    auto& h = thread_sha256();
    h.update(reinterpret_cast<const std::uint8_t*>(token.data()), token.size());
    sha256_t out;
    h.final(out.data());
    return out;
}

bool looks_like_token(std::string_view text) noexcept
{
    if (text.size() > max_token_length || text.substr(0, 3) != "eyJ") return false;
    auto d1 = text.find('.');
    if (d1 == std::string_view::npos) return false;
    auto d2 = text.find('.', d1 + 1);
    if (d2 == std::string_view::npos || text.find('.', d2 + 1) != std::string_view::npos) return false;
    return b64_part_ok(text.substr(0, d1)) && b64_part_ok(text.substr(d1 + 1, d2 - d1 - 1)) &&
           b64_part_ok(text.substr(d2 + 1));
}

std::string_view to_string(verify_status s) noexcept
{
    switch (s) {
    case verify_status::ok: return "ok";
    case verify_status::bad_format: return "bad_format";
    case verify_status::bad_alg: return "bad_alg";
    case verify_status::unknown_kid: return "unknown_kid";
    case verify_status::bad_signature: return "bad_signature";
    case verify_status::expired: return "expired";
    case verify_status::unknown_tid: return "unknown_tid";
    case verify_status::hash_mismatch: return "hash_mismatch";
    case verify_status::revoked: return "revoked";
    case verify_status::wrong_owner: return "wrong_owner";
    case verify_status::store_unavailable: return "store_unavailable";
    case verify_status::registry_stale: return "registry_stale";
    }
    return "unknown";
}

verify_status check_token(std::string_view token, keyring& keys, std::int64_t now, token_claims& out)
{
    if (token.size() > max_token_length) return verify_status::bad_format;
    auto d1 = token.find('.');
    if (d1 == std::string_view::npos) return verify_status::bad_format;
    auto d2 = token.find('.', d1 + 1);
    if (d2 == std::string_view::npos || token.find('.', d2 + 1) != std::string_view::npos)
        return verify_status::bad_format;
    std::string_view header_b64 = token.substr(0, d1);
    std::string_view payload_b64 = token.substr(d1 + 1, d2 - d1 - 1);
    std::string_view sig_b64 = token.substr(d2 + 1);

    thread_local std::string header, payload, sig;
    if (!base64url_decode(header_b64, header) || !base64url_decode(payload_b64, payload) ||
        !base64url_decode(sig_b64, sig))
        return verify_status::bad_format;
    if (header.size() > max_json_part || payload.size() > max_json_part) return verify_status::bad_format;

    // A fixed arena: parsing never touches the heap.
    unsigned char arena[json_arena_bytes];
    std::string_view kid;
    if (!fast_header(header, kid)) {
        boost::json::static_resource mr(arena, sizeof arena);
        boost::json::value hv = parse_object(header, mr);
        if (!hv.is_object()) return verify_status::bad_format;
        const auto& ho = hv.get_object();
        const auto* alg = ho.if_contains("alg");
        if (alg == nullptr || !alg->is_string()) return verify_status::bad_format;
        if (alg->get_string() != "HS256") return verify_status::bad_alg;
        const auto* k = ho.if_contains("kid");
        if (k == nullptr || !k->is_string()) return verify_status::bad_format;
        // kid is copied to a small local so the arena can be reused for the payload.
        if (k->get_string().size() > 64) return verify_status::unknown_kid;
        thread_local std::string kid_buf;
        kid_buf.assign(k->get_string().data(), k->get_string().size());
        kid = kid_buf;
    }

    const signing_key* key = keys.find(kid);
    if (key == nullptr) {
        keys.refresh();  // another process may have rotated
        key = keys.find(kid);
        if (key == nullptr) return verify_status::unknown_kid;
    }

    std::uint8_t expected[32];
    hmac(*key, token.substr(0, d2), expected);
    if (sig.size() != sizeof expected ||
        !Botan::constant_time_compare(expected, reinterpret_cast<const std::uint8_t*>(sig.data()), sizeof expected))
        return verify_status::bad_signature;

    if (!fast_payload(payload, out)) {
        boost::json::static_resource mr(arena, sizeof arena);
        boost::json::value pv = parse_object(payload, mr);
        if (!pv.is_object()) return verify_status::bad_format;
        const auto& po = pv.get_object();
        const auto* user = po.if_contains("user");
        const auto* tid = po.if_contains("tid");
        const auto* iat = po.if_contains("iat");
        const auto* exp = po.if_contains("exp");
        if (user == nullptr || !user->is_string() || tid == nullptr || !tid->is_string() || iat == nullptr ||
            !iat->is_int64() || exp == nullptr || !exp->is_int64())
            return verify_status::bad_format;
        auto t = tid_from_hex(std::string_view(tid->get_string().data(), tid->get_string().size()));
        if (!t) return verify_status::bad_format;
        out.user.assign(user->get_string().data(), user->get_string().size());
        out.tid = *t;
        out.iat = iat->get_int64();
        out.exp = exp->get_int64();
    }
    if (out.exp <= now) return verify_status::expired;
    return verify_status::ok;
}

}  // namespace tokengate::tokenstore

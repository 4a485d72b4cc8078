// Token form: base64url, minting, and every stateless rejection reason.
#include <botan/mac.h>
#include <sys/stat.h>

#include <chrono>
#include <fstream>
#include <random>
#include <thread>

#include "tests/unit/tokenstore/test_helpers.hpp"
#include "tokenstore/jwt.hpp"
#include "tokenstore/keys.hpp"

using namespace tokengate::tokenstore;
using tokengate::tokenstore::test::t0;
using tokengate::tokenstore::test::temp_dir;

namespace {

std::string b64(std::string_view s)
{
    return base64url_encode(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(s.data()), s.size()));
}

std::string decode(std::string_view s)
{
    std::string out;
    REQUIRE(base64url_decode(s, out));
    return out;
}

std::vector<std::string> split(const std::string& token)
{
    std::vector<std::string> parts;
    std::size_t start = 0;
    for (;;) {
        auto dot = token.find('.', start);
        parts.push_back(token.substr(start, dot - start));
        if (dot == std::string::npos) break;
        start = dot + 1;
    }
    return parts;
}

token_claims claims_for(std::string user, std::int64_t exp)
{
    return token_claims{std::move(user), random_tid(), t0, exp};
}

}  // namespace

TEST_CASE("base64url round-trips every length and rejects padding and foreign characters", "[jwt]")
{
    std::string data;
    for (int n = 0; n < 40; ++n) {
        std::string enc = b64(data);
        CHECK(enc.find('=') == std::string::npos);
        CHECK(decode(enc) == data);
        data += static_cast<char>(n * 37 + 200);
    }
    std::string out;
    CHECK_FALSE(base64url_decode("ab==", out));
    CHECK_FALSE(base64url_decode("a+b/", out));
    CHECK_FALSE(base64url_decode("a", out));
    CHECK_FALSE(base64url_decode("AB", out));  // non-zero trailing bits: not canonical
}

TEST_CASE("tid hex round-trip", "[jwt]")
{
    tid_t t = random_tid();
    auto hex = tid_to_hex(t);
    CHECK(hex.size() == 32u);
    CHECK(tid_from_hex(hex) == std::optional<tid_t>(t));
    CHECK(tid_from_hex("XYZ") == std::nullopt);
    CHECK(tid_from_hex(std::string(32, 'G')) == std::nullopt);
}

TEST_CASE("a minted token has the documented JWT form", "[jwt]")
{
    temp_dir dir;
    keyring keys(dir.path());
    token_claims c = claims_for("alice \"the\" admin", t0 + 3600);
    std::string token = mint_token(keys.newest(), c);
    auto parts = split(token);
    REQUIRE(parts.size() == 3u);
    CHECK(decode(parts[0]) == R"({"alg":"HS256","typ":"JWT","kid":")" + keys.newest().kid + R"("})");
    CHECK(decode(parts[1]) == R"({"user":"alice \"the\" admin","tid":")" + tid_to_hex(c.tid) + R"(","iat":)" +
                                  std::to_string(t0) + R"(,"exp":)" + std::to_string(t0 + 3600) + "}");
    CHECK(decode(parts[2]).size() == 32u);
    CHECK(looks_like_token(token));
    CHECK_FALSE(looks_like_token("hunter2"));
    CHECK_FALSE(looks_like_token("eyJ.a"));

    token_claims got;
    CHECK(check_token(token, keys, t0, got) == verify_status::ok);
    CHECK(got.user == c.user);
    CHECK(got.tid == c.tid);
    CHECK(got.iat == c.iat);
    CHECK(got.exp == c.exp);
}

TEST_CASE("check_token rejects each malformed or forged form with its own reason", "[jwt]")
{
    temp_dir dir;
    keyring keys(dir.path());
    const signing_key& key = keys.newest();
    token_claims c = claims_for("alice", t0 + 3600);
    std::string good = mint_token(key, c);
    auto parts = split(good);
    token_claims out;

    SECTION("bad format")
    {
        CHECK(check_token("", keys, t0, out) == verify_status::bad_format);
        CHECK(check_token("a.b", keys, t0, out) == verify_status::bad_format);
        CHECK(check_token(good + ".x", keys, t0, out) == verify_status::bad_format);
        CHECK(check_token(parts[0] + ".!!." + parts[2], keys, t0, out) == verify_status::bad_format);
        CHECK(check_token(b64("not json") + "." + parts[1] + "." + parts[2], keys, t0, out) ==
              verify_status::bad_format);
        CHECK(check_token(std::string(max_token_length + 1, 'a'), keys, t0, out) == verify_status::bad_format);
    }
    SECTION("alg none and other algorithms")
    {
        for (std::string alg : {"none", "HS512", "RS256", "hs256"}) {
            INFO("alg " << alg);
            std::string header = R"({"alg":")" + alg + R"(","typ":"JWT","kid":")" + key.kid + R"("})";
            CHECK(check_token(b64(header) + "." + parts[1] + "." + parts[2], keys, t0, out) == verify_status::bad_alg);
            CHECK(check_token(b64(header) + "." + parts[1] + ".", keys, t0, out) != verify_status::ok);
        }
    }
    SECTION("unknown kid")
    {
        std::string header = R"({"alg":"HS256","typ":"JWT","kid":"0000000000000000"})";
        CHECK(check_token(b64(header) + "." + parts[1] + "." + parts[2], keys, t0, out) == verify_status::unknown_kid);
    }
    SECTION("bad signature: payload changed, signature from another key")
    {
        std::string payload = decode(parts[1]);
        payload.replace(payload.find("alice"), 5, "admin");
        CHECK(check_token(parts[0] + "." + b64(payload) + "." + parts[2], keys, t0, out) ==
              verify_status::bad_signature);
        temp_dir other;
        keyring stolen_store_attacker(other.path());
        signing_key forged = stolen_store_attacker.newest();
        forged.kid = key.kid;  // right kid, wrong secret
        CHECK(check_token(mint_token(forged, c), keys, t0, out) == verify_status::bad_signature);
    }
    SECTION("expired, with the claims available")
    {
        CHECK(check_token(good, keys, t0 + 3600, out) == verify_status::expired);
        CHECK(out.exp == t0 + 3600);
        CHECK(check_token(good, keys, t0 + 3599, out) == verify_status::ok);
    }
}

TEST_CASE("signing key file is created 0600 and refused when group/other can access it", "[keys]")
{
    temp_dir dir;
    std::string kid;
    {
        keyring keys(dir.path());
        kid = keys.newest().kid;
    }
    auto file = dir.path() / keyring::file_name;
    struct stat st {};
    REQUIRE(::stat(file.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600u);

    keyring again(dir.path());
    CHECK(again.newest().kid == kid);

    for (mode_t bad : {0640, 0604, 0660, 0610}) {
        INFO("mode " << std::oct << bad);
        REQUIRE(::chmod(file.c_str(), bad) == 0);
        CHECK_THROWS_AS(keyring(dir.path()), keyring_error);
    }
    REQUIRE(::chmod(file.c_str(), 0600) == 0);
    {
        std::ofstream f(file, std::ios::app);
        f << "garbage line\n";
    }
    CHECK_THROWS_AS(keyring(dir.path()), keyring_error);
}

TEST_CASE("rotation: new tokens use the newest key, old ones keep verifying, other processes see it", "[keys]")
{
    temp_dir dir;
    keyring keys(dir.path());
    keyring other_process(dir.path());  // stands in for the CLI's copy
    const signing_key& first = keys.newest();
    std::string old_token = mint_token(first, claims_for("bob", t0 + 100));

    const signing_key& second = other_process.rotate();
    CHECK(second.kid != first.kid);
    CHECK(other_process.list().size() == 2u);
    CHECK(other_process.list().back().newest);

    // The server learns about the new key on an unknown kid (at most one
    // stat() of the key file per 200 ms, so wait that long first).
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    std::string new_token = mint_token(other_process.newest(), claims_for("bob", t0 + 100));
    token_claims out;
    CHECK(check_token(new_token, keys, t0, out) == verify_status::ok);
    CHECK(keys.newest().kid == second.kid);
    CHECK(check_token(old_token, keys, t0, out) == verify_status::ok);
    CHECK(check_token(old_token, other_process, t0, out) == verify_status::ok);

    // Key file stays private after rotation.
    struct stat st {};
    REQUIRE(::stat((dir.path() / keyring::file_name).c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600u);
}

TEST_CASE("non-canonical but valid JWTs take the full JSON path and give the same answers", "[jwt]")
{
    temp_dir dir;
    keyring keys(dir.path());
    const signing_key& key = keys.newest();
    tid_t tid = random_tid();
    auto sign = [&](const std::string& header, const std::string& payload) {
        std::string input = b64(header) + "." + b64(payload);
        auto mac = Botan::MessageAuthenticationCode::create_or_throw("HMAC(SHA-256)");
        mac->set_key(key.secret.data(), key.secret.size());
        mac->update(input);
        auto sig = mac->final();
        return input + "." + base64url_encode(std::span<const std::uint8_t>(sig.data(), sig.size()));
    };
    std::string header = R"({ "kid" : ")" + key.kid + R"(", "typ":"JWT", "alg":"HS256" })";
    std::string payload = R"({"exp":)" + std::to_string(t0 + 60) + R"(, "iat":)" + std::to_string(t0) +
                          R"(, "tid":")" + tid_to_hex(tid) + R"(", "user":"al\u0069ce"})";
    token_claims out;
    CHECK(check_token(sign(header, payload), keys, t0, out) == verify_status::ok);
    CHECK(out.user == "alice");
    CHECK(out.tid == tid);
    CHECK(out.exp == t0 + 60);
    CHECK(check_token(sign(header, payload), keys, t0 + 60, out) == verify_status::expired);

    // Signed but malformed claims are still bad_format on either path.
    CHECK(check_token(sign(header, R"({"user":"alice","tid":"xyz","iat":1,"exp":2})"), keys, t0, out) ==
          verify_status::bad_format);
    CHECK(check_token(sign(header, R"({"user":"alice","tid":")" + tid_to_hex(tid) + R"(","iat":1,"exp":"2"})"),
                      keys, t0, out) == verify_status::bad_format);
    CHECK(check_token(sign(header, R"({"user":"alice","tid":")" + tid_to_hex(tid) + R"(","iat":1,"exp":0)" +
                                       std::to_string(t0 + 60) + "}"),
                      keys, t0, out) == verify_status::bad_format);  // leading zero: not JSON
    CHECK(check_token(sign(R"({"alg":"none","typ":"JWT","kid":")" + key.kid + R"("})", payload), keys, t0, out) ==
          verify_status::bad_alg);
    std::string canonical = R"({"alg":"HS256","typ":"JWT","kid":")" + key.kid + R"("})";
    CHECK(check_token(sign(canonical, R"({"user":"alice","tid":")" + tid_to_hex(tid) + R"(","iat":1,"exp":)" +
                                          std::to_string(t0 + 60) + "} "),
                      keys, t0, out) == verify_status::ok);  // trailing space: JSON path
}

TEST_CASE("mutated and truncated tokens never verify and never crash", "[jwt]")
{
    temp_dir dir;
    keyring keys(dir.path());
    std::string good = mint_token(keys.newest(), claims_for("alice", t0 + 3600));
    std::mt19937 rng(12345);
    static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \"{}";
    token_claims out;
    std::size_t ok = 0;
    for (int i = 0; i < 5000; ++i) {
        std::string t = good;
        switch (i % 3) {
        case 0: {
            std::size_t pos = rng() % t.size();
            char c = alphabet[rng() % (sizeof alphabet - 1)];
            if (c == t[pos]) continue;
            t[pos] = c;
            break;
        }
        case 1: t.resize(rng() % t.size()); break;
        default: t.insert(rng() % t.size(), 1, alphabet[rng() % (sizeof alphabet - 1)]); break;
        }
        ok += check_token(t, keys, t0, out) == verify_status::ok;
    }
    CHECK(ok == 0u);
}

TEST_CASE("hostile headers and payloads are bad_format, never an exception", "[jwt][hostile]")
{
    temp_dir dir;
    keyring keys(dir.path());
    const signing_key& key = keys.newest();
    const tid_t tid = random_tid();
    auto sign = [&](const std::string& header, const std::string& payload) {
        std::string input = b64(header) + "." + b64(payload);
        auto mac = Botan::MessageAuthenticationCode::create_or_throw("HMAC(SHA-256)");
        mac->set_key(key.secret.data(), key.secret.size());
        mac->update(input);
        auto sig = mac->final();
        return input + "." + base64url_encode(std::span<const std::uint8_t>(sig.data(), sig.size()));
    };
    const std::string header = R"({"alg":"HS256","typ":"JWT","kid":")" + key.kid + R"("})";
    const std::string payload = R"({"user":"alice","tid":")" + tid_to_hex(tid) + R"(","iat":1,"exp":)" +
                                std::to_string(t0 + 60) + "}";
    // 1000 bytes of small values need more parsed storage than the fixed
    // arena holds: this used to throw std::bad_alloc out of check_token.
    std::string many = R"({"alg":"HS256","kid":")" + key.kid + R"(","x":[)";
    while (many.size() < 990) many += "0,";
    many += "0]}";
    std::string keys_galore = "{";
    for (int i = 0; keys_galore.size() < 1000; ++i) keys_galore += "\"" + std::to_string(i) + "\":0,";
    keys_galore.back() = '}';
    struct hostile_part {
        std::string what, json;
        verify_status as_header;  // as a payload every one is bad_format
    };
    const std::vector<hostile_part> hostile = {
        {"array of 500 values in the header", many, verify_status::bad_format},
        {"300 keys in the header", keys_galore, verify_status::bad_format},
        {"nested 500 deep", std::string(500, '[') + std::string(500, ']'), verify_status::bad_format},
        {"nested one level (ours are flat)", R"({"alg":"HS256","kid":{"k":")" + key.kid + R"("}})",
         verify_status::bad_format},
        {"not an object", R"("HS256")", verify_status::bad_format},
        {"kid of 900 bytes", R"({"alg":"HS256","kid":")" + std::string(900, 'a') + R"("})", verify_status::unknown_kid},
        {"alg not a string", R"({"alg":256,"kid":")" + key.kid + R"("})", verify_status::bad_format},
        {"raw NUL inside alg", std::string("{\"alg\":\"HS256\0\",\"kid\":\"x\"}", 26), verify_status::bad_format},
        {"escaped NUL inside alg", R"({"alg":"HS256\u0000","kid":")" + key.kid + R"("})", verify_status::bad_alg},
        {"truncated", R"({"alg":"HS256","kid":")", verify_status::bad_format},
        // Valid JSON with an extra member: a header may carry it; the signature decides.
        {"900-digit number", R"({"alg":"HS256","kid":")" + key.kid + R"(","n":1)" + std::string(900, '0') + "}",
         verify_status::ok},
    };
    token_claims out;
    for (const auto& h : hostile) {
        INFO(h.what);
        verify_status st{};
        REQUIRE_NOTHROW(st = check_token(sign(h.json, payload), keys, t0, out));
        CHECK(st == h.as_header);
        // The same text as a payload behind a valid header and signature.
        REQUIRE_NOTHROW(st = check_token(sign(header, h.json), keys, t0, out));
        CHECK(st == verify_status::bad_format);
    }
    // A part over the 1,024-byte bound is refused before any parsing.
    std::string big = R"({"alg":"HS256","kid":")" + key.kid + R"(","pad":")" + std::string(1100, 'p') + R"("})";
    CHECK(check_token(sign(big, payload), keys, t0, out) == verify_status::bad_format);
    CHECK(check_token(sign(header, payload), keys, t0, out) == verify_status::ok);
}

TEST_CASE("the signing-key file is checked as input too", "[keys][hostile]")
{
    temp_dir dir;
    const auto path = dir.path() / keyring::file_name;
    std::string first_line;
    {
        keyring keys(dir.path());
        std::ifstream in(path);
        std::string line;
        while (std::getline(in, line))
            if (!line.empty() && line[0] != '#') first_line = line;
    }
    REQUIRE_FALSE(first_line.empty());
    auto write_file = [&](const std::string& content) {
        std::ofstream(path, std::ios::trunc) << content;
        ::chmod(path.c_str(), 0600);
    };
    auto refused = [&](const std::string& content, const std::string& why) {
        INFO(why);
        write_file(content);
        try {
            keyring keys(dir.path());
            FAIL("expected keyring_error");
        } catch (const keyring_error& e) {
            CHECK_THAT(e.what(), Catch::Contains(why));
            // Never key material in the message.
            CHECK(std::string(e.what()).find(first_line.substr(first_line.size() - 64)) == std::string::npos);
        }
    };
    const std::string kid = first_line.substr(0, 16);
    const std::string rest = first_line.substr(16);
    refused(first_line + " trailing\n", "malformed line 1");
    refused("ABCDEF0123456789" + rest + "\n", "malformed line 1");  // kid must be lower-case hex
    refused("\"bcdef0123456789" + rest + "\n", "malformed line 1");
    refused(first_line + "\n" + first_line + "\n", "appears twice");
    refused(std::string(200 * 1024, '#'), "is larger than");
    refused("# only a comment\n", "no signing key");
    {
        std::string many;
        for (int i = 0; i <= 1024; ++i) {
            char k[17];
            std::snprintf(k, sizeof k, "%016x", i);
            many += std::string(k) + rest + "\n";
        }
        refused(many, "more than 1024 signing keys");
    }
    // A directory (or FIFO) in place of the file.
    std::filesystem::remove(path);
    std::filesystem::create_directory(path);
    ::chmod(path.c_str(), 0700);
    try {
        keyring keys(dir.path());
        FAIL("expected keyring_error");
    } catch (const keyring_error& e) {
        CHECK_THAT(e.what(), Catch::Contains("not a regular file"));
    }
    std::filesystem::remove(path);
    write_file(first_line + "\n");
    keyring fine(dir.path());
    CHECK(fine.newest().kid == kid);
}

// Key-encryption key: reading it, wrapping signing keys, refusing anything altered or wrapped by another KEK.
#include <sys/stat.h>

#include <fstream>

#include "test_helpers.hpp"
#include "tokenstore/kek.hpp"
#include "tokenstore/keys.hpp"

using namespace tokengate::tokenstore;
using tokengate::tokenstore::test::temp_dir;

namespace {

const std::string kek_hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

signing_key sample_key()
{
    signing_key k;
    k.kid = "0123456789abcdef";
    k.created_at = 1'800'000'000;
    for (std::size_t i = 0; i < k.secret.size(); ++i) k.secret[i] = static_cast<std::uint8_t>(0xa0 + i);
    return k;
}

}  // namespace

TEST_CASE("kek: 64 hex digits, an id that is not the key", "[kek]")
{
    kek k = kek_from_text("  " + kek_hex + "\n", "test");
    CHECK(k.secret[0] == 0x00);
    CHECK(k.secret[31] == 0x1f);
    CHECK(k.id.size() == 16);
    CHECK(kek_hex.find(k.id) == std::string::npos);
    CHECK(kek_from_text(kek_hex, "again").id == k.id);  // stable: it names the KEK across instances
    CHECK_THROWS_AS(kek_from_text(kek_hex.substr(2), "short"), kek_error);
    CHECK_THROWS_AS(kek_from_text(kek_hex.substr(2) + "zz", "not hex"), kek_error);
    try {
        (void)kek_from_text(kek_hex.substr(0, 62) + "zz", "TOKENGATE_KEK");
        FAIL("accepted a malformed KEK");
    } catch (const kek_error& e) {
        CHECK(std::string(e.what()).find(kek_hex.substr(0, 20)) == std::string::npos);  // never echoes the key
    }
}

TEST_CASE("kek: wrapped keys open with their KEK only, for their kid and time only", "[kek]")
{
    kek k = kek_from_text(kek_hex, "test");
    kek other = kek_from_text(std::string(64, 'f'), "other");
    signing_key key = sample_key();
    auto wrapped = wrap_key(k, key);
    REQUIRE(wrapped.size() == 12 + 32 + 16);
    // The secret does not appear in the wrapped form.
    CHECK(std::search(wrapped.begin(), wrapped.end(), key.secret.begin(), key.secret.begin() + 8) == wrapped.end());
    // Fresh nonce each time.
    CHECK(wrap_key(k, key) != wrapped);

    signing_key back = unwrap_key(k, key.kid, key.created_at, wrapped);
    CHECK(back.secret == key.secret);
    CHECK(back.kid == key.kid);
    CHECK(back.created_at == key.created_at);

    CHECK_THROWS_AS(unwrap_key(other, key.kid, key.created_at, wrapped), kek_error);
    CHECK_THROWS_AS(unwrap_key(k, "fedcba9876543210", key.created_at, wrapped), kek_error);  // relabelled row
    CHECK_THROWS_AS(unwrap_key(k, key.kid, key.created_at + 1, wrapped), kek_error);
    auto flipped = wrapped;
    flipped[20] ^= 1;
    CHECK_THROWS_AS(unwrap_key(k, key.kid, key.created_at, flipped), kek_error);
    CHECK_THROWS_AS(unwrap_key(k, key.kid, key.created_at, std::vector<std::uint8_t>(wrapped.begin(), wrapped.end() - 1)),
                    kek_error);
}

TEST_CASE("kek: the file must be private to this user", "[kek]")
{
    temp_dir dir;
    auto path = dir.path() / "kek";
    std::ofstream(path) << kek_hex << "\n";
    ::chmod(path.c_str(), 0600);
    CHECK(load_kek_file(path).id == kek_from_text(kek_hex, "x").id);
    ::chmod(path.c_str(), 0640);
    CHECK_THROWS_AS(load_kek_file(path), kek_error);
    ::chmod(path.c_str(), 0600);
    std::ofstream(path) << std::string(2048, '0');
    CHECK_THROWS_AS(load_kek_file(path), kek_error);
    CHECK_THROWS_AS(load_kek_file(dir.path() / "missing"), kek_error);
}

TEST_CASE("keyring: in-memory keys are adopted once, the newest signs", "[kek]")
{
    keyring ring(keyring::in_memory_t{});
    CHECK(ring.in_memory());
    CHECK(ring.size() == 0);
    signing_key a = sample_key();
    signing_key b = generate_signing_key();
    CHECK(ring.adopt(a));
    CHECK_FALSE(ring.adopt(a));
    CHECK(ring.adopt(b));
    CHECK(ring.newest().kid == b.kid);
    REQUIRE(ring.find(a.kid) != nullptr);
    CHECK(ring.find(a.kid)->secret == a.secret);
    CHECK_THROWS_AS(ring.rotate(), keyring_error);  // rotation goes through the registry
    ring.refresh(true);                              // no file to read: a no-op
    CHECK(ring.size() == 2);
}

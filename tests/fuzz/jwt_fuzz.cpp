// libFuzzer target `jwt`: the stateless token verifier (tokenstore::check_token:
// format, alg, kid, HMAC, claims, expiry) against a keyring the target holds.
//
// A fuzzer cannot forge HMAC-SHA-256, so most inputs are signed here, with the
// target's own keys, to reach the header and payload parsers behind the
// signature check. Input: <mode byte> <rest>; mode & 3:
//   0  rest is the token text, verified as is;
//   1  rest is "<header b64>.<payload b64>"; the target appends a valid signature;
//   2  rest is "<header JSON>\n<payload JSON>"; the target encodes and signs them;
//   3  rest is claims: exp (8 bytes), iat (8), tid (16), then the user name;
//      the target mints a token for them (mint_token) and verifies it.
// mode & 4 picks the second key for signing. The keys are fixed, generated
// for this target only; committed seeds are therefore never signed tokens.
//
// Properties besides "no crash, no UB, no leak":
// - a minted token verifies to exactly its claims (or `expired`);
// - whatever verifies, re-minted from its claims, verifies to the same claims;
// - nothing verifies with a signature the target did not make (mode 0 and
//   tokens whose kid names a key other than the one that signed them).
#include <botan/mac.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "fuzz_support.hpp"
#include "tokenstore/jwt.hpp"
#include "tokenstore/keys.hpp"

using namespace tokengate::tokenstore;
using tokengate::fuzz::printable;

namespace {

// "Now" for expiry checks: fixed, so that a saved input replays the same way.
constexpr std::int64_t kNow = 1'800'000'000;

// The target's keys: kid and secret (32 bytes, hex). Test-only, never used elsewhere.
constexpr const char* kKeyFile =
    "# tokengate signing keys v1: kid created_unix hex_key (keep this file mode 0600)\n"
    "00000000000000a1 1700000000 0101010101010101010101010101010101010101010101010101010101010101\n"
    "00000000000000b2 1700000001 0202020202020202020202020202020202020202020202020202020202020202\n";

std::filesystem::path g_dir;
std::unique_ptr<keyring> g_keys;

void remove_dir() {
  std::error_code ec;
  if (!g_dir.empty()) std::filesystem::remove_all(g_dir, ec);
}

std::span<const std::uint8_t> bytes(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

// What a signer holding `key` appends to "<header>.<payload>".
std::string signature(const signing_key& key, std::string_view signing_input) {
  auto mac = Botan::MessageAuthenticationCode::create_or_throw("HMAC(SHA-256)");
  mac->set_key(key.secret.data(), key.secret.size());
  mac->update(bytes(signing_input).data(), signing_input.size());
  auto sig = mac->final();
  return base64url_encode(std::span<const std::uint8_t>(sig.data(), sig.size()));
}

bool valid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    auto c = static_cast<unsigned char>(s[i]);
    std::size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    std::uint32_t cp = n == 1 ? c : c & (0x7f >> n);
    for (std::size_t k = 1; k < n; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = cp << 6 | (cc & 0x3f);
    }
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += n;
  }
  return true;
}

std::string show(const token_claims& c) {
  return "user=\"" + printable(c.user) + "\" tid=" + tid_to_hex(c.tid) + " iat=" + std::to_string(c.iat) +
         " exp=" + std::to_string(c.exp);
}

bool same(const token_claims& a, const token_claims& b) {
  return a.user == b.user && a.tid == b.tid && a.iat == b.iat && a.exp == b.exp;
}

// Whatever verifies must survive being minted again from its claims.
void check_remint(const token_claims& claims, verify_status st, const signing_key& key) {
  if (st != verify_status::ok && st != verify_status::expired) return;
  std::string token = mint_token(key, claims);
  token_claims again;
  auto st2 = check_token(token, *g_keys, kNow, again);
  if (st2 == verify_status::bad_format && !valid_utf8(claims.user)) return;  // see mode 3
  FUZZ_CHECK(st2 == st && same(again, claims), "re-minted claims " + show(claims) + " verify as " +
                                                   std::string(to_string(st2)) + " with " + show(again));
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  char tmpl[] = "/tmp/tokengate-fuzz-jwt-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) {
    std::perror("mkdtemp");
    std::abort();
  }
  g_dir = tmpl;
  std::atexit(remove_dir);
  {
    auto path = g_dir / keyring::file_name;
    std::ofstream f(path);
    f << kKeyFile;
    f.close();
    std::filesystem::permissions(path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  }
  g_keys = std::make_unique<keyring>(g_dir);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const int mode = data[0] & 3;
  const signing_key& signer = *g_keys->find((data[0] & 4) ? "00000000000000b2" : "00000000000000a1");
  std::string_view rest(reinterpret_cast<const char*>(data + 1), size - 1);
  token_claims claims;

  switch (mode) {
    case 0: {
      (void)looks_like_token(rest);
      auto st = check_token(rest, *g_keys, kNow, claims);
      // The fuzzer cannot have computed an HMAC with our keys... unless the
      // input embeds one the target made in an earlier run: allow only that.
      if (st == verify_status::ok || st == verify_status::expired) {
        auto d2 = rest.rfind('.');
        FUZZ_CHECK(d2 != std::string_view::npos, "verified without a signature part");
        bool ours = rest.substr(d2 + 1) == signature(*g_keys->find("00000000000000a1"), rest.substr(0, d2)) ||
                    rest.substr(d2 + 1) == signature(*g_keys->find("00000000000000b2"), rest.substr(0, d2));
        FUZZ_CHECK(ours, "a token with a foreign signature verified: " + printable(rest));
      }
      return 0;
    }
    case 1: {
      std::string token(rest);
      token += '.';
      token += signature(signer, rest);
      auto st = check_token(token, *g_keys, kNow, claims);
      check_remint(claims, st, signer);
      return 0;
    }
    case 2: {
      auto nl = rest.find('\n');
      std::string_view header = rest.substr(0, nl);
      std::string_view payload = nl == std::string_view::npos ? std::string_view{} : rest.substr(nl + 1);
      std::string token = base64url_encode(bytes(header)) + "." + base64url_encode(bytes(payload));
      token += '.';
      token += signature(signer, token);
      auto st = check_token(token, *g_keys, kNow, claims);
      check_remint(claims, st, signer);
      return 0;
    }
    default: {
      if (rest.size() < 32) return 0;
      auto i64 = [](const char* p) {
        std::uint64_t v = 0;
        for (int k = 0; k < 8; ++k) v = v << 8 | static_cast<unsigned char>(p[k]);
        return static_cast<std::int64_t>(v);
      };
      claims.exp = i64(rest.data());
      claims.iat = i64(rest.data() + 8);
      std::memcpy(claims.tid.data(), rest.data() + 16, 16);
      claims.user.assign(rest.substr(32));
      std::string token = mint_token(signer, claims);
      token_claims out;
      auto st = check_token(token, *g_keys, kNow, out);
      // Role names are valid UTF-8 (the database encoding); a name that is not
      // may be refused (JSON is UTF-8), but must never verify as another.
      if (!valid_utf8(claims.user) && st == verify_status::bad_format) return 0;
      if (token.size() > max_token_length) {
        FUZZ_CHECK(st == verify_status::bad_format, "an overlong token verified");
        return 0;
      }
      // The verifier parses at most 1 KiB of decoded payload (jwt.cpp's
      // max_json_part): a longer one may be refused, nothing else.
      std::string payload;
      auto d1 = token.find('.'), d2 = token.rfind('.');
      FUZZ_CHECK(base64url_decode(std::string_view(token).substr(d1 + 1, d2 - d1 - 1), payload),
                 "mint_token wrote a payload that does not decode: " + printable(token));
      if (payload.size() > 1024 && st == verify_status::bad_format) return 0;
      auto want = claims.exp <= kNow ? verify_status::expired : verify_status::ok;
      FUZZ_CHECK(st == want && same(out, claims), "minted " + show(claims) + " verifies as " +
                                                      std::string(to_string(st)) + " with " + show(out));
      return 0;
    }
  }
}

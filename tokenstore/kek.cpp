// Key-encryption key: reading it, and wrapping signing keys with AES-256-GCM for the registry.
#include "tokenstore/kek.hpp"

#include <botan/aead.h>
#include <botan/hash.h>
#include <botan/system_rng.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace tokengate::tokenstore {

namespace {

constexpr std::size_t nonce_bytes = 12;
constexpr std::size_t tag_bytes = 16;
// A KEK file holds 64 hex digits and a newline; anything much larger is not one.
constexpr std::size_t max_kek_file_bytes = 1024;
constexpr std::string_view aad_label = "tokengate signing key v1";

int hex_value(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

std::string to_hex(const std::uint8_t* p, std::size_t n)
{
    static constexpr char digits[] = "0123456789abcdef";
    std::string out(n * 2, '\0');
    for (std::size_t i = 0; i < n; ++i) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    return out;
}

std::vector<std::uint8_t> aad(std::string_view kid, std::int64_t created_at)
{
    std::string a(aad_label);
    a += '|';
    a += kid;
    a += '|';
    a += std::to_string(created_at);
    return {a.begin(), a.end()};
}

}  // namespace

kek kek_from_text(std::string_view text, std::string_view what)
{
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
    kek k;
    if (text.size() != 2 * k.secret.size())
        throw kek_error(std::string(what) + ": a key-encryption key is 64 hex digits (32 bytes), e.g. from "
                                            "`openssl rand -hex 32`");
    for (std::size_t i = 0; i < k.secret.size(); ++i) {
        int hi = hex_value(text[2 * i]), lo = hex_value(text[2 * i + 1]);
        if (hi < 0 || lo < 0) throw kek_error(std::string(what) + ": a key-encryption key is 64 hex digits");
        k.secret[i] = static_cast<std::uint8_t>(hi << 4 | lo);
    }
    auto sha = Botan::HashFunction::create_or_throw("SHA-256");
    sha->update("tokengate kek id");
    sha->update(k.secret.data(), k.secret.size());
    auto digest = sha->final();
    k.id = to_hex(digest.data(), 8);
    return k;
}

kek load_kek_file(const std::filesystem::path& path)
{
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) throw kek_error("cannot open key-encryption key file " + path.string() + ": " + std::strerror(errno));
    struct closer {
        int fd;
        ~closer() { ::close(fd); }
    } close_it{fd};
    struct stat st {};
    if (::fstat(fd, &st) != 0) throw kek_error("cannot stat " + path.string() + ": " + std::strerror(errno));
    if (!S_ISREG(st.st_mode)) throw kek_error("key-encryption key file " + path.string() + " is not a regular file");
    if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
        throw kek_error("key-encryption key file " + path.string() +
                        " lets group or others access it; run chmod 600 on it");
    if (st.st_uid != ::geteuid())
        throw kek_error("key-encryption key file " + path.string() + " is owned by another user");
    if (st.st_size > static_cast<off_t>(max_kek_file_bytes))
        throw kek_error("key-encryption key file " + path.string() + " is larger than " +
                        std::to_string(max_kek_file_bytes) + " bytes");
    std::string text(static_cast<std::size_t>(st.st_size), '\0');
    std::size_t got = 0;
    while (got < text.size()) {
        ssize_t n = ::read(fd, text.data() + got, text.size() - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += static_cast<std::size_t>(n);
    }
    text.resize(got);
    kek k = kek_from_text(text, path.string());
    std::fill(text.begin(), text.end(), '\0');
    return k;
}

std::vector<std::uint8_t> wrap_key(const kek& k, const signing_key& key)
{
    auto enc = Botan::AEAD_Mode::create_or_throw("AES-256/GCM", Botan::ENCRYPTION);
    enc->set_key(k.secret.data(), k.secret.size());
    enc->set_associated_data_vec(aad(key.kid, key.created_at));
    std::vector<std::uint8_t> nonce(nonce_bytes);
    Botan::system_rng().randomize(nonce.data(), nonce.size());
    Botan::secure_vector<std::uint8_t> buf(key.secret.begin(), key.secret.end());
    enc->start(nonce);
    enc->finish(buf);
    std::vector<std::uint8_t> out(nonce);
    out.insert(out.end(), buf.begin(), buf.end());
    return out;
}

signing_key unwrap_key(const kek& k, std::string_view kid, std::int64_t created_at,
                       const std::vector<std::uint8_t>& wrapped)
{
    signing_key out;
    if (wrapped.size() != nonce_bytes + out.secret.size() + tag_bytes)
        throw kek_error("wrapped signing key " + std::string(kid) + " has the wrong length");
    auto dec = Botan::AEAD_Mode::create_or_throw("AES-256/GCM", Botan::DECRYPTION);
    dec->set_key(k.secret.data(), k.secret.size());
    dec->set_associated_data_vec(aad(kid, created_at));
    Botan::secure_vector<std::uint8_t> buf(wrapped.begin() + nonce_bytes, wrapped.end());
    try {
        dec->start(wrapped.data(), nonce_bytes);
        dec->finish(buf);
    } catch (const std::exception&) {
        throw kek_error("signing key " + std::string(kid) + " does not open with key-encryption key " + k.id +
                        " (another KEK wrapped it, or the row was altered)");
    }
    out.kid = std::string(kid);
    out.created_at = created_at;
    std::memcpy(out.secret.data(), buf.data(), out.secret.size());
    return out;
}

}  // namespace tokengate::tokenstore

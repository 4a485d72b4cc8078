// Signing-key file handling: creation with mode 0600, permission checks, rotation under flock.
#include "tokenstore/keys.hpp"

#include <botan/system_rng.h>
#include <spdlog/spdlog.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <sstream>

namespace tokengate::tokenstore {

namespace {

// Only one stat() per interval on the unknown-kid path, so a flood of forged
// kids cannot turn into a flood of syscalls.
constexpr std::int64_t min_refresh_interval_ms = 200;
constexpr std::string_view file_header = "# tokengate signing keys v1: kid created_unix hex_key (keep this file mode 0600)";
// A key line is "kid created hex" (16 + 1 + at most 20 + 1 + 64 bytes and a
// newline): 1,024 of them and the header fit in 128 KiB. The file is the
// operator's, but it is still read as input: anything larger is refused
// before it is read.
constexpr std::size_t max_key_file_bytes = std::size_t{128} << 10;

bool is_kid(std::string_view kid)
{
    if (kid.size() != 16) return false;
    for (char c : kid)
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    return true;
}

std::int64_t now_ms()
{
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

std::string errno_text(const std::string& what, const std::filesystem::path& p)
{
    return what + " " + p.string() + ": " + std::strerror(errno);
}

class fd_guard {
public:
    explicit fd_guard(int fd) : fd_(fd) {}
    ~fd_guard()
    {
        if (fd_ >= 0) ::close(fd_);
    }
    fd_guard(const fd_guard&) = delete;
    fd_guard& operator=(const fd_guard&) = delete;
    [[nodiscard]] int get() const { return fd_; }

private:
    int fd_;
};

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

int hex_value(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

bool from_hex(std::string_view s, std::uint8_t* out, std::size_t n)
{
    if (s.size() != 2 * n) return false;
    for (std::size_t i = 0; i < n; ++i) {
        int hi = hex_value(s[2 * i]);
        int lo = hex_value(s[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        out[i] = static_cast<std::uint8_t>(hi << 4 | lo);
    }
    return true;
}

}  // namespace

signing_key generate_signing_key()
{
    signing_key k;
    std::uint8_t id[8];
    Botan::system_rng().randomize(id, sizeof id);
    k.kid = to_hex(id, sizeof id);
    Botan::system_rng().randomize(k.secret.data(), k.secret.size());
    k.created_at = now_ms() / 1000;
    return k;
}

namespace {

void write_all(int fd, std::string_view data, const std::filesystem::path& p)
{
    while (!data.empty()) {
        ssize_t n = ::write(fd, data.data(), data.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            throw keyring_error(errno_text("cannot write", p));
        }
        data.remove_prefix(static_cast<std::size_t>(n));
    }
}

void fsync_dir(const std::filesystem::path& dir)
{
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        ::fsync(fd);
        ::close(fd);
    }
}

// Writes `content` to `path` atomically with mode 0600.
void replace_file(const std::filesystem::path& path, const std::string& content)
{
    auto tmp = path;
    tmp += ".tmp";
    ::unlink(tmp.c_str());
    fd_guard fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (fd.get() < 0) throw keyring_error(errno_text("cannot create", tmp));
    ::fchmod(fd.get(), 0600);  // in case of an odd umask
    write_all(fd.get(), content, tmp);
    if (::fsync(fd.get()) != 0) throw keyring_error(errno_text("cannot fsync", tmp));
    if (::rename(tmp.c_str(), path.c_str()) != 0) throw keyring_error(errno_text("cannot rename to", path));
    fsync_dir(path.parent_path());
}

std::string serialize(const std::array<signing_key, keyring::max_keys>& keys, std::size_t n)
{
    std::string out(file_header);
    out += '\n';
    for (std::size_t i = 0; i < n; ++i) {
        out += keys[i].kid;
        out += ' ';
        out += std::to_string(keys[i].created_at);
        out += ' ';
        out += to_hex(keys[i].secret.data(), keys[i].secret.size());
        out += '\n';
    }
    return out;
}

}  // namespace

keyring::keyring(const std::filesystem::path& data_dir)
    : path_(data_dir / file_name), lock_path_(data_dir / (std::string(file_name) + ".lock"))
{
    std::error_code ec;
    if (!std::filesystem::exists(data_dir, ec)) {
        if (::mkdir(data_dir.c_str(), 0700) != 0 && errno != EEXIST)
            throw keyring_error(errno_text("cannot create data directory", data_dir));
    }
    std::lock_guard lk(mu_);
    struct stat st {};
    if (::stat(path_.c_str(), &st) != 0) {
        if (errno != ENOENT) throw keyring_error(errno_text("cannot stat", path_));
        // First start: create the file under the lock so two processes starting
        // together agree on one first key.
        fd_guard lock(::open(lock_path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
        if (lock.get() < 0) throw keyring_error(errno_text("cannot open", lock_path_));
        ::flock(lock.get(), LOCK_EX);
        if (::stat(path_.c_str(), &st) != 0) {
            std::array<signing_key, max_keys> fresh{};
            fresh[0] = generate_signing_key();
            replace_file(path_, serialize(fresh, 1));
        }
    }
    load_locked();
    last_check_ms_.store(now_ms(), std::memory_order_relaxed);
}

keyring::keyring(in_memory_t) {}

bool keyring::adopt(const signing_key& k)
{
    std::lock_guard lk(mu_);
    if (find(k.kid) != nullptr) return false;
    append_locked(k);
    return true;
}

void keyring::append_locked(const signing_key& k)
{
    std::size_t n = count_.load(std::memory_order_relaxed);
    if (n == max_keys) throw keyring_error("too many signing keys in " + path_.string());
    keys_[n] = k;
    count_.store(n + 1, std::memory_order_release);
}

void keyring::load_locked()
{
    fd_guard fd(::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (fd.get() < 0) throw keyring_error(errno_text("cannot open", path_));
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw keyring_error(errno_text("cannot stat", path_));
    if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
        throw keyring_error("signing key file " + path_.string() + " has mode " + mode +
                            ", which lets group or others access it; run chmod 600 on it");
    }
    if (st.st_uid != ::geteuid())
        throw keyring_error("signing key file " + path_.string() + " is owned by another user");
    if (!S_ISREG(st.st_mode)) throw keyring_error("signing key file " + path_.string() + " is not a regular file");
    if (st.st_size < 0 || static_cast<std::size_t>(st.st_size) > max_key_file_bytes)
        throw keyring_error("signing key file " + path_.string() + " is larger than " +
                            std::to_string(max_key_file_bytes) + " bytes");
    std::string content;
    content.resize(static_cast<std::size_t>(st.st_size));
    std::size_t got = 0;
    while (got < content.size()) {
        ssize_t n = ::read(fd.get(), content.data() + got, content.size() - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += static_cast<std::size_t>(n);
    }
    content.resize(got);

    std::istringstream in(content);
    std::string line;
    int lineno = 0;
    std::vector<signing_key> loaded;
    while (std::getline(in, line)) {
        ++lineno;
        if (line.empty() || line[0] == '#') continue;
        std::istringstream ls(line);
        signing_key k;
        std::string hex, extra;
        if (!(ls >> k.kid >> k.created_at >> hex) || (ls >> extra) || !is_kid(k.kid) ||
            !from_hex(hex, k.secret.data(), k.secret.size()))
            throw keyring_error("malformed line " + std::to_string(lineno) + " in " + path_.string());
        for (const auto& earlier : loaded)
            if (earlier.kid == k.kid)
                throw keyring_error("key id " + k.kid + " appears twice in " + path_.string() + " (line " +
                                    std::to_string(lineno) + ")");
        if (loaded.size() == max_keys)
            throw keyring_error("more than " + std::to_string(max_keys) + " signing keys in " + path_.string());
        loaded.push_back(std::move(k));
    }
    if (loaded.empty()) throw keyring_error("no signing key in " + path_.string());
    for (const auto& k : loaded)
        if (find(k.kid) == nullptr) append_locked(k);
    file_mtime_ns_ = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
    file_size_ = st.st_size;
    file_ino_ = st.st_ino;
}

const signing_key& keyring::newest() const noexcept
{
    return keys_[count_.load(std::memory_order_acquire) - 1];
}

const signing_key* keyring::find(std::string_view kid) const noexcept
{
    std::size_t n = count_.load(std::memory_order_acquire);
    // Newest first: recent tokens are the common case.
    for (std::size_t i = n; i-- > 0;)
        if (keys_[i].kid == kid) return &keys_[i];
    return nullptr;
}

std::vector<key_info> keyring::list() const
{
    std::size_t n = count_.load(std::memory_order_acquire);
    std::vector<key_info> out;
    for (std::size_t i = 0; i < n; ++i) out.push_back({keys_[i].kid, keys_[i].created_at, i + 1 == n});
    return out;
}

const signing_key& keyring::rotate()
{
    if (in_memory())
        throw keyring_error("the signing keys are kept in the PostgreSQL registry: rotate them with "
                            "`tokengate keys rotate` and store.backend = postgres");
    std::lock_guard lk(mu_);
    fd_guard lock(::open(lock_path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (lock.get() < 0) throw keyring_error(errno_text("cannot open", lock_path_));
    ::flock(lock.get(), LOCK_EX);
    load_locked();  // another process may have rotated meanwhile
    signing_key k = generate_signing_key();
    std::size_t n = count_.load(std::memory_order_relaxed);
    if (n == max_keys) throw keyring_error("too many signing keys in " + path_.string());
    // Build the file content including the new key before publishing it in memory.
    keys_[n] = k;
    replace_file(path_, serialize(keys_, n + 1));
    count_.store(n + 1, std::memory_order_release);
    load_locked();  // record the new file's identity
    return keys_[n];
}

void keyring::refresh(bool force)
{
    if (in_memory()) return;
    std::int64_t now = now_ms();
    if (!force && now - last_check_ms_.load(std::memory_order_relaxed) < min_refresh_interval_ms) return;
    std::lock_guard lk(mu_);
    last_check_ms_.store(now, std::memory_order_relaxed);
    struct stat st {};
    if (::stat(path_.c_str(), &st) != 0) return;  // keep the keys we have
    std::int64_t mtime = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
    if (mtime == file_mtime_ns_ && st.st_size == file_size_ && st.st_ino == file_ino_) return;
    try {
        load_locked();
    } catch (const keyring_error& e) {
        // Keep verifying with the keys already loaded; the operator sees why.
        spdlog::warn("signing keys not reloaded: {}", e.what());
    }
}

}  // namespace tokengate::tokenstore

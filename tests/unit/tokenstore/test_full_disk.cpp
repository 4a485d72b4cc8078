// The store on a full disk, for real: a small tmpfs is mounted, filled, and
// revocations must still commit while every other write is refused. Needs
// permission to mount (root, as the test machines run); skipped otherwise.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "tests/unit/tokenstore/test_helpers.hpp"
#include "tokenstore/lmdb.hpp"
#include "tokenstore/store.hpp"

using namespace tokengate::tokenstore;
using tokengate::tokenstore::test::t0;
using tokengate::tokenstore::test::temp_dir;

namespace {

// A tmpfs of `bytes` mounted on a fresh directory for one test.
class small_fs {
public:
    explicit small_fs(std::size_t bytes)
    {
        std::string opts = "size=" + std::to_string(bytes) + ",mode=0700";
        if (::mount("tmpfs", dir_.path().c_str(), "tmpfs", MS_NOSUID | MS_NODEV, opts.c_str()) == 0)
            mounted_ = true;
        else
            why_ = std::strerror(errno);
    }
    ~small_fs()
    {
        if (mounted_) ::umount2(dir_.path().c_str(), MNT_DETACH);
    }
    small_fs(const small_fs&) = delete;
    small_fs& operator=(const small_fs&) = delete;
    [[nodiscard]] bool mounted() const { return mounted_; }
    [[nodiscard]] const std::string& why() const { return why_; }
    [[nodiscard]] std::filesystem::path path() const { return dir_.path(); }

private:
    temp_dir dir_;
    bool mounted_ = false;
    std::string why_;
};

// Writes `file` until the file system is full; returns the bytes written.
std::size_t fill(const std::filesystem::path& file)
{
    int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    std::string block(4096, 'f');
    std::size_t total = 0;
    for (;;) {
        ssize_t n = ::write(fd, block.data(), block.size());
        if (n <= 0) break;
        total += static_cast<std::size_t>(n);
    }
    const int err = errno;
    ::close(fd);
    REQUIRE(err == ENOSPC);
    return total;
}

token_record make_record(std::string owner, std::string name)
{
    token_record r;
    r.tid = random_tid();
    r.owner = std::move(owner);
    r.name = std::move(name);
    r.kid = "0123456789abcdef";
    r.created_by = r.owner;
    r.created_at = t0;
    r.expires_at = t0 + 86400;
    r.comment = "issued for the full-disk test, with a comment long enough to fill pages";
    r.hash = token_hash("token text of " + r.owner + "/" + r.name);
    return r;
}

}  // namespace

TEST_CASE("on a full disk revocations still commit, other writes are refused until space is freed",
          "[store][full-disk]")
{
    small_fs fs(std::size_t{24} << 20);
    if (!fs.mounted()) {
        WARN("cannot mount a tmpfs here (" << fs.why() << "): the full-disk test is skipped");
        return;
    }
    const auto data = fs.path() / "data";
    store::options opts;
    opts.initial_map_size = std::size_t{4} << 20;
    opts.durable = true;  // as the server runs it

    SECTION("with the reserve (the default)")
    {
        std::vector<tid_t> alice;
        {
            store st(data, opts);
            // As CREATE API TOKEN does it: one transaction per token.
            for (int i = 0; i < 400; ++i) {
                auto r = make_record("alice", "t" + std::to_string(i));
                REQUIRE(st.insert(r, t0) == store::insert_outcome::inserted);
                alice.push_back(r.tid);
            }
            REQUIRE(st.insert(make_record("bob", "b"), t0) == store::insert_outcome::inserted);
            REQUIRE(st.reserve_ok());
            // The reserve is allocated beyond the end of data.mdb, which keeps its size.
            struct stat sb {};
            REQUIRE(::stat((data / "data.mdb").c_str(), &sb) == 0);
            CHECK(static_cast<std::size_t>(sb.st_blocks) * 512 >=
                  static_cast<std::size_t>(sb.st_size) + default_revocation_reserve);
        }
        // A server restarted on the full disk opens the store and can revoke.
        fill(fs.path() / "filler");
        store st(data, opts);
        CHECK_THROWS_AS(st.insert(make_record("carol", "c"), t0), store_full);
        CHECK_FALSE(st.reserve_ok());
        std::vector<std::pair<tid_t, std::int64_t>> uses{{alice[0], t0 + 1}};
        CHECK_THROWS_AS(st.record_last_used(uses), store_full);

        // Hundreds of records rewritten in one transaction: many new pages.
        auto revoked = st.revoke_all("alice", t0 + 2);
        CHECK(revoked.size() == alice.size());
        CHECK(st.revoke("bob", "b", t0 + 3).size() == 1u);
        CHECK(st.get(alice[399])->revoked_at == t0 + 2);
        CHECK(st.revocations_since(0).tids.size() == alice.size() + 1);

        // Space comes back: the reserve is topped up, writes work again.
        std::filesystem::remove(fs.path() / "filler");
        CHECK(st.ensure_reserve());
        CHECK(st.reserve_ok());
        CHECK(st.insert(make_record("carol", "c"), t0 + 4) == store::insert_outcome::inserted);
    }
    SECTION("without a reserve the same revocation fails: what the reserve is for")
    {
        opts.revocation_reserve = 0;
        store st(data, opts);
        for (int i = 0; i < 400; ++i)
            REQUIRE(st.insert(make_record("alice", "t" + std::to_string(i)), t0) == store::insert_outcome::inserted);
        fill(fs.path() / "filler");
        try {
            (void)st.revoke_all("alice", t0 + 2);
            FAIL("revoke_all committed on a full disk without a reserve; the test no longer shows the problem");
        } catch (const lmdb::error& e) {
            CHECK(e.code() == ENOSPC);
        }
    }
}

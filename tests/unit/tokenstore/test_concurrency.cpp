// Concurrency (8 threads + a forked lister process) and crash safety (SIGKILL at random points) of the store.
#include <signal.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <random>
#include <thread>

#include "tests/unit/tokenstore/test_helpers.hpp"
#include "tokenstore/lmdb.hpp"

using namespace tokengate::tokenstore;
using tokengate::tokenstore::test::t0;
using tokengate::tokenstore::test::temp_dir;

namespace {

const actor admin{"admin", true, true};  // a superuser

// Reads whatever is in the pipe until EOF.
std::string drain(int fd)
{
    std::string all;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        all.append(buf, static_cast<std::size_t>(n));
    }
    return all;
}

void write_all(int fd, const std::string& s)
{
    std::size_t off = 0;
    while (off < s.size()) {
        ssize_t n = ::write(fd, s.data() + off, s.size() - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) ::_exit(3);
        off += static_cast<std::size_t>(n);
    }
}

// Child: lists every user's tokens until stdin-pipe `stop_fd` closes; exits 0
// if every listing decoded and the number of tokens never went down (nothing
// is purged during the test, so a drop would be a lost write).
[[noreturn]] void lister_process(const std::filesystem::path& dir, int stop_fd, int report_fd)
{
    int status = 0;
    std::size_t listings = 0, last = 0;
    try {
        keyring keys(dir);
        store st(dir, store::options{std::size_t{1} << 20, false});
        token_service svc(st, keys);
        for (;;) {
            auto rows = svc.list(admin, std::nullopt, true, t0);
            if (!rows) {
                status = 4;
                break;
            }
            if (rows->size() < last) {
                status = 5;
                break;
            }
            last = rows->size();
            ++listings;
            char c;
            ssize_t n = ::read(stop_fd, &c, 1);  // non-blocking
            if (n == 0) {                         // parent closed: its writers are done
                auto final_rows = svc.list(admin, std::nullopt, true, t0);
                last = final_rows ? final_rows->size() : 0;
                break;
            }
        }
    } catch (...) {
        status = 6;
    }
    write_all(report_fd, std::to_string(listings) + " " + std::to_string(last) + "\n");
    ::_exit(status);
}

}  // namespace

TEST_CASE("8 threads create/verify/revoke while another process lists: no lost writes", "[concurrency]")
{
    temp_dir dir;
    int stop_pipe[2], report_pipe[2];
    REQUIRE(::pipe(stop_pipe) == 0);
    REQUIRE(::pipe(report_pipe) == 0);
    ::fcntl(stop_pipe[0], F_SETFL, O_NONBLOCK);
    // Fork before any thread exists and before this process opens the store.
    { keyring make_keys_first(dir.path()); }
    pid_t lister = ::fork();
    REQUIRE(lister >= 0);
    if (lister == 0) {
        ::close(stop_pipe[1]);
        ::close(report_pipe[0]);
        lister_process(dir.path(), stop_pipe[0], report_pipe[1]);
    }
    ::close(stop_pipe[0]);
    ::close(report_pipe[1]);

    constexpr int threads = 8;
    constexpr int per_thread = 120;
    {
        keyring keys(dir.path());
        store st(dir.path(), store::options{std::size_t{1} << 20, false});  // small: growth happens under load
        token_service svc(st, keys);
        std::mutex fail_mu;
        std::vector<std::string> failures;
        auto fail = [&](std::string what) {
            std::lock_guard lk(fail_mu);
            failures.push_back(std::move(what));
        };
        std::atomic<int> created{0}, revoked{0};
        std::vector<std::thread> pool;
        for (int t = 0; t < threads; ++t) {
            pool.emplace_back([&, t] {
                actor me{"user" + std::to_string(t % 3), false};
                struct mine {
                    std::string name, token;
                    bool revoked;
                };
                std::vector<mine> tokens;
                for (int i = 0; i < per_thread; ++i) {
                    create_request req;
                    req.name = "t" + std::to_string(t) + "-" + std::to_string(i);
                    auto c = svc.create(me, req, role_facts{}, t0);
                    if (!c) {
                        fail("create " + *req.name + ": " + c.error_value().message);
                        continue;
                    }
                    ++created;
                    tokens.push_back({c->name, c->token, false});
                    auto v = svc.verify(c->token, me.user, t0 + 1);
                    if (v.status != verify_status::ok) fail("fresh " + c->name + ": " + std::string(to_string(v.status)));
                    if (i % 3 == 2) {
                        auto& victim = tokens[tokens.size() - 2];
                        auto r = svc.revoke(me, victim.name, std::nullopt, false, t0 + 2);
                        if (!r) {
                            fail("revoke " + victim.name + ": " + r.error_value().message);
                        } else {
                            victim.revoked = true;
                            ++revoked;
                        }
                    }
                }
                for (const auto& m : tokens) {
                    auto v = svc.verify(m.token, me.user, t0 + 3);
                    auto want = m.revoked ? verify_status::revoked : verify_status::ok;
                    if (v.status != want)
                        fail("final " + m.name + ": got " + std::string(to_string(v.status)) + ", want " +
                             std::string(to_string(want)));
                }
            });
        }
        for (auto& th : pool) th.join();
        CHECK(failures == std::vector<std::string>{});
        CHECK(created.load() == threads * per_thread);
        CHECK(st.token_count() == static_cast<std::size_t>(threads * per_thread));
        auto all = svc.list(admin, std::nullopt, true, t0 + 3);
        REQUIRE(all.code() == errc::ok);
        CHECK(all->size() == static_cast<std::size_t>(threads * per_thread));
        std::size_t revoked_rows = 0;
        for (const auto& r : *all) revoked_rows += r.status == token_status::revoked;
        CHECK(revoked_rows == static_cast<std::size_t>(revoked.load()));
        CHECK(svc.revocation_seq() == static_cast<std::uint64_t>(revoked.load()));
    }

    ::close(stop_pipe[1]);
    int status = 0;
    REQUIRE(::waitpid(lister, &status, 0) == lister);
    std::string report = drain(report_pipe[0]);
    ::close(report_pipe[0]);
    INFO("lister reported: listings and final row count = " << report);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(report.substr(0, 2) != "0 ");  // it listed at least once
    // The other process sees every committed token.
    CHECK(report.substr(report.find(' ') + 1) == std::to_string(threads * per_thread) + "\n");
}

TEST_CASE("crash: SIGKILL at random points, every acknowledged token survives and verifies", "[crash]")
{
    temp_dir dir;
    { keyring make_keys_first(dir.path()); }
    std::mt19937 rng(std::random_device{}());
    struct acknowledged {
        std::string user, token;
    };
    std::vector<acknowledged> acked;
    constexpr int iterations = 50;
    for (int it = 0; it < iterations; ++it) {
        int pipefd[2];
        REQUIRE(::pipe(pipefd) == 0);
        pid_t child = ::fork();
        REQUIRE(child >= 0);
        if (child == 0) {
            ::close(pipefd[0]);
            try {
                keyring keys(dir.path());
                // Durable commits and a tiny map, so kills also land in fsyncs and map growth.
                store st(dir.path(), store::options{std::size_t{128} << 10, true});
                token_service svc(st, keys);
                actor me{"crash" + std::to_string(it % 4), false};
                for (int i = 0;; ++i) {
                    create_request req;
                    req.name = "i" + std::to_string(it) + "-" + std::to_string(i);
                    req.comment = std::string(200, 'c');
                    auto c = svc.create(me, req, role_facts{}, t0);
                    if (!c) ::_exit(2);
                    // Acknowledge only after create returned (the commit is durable).
                    write_all(pipefd[1], me.user + " " + c->token + "\n");
                }
            } catch (...) {
                ::_exit(3);
            }
        }
        ::close(pipefd[1]);
        std::this_thread::sleep_for(std::chrono::microseconds(std::uniform_int_distribution<int>(0, 30000)(rng)));
        ::kill(child, SIGKILL);
        int status = 0;
        REQUIRE(::waitpid(child, &status, 0) == child);
        INFO("iteration " << it);
        REQUIRE(WIFSIGNALED(status));  // it was killed, not failing by itself
        std::string out = drain(pipefd[0]);
        ::close(pipefd[0]);
        // Only complete lines were acknowledged.
        std::size_t start = 0;
        for (std::size_t nl; (nl = out.find('\n', start)) != std::string::npos; start = nl + 1) {
            std::string line = out.substr(start, nl - start);
            auto sp = line.find(' ');
            acked.push_back({line.substr(0, sp), line.substr(sp + 1)});
        }

        keyring keys(dir.path());
        store st(dir.path(), store::options{std::size_t{128} << 10, false});
        token_service svc(st, keys);
        std::size_t bad = 0;
        std::string first_bad;
        for (const auto& a : acked) {
            auto v = svc.verify(a.token, a.user, t0 + 1);
            if (v.status != verify_status::ok && bad++ == 0) first_bad = std::string(to_string(v.status));
        }
        INFO("first failure: " << first_bad);
        CHECK(bad == 0u);
    }
    INFO("acknowledged tokens: " << acked.size());
    CHECK(acked.size() > 0u);
}

TEST_CASE("a process killed inside a read leaves a reader slot that opening the store frees", "[crash]")
{
    temp_dir dir;
    tid_t tid{};
    {
        keyring keys(dir.path());
        store st(dir.path(), store::options{std::size_t{1} << 20, false});
        token_service svc(st, keys);
        create_request req;
        auto c = svc.create(admin, req, role_facts{}, t0);
        REQUIRE(c.code() == errc::ok);
        tid = c->tid;
    }
    // A long-running process (the server) keeps the environment open; otherwise
    // LMDB resets the reader table when the next process opens it first.
    int hold_ready[2], hold_stop[2];
    REQUIRE(::pipe(hold_ready) == 0);
    REQUIRE(::pipe(hold_stop) == 0);
    pid_t holder = ::fork();
    REQUIRE(holder >= 0);
    if (holder == 0) {
        ::close(hold_ready[0]);
        ::close(hold_stop[1]);
        store st(dir.path(), store::options{std::size_t{1} << 20, false});
        write_all(hold_ready[1], "h");
        char x;
        while (::read(hold_stop[0], &x, 1) > 0) {
        }
        ::_exit(0);
    }
    ::close(hold_ready[1]);
    ::close(hold_stop[0]);
    char h = 0;
    REQUIRE(::read(hold_ready[0], &h, 1) == 1);
    ::close(hold_ready[0]);

    int pipefd[2];
    REQUIRE(::pipe(pipefd) == 0);
    pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        ::close(pipefd[0]);
        ::close(hold_stop[1]);
        store st(dir.path(), store::options{std::size_t{1} << 20, false});
        (void)st.lookup_for_verify(tid, [&](const token_view&) {
            write_all(pipefd[1], "r");
            for (;;) ::pause();  // killed here, inside the read transaction
        });
        ::_exit(1);
    }
    ::close(pipefd[1]);
    char c = 0;
    REQUIRE(::read(pipefd[0], &c, 1) == 1);
    ::close(pipefd[0]);
    ::kill(child, SIGKILL);
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);

    auto env = lmdb::env::create();
    env.set_max_dbs(8);
    env.set_max_readers(1024);
    env.open(dir.path().string(), MDB_RDONLY, 0600);
    int dead = 0;
    REQUIRE(mdb_reader_check(env.handle(), &dead) == 0);
    CHECK(dead == 1);
    env = lmdb::env();
    store st(dir.path(), store::options{std::size_t{1} << 20, false});
    CHECK(st.clear_stale_readers() == 0);
    CHECK(st.get(tid).has_value());
    ::close(hold_stop[1]);
    REQUIRE(::waitpid(holder, &status, 0) == holder);
    CHECK(WEXITSTATUS(status) == 0);
}

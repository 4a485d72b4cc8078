// Token-store micro-benchmark (not a test): verifications/s with 1M tokens stored, durable creations/s.
//
//   tokenstore_bench [--tokens N] [--seconds S] [--data-dir DIR] [--pg-dsn DSN]
//
// With --pg-dsn (an empty database to use as a fleet's registry) the same
// tokens are then moved into PostgreSQL (`store migrate`), a serving
// pg_store loads its local copy, and verify and create are measured again.
//
// Fills a fresh store (in a mkdtemp directory unless --data-dir is given,
// removed afterwards) with N tokens, then measures token_service::verify on a
// random sample of them, single-threaded and on every core, and
// token_service::create with durable (fsync) commits.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <ctime>
#include <mutex>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <algorithm>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tokenstore/kek.hpp"
#include "tokenstore/pg_store.hpp"
#include "tokenstore/service.hpp"

using namespace tokengate::tokenstore;
using clock_type = std::chrono::steady_clock;

namespace {

double seconds_since(clock_type::time_point start)
{
    return std::chrono::duration<double>(clock_type::now() - start).count();
}

std::int64_t unix_now()
{
    using namespace std::chrono;
    return duration_cast<seconds>(system_clock::now().time_since_epoch()).count();
}

struct sample {
    std::string user;
    std::string token;
};

double thread_cpu_seconds()
{
    timespec ts{};
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

struct rate {
    double per_wall_second;  // what the machine delivered (shared with other work)
    double per_cpu_second;   // per core actually used: the fair number on a busy machine
};

// Runs verify over the sample on `threads` threads for `secs`.
rate verify_rate(token_service& svc, const std::vector<sample>& samples, int threads, double secs, std::int64_t now)
{
    std::atomic<bool> stop{false};
    std::atomic<std::uint64_t> total{0}, failures{0};
    std::mutex cpu_mu;
    double cpu = 0;
    std::vector<std::thread> pool;
    auto start = clock_type::now();
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            double cpu_start = thread_cpu_seconds();
            std::uint64_t n = 0, bad = 0;
            std::size_t i = static_cast<std::size_t>(t) * 7919;
            while (!stop.load(std::memory_order_relaxed)) {
                for (int k = 0; k < 256; ++k) {
                    const auto& s = samples[i++ % samples.size()];
                    bad += svc.verify(s.token, s.user, now).status != verify_status::ok;
                }
                n += 256;
            }
            total += n;
            failures += bad;
            std::lock_guard lk(cpu_mu);
            cpu += thread_cpu_seconds() - cpu_start;
        });
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(secs));
    stop = true;
    for (auto& th : pool) th.join();
    double elapsed = seconds_since(start);
    if (failures.load() != 0) std::fprintf(stderr, "warning: %llu verifications failed\n",
                                           static_cast<unsigned long long>(failures.load()));
    return {static_cast<double>(total.load()) / elapsed, static_cast<double>(total.load()) / cpu};
}

}  // namespace

int main(int argc, char** argv)
{
    std::size_t n_tokens = 1'000'000;
    double secs = 3.0;
    std::string data_dir, pg_dsn;
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string a = argv[i];
        if (a == "--tokens") n_tokens = std::stoul(argv[i + 1]);
        else if (a == "--seconds") secs = std::stod(argv[i + 1]);
        else if (a == "--data-dir") data_dir = argv[i + 1];
        else if (a == "--pg-dsn") pg_dsn = argv[i + 1];
        else {
            std::fprintf(stderr, "usage: %s [--tokens N] [--seconds S] [--data-dir DIR] [--pg-dsn DSN]\n", argv[0]);
            return 2;
        }
    }
    bool temp = data_dir.empty();
    if (temp) {
        std::string tmpl = (std::filesystem::temp_directory_path() / "tokenstore-bench-XXXXXX").string();
        if (::mkdtemp(tmpl.data()) == nullptr) return 1;
        data_dir = tmpl;
    }
    const std::int64_t now = unix_now();
    const unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    std::printf("tokenstore_bench: %zu tokens, %u cores, data in %s\n", n_tokens, cores, data_dir.c_str());

    std::vector<sample> samples;
    {
        // Bulk load without fsync, in batches; this is set-up, not measured as creation.
        keyring keys(data_dir);
        store st(data_dir, store::options{std::size_t{256} << 20, false});
        std::mt19937_64 rng(42);
        const std::size_t batch = 50'000;
        auto start = clock_type::now();
        std::vector<token_record> recs;
        for (std::size_t done = 0; done < n_tokens;) {
            recs.clear();
            for (std::size_t i = 0; i < batch && done < n_tokens; ++i, ++done) {
                token_record r;
                r.tid = random_tid();
                r.owner = "user" + std::to_string(done % 5000);
                r.name = "bench_" + std::to_string(done);
                r.kid = keys.newest().kid;
                r.created_by = r.owner;
                r.created_at = now - 10;
                r.expires_at = now + 365 * 86400;
                std::string token = mint_token(keys.newest(), token_claims{r.owner, r.tid, r.created_at, r.expires_at});
                r.hash = token_hash(token);
                if (rng() % 10 == 0) samples.push_back({r.owner, std::move(token)});
                recs.push_back(std::move(r));
            }
            st.insert_many(recs);
        }
        std::printf("load:    %zu tokens in %.1f s (bulk, unsynced); map %zu MiB\n", st.token_count(),
                    seconds_since(start), st.map_size() >> 20);
    }
    std::shuffle(samples.begin(), samples.end(), std::mt19937_64(7));

    keyring keys(data_dir);
    store st(data_dir);  // durable, as the server opens it
    token_service svc(st, keys);

    // Warm-up: one pass over the sample maps the touched pages of the store
    // (a long-running server has them mapped) and fills the last_used queue.
    {
        auto start = clock_type::now();
        for (const auto& s : samples) (void)svc.verify(s.token, s.user, now);
        std::printf("warm-up: %zu verifications in %.1f s\n", samples.size(), seconds_since(start));
    }
    // Stateless part alone, to show where the time goes.
    {
        token_claims c;
        std::uint64_t n = 0;
        auto start = clock_type::now();
        while (seconds_since(start) < secs / 3) {
            for (int k = 0; k < 256; ++k) n += check_token(samples[n % samples.size()].token, keys, now, c) == verify_status::ok;
        }
        std::printf("check:   %.0f JWT checks/s (parse + HMAC, no store), 1 thread\n",
                    static_cast<double>(n) / seconds_since(start));
    }
    rate one = verify_rate(svc, samples, 1, secs, now);
    std::printf("verify:  %.0f verifications/s wall, %.0f per CPU-second (%.2f us CPU each), 1 thread\n",
                one.per_wall_second, one.per_cpu_second, 1e6 / one.per_cpu_second);
    rate all = verify_rate(svc, samples, static_cast<int>(cores), secs, now);
    std::printf("verify:  %.0f verifications/s wall, %.0f per CPU-second, %u threads\n", all.per_wall_second,
                all.per_cpu_second, cores);
    svc.flush_last_used();

    {
        actor who{"bench_creator", false};
        std::size_t n = 0;
        auto start = clock_type::now();
        while (seconds_since(start) < secs) {
            create_request req;  // generated name
            auto r = svc.create(who, req, role_facts{}, now);
            if (!r) {
                std::fprintf(stderr, "create failed: %s\n", r.error_value().message.c_str());
                return 1;
            }
            ++n;
        }
        double rate = static_cast<double>(n) / seconds_since(start);
        std::printf("create:  %.0f creations/s with durable commits (%.2f ms each), 1 thread\n", rate, 1e3 / rate);
    }

    if (!pg_dsn.empty()) {
        std::printf("-- the same tokens in a fleet's PostgreSQL registry --\n");
        std::uint8_t raw[32];
        for (auto& b : raw) b = static_cast<std::uint8_t>(std::rand());
        std::string hex;
        for (auto b : raw) {
            static constexpr char d[] = "0123456789abcdef";
            hex += d[b >> 4];
            hex += d[b & 15];
        }
        pg_store_options o;
        o.dsn = pg_dsn;
        o.current = kek_from_text(hex, "bench");
        o.version = "bench";
        {
            pg_store_options cli = o;
            cli.serve = false;
            keyring mem(keyring::in_memory_t{});
            pg_store importer(cli, mem);
            auto start = clock_type::now();
            auto n = importer.import_lmdb(st, keys, now);
            std::printf("migrate: %zu tokens into the registry in %.1f s\n", n.tokens, seconds_since(start));
        }
        keyring mem(keyring::in_memory_t{});
        auto start = clock_type::now();
        pg_store reg(o, mem);
        std::printf("load:    local copy of the registry in %.1f s\n", seconds_since(start));
        token_service fleet_svc(reg, mem);
        for (const auto& smp : samples) (void)fleet_svc.verify(smp.token, smp.user, now);
        rate p1 = verify_rate(fleet_svc, samples, 1, secs, now);
        std::printf("verify:  %.0f verifications/s wall, %.0f per CPU-second (%.2f us CPU each), 1 thread, "
                    "registry copy\n",
                    p1.per_wall_second, p1.per_cpu_second, 1e6 / p1.per_cpu_second);
        rate pall = verify_rate(fleet_svc, samples, static_cast<int>(cores), secs, now);
        std::printf("verify:  %.0f verifications/s wall, %.0f per CPU-second, %u threads, registry copy\n",
                    pall.per_wall_second, pall.per_cpu_second, cores);
        actor who{"bench_creator", false};
        std::size_t n = 0;
        start = clock_type::now();
        while (seconds_since(start) < secs) {
            create_request req;
            auto r = fleet_svc.create(who, req, role_facts{}, now);
            if (!r) {
                std::fprintf(stderr, "create failed: %s\n", r.error_value().message.c_str());
                return 1;
            }
            ++n;
        }
        double r = static_cast<double>(n) / seconds_since(start);
        std::printf("create:  %.0f creations/s in the registry (%.2f ms each, one transaction, synchronous "
                    "commit), 1 thread\n",
                    r, 1e3 / r);
    }

    if (temp) std::filesystem::remove_all(data_dir);
    return 0;
}

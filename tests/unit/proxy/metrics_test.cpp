// Metrics: histogram buckets, the Prometheus text exposition (HELP/TYPE,
// label escaping, cumulative buckets), and the SHOW TOKENGATE views' rows
// (masked secrets).
#include <catch2/catch.hpp>

#include "proxy/admin_views.hpp"
#include "proxy/metrics.hpp"

using namespace tokengate;
using namespace std::chrono_literals;

namespace {

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos || text.rfind(line + "\n", 0) == 0;
}

}  // namespace

TEST_CASE("a histogram counts into the first bucket whose bound is not below the value") {
  static constexpr double bounds[] = {0.001, 0.01, 0.1};
  metrics::Histogram h(bounds);
  h.observe(500us);  // 0.0005
  h.observe(1ms);    // exactly on a bound: le="0.001"
  h.observe(5ms);
  h.observe(2s);     // +Inf only
  auto s = h.snapshot();
  CHECK(s.cumulative == std::vector<std::uint64_t>{2, 3, 3, 4});
  CHECK(s.sum_seconds == Approx(2.0065));
}

TEST_CASE("the exposition has HELP and TYPE once per family and moves with the counters") {
  metrics::Registry r;
  metrics::ScrapeFacts f;
  f.version = "1.2.3";
  f.commit = "ab\"c\\d\ne";
  f.sessions = 3;
  r.logins[1][0].inc(2);
  r.logins[1][1].inc();
  r.bytes_from_clients.inc(100);
  r.login_seconds[0].observe(20ms);
  const std::string text = metrics::render(r, f);
  INFO(text);
  CHECK(has_line(text, "# TYPE tokengate_logins_total counter"));
  CHECK(has_line(text, "tokengate_logins_total{method=\"token\",outcome=\"ok\"} 2"));
  CHECK(has_line(text, "tokengate_logins_total{method=\"token\",outcome=\"denied\"} 1"));
  CHECK(has_line(text, "tokengate_logins_total{method=\"password\",outcome=\"ok\"} 0"));
  CHECK(has_line(text, "tokengate_relayed_bytes_total{from=\"client\"} 100"));
  CHECK(has_line(text, "tokengate_sessions 3"));
  // Label values escape backslash, double quote and line feed.
  CHECK(has_line(text, "tokengate_build_info{version=\"1.2.3\",commit=\"ab\\\"c\\\\d\\ne\"} 1"));
  CHECK(has_line(text, "# TYPE tokengate_login_duration_seconds histogram"));
  CHECK(has_line(text, "tokengate_login_duration_seconds_bucket{method=\"password\",le=\"0.01\"} 0"));
  CHECK(has_line(text, "tokengate_login_duration_seconds_bucket{method=\"password\",le=\"0.025\"} 1"));
  CHECK(has_line(text, "tokengate_login_duration_seconds_bucket{method=\"password\",le=\"+Inf\"} 1"));
  CHECK(has_line(text, "tokengate_login_duration_seconds_count{method=\"password\"} 1"));
  // Families of a store not counted yet, or of a fleet that is not one, are left out.
  CHECK(text.find("tokengate_tokens_expiring_soon") == std::string::npos);
  CHECK(text.find("tokengate_registry_staleness_seconds") == std::string::npos);
  f.store_counted = true;
  f.tokens_expiring_soon = 4;
  CHECK(has_line(metrics::render(r, f), "tokengate_tokens_expiring_soon 4"));
  // Every family once.
  std::size_t helps = 0;
  for (std::size_t at = text.find("# HELP tokengate_logins_total "); at != std::string::npos;
       at = text.find("# HELP tokengate_logins_total ", at + 1))
    ++helps;
  CHECK(helps == 1);
  CHECK(text.back() == '\n');
}

TEST_CASE("mask_dsn hides passwords in both connection string forms") {
  using admin::mask_dsn;
  CHECK(mask_dsn("host=db user=tg password=s3cret dbname=x") == "host=db user=tg password=******** dbname=x");
  // libpq quotes with '…' and escapes with a backslash.
  CHECK(mask_dsn("host=db password = 'it\\'s a secret' dbname=x") == "host=db password = ******** dbname=x");
  CHECK(mask_dsn("postgresql://tg:s3cret@db:5432/x") == "postgresql://tg:********@db:5432/x");
  CHECK(mask_dsn("postgres://tg@db/x?sslmode=require&password=s3cret") ==
        "postgres://tg@db/x?sslmode=require&password=********");
  CHECK(mask_dsn("host=db user=tg") == "host=db user=tg");
  CHECK(mask_dsn("") == "");
}

TEST_CASE("session_rows: oldest first, live figures, NULL token name for password sessions") {
  auto a = std::make_shared<admin::SessionStats>();
  a->backend_pid = 42;
  a->client_address = "127.0.0.1";
  a->user = "alice";
  a->login_method = "token";
  a->token_name = "ci";
  a->started_at = 200;
  a->bytes_in = 10;
  a->state = admin::SessionState::idle_in_transaction;
  auto b = std::make_shared<admin::SessionStats>();
  b->user = "bob";
  b->login_method = "password";
  b->tls = true;
  b->started_at = 100;
  std::vector<std::shared_ptr<const admin::SessionStats>> all{a, b};
  const auto rows = admin::session_rows(all);
  REQUIRE(rows.size() == 2);
  CHECK(std::get<std::string>(rows[0][2]) == "bob");
  CHECK(std::holds_alternative<std::monostate>(rows[0][6]));
  CHECK(std::get<std::string>(rows[0][7]) == "on");
  CHECK(std::get<std::int64_t>(rows[1][0]) == 42);
  CHECK(std::get<std::string>(rows[1][6]) == "ci");
  CHECK(std::get<std::string>(rows[1][9]) == "idle in transaction");
  CHECK(std::get<std::int64_t>(rows[1][10]) == 10);
}

// API TOKEN statements end to end below the socket: SQL text → parser_ext →
// token_sql::execute against a real token service on a temporary LMDB data
// directory → the exact protocol bytes a client receives.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <regex>
#include <stdexcept>

#include "parser_ext/parser.hpp"
#include "proxy/session/token_sql.hpp"
#include "tests/common/pg_bytes.hpp"
#include "tokenstore/keys.hpp"
#include "tokenstore/store.hpp"

using namespace tokengate;
using namespace tokengate::session;
using protocol::Bytes;
using protocol::Timestamp;
using protocol::Value;
using test::msg;
using test::put_cstr;
using test::put_i16;
using test::put_i32;
using test::put_str;

namespace {

constexpr std::int64_t now = 1'800'000'000;  // 2027-01-15 08:00:00 UTC
constexpr std::int64_t day = 86400;
constexpr std::string_view now_text = "2027-01-15 08:00:00+00";

// A token service over a fresh data directory, removed afterwards.
class Fixture {
 public:
  Fixture() : dir_(make_dir()), keys_(dir_), store_(dir_, {std::size_t{1} << 20, false}), svc(store_, keys_) {}
  ~Fixture() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  Fixture(const Fixture&) = delete;
  Fixture& operator=(const Fixture&) = delete;

 private:
  static std::filesystem::path make_dir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/token-sql-test-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    return tmpl;
  }
  std::filesystem::path dir_;
  tokenstore::keyring keys_;
  tokenstore::store store_;

 public:
  tokenstore::token_service svc;
};

parser_ext::Statement parse(std::string_view sql) {
  auto r = parser_ext::parse_statement(sql);
  INFO("SQL: " << sql << "\nparsed as: " << parser_ext::to_string(r));
  REQUIRE(std::holds_alternative<parser_ext::Statement>(r));
  return std::get<parser_ext::Statement>(r);
}

tokenstore::role_facts role(std::vector<std::string> member_of = {}, bool can_login = true) {
  return {true, can_login, std::move(member_of)};
}
const tokenstore::role_facts missing{false, false, {}};

// A session: its user, whether they are an administrator (a superuser
// unless `superuser` is false), and what the (pretend) upstream catalog
// knows about roles.
struct Session {
  Fixture& f;
  std::string user;
  bool admin = false;
  std::unordered_map<std::string, tokenstore::role_facts> catalog;
  bool superuser = true;   // with admin
  bool via_token = false;  // logged in with a token
  std::vector<std::string> protected_roles{};  // looked up for a non-superuser admin

  // Looks up exactly the facts the statement asks for, like the driver will.
  StatementFacts facts_for(const parser_ext::Statement& s) const {
    StatementFacts facts;
    facts.is_admin = admin;
    facts.is_superuser = admin && superuser;
    facts.via_token = via_token;
    const auto needed = facts_needed(s, user);
    if (admin && !superuser && needed.acts_for_others) facts.protected_roles = protected_roles;
    for (const auto& r : needed.roles) {
      auto it = catalog.find(r);
      facts.roles.emplace(r, it == catalog.end() ? missing : it->second);
    }
    return facts;
  }
  LocalResult run(std::string_view sql, char tx = 'I', std::int64_t at = now) const {
    auto s = parse(sql);
    return execute(f.svc, s, user, facts_for(s), at, tx);
  }
  // Runs and returns the simple-protocol bytes.
  Bytes simple(std::string_view sql, char tx = 'I', std::int64_t at = now) const {
    Bytes out;
    write_simple(out, run(sql, tx, at));
    return out;
  }
};

// ---- expected messages, built independently of the writers under test ------

struct Col {
  std::string_view name;
  std::int32_t oid;
};
constexpr std::int32_t text = 25, timestamptz = 1184;

Bytes row_description(std::initializer_list<Col> cols, std::int16_t format = 0) {
  Bytes b;
  put_i16(b, std::int16_t(cols.size()));
  for (auto c : cols) {
    put_cstr(b, c.name);
    put_i32(b, 0);
    put_i16(b, 0);
    put_i32(b, c.oid);
    put_i16(b, c.oid == text ? -1 : 8);
    put_i32(b, -1);
    put_i16(b, format);
  }
  return msg('T', b);
}
const std::initializer_list<Col> create_cols{{"name", text}, {"token", text}, {"expires_at", timestamptz}};
const std::initializer_list<Col> show_cols{{"name", text},         {"user", text},
                                           {"created_at", timestamptz}, {"expires_at", timestamptz},
                                           {"last_used_at", timestamptz}, {"status", text},
                                           {"comment", text},      {"created_by", text}};

// DataRow of text fields; nullopt is NULL.
Bytes data_row(std::initializer_list<std::optional<std::string_view>> fields) {
  Bytes b;
  put_i16(b, std::int16_t(fields.size()));
  for (const auto& v : fields) {
    if (!v) {
      put_i32(b, -1);
      continue;
    }
    put_i32(b, std::int32_t(v->size()));
    put_str(b, *v);
  }
  return msg('D', b);
}
constexpr std::nullopt_t null = std::nullopt;

Bytes complete(std::string_view tag) {
  Bytes b;
  put_cstr(b, tag);
  return msg('C', b);
}

Bytes error(std::string_view sqlstate, std::string_view message, std::string_view detail = {},
            std::string_view severity = "ERROR", char tag = 'E') {
  Bytes b;
  b.push_back('S');
  put_cstr(b, severity);
  b.push_back('V');
  put_cstr(b, severity);
  b.push_back('C');
  put_cstr(b, sqlstate);
  b.push_back('M');
  put_cstr(b, message);
  if (!detail.empty()) {
    b.push_back('D');
    put_cstr(b, detail);
  }
  b.push_back(0);
  return msg(tag, b);
}
Bytes notice(std::string_view sqlstate, std::string_view message, std::string_view detail = {}) {
  return error(sqlstate, message, detail, "NOTICE", 'N');
}

std::string ts_text(std::int64_t unix_seconds) {
  return protocol::format_timestamptz(Timestamp::from_unix_seconds(unix_seconds));
}

std::string value_text(const Value& v) {
  auto s = protocol::encode_value(v, protocol::kTextFormat);
  return s ? *s : "NULL";
}

bool contains(const Bytes& haystack, std::string_view needle) {
  return std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end()) != haystack.end();
}

}  // namespace

TEST_CASE("CREATE API TOKEN returns name, token, expires_at and stores only a hash") {
  Fixture f;
  Session alice{f, "alice", false, {{"alice", role()}}};
  auto r = alice.run("CREATE API TOKEN ci_pipeline COMMENT 'Токен для CI'");
  INFO(r.outcome());
  REQUIRE(r.ok());
  REQUIRE(r.rows.size() == 1);
  const std::string token = value_text(r.rows[0][1]);
  CHECK(f.svc.verify(token, "alice", now + 1).status == tokenstore::verify_status::ok);

  Bytes got;
  write_simple(got, r);
  CHECK(got == test::concat({row_description(create_cols),
                             data_row({"ci_pipeline", token, ts_text(now + 365 * day)}), complete("CREATE API TOKEN")}));
  CHECK(ts_text(now + 365 * day) == "2028-01-15 08:00:00+00");

  SECTION("audit fields, without the token") {
    CHECK(r.kind == parser_ext::StatementKind::create_api_token);
    CHECK(r.executed);
    CHECK(r.owner == "alice");
    CHECK(r.token_name == "ci_pipeline");
    CHECK(r.tid.has_value());
    CHECK(r.outcome() == "ok");
    CHECK(r.revoked.empty());
  }
  SECTION("the token appears in no other statement's output") {
    for (auto sql : {"SHOW API TOKENS", "SHOW API TOKEN POLICIES FOR USER alice",
                     "ALTER API TOKEN ci_pipeline SET COMMENT 'x'", "DROP API TOKEN ci_pipeline"}) {
      INFO(sql);
      CHECK_FALSE(contains(alice.simple(sql), token));
    }
  }
}

TEST_CASE("CREATE API TOKEN without a name generates token_ + 8 base32 characters") {
  Fixture f;
  Session alice{f, "alice", false, {{"alice", role()}}};
  auto r = alice.run("create api token max duration '30d';");
  REQUIRE(r.ok());
  const std::string name = value_text(r.rows[0][0]);
  CHECK(std::regex_match(name, std::regex("token_[a-z2-7]{8}")));
  CHECK(r.token_name == name);
  CHECK(value_text(r.rows[0][2]) == ts_text(now + 30 * day));
  // A second one gets another name.
  auto again = alice.run("CREATE API TOKEN");
  REQUIRE(again.ok());
  CHECK(value_text(again.rows[0][0]) != name);
}

TEST_CASE("CREATE API TOKEN errors") {
  Fixture f;
  Session alice{f, "alice", false, {{"alice", role({"service_accounts"})}, {"bob", role()}}};
  Session admin{f, "admin", true, {{"admin", role()}, {"alice", role({"service_accounts"})}}};

  SECTION("above the default maximum: 22023 with the maximum in DETAIL") {
    CHECK(alice.simple("CREATE API TOKEN x MAX DURATION '400d'") ==
          error("22023", "MAX DURATION 400d exceeds the maximum for user \"alice\"",
                "The maximum API token duration for user \"alice\" is 365d (the default)."));
  }
  SECTION("above a policy's maximum names the policy, and nothing is stored") {
    REQUIRE(admin.run("ALTER ROLE service_accounts SET API TOKEN MAX DURATION '30d'").ok() == false);
    admin.catalog["service_accounts"] = role({}, false);
    REQUIRE(admin.run("ALTER ROLE service_accounts SET API TOKEN MAX DURATION '30d'").ok());
    CHECK(alice.simple("CREATE API TOKEN x MAX DURATION '31d'") ==
          error("22023", "MAX DURATION 31d exceeds the maximum for user \"alice\"",
                "The maximum API token duration for user \"alice\" is 30d, set by the policy on role "
                "\"service_accounts\"."));
    CHECK(alice.simple("SHOW API TOKENS") == test::concat({row_description(show_cols), complete("SHOW")}));
    SECTION("without MAX DURATION the validity is lowered to the maximum") {
      auto r = alice.run("CREATE API TOKEN y");
      REQUIRE(r.ok());
      CHECK(value_text(r.rows[0][2]) == ts_text(now + 30 * day));
    }
  }
  SECTION("a bad duration") {
    auto r = alice.run("CREATE API TOKEN x MAX DURATION 'forever'");
    REQUIRE(r.error);
    CHECK(r.error->sqlstate == "22023");
    CHECK(r.error->message == "invalid duration \"forever\"");
    CHECK_FALSE(r.error->detail.empty());
  }
  SECTION("FOR USER another role needs an administrator: 42501") {
    CHECK(alice.simple("CREATE API TOKEN x FOR USER bob") ==
          error("42501", "permission denied to create API tokens for user \"bob\""));
    SECTION("even a role that does not exist: no probing") {
      CHECK(alice.simple("CREATE API TOKEN x FOR USER ghost") ==
            error("42501", "permission denied to create API tokens for user \"ghost\""));
    }
  }
  SECTION("FOR USER a role missing upstream: 42704") {
    CHECK(admin.simple("CREATE API TOKEN x FOR USER ghost") == error("42704", "role \"ghost\" does not exist"));
  }
  SECTION("FOR USER oneself is allowed") {
    CHECK(alice.run("CREATE API TOKEN x FOR USER alice").ok());
  }
  SECTION("a name in use: 42710") {
    REQUIRE(alice.run("CREATE API TOKEN x").ok());
    CHECK(alice.simple("CREATE API TOKEN x") ==
          error("42710", "API token \"x\" already exists", "User \"alice\" has an active token with that name."));
  }
  SECTION("an administrator issues a token for a user within that user's maximum") {
    auto r = admin.run("CREATE API TOKEN report_bot FOR USER alice MAX DURATION '90d' COMMENT 'weekly'");
    REQUIRE(r.ok());
    CHECK(r.owner == "alice");
    auto rows = alice.run("SHOW API TOKENS");
    REQUIRE(rows.rows.size() == 1);
    CHECK(value_text(rows.rows[0][1]) == "alice");
    CHECK(value_text(rows.rows[0][7]) == "admin");  // created_by
  }
}

TEST_CASE("SHOW API TOKENS lists oldest first with status, NULL last_used_at and comments") {
  Fixture f;
  Session alice{f, "alice", false, {{"alice", role()}}};
  Session bob{f, "bob", false, {{"bob", role()}}};
  Session admin{f, "admin", true, {{"alice", role()}, {"bob", role()}}};
  REQUIRE(alice.run("CREATE API TOKEN a1 COMMENT 'first'", 'I', now).ok());
  REQUIRE(alice.run("CREATE API TOKEN a2 MAX DURATION '45s'", 'I', now + 10).ok());
  REQUIRE(alice.run("CREATE API TOKEN a3", 'I', now + 20).ok());
  REQUIRE(bob.run("CREATE API TOKEN b1", 'I', now + 30).ok());
  REQUIRE(alice.run("DROP API TOKEN a3", 'I', now + 40).ok());

  const std::int64_t later = now + 100;  // a2 has expired
  CHECK(alice.simple("SHOW API TOKENS", 'I', later) ==
        test::concat({row_description(show_cols),
                      data_row({"a1", "alice", now_text, ts_text(now + 365 * day), null, "active", "first", "alice"}),
                      data_row({"a2", "alice", ts_text(now + 10), ts_text(now + 55), null, "expired", null, "alice"}),
                      data_row({"a3", "alice", ts_text(now + 20), ts_text(now + 20 + 365 * day), null, "revoked", null,
                                "alice"}),
                      complete("SHOW")}));

  SECTION("FOR USER and FOR ALL USERS are for administrators") {
    CHECK(alice.simple("SHOW API TOKENS FOR USER bob") ==
          error("42501", "permission denied to list API tokens for user \"bob\""));
    CHECK(alice.simple("SHOW API TOKENS FOR ALL USERS") ==
          error("42501", "permission denied to list API tokens of all users"));
    CHECK(alice.run("SHOW API TOKENS FOR USER alice").rows.size() == 3);
    auto b = admin.run("SHOW API TOKENS FOR USER bob", 'I', later);
    REQUIRE(b.ok());
    REQUIRE(b.rows.size() == 1);
    CHECK(value_text(b.rows[0][0]) == "b1");
    CHECK(admin.run("SHOW API TOKENS FOR ALL USERS", 'I', later).rows.size() == 4);
    CHECK(admin.simple("SHOW API TOKENS FOR USER ghost") == error("42704", "role \"ghost\" does not exist"));
  }
  SECTION("last_used_at after a login") {
    auto c = alice.run("CREATE API TOKEN used", 'I', now + 50);
    REQUIRE(c.ok());
    REQUIRE(f.svc.verify(value_text(c.rows[0][1]), "alice", now + 60).status == tokenstore::verify_status::ok);
    REQUIRE(f.svc.flush_last_used() == 1);
    auto r = alice.run("SHOW API TOKENS", 'I', later);
    REQUIRE(r.rows.size() == 4);
    CHECK(value_text(r.rows[3][4]) == ts_text(now + 60));
  }
}

TEST_CASE("ALTER API TOKEN … SET COMMENT") {
  Fixture f;
  Session alice{f, "alice", false, {{"alice", role()}}};
  Session admin{f, "admin", true, {{"alice", role()}}};
  REQUIRE(alice.run("CREATE API TOKEN ci").ok());
  CHECK(alice.simple("ALTER API TOKEN ci SET COMMENT 'nightly'") == complete("ALTER API TOKEN"));
  CHECK(value_text(alice.run("SHOW API TOKENS").rows[0][6]) == "nightly");
  CHECK(admin.simple("ALTER API TOKEN ci FOR USER alice SET COMMENT NULL") == complete("ALTER API TOKEN"));
  CHECK(value_text(alice.run("SHOW API TOKENS").rows[0][6]) == "NULL");

  CHECK(alice.simple("ALTER API TOKEN nope SET COMMENT 'x'") == error("42704", "API token \"nope\" does not exist"));
  CHECK(alice.simple("ALTER API TOKEN ci FOR USER bob SET COMMENT 'x'") ==
        error("42501", "permission denied to alter API tokens for user \"bob\""));
  CHECK(admin.simple("ALTER API TOKEN ci FOR USER ghost SET COMMENT 'x'") ==
        error("42704", "role \"ghost\" does not exist"));
  auto r = admin.run("ALTER API TOKEN ci FOR USER ghost SET COMMENT 'x'");
  CHECK_FALSE(r.executed);
  CHECK(r.owner == "ghost");
}

TEST_CASE("DROP API TOKEN revokes at once and reports the tid") {
  Fixture f;
  Session alice{f, "alice", false, {{"alice", role()}}};
  auto c = alice.run("CREATE API TOKEN ci");
  REQUIRE(c.ok());
  auto r = alice.run("DROP API TOKEN ci");
  Bytes got;
  write_simple(got, r);
  CHECK(got == complete("DROP API TOKEN"));
  REQUIRE(r.revoked.size() == 1);
  CHECK(r.revoked[0] == *c.tid);
  CHECK(r.tid == c.tid);
  CHECK(f.svc.verify(value_text(c.rows[0][1]), "alice", now + 1).status == tokenstore::verify_status::revoked);

  SECTION("a missing token: 42704") {
    CHECK(alice.simple("DROP API TOKEN ci") == error("42704", "API token \"ci\" does not exist"));
  }
  SECTION("IF EXISTS: a NOTICE and the tag") {
    auto skip = alice.run("DROP API TOKEN IF EXISTS ci");
    CHECK(skip.revoked.empty());
    Bytes b;
    write_simple(b, skip);
    CHECK(b == test::concat({notice("00000", "API token \"ci\" does not exist, skipping"), complete("DROP API TOKEN")}));
  }
  SECTION("another user's token needs an administrator") {
    CHECK(alice.simple("DROP API TOKEN x FOR USER bob") ==
          error("42501", "permission denied to drop API tokens for user \"bob\""));
  }
}

TEST_CASE("DROP ALL API TOKENS: tag with the count, every tid") {
  Fixture f;
  Session alice{f, "alice", false, {{"alice", role()}}};
  Session admin{f, "admin", true, {{"alice", role()}}};
  REQUIRE(alice.run("CREATE API TOKEN a").ok());
  REQUIRE(alice.run("CREATE API TOKEN b").ok());
  auto r = alice.run("DROP ALL API TOKENS");
  CHECK(r.revoked.size() == 2);
  Bytes got;
  write_simple(got, r);
  CHECK(got == complete("DROP API TOKENS 2"));
  CHECK(alice.simple("DROP ALL API TOKENS FOR USER alice") == complete("DROP API TOKENS 0"));
  REQUIRE(alice.run("CREATE API TOKEN c").ok());
  CHECK(alice.simple("DROP ALL API TOKENS FOR USER bob") ==
        error("42501", "permission denied to drop API tokens for user \"bob\""));
  CHECK(admin.simple("DROP ALL API TOKENS FOR USER alice") == complete("DROP API TOKENS 1"));
  CHECK(admin.simple("DROP ALL API TOKENS FOR USER ghost") == error("42704", "role \"ghost\" does not exist"));
}

TEST_CASE("ALTER USER|ROLE … SET/RESET API TOKEN MAX DURATION and SHOW API TOKEN POLICIES") {
  Fixture f;
  Session admin{f, "admin", true,
                {{"analyst", role({"service_accounts"})}, {"service_accounts", role({}, false)}, {"alice", role()}}};
  Session analyst{f, "analyst", false, {{"analyst", role({"service_accounts"})}}};
  const std::initializer_list<Col> policy_cols{{"role", text}, {"kind", text}, {"max_duration", text}};
  const std::initializer_list<Col> for_user_cols{{"role", text},
                                                 {"kind", text},
                                                 {"max_duration", text},
                                                 {"effective_max_duration", text},
                                                 {"effective_policy", text}};

  SECTION("no policies") {
    CHECK(admin.simple("SHOW API TOKEN POLICIES") == test::concat({row_description(policy_cols), complete("SHOW")}));
    CHECK(analyst.simple("SHOW API TOKEN POLICIES FOR USER analyst") ==
          test::concat({row_description(for_user_cols), data_row({null, null, null, "365 days", null}),
                        complete("SHOW")}));
  }

  CHECK(admin.simple("ALTER USER analyst SET API TOKEN MAX DURATION '24h'") == complete("ALTER ROLE"));
  CHECK(admin.simple("ALTER ROLE service_accounts SET API TOKEN MAX DURATION '30d'") == complete("ALTER ROLE"));

  SECTION("all policies, and the longest wins for a member") {
    CHECK(admin.simple("SHOW API TOKEN POLICIES") ==
          test::concat({row_description(policy_cols), data_row({"analyst", "user", "1 day"}),
                        data_row({"service_accounts", "role", "30 days"}), complete("SHOW")}));
    CHECK(analyst.simple("SHOW API TOKEN POLICIES FOR USER analyst") ==
          test::concat({row_description(for_user_cols),
                        data_row({"analyst", "user", "1 day", "30 days", "service_accounts"}),
                        data_row({"service_accounts", "role", "30 days", "30 days", "service_accounts"}),
                        complete("SHOW")}));
    auto c = analyst.run("CREATE API TOKEN t MAX DURATION '30d'");
    CHECK(c.ok());
  }
  SECTION("RESET removes a policy") {
    CHECK(admin.simple("ALTER ROLE service_accounts RESET API TOKEN MAX DURATION") == complete("ALTER ROLE"));
    CHECK(analyst.simple("CREATE API TOKEN t MAX DURATION '2d'") ==
          error("22023", "MAX DURATION 2d exceeds the maximum for user \"analyst\"",
                "The maximum API token duration for user \"analyst\" is 1d, set by the policy on role \"analyst\"."));
    // RESET of a role without a policy succeeds, as ALTER ROLE … RESET does.
    CHECK(admin.simple("ALTER ROLE service_accounts RESET API TOKEN MAX DURATION") == complete("ALTER ROLE"));
  }
  SECTION("administrators only; the role must exist; the duration must parse") {
    CHECK(analyst.simple("ALTER USER analyst SET API TOKEN MAX DURATION '400d'") ==
          error("42501", "permission denied to set API token policies"));
    CHECK(analyst.simple("ALTER USER analyst RESET API TOKEN MAX DURATION") ==
          error("42501", "permission denied to reset API token policies"));
    CHECK(admin.simple("ALTER ROLE ghost SET API TOKEN MAX DURATION '1d'") ==
          error("42704", "role \"ghost\" does not exist"));
    CHECK(admin.simple("ALTER ROLE ghost RESET API TOKEN MAX DURATION") ==
          error("42704", "role \"ghost\" does not exist"));
    auto bad = admin.run("ALTER ROLE alice SET API TOKEN MAX DURATION '0s'");
    REQUIRE(bad.error);
    CHECK(bad.error->sqlstate == "22023");
  }
  SECTION("SHOW API TOKEN POLICIES FOR USER: others need an administrator") {
    CHECK(analyst.simple("SHOW API TOKEN POLICIES FOR USER alice") ==
          error("42501", "permission denied to show API token policies for user \"alice\""));
    CHECK(admin.simple("SHOW API TOKEN POLICIES FOR USER ghost") == error("42704", "role \"ghost\" does not exist"));
    CHECK(admin.run("SHOW API TOKEN POLICIES FOR USER alice").rows.size() == 1);
  }
}

TEST_CASE("transaction blocks: NOTICE in a block, 25P02 in a failed one") {
  Fixture f;
  Session alice{f, "alice", false, {{"alice", role()}}};

  SECTION("in a block: executed at once, with a NOTICE before the result") {
    auto r = alice.run("CREATE API TOKEN ci", 'T');
    REQUIRE(r.ok());
    Bytes got;
    write_simple(got, r);
    CHECK(got == test::concat({notice("25001", "API TOKEN statements are not transactional",
                                      "CREATE API TOKEN took effect at once and will not be rolled back."),
                               row_description(create_cols),
                               data_row({"ci", value_text(r.rows[0][1]), ts_text(now + 365 * day)}),
                               complete("CREATE API TOKEN")}));
    CHECK(alice.simple("DROP ALL API TOKENS", 'T') ==
          test::concat({notice("25001", "API TOKEN statements are not transactional",
                               "DROP ALL API TOKENS took effect at once and will not be rolled back."),
                        complete("DROP API TOKENS 1")}));
  }
  SECTION("SHOW changes nothing: no NOTICE") {
    CHECK(alice.simple("SHOW API TOKENS", 'T') == test::concat({row_description(show_cols), complete("SHOW")}));
  }
  SECTION("an error in a block: no NOTICE") {
    CHECK(alice.simple("DROP API TOKEN nope", 'T') == error("42704", "API token \"nope\" does not exist"));
  }
  SECTION("in a failed block: not executed") {
    auto r = alice.run("CREATE API TOKEN ci", 'E');
    CHECK_FALSE(r.executed);
    CHECK(r.rows.empty());
    Bytes got;
    write_simple(got, r);
    CHECK(got ==
          error("25P02", "current transaction is aborted, commands ignored until end of transaction block"));
    CHECK(alice.run("SHOW API TOKENS").rows.empty());
    CHECK(alice.simple("SHOW API TOKENS", 'E') ==
          error("25P02", "current transaction is aborted, commands ignored until end of transaction block"));
  }
}

TEST_CASE("extended protocol: Execute in the requested formats, without RowDescription") {
  Fixture f;
  Session alice{f, "alice", false, {{"alice", role()}}};
  auto r = alice.run("CREATE API TOKEN ci");
  REQUIRE(r.ok());
  const std::string token = value_text(r.rows[0][1]);

  SECTION("text") {
    Bytes got;
    CHECK(write_execute(got, r, {}));
    CHECK(got == test::concat({data_row({"ci", token, ts_text(now + 365 * day)}), complete("CREATE API TOKEN")}));
  }
  SECTION("binary for every column") {
    const std::int16_t binary[] = {1};
    Bytes got;
    CHECK(write_execute(got, r, binary));
    const std::int64_t micros = (now + 365 * day - protocol::kPostgresEpochUnixSeconds) * 1'000'000;
    std::string be(8, '\0');
    for (int i = 0; i < 8; ++i) be[std::size_t(i)] = char(std::uint8_t(std::uint64_t(micros) >> (56 - 8 * i)));
    CHECK(got == test::concat({data_row({"ci", token, be}), complete("CREATE API TOKEN")}));
  }
  SECTION("formats that do not fit: only the ErrorResponse") {
    const std::int16_t two[] = {0, 1};
    Bytes got;
    CHECK_FALSE(write_execute(got, r, two));
    CHECK(got == error("08P01", "bind message has 2 result formats but query has 3 columns"));
  }
  SECTION("an error result") {
    auto e = alice.run("DROP API TOKEN nope");
    Bytes got;
    CHECK_FALSE(write_execute(got, e, {}));
    CHECK(got == error("42704", "API token \"nope\" does not exist"));
  }
  SECTION("notices first, in a block") {
    auto d = alice.run("DROP API TOKEN IF EXISTS nope", 'T');
    Bytes got;
    CHECK(write_execute(got, d, {}));
    CHECK(got == test::concat({notice("00000", "API token \"nope\" does not exist, skipping"),
                               notice("25001", "API TOKEN statements are not transactional",
                                      "DROP API TOKEN took effect at once and will not be rolled back."),
                               complete("DROP API TOKEN")}));
  }
  SECTION("no columns: one format code is fine, as in PostgreSQL") {
    auto a = alice.run("ALTER API TOKEN ci SET COMMENT 'x'");
    const std::int16_t one[] = {1};
    Bytes got;
    CHECK(write_execute(got, a, one));
    CHECK(got == complete("ALTER API TOKEN"));
  }
}

TEST_CASE("extended protocol: Execute with max_rows suspends and resumes") {
  Fixture f;
  Session alice{f, "alice", false, {{"alice", role()}}};
  // One second apart: tokens created in the same second have no defined order.
  REQUIRE(alice.run("CREATE API TOKEN a", 'I', now).ok());
  REQUIRE(alice.run("CREATE API TOKEN b", 'I', now + 1).ok());
  REQUIRE(alice.run("CREATE API TOKEN c", 'I', now + 2).ok());
  auto r = alice.run("SHOW API TOKENS", 'I', now + 5);
  REQUIRE(r.rows.size() == 3);
  auto row = [&](std::string_view name) {
    const std::int64_t at = now + (name[0] - 'a');
    return data_row({name, "alice", ts_text(at), ts_text(at + 365 * day), null, "active", null, "alice"});
  };
  ExecuteCursor cursor;
  Bytes first;
  CHECK(write_execute(first, r, {}, 2, cursor) == ExecuteOutcome::suspended);
  CHECK(first == test::concat({row("a"), row("b"), msg('s', {})}));
  Bytes second;
  CHECK(write_execute(second, r, {}, 2, cursor) == ExecuteOutcome::complete);
  CHECK(second == test::concat({row("c"), complete("SHOW")}));

  SECTION("exactly max_rows left: complete, not suspended") {
    ExecuteCursor c2;
    Bytes all;
    CHECK(write_execute(all, r, {}, 3, c2) == ExecuteOutcome::complete);
    CHECK(all == test::concat({row("a"), row("b"), row("c"), complete("SHOW")}));
  }
}

TEST_CASE("Describe: statement and portal, without executing") {
  SECTION("statement: ParameterDescription then RowDescription in text") {
    Bytes got;
    write_describe_statement(got, parse("CREATE API TOKEN x"));
    CHECK(got == test::concat({msg('t', {0, 0}), row_description(create_cols)}));
    Bytes show;
    write_describe_statement(show, parse("SHOW API TOKENS FOR ALL USERS"));
    CHECK(show == test::concat({msg('t', {0, 0}), row_description(show_cols)}));
  }
  SECTION("statement without columns: NoData") {
    for (auto sql : {"DROP API TOKEN x", "DROP ALL API TOKENS", "ALTER API TOKEN x SET COMMENT NULL",
                     "ALTER ROLE r SET API TOKEN MAX DURATION '1d'", "ALTER USER r RESET API TOKEN MAX DURATION"}) {
      INFO(sql);
      Bytes got;
      write_describe_statement(got, parse(sql));
      CHECK(got == test::concat({msg('t', {0, 0}), msg('n', {})}));
    }
  }
  SECTION("portal in binary") {
    const std::int16_t binary[] = {1};
    Bytes got;
    CHECK(write_describe_portal(got, parse("CREATE API TOKEN x"), binary));
    CHECK(got == row_description(create_cols, 1));
    Bytes none;
    CHECK(write_describe_portal(none, parse("DROP API TOKEN x"), {}));
    CHECK(none == msg('n', {}));
  }
  SECTION("portal with formats that do not fit") {
    const std::int16_t two[] = {1, 1};
    Bytes got;
    CHECK_FALSE(write_describe_portal(got, parse("SHOW API TOKEN POLICIES"), two));
    CHECK(got == error("08P01", "bind message has 2 result formats but query has 3 columns"));
  }
}

TEST_CASE("facts_needed: the roles each statement needs looked up upstream") {
  using V = std::vector<std::string>;
  auto needed = [](std::string_view sql) { return facts_needed(parse(sql), "alice").roles; };
  CHECK(needed("CREATE API TOKEN") == V{"alice"});
  CHECK(needed("CREATE API TOKEN x FOR USER bob") == V{"bob"});
  CHECK(needed("SHOW API TOKENS") == V{});
  CHECK(needed("SHOW API TOKENS FOR ALL USERS") == V{});
  CHECK(needed("SHOW API TOKENS FOR USER alice") == V{});
  CHECK(needed("SHOW API TOKENS FOR USER bob") == V{"bob"});
  CHECK(needed("ALTER API TOKEN x FOR USER bob SET COMMENT 'c'") == V{"bob"});
  CHECK(needed("ALTER API TOKEN x SET COMMENT 'c'") == V{});
  CHECK(needed("DROP API TOKEN IF EXISTS x FOR USER bob") == V{"bob"});
  CHECK(needed("DROP ALL API TOKENS FOR USER bob") == V{"bob"});
  CHECK(needed("DROP ALL API TOKENS") == V{});
  CHECK(needed("ALTER ROLE service_accounts SET API TOKEN MAX DURATION '30d'") == V{"service_accounts"});
  CHECK(needed("ALTER USER alice RESET API TOKEN MAX DURATION") == V{"alice"});
  CHECK(needed("SHOW API TOKEN POLICIES") == V{});
  CHECK(needed("SHOW API TOKEN POLICIES FOR USER alice") == V{"alice"});
  CHECK(needed("SHOW API TOKEN POLICIES FOR USER \"Bob\"") == V{"Bob"});
}

TEST_CASE("facts the caller forgot to look up are an internal error, not a guess") {
  Fixture f;
  auto s = parse("CREATE API TOKEN x");
  auto r = execute(f.svc, s, "alice", StatementFacts{}, now, 'I');
  Bytes got;
  write_simple(got, r);
  CHECK(got == error("XX000", "internal error: upstream facts for role \"alice\" were not looked up"));
  CHECK_FALSE(r.executed);
}

TEST_CASE("columns_of matches what execute returns") {
  Fixture f;
  Session admin{f, "admin", true, {{"admin", role()}, {"alice", role()}}};
  for (auto sql : {"CREATE API TOKEN x", "SHOW API TOKENS", "SHOW API TOKEN POLICIES",
                   "SHOW API TOKEN POLICIES FOR USER alice", "ALTER API TOKEN x SET COMMENT NULL",
                   "DROP API TOKEN x", "DROP ALL API TOKENS", "ALTER ROLE alice SET API TOKEN MAX DURATION '1d'",
                   "ALTER ROLE alice RESET API TOKEN MAX DURATION"}) {
    INFO(sql);
    auto r = admin.run(sql);
    CHECK(r.ok());
    CHECK(r.columns == columns_of(parse(sql)));
    for (const auto& row : r.rows) CHECK(row.size() == r.columns.size());
  }
}

TEST_CASE("durations print as PostgreSQL's justify_hours(interval)") {
  CHECK(format_interval(30 * day) == "30 days");
  CHECK(format_interval(day) == "1 day");
  CHECK(format_interval(day + 12 * 3600) == "1 day 12:00:00");
  CHECK(format_interval(90 * 60) == "01:30:00");
  CHECK(format_interval(45) == "00:00:45");
  CHECK(format_interval(365 * day) == "365 days");
  CHECK(format_interval(36500 * day) == "36500 days");
  CHECK(format_interval(2 * day + 1) == "2 days 00:00:01");
}

TEST_CASE("facts_needed says when a statement acts for other roles") {
  auto others = [](std::string_view sql) { return facts_needed(parse(sql), "alice").acts_for_others; };
  CHECK_FALSE(others("CREATE API TOKEN"));
  CHECK_FALSE(others("CREATE API TOKEN x FOR USER alice"));
  CHECK(others("CREATE API TOKEN x FOR USER bob"));
  CHECK_FALSE(others("SHOW API TOKENS"));
  CHECK(others("SHOW API TOKENS FOR ALL USERS"));
  CHECK(others("SHOW API TOKENS FOR USER bob"));
  CHECK(others("DROP API TOKEN x FOR USER bob"));
  CHECK_FALSE(others("DROP ALL API TOKENS"));
  CHECK(others("DROP ALL API TOKENS FOR USER bob"));
  CHECK(others("ALTER ROLE alice SET API TOKEN MAX DURATION '1d'"));
  CHECK(others("ALTER ROLE bob RESET API TOKEN MAX DURATION"));
  CHECK_FALSE(others("SHOW API TOKEN POLICIES"));
  CHECK_FALSE(others("SHOW API TOKEN POLICIES FOR USER alice"));
  CHECK(others("SHOW API TOKEN POLICIES FOR USER bob"));
}

TEST_CASE("a token session cannot CREATE API TOKEN: 42501 with a hint naming the setting") {
  Fixture f;
  Session alice{f, "alice", false, {{"alice", role()}}};
  alice.via_token = true;
  Bytes b;
  b.push_back('S');
  put_cstr(b, "ERROR");
  b.push_back('V');
  put_cstr(b, "ERROR");
  b.push_back('C');
  put_cstr(b, "42501");
  b.push_back('M');
  put_cstr(b, "permission denied to create API tokens");
  b.push_back('D');
  put_cstr(b,
           "This session logged in with an API token. Such sessions cannot create tokens, so that a stolen token "
           "cannot outlive its revocation.");
  b.push_back('H');
  put_cstr(b, "Log in with a password, or set token_sessions.manage_credentials = true in tokengate's configuration.");
  b.push_back(0);
  auto r = alice.run("CREATE API TOKEN ci");
  CHECK(r.executed);  // audited as a refused operation
  Bytes got;
  write_simple(got, r);
  CHECK(got == msg('E', b));
  // Listing and dropping stay allowed.
  CHECK(alice.run("SHOW API TOKENS").ok());
  CHECK(alice.simple("DROP ALL API TOKENS") == complete("DROP API TOKENS 0"));
}

TEST_CASE("a non-superuser administrator is refused for protected roles, and FOR ALL USERS hides them") {
  Fixture f;
  Session root{f, "postgres", true, {{"postgres", role()}, {"analyst", role()}}};
  REQUIRE(root.run("CREATE API TOKEN su_token").ok());
  REQUIRE(root.run("CREATE API TOKEN an_token FOR USER analyst").ok());
  Session carol{f, "carol", true, {{"postgres", role()}, {"analyst", role()}, {"carol", role()}}};
  carol.superuser = false;
  carol.protected_roles = {"carol", "postgres"};
  const std::string detail =
      "An administrator that is not a superuser cannot act for superusers, roles with REPLICATION, BYPASSRLS or "
      "CREATEROLE, or other administrators.";
  CHECK(carol.simple("CREATE API TOKEN x FOR USER postgres") ==
        error("42501", "permission denied to create API tokens for user \"postgres\"", detail));
  CHECK(carol.simple("DROP API TOKEN su_token FOR USER postgres") ==
        error("42501", "permission denied to drop API tokens for user \"postgres\"", detail));
  CHECK(carol.simple("ALTER ROLE postgres SET API TOKEN MAX DURATION '1d'") ==
        error("42501", "permission denied to set API token policies of role \"postgres\"", detail));
  CHECK(carol.run("CREATE API TOKEN y FOR USER analyst", 'I', now + 1).ok());
  auto all = carol.run("SHOW API TOKENS FOR ALL USERS", 'I', now + 2);
  REQUIRE(all.ok());
  std::vector<std::string> names;
  for (const auto& row : all.rows) names.push_back(value_text(row[1]) + "/" + value_text(row[0]));
  CHECK(names == std::vector<std::string>{"analyst/an_token", "analyst/y"});
}

TEST_CASE("DROP API TOKEN revokes an expired namesake with the active token") {
  Fixture f;
  Session alice{f, "alice", false, {{"alice", role()}}};
  auto old = alice.run("CREATE API TOKEN ci MAX DURATION '1h'");
  REQUIRE(old.ok());
  auto cur = alice.run("CREATE API TOKEN ci", 'I', now + 7200);
  REQUIRE(cur.ok());
  auto r = alice.run("DROP API TOKEN ci", 'I', now + 7300);
  REQUIRE(r.ok());
  CHECK(r.revoked == std::vector<tokenstore::tid_t>{*old.tid, *cur.tid});
  CHECK(r.tid == cur.tid);
}

// `tokengate tokens …` / `tokengate keys …`: parsing, output, and that only `create` ever prints a token.
#include <sys/stat.h>

#include <cctype>
#include <filesystem>
#include <iostream>
#include <sstream>

#include "tests/unit/tokenstore/test_helpers.hpp"
#include "tokenstore/cli.hpp"
#include "tokenstore/keys.hpp"
#include "tokenstore/store.hpp"

using namespace tokengate::tokenstore;
using tokengate::tokenstore::test::temp_dir;

namespace {

struct run_result {
    int status;
    std::string out;
    std::string err;
};

run_result run(std::vector<std::string> args)
{
    args.insert(args.begin(), "tokengate");
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    std::ostringstream out, err;
    auto* old_out = std::cout.rdbuf(out.rdbuf());
    auto* old_err = std::cerr.rdbuf(err.rdbuf());
    int status = cli_main(static_cast<int>(argv.size()), argv.data());
    std::cout.rdbuf(old_out);
    std::cerr.rdbuf(old_err);
    return {status, out.str(), err.str()};
}

// A store as `tokengate serve` leaves it at its first start: the commands
// never create one.
void make_store(const std::filesystem::path& d)
{
    keyring k(d);
    store st(d);
}

// No PostgreSQL listens on port 1: `tokens create` warns and goes on.
const std::string no_upstream = "127.0.0.1:1";

}  // namespace

TEST_CASE("CLI: create prints only the token, list and revoke never do", "[cli]")
{
    temp_dir dir;
    const std::string d = dir.path().string();
    make_store(dir.path());
    auto c = run({"tokens", "create", "deploy", "--user", "alice", "--duration", "30d", "--comment", "ci", "--data-dir", d,
                  "--upstream", no_upstream});
    INFO("stderr: " << c.err);
    REQUIRE(c.status == 0);
    CHECK_THAT(c.err, Catch::Contains("WARNING:  cannot check role \"alice\" on the upstream 127.0.0.1:1"));
    std::string token = c.out.substr(0, c.out.find('\n'));
    CHECK(c.out == token + "\n");
    CHECK(looks_like_token(token));
    CHECK_THAT(c.err, Catch::Contains("created API token \"deploy\" for user \"alice\""));

    auto dup = run({"tokens", "create", "deploy", "--user", "alice", "--data-dir", d, "--upstream", no_upstream});
    CHECK(dup.status == 1);
    CHECK(dup.out.empty());
    CHECK_THAT(dup.err, Catch::Contains("(SQLSTATE 42710)"));

    auto bad = run({"tokens", "create", "x", "--user", "alice", "--duration", "soon", "--data-dir", d, "--upstream",
                    no_upstream});
    CHECK(bad.status == 1);
    CHECK_THAT(bad.err, Catch::Contains("invalid duration \"soon\""));

    auto list = run({"tokens", "list", "--user", "alice", "--data-dir", d});
    REQUIRE(list.status == 0);
    CHECK_THAT(list.out, Catch::Contains("deploy") && Catch::Contains("active") && Catch::Contains("(command line)"));
    CHECK(list.out.find(token) == std::string::npos);
    CHECK(list.out.find(token.substr(token.rfind('.') + 1)) == std::string::npos);

    auto rev = run({"tokens", "revoke", "deploy", "--user", "alice", "--data-dir", d});
    CHECK(rev.status == 0);
    CHECK(rev.out.empty());
    auto again = run({"tokens", "revoke", "deploy", "--user", "alice", "--data-dir", d});
    CHECK(again.status == 1);
    CHECK_THAT(again.err, Catch::Contains("API token \"deploy\" does not exist"));
    CHECK_THAT(run({"tokens", "list", "--all", "--data-dir", d}).out, Catch::Contains("revoked"));

    CHECK(run({"tokens", "revoke", "deploy", "--data-dir", d}).status == 2);  // --user is required
    CHECK(run({"tokens", "list", "--user", "a", "--all", "--data-dir", d}).status == 2);
}

TEST_CASE("CLI: keys list shows ids only, rotate adds one", "[cli]")
{
    temp_dir dir;
    const std::string d = dir.path().string();
    make_store(dir.path());
    auto l1 = run({"keys", "list", "--data-dir", d});
    REQUIRE(l1.status == 0);
    CHECK_THAT(l1.out, Catch::Contains("(1 row)"));
    auto r = run({"keys", "rotate", "--data-dir", d});
    REQUIRE(r.status == 0);
    auto l2 = run({"keys", "list", "--data-dir", d});
    CHECK_THAT(l2.out, Catch::Contains("(2 rows)"));
    keyring k(dir.path());
    for (const auto& info : k.list()) CHECK_THAT(l2.out, Catch::Contains(info.kid));
    // No 64-hex-character secret anywhere in the output.
    std::size_t run_len = 0, longest = 0;
    for (char ch : l2.out + r.out) {
        run_len = std::isxdigit(static_cast<unsigned char>(ch)) ? run_len + 1 : 0;
        longest = std::max(longest, run_len);
    }
    CHECK(longest < 64u);

    REQUIRE(::chmod((dir.path() / keyring::file_name).c_str(), 0644) == 0);
    auto refused = run({"keys", "list", "--data-dir", d});
    CHECK(refused.status == 1);
    CHECK_THAT(refused.err, Catch::Contains("chmod 600"));
}

TEST_CASE("CLI: no command creates a store; a missing one is named", "[cli]")
{
    temp_dir dir;
    const auto missing = dir.path() / "nothing-here";
    const std::string m = missing.string();
    for (std::vector<std::string> args : {std::vector<std::string>{"keys", "list"}, {"keys", "rotate"},
                                          {"tokens", "list"}, {"tokens", "revoke", "x", "--user", "u"},
                                          {"tokens", "create", "x", "--user", "u", "--upstream", no_upstream}}) {
        args.push_back("--data-dir");
        args.push_back(m);
        auto r = run(args);
        INFO(args[0] << " " << args[1] << ": " << r.err);
        CHECK(r.status == 1);
        CHECK(r.out.empty());
        CHECK_THAT(r.err, Catch::Contains("no token store in " + m) && Catch::Contains(".dev/tokengate-data"));
        CHECK_FALSE(std::filesystem::exists(missing));
    }
    // A directory without a store (say, the wrong one) stays untouched too.
    const std::string d = dir.path().string();
    auto r = run({"keys", "list", "--data-dir", d});
    CHECK(r.status == 1);
    CHECK_THAT(r.err, Catch::Contains(d + "/signing.keys does not exist"));
    CHECK(std::filesystem::is_empty(dir.path()));
}

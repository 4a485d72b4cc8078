// HOST:PORT parsing as libpq spells endpoints, including Unix socket dirs.
#include <catch2/catch.hpp>

#include "proxy/net/endpoint.hpp"

using namespace tokengate::net;

TEST_CASE("endpoints parse TCP, IPv6 and Unix-socket forms") {
  auto tcp = parse_endpoint("127.0.0.1:6432", 5432);
  REQUIRE(tcp);
  CHECK(tcp->host == "127.0.0.1");
  CHECK(tcp->port == 6432);
  CHECK_FALSE(tcp->is_unix());

  auto v6 = parse_endpoint("[::1]:7000", 5432);
  REQUIRE(v6);
  CHECK(v6->host == "::1");
  CHECK(v6->to_string() == "[::1]:7000");

  auto sock = parse_endpoint("/var/run/postgresql:5433", 5432);
  REQUIRE(sock);
  CHECK(sock->is_unix());
  CHECK(sock->unix_path() == "/var/run/postgresql/.s.PGSQL.5433");

  auto bare = parse_endpoint("db.internal", 5432);
  REQUIRE(bare);
  CHECK(bare->port == 5432);
}

TEST_CASE("malformed endpoints are refused") {
  CHECK_FALSE(parse_endpoint(":5432", 5432));
  CHECK_FALSE(parse_endpoint("host:0", 5432));
  CHECK_FALSE(parse_endpoint("host:65536", 5432));
  CHECK_FALSE(parse_endpoint("host:12ab", 5432));
  CHECK_FALSE(parse_endpoint("[::1", 5432));
  CHECK_FALSE(parse_endpoint_list("a:1,,b:2", 5432));
  auto list = parse_endpoint_list("127.0.0.1:6432, /tmp:6432", 5432);
  REQUIRE(list);
  CHECK(list->size() == 2);
}

TEST_CASE("client addresses drop the port and name Unix sockets [local]") {
  CHECK(client_address("10.1.2.3:5432") == "10.1.2.3");
  CHECK(client_address("[::1]:40000") == "::1");
  CHECK(client_address("/run/tokengate/.s.PGSQL.6432") == "[local]");
  CHECK(client_address("") == "[local]");
}

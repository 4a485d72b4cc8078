// Fleet plumbing without a registry: instance bits in cancel keys, the forwarding limits, peers and the default DSN.
#include <catch2/catch.hpp>

#include <set>

#include "proxy/net/cancel_registry.hpp"
#include "proxy/net/fleet.hpp"

using namespace tokengate;
using namespace tokengate::net;

TEST_CASE("cancel keys name their instance in the secret's top bits", "[fleet]") {
  // A key is the backend's process ID with a secret of tokengate's own.
  auto key_of = [](const CancelRegistry& r, std::int32_t pid = 4242) {
    return protocol::BackendKeyData{pid, r.issue_secret()};
  };
  CancelRegistry single;
  auto k = key_of(single);
  CHECK(single.instance_of(k) == 0);  // a single instance names none

  CancelRegistry reg;
  reg.set_instance(kFleetInstanceBits, 201);
  std::set<std::uint32_t> low_bits;
  for (int i = 0; i < 200; ++i) {
    auto key = key_of(reg);
    CHECK(reg.instance_of(key) == 201);
    low_bits.insert(std::uint32_t(key.secret_key) & 0xffffff);
  }
  CHECK(low_bits.size() > 190);  // the rest stays random

  // Another instance reads the id out of a key it never issued.
  CancelRegistry peer;
  peer.set_instance(kFleetInstanceBits, 7);
  CHECK(peer.instance_of(key_of(reg)) == 201);
  CHECK_FALSE(peer.find(key_of(reg)));
}

TEST_CASE("cancel forwarding: a key goes on once per window, and only so many at once", "[fleet]") {
  CancelForwarding f;
  protocol::BackendKeyData a{100, 0x0a000001}, b{101, 0x0a000002};
  REQUIRE(f.begin(a));
  f.done();
  CHECK_FALSE(f.begin(a));  // came back (two instances with stale views): dropped
  CHECK(f.begin(b));
  f.done();

  CancelForwarding g;
  for (int i = 0; i < CancelForwarding::kMaxInFlight; ++i) REQUIRE(g.begin({i + 1, 0x0b000000 + i}));
  CHECK_FALSE(g.begin({9999, 0x0c000000}));
  g.done();
  CHECK(g.begin({9999, 0x0c000000}));
}

TEST_CASE("fleet.peers parses ID=HOST:PORT lists and refuses anything else", "[fleet]") {
  auto p = parse_peers("1=10.0.0.5:6432, 2=[::1]:7000,3=gate-3");
  REQUIRE(p.size() == 3);
  CHECK(p[1].host == "10.0.0.5");
  CHECK(p[1].port == 6432);
  CHECK(p[2].host == "::1");
  CHECK(p[2].port == 7000);
  CHECK(p[3].port == 6432);
  CHECK(parse_peers("").empty());
  for (const char* bad : {"1", "x=h:1", "0=h:1", "256=h:1", "1=h:notaport", "1=h:1,,2"}) {
    INFO(bad);
    CHECK_THROWS_AS(parse_peers(bad), ConfigError);
  }
}

TEST_CASE("the default registry DSN is the upstream as the control user, quoted", "[fleet]") {
  Config c;
  c.upstream = Endpoint{"/run/pg sock", 5433};
  c.control_user = "tg'ctl";
  c.control_database = "reg";
  CHECK(registry_dsn(c, std::nullopt) == "host='/run/pg sock' port=5433 user='tg\\'ctl' dbname='reg'");
  c.upstream = Endpoint{"db.example", 5432};
  c.upstream_sslmode = "verify-full";
  c.upstream_sslrootcert = "/etc/ca.pem";
  CHECK(registry_dsn(c, std::string("p\\w")) ==
        "host='db.example' port=5432 user='tg\\'ctl' dbname='reg' password='p\\\\w' sslmode='verify-full' "
        "sslrootcert='/etc/ca.pem'");
  c.store_dsn = "postgresql://registry/tokens";
  CHECK(registry_dsn(c, std::nullopt) == "postgresql://registry/tokens");
}

TEST_CASE("the advertised address: the setting, else the first TCP listen address", "[fleet]") {
  Config c;
  c.listen = {Endpoint{"/tmp", 6432}, Endpoint{"127.0.0.1", 6500}};
  CHECK(advertise_address(c) == "127.0.0.1:6500");
  c.advertise_address = "gate-1.internal:6432";
  CHECK(advertise_address(c) == "gate-1.internal:6432");
}

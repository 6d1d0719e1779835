// The rate-limit stage packet by packet through the real programs: a burst admits exactly
// `burst` requests per key and refuses the rest (429, or drop), keys are separated as POLICY.md
// says (client address, IPv6 /64, global), a key the request lacks is the fail mode, preflight
// probes draw no tokens, and an apply that keeps a limit's name and key keeps its buckets.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <bpf/bpf.h>

#include <chrono>
#include <thread>

#include "chain/compile.hpp"
#include "config/loader.hpp"
#include "fixture.hpp"

using namespace policyd;
using namespace policyd::test;

namespace {

std::string policy(const std::string& per_client_burst = "3") {
  return policy_with(R"(chain: [host, path, ratelimit]
default_action: deny
ratelimits:
  per_client:
    key: client_ip
    rate: 1/h
    burst: )" + per_client_burst + R"(
  everyone:
    key: global
    rate: 1/h
    burst: 2
    action: drop
hosts:
  - match: "app.example.com"
    routes:
      - path: { prefix: "/limited/" }
        ratelimit: per_client
        action: allow
      - path: { prefix: "/global/" }
        ratelimit: everyone
        action: allow
      - path: { prefix: "/" }
        action: allow
)");
}

std::string get(const std::string& path) {
  return "GET " + path + " HTTP/1.1\r\nHost: app.example.com\r\nUser-Agent: t\r\n\r\n";
}

// One request on a new connection from `src`; the outcome.
Outcome request(Fixture& fx, const std::string& path, const std::string& src = "", int family = 4) {
  Conn c(fx, family);
  c.set_src(src);
  c.syn();
  return c.send(get(path));
}

// The buckets of one kind in the bucket table.
int count_buckets(chain::Dataplane& dp, uint32_t kind) {
  int fd = dp.map_fd(policyd::abi::Map::rl_buckets), n = 0;
  pd_rl_bucket_key key{}, next{};
  pd_rl_bucket_key* cur = nullptr;
  while (bpf_map_get_next_key(fd, cur, &next) == 0) {
    key = next;
    cur = &key;
    n += key.kind == kind;
  }
  return n;
}

int admitted(Fixture& fx, const std::string& path, int n, const std::string& src = "", int family = 4) {
  int ok = 0;
  for (int i = 0; i < n; ++i) {
    Outcome o = request(fx, path, src, family);
    if (o.passed_unchanged()) ++ok;
  }
  return ok;
}

}  // namespace

TEST_CASE("a burst admits exactly burst requests per client; the rest get the 429", "[ratelimit]") {
  Fixture fx(policy());
  CHECK(request(fx, "/limited/a").counter(PD_C_RL_ALLOWED) == 1);
  CHECK(admitted(fx, "/limited/a", 1) == 1);
  CHECK(admitted(fx, "/limited/b", 1) == 1);
  Outcome o = request(fx, "/limited/c");
  CHECK(o.refused());  // the server side is reset; the client got the 429
  CHECK(o.verdict(PD_ACT_REJECT) == 1);
  CHECK(o.counter(PD_C_RL_LIMITED) == 1);
  CHECK(admitted(fx, "/other", 3) == 3);  // a route without a limit draws nothing
  CHECK(request(fx, "/other").counter(PD_C_RL_ALLOWED) == 0);

  SECTION("another client address has its own bucket") {
    CHECK(admitted(fx, "/limited/x", 5, "198.51.100.77") == 3);
  }
  SECTION("IPv6 clients share a bucket per /64") {
    CHECK(admitted(fx, "/limited/x", 2, "2001:db8:c::10", 6) == 2);
    CHECK(admitted(fx, "/limited/x", 3, "2001:db8:c::20", 6) == 1);   // same /64
    CHECK(admitted(fx, "/limited/x", 3, "2001:db8:c:1::2", 6) == 3);  // another /64
  }
}

TEST_CASE("a global limit is shared by every client; its action drop drops", "[ratelimit]") {
  Fixture fx(policy());
  CHECK(admitted(fx, "/global/a", 1, "198.51.100.10") == 1);
  CHECK(admitted(fx, "/global/a", 1, "198.51.100.11") == 1);
  Outcome o = request(fx, "/global/a", "198.51.100.12");
  CHECK(o.dropped());
  CHECK(o.verdict(PD_ACT_DROP) == 1);
}

TEST_CASE("a jwt_sub limit keys on the verified token's sub; a token without sub is the fail mode", "[ratelimit][jwt]") {
  HsProvider provider;
  const std::string& secret = provider.secret_file();
  const std::string dir = provider.dir();
  Fixture fx(policy_with("chain: [host, path, jwt, ratelimit]\ndefault_action: deny\n" + provider.yaml() + R"(ratelimits:
  per_sub:
    key: jwt_sub
    rate: 1/h
    burst: 2
hosts:
  - match: "app.example.com"
    routes:
      - path: { prefix: "/sub/" }
        jwt: main
        ratelimit: per_sub
        action: allow
)"));
  auto mint = [&](const std::string& extra) {
    std::string cmd = std::string("/usr/bin/python3 ") + POLICYD_TEST_SOURCE_DIR + "/tests/e2e/mint_jwt.py token --alg HS256 --key " +
                      secret + " " + extra + " > " + dir + "/t";
    REQUIRE(std::system(cmd.c_str()) == 0);
    std::ifstream in(std::string(dir) + "/t");
    std::string t;
    std::getline(in, t);
    return t;
  };
  auto with_token = [&](const std::string& token, const std::string& src) {
    Conn c(fx);
    c.set_src(src);
    c.syn();
    return c.send("GET /sub/x HTTP/1.1\r\nHost: app.example.com\r\nAuthorization: Bearer " + token + "\r\n\r\n");
  };
  const std::string alice = mint("--claims '{\"sub\": \"alice\"}'"), bob = mint("--claims '{\"sub\": \"bob\"}'");
  int alice_ok = 0;
  for (int i = 0; i < 4; ++i)  // from two addresses: the bucket is alice's, not an address's
    alice_ok += with_token(alice, i % 2 ? "198.51.100.20" : "198.51.100.21").passed_unchanged();
  CHECK(alice_ok == 2);
  CHECK(with_token(bob, "198.51.100.20").passed_unchanged());
  Outcome o = with_token(mint("--drop sub"), "198.51.100.20");
  CHECK(o.reason(PD_R_RL_NO_KEY) == 1);
  CHECK(o.refused());
}

TEST_CASE("an apply that keeps a limit's name and key keeps its buckets; a new burst applies at once", "[ratelimit]") {
  Fixture fx(policy("3"));
  CHECK(admitted(fx, "/limited/a", 5) == 3);
  fx.apply(policy("3"));  // a generation flip: the same limit
  CHECK(admitted(fx, "/limited/a", 2) == 0);
  fx.apply(policy("5"));  // a larger burst: the empty bucket stays empty (1/h refills slowly)
  CHECK(admitted(fx, "/limited/a", 2) == 0);
  CHECK(admitted(fx, "/limited/a", 5, "198.51.100.99") == 5);  // a new client gets the new burst
}

TEST_CASE("buckets idle until full are forgotten; the shared bucket and busy ones stay", "[ratelimit]") {
  const std::string yaml = policy_with(R"(chain: [host, path, ratelimit]
ratelimits:
  fast:
    key: client_ip
    rate: 1000/s
    burst: 2
  slow:
    key: client_ip
    rate: 1/h
    burst: 2
hosts:
  - match: "app.example.com"
    routes:
      - path: { prefix: "/fast/" }
        ratelimit: fast
        action: allow
      - path: { prefix: "/slow/" }
        ratelimit: slow
        action: allow
)");
  Fixture fx(yaml);
  auto& dp = fx.dp();
  auto count_buckets = [&](uint32_t kind) { return ::count_buckets(dp, kind); };
  CHECK(count_buckets(PD_RLK_SHARED) == 2 * PD_RL_SPREAD);  // made at apply
  CHECK(admitted(fx, "/fast/a", 1) == 1);
  CHECK(admitted(fx, "/slow/a", 1) == 1);
  CHECK(count_buckets(PD_RLK_CLIENT_IP) == 2);
  auto tables = chain::compile(config::load_policy_string(yaml, "t.yaml"), dp.active_gen(), dp.hash_seed());
  REQUIRE(tables);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // "fast" refills in 2 ms; "slow" in 2 h
  CHECK(dp.sweep_buckets(tables->limits) == 1);
  CHECK(count_buckets(PD_RLK_CLIENT_IP) == 1);
  CHECK(count_buckets(PD_RLK_SHARED) == 2 * PD_RL_SPREAD);
  CHECK(admitted(fx, "/slow/b", 2) == 1);  // the busy one kept its state
}

// Issue 17: a `host` key on a wildcard host lets a client make as many keys as it likes. They
// fill that limit's share of the bucket table, then spread over its shared buckets; another
// limit's new clients still get buckets of their own. (The fixture's table: 4096 buckets.)
TEST_CASE("a flood of new keys in one limit takes neither another limit's room nor one bucket for all", "[ratelimit]") {
  const std::string yaml = policy_with(R"(chain: [host, path, ratelimit]
default_action: deny
ratelimits:
  per_host:
    key: host
    rate: 1/h
    burst: 1
  per_client:
    key: client_ip
    rate: 1/h
    burst: 2
hosts:
  - match: "*.example.com"
    routes:
      - path: { prefix: "/h/" }
        ratelimit: per_host
        action: allow
      - path: { prefix: "/c/" }
        ratelimit: per_client
        action: allow
)");
  Fixture fx(yaml);
  const int share = (4096 - 2 * PD_RL_SPREAD) / 2;
  int flood_admitted = 0;
  for (int i = 0; i < 4200; ++i) {  // more keys than the whole table holds
    Conn c(fx);
    c.syn();
    std::string host = "f";
    host += std::to_string(i);
    host += ".example.com";
    if (c.send("GET /h/x HTTP/1.1\r\nHost: " + host + "\r\n\r\n").passed_unchanged()) ++flood_admitted;
  }
  CHECK(count_buckets(fx.dp(), PD_RLK_HOST) == share);
  // one request each for the keys that got a bucket, one per shared bucket for the rest
  CHECK(flood_admitted > share);
  CHECK(flood_admitted <= share + PD_RL_SPREAD);
  // new clients of the other limit: a bucket each, a burst each
  for (const char* src : {"203.0.113.1", "203.0.113.2", "203.0.113.3"}) {
    INFO(src);
    CHECK(admitted(fx, "/c/x", 3, src) == 2);
  }
  CHECK(count_buckets(fx.dp(), PD_RLK_CLIENT_IP) == 3);
}

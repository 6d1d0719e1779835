// Preflight: the prepared generation, probed with requests synthesized from the policy,
// agrees with the reference evaluation of the policy — and a real disagreement is found.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>

#include "chain/compile.hpp"
#include "chain/kernel/preflight.hpp"
#include "config/loader.hpp"
#include "fixture.hpp"
#include "faults.hpp"

using namespace policyd;
using namespace policyd::test;

namespace {

const std::string kPolicy = policy_with(R"(chain: [host, path]
default_action: deny
hosts:
  - match: ["app.example.com", "*.app.example.com"]
    routes:
      - path: { prefix: "/admin" }
        action: deny
      - path: { exact: "/healthz" }
        action: allow
      - path: { prefix: "/api/" }
        methods: [GET, POST]
        action: allow
      - path: { prefix: "/old/" }
        action: drop
      - path: { prefix: "/" }
        action: reset
  - match: "*"
    routes:
      - path: { prefix: "/public/" }
        action: allow
)");

// The policy compiled into the fixture's inactive half (prepared, not flipped).
uint32_t prepare(Fixture& fx, const config::Policy& policy, uint32_t tag) {
  auto& dp = fx.dp();
  uint32_t gen = dp.inactive_gen();
  auto tables = chain::compile(policy, gen, dp.hash_seed());
  REQUIRE(tables);
  REQUIRE(dp.prepare(*tables, gen, tag));
  return gen;
}

std::string joined(const std::vector<std::string>& lines) {
  std::string s;
  for (const auto& l : lines) s += l + "\n";
  return s;
}

}  // namespace

TEST_CASE("the reference evaluation follows POLICY.md", "[preflight]") {
  auto p = config::load_policy_string(kPolicy, "t.yaml");
  using A = config::Action;
  CHECK(chain::reference_action(p, config::GET, "app.example.com", "/healthz") == A::Allow);
  CHECK(chain::reference_action(p, config::GET, "app.example.com", "/admin/x") == A::Deny);
  CHECK(chain::reference_action(p, config::DELETE, "app.example.com", "/api/x") == A::Reset);  // falls to "/"
  CHECK(chain::reference_action(p, config::GET, "x.app.example.com", "/old/a") == A::Drop);
  CHECK(chain::reference_action(p, config::GET, "other.org", "/public/a") == A::Allow);
  CHECK(chain::reference_action(p, config::GET, "other.org", "/admin") == A::Deny);  // default
}

TEST_CASE("preflight of a prepared generation agrees with the policy and changes nothing live", "[preflight]") {
  Fixture fx(kPolicy, Fixture::Load::fresh);
  auto& dp = fx.dp();
  auto policy = config::load_policy_string(kPolicy, "t.yaml");
  uint32_t active = dp.active_gen();
  uint32_t gen = prepare(fx, policy, 7);
  auto before = dp.read_counters().values;

  auto report = chain::preflight(dp, policy, gen);
  REQUIRE(report);
  INFO(joined(report->failures));
  CHECK(report->failures.empty());
  CHECK(report->probes >= 2 * 6 + 2);  // every route of both host patterns, plus misses
  CHECK(dp.active_gen() == active);     // not flipped
  CHECK(dp.read_counters().values == before);  // probes are not counted as traffic

  SECTION("a prepared generation that disagrees with the policy is caught") {
    REQUIRE(policyd::testing::corrupt_prepared(dp, gen));
    auto bad = chain::preflight(dp, policy, gen);
    REQUIRE(bad);
    CHECK_FALSE(bad->failures.empty());
    CHECK(bad->failures.front().find("policy says") != std::string::npos);
    CHECK(dp.active_gen() == active);
  }
}

namespace {

const std::string kTlsPolicy = R"(version: 1
interfaces: ["lo"]
listeners:
  - name: secure
    port: 443
    protocol: tls
chain: [sni]
default_action: deny
sni:
  - match: "api.example.com"
    action: allow
  - match: "*.corp.example.com"
    action: reset
  - match: "*.example.com"
    action: allow
  - match: "dropped.test"
    action: drop
missing_sni: allow
)";

}  // namespace

TEST_CASE("the sni reference evaluation follows POLICY.md", "[preflight][tls]") {
  auto p = config::load_policy_string(kTlsPolicy, "t.yaml");
  using A = config::Action;
  CHECK(chain::reference_sni_action(p, std::string("API.Example.COM.")) == A::Allow);
  CHECK(chain::reference_sni_action(p, std::string("x.corp.example.com")) == A::Reset);  // first match wins
  CHECK(chain::reference_sni_action(p, std::string("corp.example.com")) == A::Allow);
  CHECK(chain::reference_sni_action(p, std::string("example.com")) == A::Deny);  // "*." needs a label
  CHECK(chain::reference_sni_action(p, std::string("dropped.test")) == A::Drop);
  CHECK(chain::reference_sni_action(p, std::nullopt) == A::Allow);  // missing_sni
}

TEST_CASE("preflight probes sni rules with ClientHellos, and catches a wrong sni action", "[preflight][tls]") {
  Fixture fx(kTlsPolicy, Fixture::Load::fresh);
  auto& dp = fx.dp();
  auto policy = config::load_policy_string(kTlsPolicy, "t.yaml");
  uint32_t active = dp.active_gen();
  uint32_t gen = prepare(fx, policy, 9);
  auto before = dp.read_counters().values;

  auto report = chain::preflight(dp, policy, gen);
  REQUIRE(report);
  INFO(joined(report->failures));
  CHECK(report->failures.empty());
  CHECK(report->rules == 4);
  CHECK(report->probes == 2 * 4 + 2);  // each rule as written and upper-cased, a miss, no server_name
  CHECK(dp.read_counters().values == before);
  CHECK(dp.active_gen() == active);

  REQUIRE(policyd::testing::corrupt_prepared(dp, gen));  // no routes here: an sni rule's action is flipped
  auto bad = chain::preflight(dp, policy, gen);
  REQUIRE(bad);
  REQUIRE(bad->failures.size() == 2);  // the rule as written and upper-cased
  CHECK(bad->failures.front().find("ClientHello server_name") != std::string::npos);
  CHECK(bad->failures.front().find("sni rule") != std::string::npos);
}

TEST_CASE("preflight knows a route that needs a token refuses a request without one", "[preflight][jwt]") {
  HsProvider provider;
  const std::string yaml = policy_with("chain: [host, path, jwt]\ndefault_action: deny\n" + provider.yaml() + R"(hosts:
  - match: "app.example.com"
    routes:
      - path: { prefix: "/v1/" }
        jwt: main
        action: allow
      - path: { prefix: "/admin/" }
        jwt: { provider: main, require: { scope: "admin" } }
        action: deny
      - path: { prefix: "/" }
        action: allow
)");
  Fixture fx(yaml, Fixture::Load::fresh);
  auto policy = config::load_policy_string(yaml, "t.yaml");
  auto keys = chain::read_key_material(policy);
  REQUIRE(keys);
  auto& dp = fx.dp();
  uint32_t gen = dp.inactive_gen();
  auto tables = chain::compile(policy, gen, dp.hash_seed(), &*keys);
  REQUIRE(tables);
  REQUIRE(dp.prepare(*tables, gen, 11));
  auto report = chain::preflight(dp, policy, gen);
  REQUIRE(report);
  INFO(joined(report->failures));
  CHECK(report->failures.empty());
  CHECK(report->probes >= 4);
}

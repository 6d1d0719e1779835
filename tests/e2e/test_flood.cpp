// Floods (issue 17): what an attacker can send a gateway in bulk must not cost honest clients
// their connections. A SYN flood of ten times the flow table from spoofed sources, while
// established keep-alive connections make requests and new clients connect: none of them is
// reset or refused.
#include <chrono>
#include <thread>

#include <nlohmann/json.hpp>

#include "common.hpp"

using namespace policyd::e2e;
using json = nlohmann::json;

namespace {

constexpr int kMaxFlows = 1024;  // the smallest flow table a policy may ask for

std::string mac_of(const Topology& topo, Role role, const std::string& dev) {
  auto r = topo.exec(role, {"ip", "-j", "link", "show", "dev", dev});
  if (r.exit_code != 0) throw std::runtime_error(cat("ip link show ", dev, ": ", r.err));
  return json::parse(r.out).at(0).at("address").get<std::string>();
}

}  // namespace

TEST_CASE("a SYN flood of ten times the flow table evicts no established connection", "[flood]") {
  Env env(edit_policy(http_policy(), "fail_mode:", cat("limits:\n  max_flows: ", kMaxFlows, "\nfail_mode:")));
  const auto before = ctl_json(env.daemon, "stats");
  // four keep-alive connections: a request, then (during the flood) more, the last refused
  auto get = [](const char* path) { return http_request("GET", path, "app.example.com"); };
  std::vector<std::unique_ptr<RawClient>> clients;
  for (int i = 0; i < 4; ++i) {
    json steps = json::array({get("/healthz"), json{{"await", 1}}, json{{"sleep_ms", 1500}}, get("/api/a"),
                              json{{"await", 2}}, json{{"sleep_ms", 1500}}, get("/healthz"), json{{"await", 3}},
                              get("/admin"), json{{"await", 4}}});
    clients.push_back(std::make_unique<RawClient>(env.topo, kServerV4, steps,
                                                  std::vector<std::string>{"--expect", "4", "--timeout", "40"}));
  }
  std::this_thread::sleep_for(500ms);
  const auto flood = env.topo.exec(
      Role::client,
      {"/usr/bin/python3", cat(source_dir(), "/tests/e2e/synflood.py"), "--iface", "eth0", "--src-mac",
       mac_of(env.topo, Role::client, "eth0"), "--gw-mac", mac_of(env.topo, Role::gw, std::string(kGatewayClientIf)),
       "--dst", std::string(kServerV4), "--count", std::to_string(10 * kMaxFlows)},
      60s);
  INFO(flood.out << flood.err);
  REQUIRE(flood.exit_code == 0);
  CHECK(json::parse(flood.out)["sent"] == 10 * kMaxFlows);
  // new clients during and after the flood connect and are judged
  for (int i = 0; i < 3; ++i) {
    CHECK(curl(env.topo, "http://app.example.com/healthz").http_code == 200);
    CHECK(curl(env.topo, "http://app.example.com/admin").http_code == 403);
  }
  for (auto& c : clients) {
    auto r = c->wait(60s);
    INFO(r.json << r.err);
    CHECK(r.statuses == std::vector<int>{200, 200, 200, 403});
    CHECK_FALSE(r.reset);
  }
  const auto after = ctl_json(env.daemon, "stats");
  INFO(after.dump());
  CHECK(after["counters"]["handshakes"].get<uint64_t>() >=
        before["counters"]["handshakes"].get<uint64_t>() + 10 * kMaxFlows);
  CHECK(after["fail_mode"]["no_flow_state"] == before["fail_mode"]["no_flow_state"]);
  CHECK(after["fail_mode"]["flow_table_full"] == before["fail_mode"]["flow_table_full"]);
  CHECK(after["flows"]["max"] == kMaxFlows);
}

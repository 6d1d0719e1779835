// Hot swap under load: while keep-alive load and long-lived connections run, 100 applies
// alternate between policies that each change a different stage (routes, host patterns,
// default action, head limit) or insert a stage into the chain and remove it again. Every request that both policies allow succeeds — no failed request,
// no reset, the long-lived connections still open — and no packet ever sees a half that was
// refilled under it. Apply latencies are printed (for the record), never asserted.
#include <algorithm>
#include <fstream>
#include <iostream>
#include <regex>
#include <thread>

#include <nlohmann/json.hpp>

#include "common.hpp"

using namespace policyd::e2e;
using json = nlohmann::json;

namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

json parse_reply(const std::string& out) {
  auto j = json::parse(out);
  return j.contains("arguments") ? j["arguments"] : j;
}

}  // namespace

TEST_CASE("100 applies under load drop nothing that both policies allow", "[hotswap]") {
  const std::string base = http_policy();
  Env env(base);
  TempDir dir("hotswap");
  // each variant changes one stage; every one of them allows /healthz and /api/
  const std::vector<std::pair<std::string, std::string>> variants = {
      {"path", edit_policy(base, "      - path: { prefix: \"/admin\" }",
                       "      - path: { prefix: \"/newdeny/\" }\n        action: deny\n      - path: { prefix: \"/admin\" }")},
      {"host", edit_policy(base, "match: \"app.example.com\"", "match: [\"app.example.com\", \"alias.example.com\"]")},
      {"verdict", edit_policy(base, "default_action: deny", "default_action: drop")},
      {"entry", edit_policy(base, "fail_mode: closed", "fail_mode: closed\nlimits:\n  max_head_bytes: 4096")},
      // a stage inserted into the chain (and removed again by the next variant)
      {"chain", edit_policy(base, "chain: [host, path]", "chain: [sni, host, path]")},
  };
  std::vector<std::string> files;
  for (size_t i = 0; i < variants.size(); ++i) {
    files.push_back(dir.file(cat("v", i, ".yaml")));
    std::ofstream(files.back()) << variants[i].second;
  }
  files.push_back(dir.file("base.yaml"));
  std::ofstream(files.back()) << base;

  // long-lived connections: a request every 20 ms for ~12 s
  const int per_conn = 400;
  std::vector<std::unique_ptr<RawClient>> conns;
  for (int c = 0; c < 3; ++c) {
    json steps = json::array();
    for (int i = 0; i < per_conn; ++i) {
      steps.push_back(http_request("GET", cat("/api/c", c, "/", i), "app.example.com"));
      steps.push_back(json{{"await", i + 1}});
      steps.push_back(json{{"sleep_ms", 20}});
    }
    conns.push_back(std::make_unique<RawClient>(env.topo, kServerV4, steps,
                                                std::vector<std::string>{"--expect", std::to_string(per_conn),
                                                                         "--timeout", "60"}));
  }
  // keep-alive load
  Process wrk(env.topo.in(Role::client, {"wrk", "-t1", "-c8", "-d14s", "-H", "Host: app.example.com",
                                         cat("http://", kServerV4, "/healthz")}),
              dir.file("wrk.out"));
  std::this_thread::sleep_for(500ms);

  std::vector<int64_t> latency_us;
  std::map<std::string, int> changed_stages;
  for (int i = 0; i < 100; ++i) {
    const auto& file = files[static_cast<size_t>(i) % files.size()];
    auto r = run({POLICYCTL_BIN, "--socket", env.daemon.socket_path(), "-o", "json", "apply", file}, 30s);
    INFO("apply " << i << ": " << r.out << r.err);
    REQUIRE(r.exit_code == 0);
    auto a = parse_reply(r.out);
    latency_us.push_back(a["duration_us"].get<int64_t>());
    for (const auto& c : a["changed"]) changed_stages[c["stage"].get<std::string>()]++;
  }
  // the last apply was the base policy: what it denies is denied from the next head on
  CHECK(curl(env.topo, "http://app.example.com/admin").http_code == 403);
  CHECK(curl(env.topo, "http://app.example.com/healthz").http_code == 200);

  auto wrk_exit = wrk.wait(30s);
  REQUIRE(wrk_exit.has_value());
  std::string wrk_out = slurp(dir.file("wrk.out"));
  INFO(wrk_out);
  CHECK(*wrk_exit == 0);
  CHECK(wrk_out.find("Non-2xx") == std::string::npos);
  CHECK(wrk_out.find("Socket errors") == std::string::npos);
  std::smatch m;
  REQUIRE(std::regex_search(wrk_out, m, std::regex(R"((\d+) requests in)")));
  const long wrk_requests = std::stol(m[1]);
  CHECK(wrk_requests > 0);

  size_t long_lived = 0;
  for (auto& c : conns) {
    auto r = c->wait(60s);
    INFO(r.json << r.err);
    CHECK(r.statuses.size() == static_cast<size_t>(per_conn));
    CHECK(std::all_of(r.statuses.begin(), r.statuses.end(), [](int s) { return s == 200; }));
    CHECK_FALSE(r.reset);
    long_lived += r.statuses.size();
  }
  // every stage the variants change was really swapped, and never under a packet
  for (const char* stage : {"path", "host", "verdict", "entry", "chain"}) CHECK(changed_stages[stage] > 0);
  auto stats = run({POLICYCTL_BIN, "--socket", env.daemon.socket_path(), "-o", "json", "stats"}, 10s);
  REQUIRE(stats.exit_code == 0);
  CHECK(parse_reply(stats.out)["counters"]["generation_mismatch"] == 0);

  std::sort(latency_us.begin(), latency_us.end());
  std::cout << "hot swap: 100 applies, apply latency median " << latency_us[latency_us.size() / 2] << " us, worst "
            << latency_us.back() << " us; wrk " << wrk_requests << " requests, long-lived " << long_lived
            << " requests, 0 failed\n";
}

// The rate-limit stage end to end: curl from the client namespace through the gateway to
// nginx. A burst admits exactly `burst` requests; the rest get the gateway's 429 with a
// Retry-After that tells the truth; over a measured interval the admitted count stays within
// rate x time + burst (+ one token of slack); separate client addresses get separate buckets,
// `global` is one bucket for all; two clients on different CPUs share one global bucket
// exactly. (Nothing here asserts how fast anything is: only counts.)
#include <algorithm>
#include <chrono>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "common.hpp"

using namespace policyd::e2e;

namespace {

std::string rl_policy(std::string_view per_client_rate, std::string_view per_client_burst,
                      std::string_view global_burst = "10") {
  return cat(R"(version: 1
interfaces: ["gw-c"]
listeners:
  - name: web
    port: 80
    protocol: http
chain: [host, path, ratelimit]
default_action: deny
ratelimits:
  per_client:
    key: client_ip
    rate: )",
             per_client_rate, R"(
    burst: )",
             per_client_burst, R"(
  everyone:
    key: global
    rate: 1/h
    burst: )",
             global_burst, R"(
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

// `n` requests to http://app.example.com/PREFIX<i> from one curl process (keep-alive while
// the server keeps it), optionally from `src` and pinned to `cpu`; the status codes.
std::vector<int> burst(const Topology& topo, const std::string& prefix, int n, const std::string& src = "",
                       int cpu = -1, const std::string& pace = "") {
  std::vector<std::string> argv;
  if (cpu >= 0) argv = {"taskset", "-c", std::to_string(cpu)};
  for (const char* a : {"curl", "-s", "--max-time", "20", "-o", "/dev/null", "-w", "%{http_code}\\n", "--connect-to"})
    argv.emplace_back(a);
  argv.push_back(cat("::", kServerV4, ":"));
  if (!src.empty()) argv.insert(argv.end(), {"--interface", src});
  if (!pace.empty()) argv.insert(argv.end(), {"--rate", pace});  // at most this many requests started per second
  argv.push_back(cat("http://app.example.com", prefix, "[1-", n, "]"));
  auto r = topo.exec(Role::client, argv, 60s);
  std::vector<int> codes;
  std::istringstream in(r.out);
  for (int c; in >> c;) codes.push_back(c);
  return codes;
}

int count(const std::vector<int>& v, int code) { return static_cast<int>(std::count(v.begin(), v.end(), code)); }

void add_client_address(const Topology& topo, const std::string& cidr) {
  auto r = topo.exec(Role::client, {"ip", "addr", "add", cidr, "dev", "eth0"});
  REQUIRE(r.exit_code == 0);
}

}  // namespace

TEST_CASE("a burst admits exactly burst requests; the rest get 429 with a Retry-After", "[ratelimit]") {
  Env env(rl_policy("1/m", "5"));
  auto codes = burst(env.topo, "/limited/a", 8);
  INFO([&] {
    std::string s;
    for (int c : codes) s += std::to_string(c) + " ";
    return s;
  }());
  REQUIRE(codes.size() == 8);
  CHECK(count(codes, 200) == 5);
  CHECK(count(codes, 429) == 3);
  CHECK(std::equal(codes.begin(), codes.begin() + 5, std::vector<int>(5, 200).begin()));

  auto r = curl(env.topo, "http://app.example.com/limited/b");
  INFO(r.headers);
  CHECK(r.http_code == 429);
  CHECK(r.header("Server").value_or("") == "policyd");
  const int retry = std::stoi(r.header("Retry-After").value_or("0"));
  CHECK(retry >= 55);  // 1/m: the next token is a minute after the bucket was made
  CHECK(retry <= 60);
  env.nginx.sync();
  CHECK(env.nginx.lines_with("/limited/").size() == 5);  // refused requests never reached nginx
  // counted per limit: 5 admitted; 3 + the one above over
  auto stats = run({POLICYCTL_BIN, "--socket", env.daemon.socket_path(), "-o", "json", "stats"}, 10s);
  REQUIRE(stats.exit_code == 0);
  auto j = nlohmann::json::parse(stats.out);
  auto per_client = (j.contains("arguments") ? j["arguments"] : j)["ratelimit"]["limits"]["per_client"];
  INFO(per_client.dump());
  CHECK(per_client["allowed"] == 5);
  CHECK(per_client["limited"] == 4);

  SECTION("another client address has its own bucket") {
    add_client_address(env.topo, "198.51.100.3/24");
    CHECK(count(burst(env.topo, "/limited/c", 7, "198.51.100.3"), 200) == 5);
  }
}

TEST_CASE("Retry-After tells the truth: after it, a token is there", "[ratelimit]") {
  Env env(rl_policy("1/s", "1"));
  CHECK(count(burst(env.topo, "/limited/a", 1), 200) == 1);
  auto r = curl(env.topo, "http://app.example.com/limited/b");
  REQUIRE(r.http_code == 429);
  const int retry = std::stoi(r.header("Retry-After").value_or("0"));
  CHECK(retry == 1);
  std::this_thread::sleep_for(std::chrono::seconds(retry));
  CHECK(curl(env.topo, "http://app.example.com/limited/c").http_code == 200);
}

TEST_CASE("over a measured interval, admitted <= rate x time + burst (+1)", "[ratelimit]") {
  Env env(rl_policy("20/s", "5"));
  const auto start = std::chrono::steady_clock::now();
  auto codes = burst(env.topo, "/limited/x", 300, "", -1, "150/s");  // ~2 s, faster than the limit
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const int admitted = count(codes, 200);
  INFO(admitted << " admitted of " << codes.size() << " in " << secs << " s");
  REQUIRE(codes.size() == 300);
  CHECK(count(codes, 200) + count(codes, 429) == 300);
  CHECK(admitted <= static_cast<int>(20 * secs) + 5 + 1);
  CHECK(admitted >= 5 + 1);  // the burst, and more as tokens accrue
  std::cout << "rate limit 20/s burst 5: " << admitted << " of 300 admitted in " << secs << " s\n";
}

TEST_CASE("global is one bucket for every client, exact across CPUs", "[ratelimit]") {
  Env env(rl_policy("1/m", "5", "10"));
  add_client_address(env.topo, "198.51.100.4/24");
  // two clients, on two CPUs, at the same time, 20 requests each
  std::vector<int> a, b;
  std::thread ta([&] { a = burst(env.topo, "/global/a", 20, "", 0); });
  std::thread tb([&] { b = burst(env.topo, "/global/b", 20, "198.51.100.4", 1); });
  ta.join();
  tb.join();
  INFO("client 1: " << count(a, 200) << " admitted, client 2: " << count(b, 200));
  REQUIRE(a.size() == 20);
  REQUIRE(b.size() == 20);
  CHECK(count(a, 200) + count(b, 200) == 10);  // one bucket's worth, not two
}

// Changing the policy while traffic flows: the next request head is judged by the new
// generation; anything refused (invalid file, preflight disagreement, verifier rejection)
// leaves the running chain enforcing, unchanged.
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "common.hpp"

using namespace policyd::e2e;
using json = nlohmann::json;

namespace {

// the default policy, but /healthz is denied
std::string healthz_denied() {
  return edit_policy(http_policy(), "      - path: { exact: \"/healthz\" }\n        action: allow",
                 "      - path: { exact: \"/healthz\" }\n        action: deny");
}

int code(const Topology& topo, const char* path) { return curl(topo, cat("http://app.example.com", path)).http_code; }

}  // namespace

TEST_CASE("a reload is judged from the next request head on, on connections already open", "[apply]") {
  Env env(http_policy());
  TempDir dir("reload-open");
  const std::string go = dir.file("go");  // the client sends its second request once this exists
  auto get = [](const char* path) { return http_request("GET", path, "app.example.com"); };
  json steps = json::array({get("/healthz"), json{{"await", 1}}, json{{"wait_file", go}, {"max_ms", 20000}},
                            get("/healthz"), json{{"await", 2}}});
  RawClient conn(env.topo, kServerV4, steps, {"--expect", "2", "--timeout", "40"});
  // the first request answered (nginx logged it), then the reload, then the second request
  bool first = false;
  for (int i = 0; i < 200 && !first; ++i) {  // up to 20 s
    first = !env.nginx.served_with("/healthz").empty();
    if (!first) std::this_thread::sleep_for(100ms);
  }
  REQUIRE(first);
  auto out = env.daemon.reload(healthz_denied());
  INFO(out);
  CHECK(out.find("ready: generation 2") != std::string::npos);
  std::ofstream(go) << "go\n";
  auto r = conn.wait(40s);
  INFO(r.json << r.err);
  CHECK(r.statuses == std::vector<int>{200, 403});
  CHECK(code(env.topo, "/healthz") == 403);
}

TEST_CASE("a refused change leaves the running generation enforcing", "[apply]") {
  Env env(http_policy());
  REQUIRE(code(env.topo, "/healthz") == 200);
  REQUIRE(code(env.topo, "/admin") == 403);

  SECTION("an invalid policy file") {
    auto out = env.daemon.reload(edit_policy(http_policy(), "action: deny", "action: permit"));
    INFO(out);
    CHECK(out.find("reload refused, generation 1 stays") != std::string::npos);
    CHECK(out.find("policy.yaml:") != std::string::npos);  // file:line:col
    CHECK(out.find("permit") != std::string::npos);
  }
  SECTION("a prepared generation that preflight finds disagreeing with the policy") {
    env.daemon.restart_with_faults({"--corrupt-generation", "2"});
    auto out = env.daemon.reload(healthz_denied());
    INFO(out);
    CHECK(out.find("preflight:") != std::string::npos);
    CHECK(out.find("policy says") != std::string::npos);
    CHECK(out.find("reload refused, generation 1 stays") != std::string::npos);
  }
  SECTION("a verifier rejection when a new daemon starts") {
    env.daemon.stop();
    env.daemon.restart_with_faults({"--verifier-reject"}, 45s, Daemon::Expect::exit);
    CHECK(env.daemon.exit_code() == 2);
    auto log = env.daemon.log();
    INFO(log);
    CHECK(log.find("the kernel refused the test stage") != std::string::npos);
    CHECK(log.find("invalid bpf_context access") != std::string::npos);  // the verifier's own words
  }
  // whatever was refused, the first policy still enforces
  CHECK(code(env.topo, "/healthz") == 200);
  CHECK(code(env.topo, "/admin") == 403);
}

// The Prometheus endpoint end to end: known traffic through the gateway, then a scrape with
// curl inside the gateway namespace (the daemon listens on its default 127.0.0.1:9464 there),
// read by prometheus_client's parser (tests/daemon/prom_parse.py), and every count required
// to equal what was sent: requests, verdicts, rule hits, rate-limit results, fail-mode
// reasons, flows. Then applies (ok, invalid, refused; the duration histogram), the
// interface's attachment gauge, 404/405, and `policyctl stats` agreeing with the scrape.
#include <chrono>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "common.hpp"

using namespace policyd::e2e;
using json = nlohmann::json;

namespace {

constexpr int kAllowed = 4;  // GET /allowed/N: allow
constexpr int kDenied = 3;   // GET /denied/N: deny (403)
constexpr int kLimited = 5;  // GET /limited/N: burst 3, so 3 allowed and 2 rejected (429)
constexpr int kBurst = 3;
constexpr int kTwoHosts = 2;  // two Host headers: fail mode multiple_host (closed: 403)

std::string metrics_policy(std::string_view denied_action = "deny") {
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
    rate: 1/h
    burst: )",
             kBurst, R"(
hosts:
  - match: "app.example.com"
    routes:
      - path: { prefix: "/allowed/" }
        action: allow
      - path: { prefix: "/denied/" }
        action: )",
             denied_action, R"(
      - path: { prefix: "/limited/" }
        ratelimit: per_client
        action: allow
)");
}

using Labels = std::map<std::string, std::string>;

// One scrape: the HTTP status, the headers, the text, and what prometheus_client read in it.
struct Scrape {
  int status = 0;
  std::string headers;
  std::string text;
  json parsed;
  // The value of sample `name` with exactly `labels`; fails the test if there is none.
  double value(const std::string& name, const Labels& labels = {}) const {
    for (const auto& f : parsed["families"])
      for (const auto& s : f["samples"])
        if (s["name"] == name && s["labels"].get<Labels>() == labels) return s["value"].get<double>();
    FAIL("no sample " << name << " " << json(labels).dump() << " in:\n" << text);
    return -1;
  }
  // Every sample of `name`, by its labels.
  std::map<Labels, double> all(const std::string& name) const {
    std::map<Labels, double> out;
    for (const auto& f : parsed["families"])
      for (const auto& s : f["samples"])
        if (s["name"] == name) out[s["labels"].get<Labels>()] = s["value"].get<double>();
    return out;
  }
  std::string type_of(const std::string& family) const {
    for (const auto& f : parsed["families"])
      if (f["name"] == family) return f["type"];
    return "";
  }
};

// curl in the gateway namespace; a 200's body goes through prom_parse.py (which fails the test
// on anything a Prometheus parser would not take), unless curl was given extra options.
Scrape scrape(const Topology& topo, const std::string& path = "/metrics", const std::vector<std::string>& extra = {}) {
  TempDir dir("metrics");
  std::vector<std::string> argv{"curl", "-sS", "--max-time", "5", "-o", dir.file("body"), "-D", dir.file("headers"),
                                "-w", "%{http_code}"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  argv.push_back(cat("http://127.0.0.1:9464", path));
  auto r = topo.exec(Role::gw, argv);
  INFO("curl: " << r.exit_code << " " << r.err);
  REQUIRE(r.exit_code == 0);
  Scrape s;
  s.status = std::stoi(r.out);
  std::ifstream h(dir.file("headers")), b(dir.file("body"));
  s.headers.assign(std::istreambuf_iterator<char>(h), {});
  s.text.assign(std::istreambuf_iterator<char>(b), {});
  if (s.status != 200 || !extra.empty()) return s;
  auto p = run({"/usr/bin/python3", source_dir() + "/tests/daemon/prom_parse.py", dir.file("body")}, 30s);
  INFO("prom_parse.py: " << p.err << "\n" << s.text);
  REQUIRE(p.exit_code == 0);
  s.parsed = json::parse(p.out);
  return s;
}

int get(const Topology& topo, const std::string& path) {
  return curl(topo, cat("http://app.example.com", path)).http_code;
}

Labels rule(const std::string& path, const std::string& action, int index) {
  return {{"rule", std::to_string(index)}, {"host", "app.example.com"}, {"path", path}, {"action", action}};
}

// A Python script run in the gateway namespace in the background; constructed once it printed
// "ready" (bounded), stopped with the object.
class GatewayScript {
 public:
  GatewayScript(const Topology& topo, const std::string& code)
      : dir_("metrics-py"), proc_(topo.in(Role::gw, {"/usr/bin/python3", "-c", code}), dir_.file("out.log")) {
    for (int i = 0; i < 250 && !ready(); ++i) std::this_thread::sleep_for(20ms);
    if (!ready()) throw std::runtime_error(cat("the gateway script did not get ready:\n", output(), "\n", code));
  }
  void stop() { proc_.stop(); }

 private:
  std::string output() const {
    std::ifstream in(dir_.file("out.log"));
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  bool ready() const { return output().find("ready") != std::string::npos; }
  TempDir dir_;
  Process proc_;
};

int ifindex_of(const Topology& topo, std::string_view ifname) {
  auto r = topo.exec(Role::gw, {"ip", "-j", "link", "show", std::string(ifname)});
  REQUIRE(r.exit_code == 0);
  return json::parse(r.out)[0]["ifindex"].get<int>();
}

}  // namespace

TEST_CASE("metrics: the counters equal what was sent", "[metrics]") {
  Env env(metrics_policy());
  for (int i = 0; i < kAllowed; ++i) REQUIRE(get(env.topo, cat("/allowed/", i)) == 200);
  for (int i = 0; i < kDenied; ++i) REQUIRE(get(env.topo, cat("/denied/", i)) == 403);
  int limited_ok = 0, limited_429 = 0;
  for (int i = 0; i < kLimited; ++i) {
    int code = get(env.topo, cat("/limited/", i));
    limited_ok += code == 200;
    limited_429 += code == 429;
  }
  REQUIRE(limited_ok == kBurst);
  REQUIRE(limited_429 == kLimited - kBurst);
  for (int i = 0; i < kTwoHosts; ++i) {
    auto r = raw_client(env.topo, kServerV4,
                        json::array({http_request("GET", "/allowed/x", "app.example.com", "",
                                                  "Host: other.example.com\r\n")}),
                        {"--expect", "1"});
    REQUIRE(r.statuses == std::vector<int>{403});
  }
  const int connections = kAllowed + kDenied + kLimited + kTwoHosts;

  // policyd_flows is counted every 2 s off the io loop: the scrape after a count that saw them all
  auto s = scrape(env.topo);
  for (int i = 0; i < 50 && s.text.find(cat("\npolicyd_flows ", connections, "\n")) == std::string::npos; ++i) {
    std::this_thread::sleep_for(100ms);
    s = scrape(env.topo);
  }
  INFO(s.text);
  REQUIRE(s.status == 200);
  CHECK(s.headers.find("Content-Type: text/plain; version=0.0.4; charset=utf-8") != std::string::npos);

  // requests and verdicts
  CHECK(s.value("policyd_requests_total") == kAllowed + kDenied + kLimited);  // fail-mode heads are not requests
  CHECK(s.value("policyd_verdicts_total", {{"action", "allow"}}) == kAllowed + kBurst);
  CHECK(s.value("policyd_verdicts_total", {{"action", "deny"}}) == kDenied + kTwoHosts);
  CHECK(s.value("policyd_verdicts_total", {{"action", "reject"}}) == kLimited - kBurst);
  for (const char* none : {"drop", "reset", "unauthorized", "hold"})
    CHECK(s.value("policyd_verdicts_total", {{"action", none}}) == 0);
  // per rule (in policy order), per limit
  CHECK(s.value("policyd_rule_hits_total", rule("prefix /allowed/", "allow", 0)) == kAllowed);
  CHECK(s.value("policyd_rule_hits_total", rule("prefix /denied/", "deny", 1)) == kDenied);
  CHECK(s.value("policyd_rule_hits_total", rule("prefix /limited/", "allow", 2)) == kLimited);
  CHECK(s.all("policyd_rule_hits_total").size() == 3);
  CHECK(s.value("policyd_ratelimit_limit_requests_total", {{"limit", "per_client"}, {"result", "allowed"}}) == kBurst);
  CHECK(s.value("policyd_ratelimit_limit_requests_total", {{"limit", "per_client"}, {"result", "limited"}}) ==
        kLimited - kBurst);
  CHECK(s.value("policyd_ratelimit_requests_total", {{"result", "allowed"}}) == kBurst);
  CHECK(s.value("policyd_ratelimit_requests_total", {{"result", "limited"}}) == kLimited - kBurst);
  // fail mode: exactly the two requests with two Host headers
  CHECK(s.value("policyd_fail_mode_total", {{"reason", "multiple_host"}}) == kTwoHosts);
  double fail_total = 0;
  for (const auto& [labels, v] : s.all("policyd_fail_mode_total")) fail_total += v;
  CHECK(fail_total == kTwoHosts);
  CHECK(s.value("policyd_fail_open_total") == 0);
  // flows: one per connection (each curl is one), as the kernel's own dump of the table says
  CHECK(s.value("policyd_flows_created_total") == connections);
  CHECK(s.value("policyd_flows") == connections);
  auto dump = run({"bpftool", "-j", "map", "dump", "pinned", cat(env.daemon.pin_dir(), "/pd_flows")}, 10s);
  REQUIRE(dump.exit_code == 0);
  CHECK(json::parse(dump.out).size() == static_cast<size_t>(connections));
  CHECK(s.value("policyd_flows_max") == 262144);
  CHECK(s.value("policyd_packets_total") >= 3 * connections);  // at least SYN, ACK, the request
  CHECK(s.value("policyd_generation_mismatch_total") == 0);
  for (const char* stage : {"http", "host", "path", "ratelimit", "verdict"})
    CHECK(s.all("policyd_stage_runs_total").count({{"stage", stage}}) == 1);
  CHECK(s.value("policyd_stage_runs_total", {{"stage", "verdict"}}) >= connections);
  // decision events: one per refused request (403, 429, and the fail mode's 403s), none over
  // the default rate
  CHECK(s.value("policyd_events_total", {{"result", "sent"}}) == kDenied + (kLimited - kBurst) + kTwoHosts);
  CHECK(s.value("policyd_events_total", {{"result", "suppressed"}}) == 0);
  CHECK(s.value("policyd_events_total", {{"result", "lost"}}) == 0);
  CHECK(s.value("policyd_events_received_total") <= kDenied + (kLimited - kBurst) + kTwoHosts);
  // the control plane
  CHECK(s.value("policyd_generation") == 1);
  CHECK(s.value("policyd_interface_attached",
                {{"interface", std::string(kGatewayClientIf)},
                 {"ifindex", std::to_string(ifindex_of(env.topo, kGatewayClientIf))}}) == 1);
  CHECK(s.all("policyd_interface_attached").size() == 1);
  CHECK(s.all("policyd_build_info").size() == 1);
  CHECK(s.type_of("policyd_requests") == "counter");
  CHECK(s.type_of("policyd_flows") == "gauge");
  CHECK(s.type_of("policyd_apply_duration_seconds") == "histogram");

  SECTION("policyctl stats reads the same numbers") {
    auto r = ctl(env.daemon, {"-o", "json", "stats"});
    REQUIRE(r.exit_code == 0);
    auto j = json::parse(r.out);
    auto a = j.contains("arguments") ? j["arguments"] : j;
    INFO(a.dump());
    CHECK(a["counters"]["requests"] == kAllowed + kDenied + kLimited);
    CHECK(a["verdicts"]["reject"] == kLimited - kBurst);
    CHECK(a["flows"]["entries"] == connections);
    CHECK(a["flows"]["max"] == 262144);
    CHECK(a["applies"]["ok"] == 1);
  }
}

TEST_CASE("metrics: applies by result, the duration histogram, generation", "[metrics]") {
  Env env(metrics_policy());
  TempDir dir("metrics-apply");
  {
    auto s = scrape(env.topo);
    REQUIRE(s.status == 200);
    CHECK(s.value("policyd_applies_total", {{"result", "ok"}}) == 1);  // the one at start
    CHECK(s.value("policyd_applies_total", {{"result", "invalid"}}) == 0);
    CHECK(s.value("policyd_applies_total", {{"result", "refused"}}) == 0);
    CHECK(s.value("policyd_apply_duration_seconds_count") == 1);
  }
  REQUIRE(get(env.topo, "/denied/a") == 403);

  SECTION("ok, and invalid in the daemon's eyes; every one observed by the histogram") {
    std::ofstream(dir.file("allow.yaml")) << metrics_policy("allow");
    auto ok = ctl(env.daemon, {"apply", dir.file("allow.yaml")});
    INFO(ok.out << ok.err);
    REQUIRE(ok.exit_code == 0);
    REQUIRE(get(env.topo, "/denied/b") == 200);
    // a provider whose key set is not there: the file validates (policyctl checks it
    // first), but the daemon cannot read the keys, so the policy is invalid there
    std::ofstream(dir.file("nokey.yaml")) << edit_policy(
        edit_policy(metrics_policy("allow"), "chain: [host, path, ratelimit]", "chain: [host, path, jwt, ratelimit]"),
        "hosts:", cat("jwt_providers:\n  main:\n    issuer: \"https://auth.example.com\"\n    audiences: [api]\n"
                      "    algorithms: [RS256]\n    jwks_file: \"",
                      dir.file("missing.jwks"), "\"\n"
                      "hosts:"));
    auto bad = ctl(env.daemon, {"apply", dir.file("nokey.yaml")});
    INFO(bad.out << bad.err);
    CHECK(bad.exit_code != 0);
    auto dry = ctl(env.daemon, {"apply", "--dry-run", dir.file("allow.yaml")});  // a dry run is not an apply
    REQUIRE(dry.exit_code == 0);
    auto s = scrape(env.topo);
    REQUIRE(s.status == 200);
    CHECK(s.value("policyd_applies_total", {{"result", "ok"}}) == 2);
    CHECK(s.value("policyd_applies_total", {{"result", "invalid"}}) == 1);
    CHECK(s.value("policyd_applies_total", {{"result", "refused"}}) == 0);
    CHECK(s.value("policyd_apply_duration_seconds_count") == 3);
    CHECK(s.value("policyd_apply_duration_seconds_bucket", {{"le", "+Inf"}}) == 3);
    CHECK(s.value("policyd_apply_duration_seconds_sum") > 0);
    CHECK(s.value("policyd_generation") == 2);
    // rule hits are the active generation's: the new one has seen one request
    CHECK(s.value("policyd_rule_hits_total", rule("prefix /denied/", "allow", 1)) == 1);
  }

  SECTION("refused: preflight disagrees with the prepared generation") {
    env.daemon.restart_with_faults({"--corrupt-generation", "2"});
    std::ofstream(dir.file("allow.yaml")) << metrics_policy("allow");
    auto r = ctl(env.daemon, {"apply", dir.file("allow.yaml")});
    INFO(r.out << r.err);
    CHECK(r.exit_code == 2);
    auto s = scrape(env.topo);
    REQUIRE(s.status == 200);
    // a new process: its start (policy unchanged, generation 1 adopted) and the refused one
    CHECK(s.value("policyd_applies_total", {{"result", "ok"}}) == 1);
    CHECK(s.value("policyd_applies_total", {{"result", "refused"}}) == 1);
    CHECK(s.value("policyd_apply_duration_seconds_count") == 2);
    CHECK(s.value("policyd_generation") == 1);
    // the dataplane's counters live in the pinned maps: the request before the restart is there
    CHECK(s.value("policyd_verdicts_total", {{"action", "deny"}}) == 1);
  }
}

TEST_CASE("metrics: only GET and HEAD /metrics", "[metrics]") {
  Env env(metrics_policy());
  CHECK(scrape(env.topo, "/").status == 404);
  CHECK(scrape(env.topo, "/metricsx").status == 404);
  CHECK(scrape(env.topo, "/metrics", {"-X", "POST", "-d", ""}).status == 405);
  auto head = scrape(env.topo, "/metrics", {"-I"});  // HEAD
  CHECK(head.status == 200);
  CHECK(head.headers.find("Content-Length: ") != std::string::npos);
  CHECK(head.text.find("# HELP") == std::string::npos);  // -I writes the headers where a body would go
  CHECK(scrape(env.topo, "/metrics?name[]=x", {"-g"}).status == 200);
}

TEST_CASE("metrics: a taken address is logged, enforcing goes on, and it is bound once free", "[metrics]") {
  Topology topo;
  Backend nginx{topo};
  // something else holds 127.0.0.1:9464 in the gateway namespace
  GatewayScript holder(topo,
                       "import socket,time\n"
                       "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                       "s.bind(('127.0.0.1', 9464)); s.listen(); print('ready', flush=True)\n"
                       "time.sleep(60)");
  Daemon d(topo, metrics_policy());
  INFO(d.log());
  CHECK(d.log().find("metrics: cannot listen on 127.0.0.1:9464: Address already in use") != std::string::npos);
  CHECK(get(topo, "/denied/x") == 403);  // enforcing regardless
  holder.stop();
  // tried again every 10 s: served within one period of the address coming free
  int status = 0;
  for (int i = 0; i < 60 && status != 200; ++i) {
    auto r = topo.exec(Role::gw, {"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2",
                                  "http://127.0.0.1:9464/metrics"});
    status = r.out.empty() ? 0 : std::stoi(r.out);
    if (status != 200) std::this_thread::sleep_for(250ms);
  }
  CHECK(status == 200);
}

TEST_CASE("metrics: SIGTERM with scrape connections open stops the daemon at once", "[metrics]") {
  Env env(metrics_policy());
  // one connection idle, one in the middle of a request head
  GatewayScript idle(env.topo,
                     "import socket,time\n"
                     "a=socket.create_connection(('127.0.0.1', 9464))\n"
                     "b=socket.create_connection(('127.0.0.1', 9464)); b.sendall(b'GET /met')\n"
                     "print('ready', flush=True); time.sleep(30)");
  const auto t0 = std::chrono::steady_clock::now();
  CHECK(env.daemon.stop() == 0);
  CHECK(std::chrono::steady_clock::now() - t0 < 2s);
  idle.stop();
}

TEST_CASE("metrics: a malformed --metrics stops the daemon at start, naming it", "[metrics]") {
  // checked before anything is loaded, so no config, pin dir or namespace is needed
  auto r = run({policyd_bin(), "--metrics", "localhost:9464", "--config", "/nonexistent/policy.yaml"}, 10s);
  INFO(r.out << r.err);
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("--metrics 'localhost:9464': 'localhost' is not an IP address") != std::string::npos);
}

TEST_CASE("metrics: --bpf-stats has the kernel time the chain; without it there are no such series",
          "[metrics]") {
  Topology topo;
  Backend nginx(topo);
  {
    Daemon plain(topo, metrics_policy());
    REQUIRE(get(topo, "/allowed/1") == 200);
    const auto s = scrape(topo);
    CHECK(s.all("policyd_chain_runs_total").empty());
    CHECK(s.all("policyd_chain_run_seconds_total").empty());
  }
  Daemon daemon(topo, metrics_policy(), Daemon::Expect::ready, 45s, {"--bpf-stats"});
  CHECK(daemon.log().find("BPF run-time statistics on") != std::string::npos);
  constexpr int kRequests = 5;
  for (int i = 0; i < kRequests; ++i) REQUIRE(get(topo, cat("/allowed/", i)) == 200);
  const auto s = scrape(topo);
  INFO(s.text);
  // the chain runs on every packet at ingress (SYNs, ACKs, the requests, and the preflight
  // probes of the apply): at least one per request
  CHECK(s.value("policyd_chain_runs_total") >= s.value("policyd_requests_total"));
  CHECK(s.value("policyd_requests_total") == kRequests);
  CHECK(s.value("policyd_chain_run_seconds_total") > 0);
  auto st = ctl(daemon, {"-o", "json", "stats"});
  REQUIRE(st.exit_code == 0);
  auto j = json::parse(st.out);
  const auto& a = j.contains("arguments") ? j["arguments"] : j;
  INFO(a.dump());
  REQUIRE(a.contains("chain_time"));
  CHECK(a["chain_time"]["ns_per_run"].get<uint64_t>() > 0);
}

// Decision events end to end: curl through the gateway, then `policyctl events` against the
// daemon. A denied request shows up with its rule, host, path and client; an allowed one does
// not; `events --follow` streams the event of a request made after it started; a 401, a 429
// and a fail-mode decision carry their status and reason; the daemon logs each event at the
// level asked for; and a flood of refusals is held to the event budget — every refusal is
// either sent or counted as suppressed, the daemon reads every one sent, and it stays
// responsive.
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <functional>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "common.hpp"

using namespace policyd::e2e;
using json = nlohmann::json;

namespace {

// JSON Lines: one object per non-empty line.
std::vector<json> json_lines(const std::string& text) {
  std::vector<json> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

std::vector<json> recent_events(const Daemon& d) {
  auto r = ctl(d, {"-o", "json", "events"});
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  return json_lines(r.out);
}

// The events `match` picks, waiting (bounded) until there are at least `want`.
std::vector<json> events_where(const Daemon& d, const std::function<bool(const json&)>& match, size_t want = 1) {
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  for (;;) {
    std::vector<json> found;
    for (auto& e : recent_events(d))
      if (match(e)) found.push_back(e);
    if (found.size() >= want || std::chrono::steady_clock::now() >= deadline) return found;
    std::this_thread::sleep_for(50ms);
  }
}

// The events of requests for `path` (normalized, without the query).
std::vector<json> events_for(const Daemon& d, const std::string& path, size_t want = 1) {
  return events_where(d, [&](const json& e) { return e["path"] == path; }, want);
}

json stats(const Daemon& d) { return ctl_json(d, "stats"); }

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

template <typename Pred>
bool eventually(Pred pred, Millis timeout = 5s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(50ms);
  }
  return true;
}

}  // namespace

TEST_CASE("a denied request shows up in policyctl events with its rule", "[events]") {
  Env env(http_policy());
  check_gateway_403(curl(env.topo, "http://app.example.com/admin/secret?token=1"));
  auto found = events_for(env.daemon, "/admin/secret");
  REQUIRE(found.size() == 1);
  const json& e = found[0];
  INFO(e.dump());
  CHECK(e["action"] == "deny");
  CHECK(e["status"] == 403);
  CHECK(e["reason"].is_null());
  CHECK(e["rule"] == 0);  // app.example.com's first route
  CHECK(e["rule_host"] == "app.example.com");
  CHECK(e["rule_path"] == "prefix /admin");
  CHECK(e["rule_action"] == "deny");
  CHECK(e["host"] == "app.example.com");
  CHECK(e["method"] == "GET");
  CHECK(e["listener"] == "web");
  CHECK(e["protocol"] == "http");
  CHECK(e["stage"] == "path");
  CHECK(e["generation"] == 1);
  CHECK(e["client"].get<std::string>().rfind(cat(kClientV4, ":"), 0) == 0);
  CHECK(e["server"] == cat(kServerV4, ":80"));
  const double now = static_cast<double>(std::time(nullptr));
  CHECK(e["time"].get<double>() > now - 30);
  CHECK(e["time"].get<double>() < now + 2);

  SECTION("an allowed request makes no event; a request no route takes does") {
    check_from_nginx(curl(env.topo, "http://app.example.com/healthz"), "GET", "app.example.com", "/healthz");
    check_gateway_403(curl(env.topo, "http://nobody.example.net/x"));
    auto after = events_for(env.daemon, "/x");
    REQUIRE(after.size() == 1);
    CHECK(after[0]["rule"].is_null());
    CHECK(after[0]["stage"] == "verdict");  // default_action
    CHECK(after[0]["host"] == "nobody.example.net");
    auto all = recent_events(env.daemon);
    CHECK(all.size() == 2);  // /admin/secret and /x: nothing for /healthz
    auto s = stats(env.daemon)["events"];
    INFO(s.dump());
    CHECK(s["sent"] == 2);
    CHECK(s["received"] == 2);
    CHECK(s["suppressed"] == 0);
    CHECK(s["lost"] == 0);
  }
  SECTION("as text: one line per event") {
    auto r = ctl(env.daemon, {"events"});
    INFO(r.out << r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(r.out.find("UTC action=deny status=403 method=GET host=app.example.com path=/admin/secret client=") !=
          std::string::npos);
    CHECK(r.out.find("rule=0 rule_host=app.example.com rule_path=\"prefix /admin\"") != std::string::npos);
    CHECK(std::count(r.out.begin(), r.out.end(), '\n') == 1);
  }
  SECTION("the daemon logged it (logger events, at info by default)") {
    auto log = env.daemon.log();
    INFO(log);
    CHECK(log.find("info [events] deny 403 GET app.example.com/admin/secret client 198.51.100.2:") !=
          std::string::npos);
  }
}

TEST_CASE("policyctl events --follow streams the events of requests made after it started", "[events]") {
  Env env(http_policy());
  TempDir dir("events-follow");
  const std::string out = dir.file("follow.out");
  Process follower({POLICYCTL_BIN, "--socket", env.daemon.socket_path(), "-o", "json", "events", "--follow"}, out,
                   dir.file("follow.err"));
  REQUIRE(eventually([&] { return stats(env.daemon)["events"]["followers"] == 1; }));
  check_gateway_403(curl(env.topo, "http://app.example.com/admin/followed"));
  CHECK(curl(env.topo, "http://app.example.com/reset/x").http_code == 0);  // RST both ways
  REQUIRE(eventually([&] { return json_lines(read_file(out)).size() >= 2; }));
  auto lines = json_lines(read_file(out));
  INFO(read_file(out));
  REQUIRE(lines.size() == 2);
  CHECK(lines[0]["path"] == "/admin/followed");
  CHECK(lines[0]["action"] == "deny");
  CHECK(lines[0]["rule"] == 0);
  CHECK(lines[1]["path"] == "/reset/x");
  CHECK(lines[1]["action"] == "reset");
  CHECK(lines[1]["status"].is_null());
  CHECK(lines[1]["rule"] == 5);
  CHECK(follower.running());
  follower.stop();
  CHECK(eventually([&] { return stats(env.daemon)["events"]["followers"] == 0; }));

  // SIGTERM with a follower connected: the daemon ends the stream and exits at once
  Process again({POLICYCTL_BIN, "--socket", env.daemon.socket_path(), "events", "--follow"}, dir.file("again.out"));
  REQUIRE(eventually([&] { return stats(env.daemon)["events"]["followers"] == 1; }));
  const auto stopping = std::chrono::steady_clock::now();
  CHECK(env.daemon.stop() == 0);
  CHECK(std::chrono::steady_clock::now() - stopping < 3s);
  CHECK(again.wait(5s) == std::optional<int>(0));
}

TEST_CASE("a 401, a 429 and a fail-mode decision carry their status and reason", "[events]") {
  TempDir keys("events-keys");
  chmod(keys.path().c_str(), 0755);
  std::ofstream(keys.file("main.key")) << "events-secret\n";
  Env env(cat(R"(version: 1
interfaces: ["gw-c"]
listeners:
  - name: web
    port: 80
    protocol: http
chain: [host, path, jwt, ratelimit]
default_action: deny
jwt_providers:
  main:
    issuer: "https://auth.example.com"
    audiences: ["api"]
    algorithms: [HS256]
    secret_file: ")",
              keys.file("main.key"), R"("
ratelimits:
  tight:
    key: client_ip
    rate: 1/h
    burst: 1
hosts:
  - match: "app.example.com"
    routes:
      - path: { prefix: "/api/" }
        jwt: main
        action: allow
      - path: { prefix: "/limited/" }
        ratelimit: tight
        action: allow
)"));

  SECTION("401: no token") {
    CHECK(curl(env.topo, "http://app.example.com/api/x").http_code == 401);
    auto e = events_for(env.daemon, "/api/x");
    REQUIRE(e.size() == 1);
    INFO(e[0].dump());
    CHECK(e[0]["action"] == "unauthorized");
    CHECK(e[0]["status"] == 401);
    CHECK(e[0]["jwt_reason"] == "missing");
    CHECK(e[0]["stage"] == "jwt");
    CHECK(e[0]["rule"] == 0);
  }
  SECTION("429: over the rate limit, with the limit's name") {
    CHECK(curl(env.topo, "http://app.example.com/limited/a").http_code == 200);
    CHECK(curl(env.topo, "http://app.example.com/limited/b").http_code == 429);
    CHECK(events_for(env.daemon, "/limited/a").empty());
    auto e = events_for(env.daemon, "/limited/b");
    REQUIRE(e.size() == 1);
    INFO(e[0].dump());
    CHECK(e[0]["action"] == "reject");
    CHECK(e[0]["status"] == 429);
    CHECK(e[0]["limit"] == "tight");
    CHECK(e[0]["rule"] == 1);
  }
  SECTION("fail mode closed: a request without Host") {
    CHECK(curl(env.topo, "http://app.example.com/nohost", {"-H", "Host:"}).http_code == 403);
    // judged before the path stage ran: no path, no host
    auto e = events_where(env.daemon, [](const json& e) { return e["reason"] == "no_host"; });
    REQUIRE(e.size() == 1);
    INFO(e[0].dump());
    CHECK(e[0]["action"] == "deny");
    CHECK(e[0]["status"] == 403);
    CHECK(e[0]["reason"] == "no_host");
    CHECK(e[0]["stage"] == "http");
    CHECK(e[0]["host"].is_null());
    CHECK(e[0]["path"].is_null());
    CHECK(e[0]["rule"].is_null());
  }
}

TEST_CASE("a flood of refusals is held to the event budget and the daemon stays responsive", "[events]") {
  Topology topo;
  Backend nginx{topo};
  Daemon daemon(topo, http_policy(), Daemon::Expect::ready, 45s, {"--event-rate", "3", "--event-log-level", "off"});
  constexpr int kRequests = 150;
  // one curl process, pinned to one CPU, so the refusals are judged on one CPU's budget
  auto r = topo.exec(Role::client,
                     {"taskset", "-c", "0", "curl", "-s", "--max-time", "60", "-o", "/dev/null", "-w",
                      "%{http_code}\\n", "--connect-to", cat("::", kServerV4, ":"),
                      cat("http://app.example.com/admin/flood[1-", kRequests, "]")},
                     90s);
  REQUIRE(r.exit_code == 0);
  std::istringstream codes(r.out);
  int refused = 0;
  for (int c; codes >> c;) refused += c == 403;
  CHECK(refused == kRequests);
  json s;
  REQUIRE(eventually([&] {
    s = stats(daemon)["events"];
    return s["received"] == s["sent"];
  }));
  INFO(s.dump());
  // every refusal is either sent or suppressed; the daemon read every one sent
  CHECK(s["sent"].get<uint64_t>() + s["suppressed"].get<uint64_t>() == kRequests);
  CHECK(s["suppressed"].get<uint64_t>() > 0);
  CHECK(s["sent"].get<uint64_t>() >= 3);  // at least the burst
  CHECK(s["lost"] == 0);
  CHECK(s["rate"] == 3);
  CHECK(recent_events(daemon).size() == s["sent"].get<size_t>());
  // responsive: control commands answer and allowed traffic passes
  CHECK(ctl(daemon, {"status"}).exit_code == 0);
  check_from_nginx(curl(topo, "http://app.example.com/healthz"), "GET", "app.example.com", "/healthz");
  // --event-log-level off: nothing logged
  CHECK(daemon.log().find("[events]") == std::string::npos);
}

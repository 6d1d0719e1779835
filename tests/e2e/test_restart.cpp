// A daemon that stops (SIGTERM) or dies (kill -9) leaves the chain enforcing; the next
// daemon adopts it: the same programs (prog ids unchanged for an unchanged policy), and
// the same flow table, so an open keep-alive connection goes on being judged, not reset.
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "common.hpp"

using namespace policyd::e2e;
using json = nlohmann::json;

namespace {

// prog id of every pinned stage program
std::map<std::string, int> prog_ids(const Daemon& d) {
  std::map<std::string, int> ids;
  for (const char* name :
       {"prog_entry", "prog_egress", "prog_http", "prog_sni", "prog_host", "prog_path", "prog_verdict"}) {
    auto r = run({"bpftool", "-j", "prog", "show", "pinned", cat(d.pin_dir(), "/", name)}, 5s);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    ids[name] = json::parse(r.out).at("id").get<int>();
  }
  return ids;
}

int attached_prog_id(const Topology& topo, const char* hook = "ingress") {
  auto r = topo.exec(Role::gw, {"tc", "filter", "show", "dev", std::string(kGatewayClientIf), hook});
  auto at = r.out.find(" id ");
  if (at == std::string::npos) return 0;
  return std::stoi(r.out.substr(at + 4));
}

}  // namespace

TEST_CASE("restarts keep the chain, its programs and its connections", "[restart]") {
  Env env(http_policy());
  const auto ids = prog_ids(env.daemon);
  REQUIRE(attached_prog_id(env.topo) == ids.at("prog_entry"));
  REQUIRE(attached_prog_id(env.topo, "egress") == ids.at("prog_egress"));

  // A keep-alive connection that outlives two restarts: a request before, one between,
  // and two after (allowed and denied).
  auto get = [](const char* path) { return http_request("GET", path, "app.example.com"); };
  json steps = json::array({get("/healthz"), json{{"await", 1}}, json{{"sleep_ms", 2500}}, get("/api/a"),
                            json{{"await", 2}}, json{{"sleep_ms", 2500}}, get("/api/b"), json{{"await", 3}},
                            get("/admin"), json{{"await", 4}}});
  RawClient conn(env.topo, kServerV4, steps, {"--expect", "4", "--timeout", "30"});
  // and keep-alive load through both restarts
  TempDir dir("restart");
  Process wrk(env.topo.in(Role::client, {"wrk", "-t1", "-c4", "-d9s", "-H", "Host: app.example.com",
                                         cat("http://", kServerV4, "/healthz")}),
              dir.file("wrk.out"));

  std::this_thread::sleep_for(500ms);
  SECTION("SIGTERM, then kill -9") {
    env.daemon.stop();
    // nobody runs the daemon: the pinned chain still enforces
    CHECK(curl(env.topo, "http://app.example.com/admin").http_code == 403);
    CHECK(curl(env.topo, "http://app.example.com/healthz").http_code == 200);
    env.daemon.restart();
    CHECK(env.daemon.log().find("adopted the chain pinned") != std::string::npos);
    CHECK(env.daemon.log().find("policy unchanged") != std::string::npos);
    CHECK(prog_ids(env.daemon) == ids);
    CHECK(attached_prog_id(env.topo) == ids.at("prog_entry"));
    CHECK(attached_prog_id(env.topo, "egress") == ids.at("prog_egress"));

    std::this_thread::sleep_for(2500ms);
    env.daemon.kill9();
    CHECK(curl(env.topo, "http://app.example.com/admin").http_code == 403);
    env.daemon.restart();
    CHECK(prog_ids(env.daemon) == ids);

    auto r = conn.wait(30s);
    INFO(r.json << r.err);
    CHECK(r.statuses == std::vector<int>{200, 200, 200, 403});
    CHECK_FALSE(r.reset);  // the open connection was never cut by a restart

    auto done = wrk.wait(30s);
    REQUIRE(done.has_value());
    std::ifstream in(dir.file("wrk.out"));
    std::string out((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    INFO(out);
    CHECK(*done == 0);
    CHECK(out.find(" requests in ") != std::string::npos);
    CHECK(out.find("Non-2xx") == std::string::npos);       // no failed request
    CHECK(out.find("Socket errors") == std::string::npos);  // no reset, no timeout
  }
}

TEST_CASE("a restart with an invalid policy file keeps the policy the pinned chain was applied from", "[restart]") {
  Env env(http_policy());
  TempDir dir("restart-invalid");
  // the chain enforces a policy applied from another file than the config file
  const auto applied = dir.file("applied.yaml");
  std::ofstream(applied) << edit_policy(http_policy(), "      - path: { exact: \"/healthz\" }\n        action: allow",
                                        "      - path: { exact: \"/healthz\" }\n        action: deny");
  auto r = ctl(env.daemon, {"apply", applied});
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  REQUIRE(curl(env.topo, "http://app.example.com/healthz").http_code == 403);

  env.daemon.stop();
  std::ofstream(env.daemon.policy_path()) << edit_policy(http_policy(), "action: deny", "action: permit");
  env.daemon.restart();  // serves: it does not exit on the invalid file
  const auto log = env.daemon.log();
  INFO(log);
  CHECK(log.find(cat(env.daemon.policy_path(), ":")) != std::string::npos);  // the file's error, file:line:col
  CHECK(log.find("keeps enforcing the policy it was applied from (" + applied + ")") != std::string::npos);
  CHECK(log.find("policy unchanged: generation 2 stays") != std::string::npos);
  auto status = json::parse(ctl(env.daemon, {"-o", "json", "status"}).out);
  auto args = status.contains("arguments") ? status["arguments"] : status;
  CHECK(args["generation"] == 2);
  CHECK(args["policy_source"] == applied);
  CHECK(args["policy_file_error"].get<std::string>().find("permit") != std::string::npos);
  CHECK(curl(env.topo, "http://app.example.com/healthz").http_code == 403);
  CHECK(curl(env.topo, "http://app.example.com/admin").http_code == 403);

  // the file is still the config: fixing it applies it
  auto out = env.daemon.reload(http_policy());
  INFO(out);
  CHECK(out.find("ready: generation 3") != std::string::npos);
  CHECK(curl(env.topo, "http://app.example.com/healthz").http_code == 200);
  auto after = json::parse(ctl(env.daemon, {"-o", "json", "status"}).out);
  auto a2 = after.contains("arguments") ? after["arguments"] : after;
  CHECK_FALSE(a2.contains("policy_file_error"));
  CHECK(a2["policy_source"] == env.daemon.policy_path());
}

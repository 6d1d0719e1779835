// policyctl against the real daemon over its control socket (CLI.md).
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "common.hpp"

using namespace policyd::e2e;
using json = nlohmann::json;

namespace {

std::string write_policy(const TempDir& dir, const std::string& name, const std::string& text) {
  auto path = dir.file(name);
  std::ofstream(path) << text;
  return path;
}

int code(const Topology& topo, const char* path) { return curl(topo, cat("http://app.example.com", path)).http_code; }

}  // namespace

TEST_CASE("policyctl operates the running daemon", "[policyctl]") {
  Env env(http_policy());
  TempDir dir("policyctl");

  SECTION("status names the generation, the interfaces and every stage's program") {
    auto r = ctl(env.daemon, {"-o", "json", "status"});
    INFO(r.out << r.err);
    REQUIRE(r.exit_code == 0);
    auto j = json::parse(r.out);
    auto args = j.contains("arguments") ? j["arguments"] : j;
    CHECK(args["generation"] == 1);
    CHECK(args["interfaces"][0]["name"] == std::string(kGatewayClientIf));
    auto ids = run({"bpftool", "-j", "prog", "show", "pinned", cat(env.daemon.pin_dir(), "/prog_entry")}, 5s);
    CHECK(args["stages"][0]["name"] == "entry");
    CHECK(args["stages"][0]["prog_id"] == json::parse(ids.out)["id"]);
    auto text = ctl(env.daemon, {"status"});
    CHECK(text.exit_code == 0);
    CHECK(text.out.find("generation") != std::string::npos);
  }

  SECTION("apply changes only what changed, and the next request sees it") {
    auto file = write_policy(dir, "p2.yaml",
                             edit_policy(http_policy(), "      - path: { exact: \"/healthz\" }\n        action: allow",
                                     "      - path: { exact: \"/healthz\" }\n        action: deny"));
    auto dry = ctl(env.daemon, {"-o", "json", "apply", "--dry-run", file});
    INFO(dry.out << dry.err);
    REQUIRE(dry.exit_code == 0);
    CHECK(code(env.topo, "/healthz") == 200);  // a dry run changes nothing
    auto r = ctl(env.daemon, {"-o", "json", "apply", file});
    INFO(r.out << r.err);
    REQUIRE(r.exit_code == 0);
    auto j = json::parse(r.out);
    auto args = j.contains("arguments") ? j["arguments"] : j;
    CHECK(args["generation"] == 2);
    REQUIRE(args["changed"].size() == 1);
    CHECK(args["changed"][0]["stage"] == "path");
    CHECK(code(env.topo, "/healthz") == 403);
    // applying the same file again changes nothing
    auto again = ctl(env.daemon, {"-o", "json", "apply", file});
    auto a2 = json::parse(again.out);
    auto args2 = a2.contains("arguments") ? a2["arguments"] : a2;
    CHECK(args2["changed"].empty());
    CHECK(args2["generation"] == 2);
  }

  SECTION("a new limits.max_flows is applied with a warning that the flow table keeps its size") {
    auto file = write_policy(dir, "flows.yaml",
                             edit_policy(http_policy(), "fail_mode:", "limits:\n  max_flows: 2048\nfail_mode:"));
    auto r = ctl(env.daemon, {"-o", "json", "apply", file});
    INFO(r.out << r.err);
    REQUIRE(r.exit_code == 0);
    auto j = json::parse(r.out);
    auto args = j.contains("arguments") ? j["arguments"] : j;
    bool warned = false;
    for (const auto& w : args["warnings"])
      if (w.get<std::string>().find("limits.max_flows 2048 is not applied: the flow table keeps its 262144 entries") != std::string::npos)
        warned = true;
    CHECK(warned);
    auto text = ctl(env.daemon, {"apply", file});  // the text form prints it too
    CHECK(text.exit_code == 0);
    CHECK((text.out + text.err).find("max_flows 2048") != std::string::npos);
    auto stats = json::parse(ctl(env.daemon, {"-o", "json", "stats"}).out);
    auto sargs = stats.contains("arguments") ? stats["arguments"] : stats;
    CHECK(sargs["flows"]["max"] == 262144);  // the table keeps the size it was created with
    CHECK(code(env.topo, "/admin") == 403);
  }

  SECTION("an invalid file: exit 1 with file:line:col, the running policy stays") {
    auto file = write_policy(dir, "bad.yaml", edit_policy(http_policy(), "action: deny", "action: permit"));
    auto r = ctl(env.daemon, {"apply", file});
    INFO(r.out << r.err);
    CHECK(r.exit_code == 1);
    CHECK(r.err.find(cat(file, ":")) != std::string::npos);
    CHECK(code(env.topo, "/admin") == 403);
    CHECK(code(env.topo, "/healthz") == 200);
  }

  SECTION("stats count verdicts and rule hits") {
    for (int i = 0; i < 3; ++i) REQUIRE(code(env.topo, "/healthz") == 200);
    REQUIRE(code(env.topo, "/admin") == 403);
    auto r = ctl(env.daemon, {"-o", "json", "stats"});
    INFO(r.out << r.err);
    REQUIRE(r.exit_code == 0);
    auto j = json::parse(r.out);
    auto args = j.contains("arguments") ? j["arguments"] : j;
    CHECK(args["verdicts"]["allow"].get<int>() >= 3);
    CHECK(args["verdicts"]["deny"].get<int>() >= 1);
    bool healthz = false;
    for (const auto& rule : args["rules"])
      if (rule["path"] == "exact /healthz" && rule["hits"].get<int>() >= 3) healthz = true;
    CHECK(healthz);
    CHECK(ctl(env.daemon, {"stats"}).exit_code == 0);
  }

  SECTION("reload re-reads the config file") {
    std::ofstream(env.daemon.policy_path())
        << edit_policy(http_policy(), "      - path: { prefix: \"/admin\" }\n        action: deny",
                   "      - path: { prefix: \"/admin\" }\n        action: allow");
    auto r = ctl(env.daemon, {"reload"});
    INFO(r.out << r.err);
    CHECK(r.exit_code == 0);
    CHECK(code(env.topo, "/admin") == 200);
  }

  SECTION("detach removes the chain and the daemon stops") {
    auto r = ctl(env.daemon, {"detach"});
    INFO(r.out << r.err);
    CHECK(r.exit_code == 0);
    bool exited = false;  // it stops by itself once it has answered
    for (int i = 0; i < 40 && !exited; ++i) {
      exited = !env.daemon.running();
      if (!exited) std::this_thread::sleep_for(50ms);
    }
    CHECK(exited);
    auto filters = env.topo.exec(Role::gw, {"tc", "filter", "show", "dev", std::string(kGatewayClientIf), "ingress"});
    CHECK(filters.out.find("pd_entry") == std::string::npos);
    auto egress = env.topo.exec(Role::gw, {"tc", "filter", "show", "dev", std::string(kGatewayClientIf), "egress"});
    CHECK(egress.out.find("pd_egress") == std::string::npos);
    CHECK(code(env.topo, "/admin") == 200);  // nothing enforces any more
  }

  SECTION("a prepared generation refused by preflight: exit 2 with the failing cases, nothing changes") {
    env.daemon.restart_with_faults({"--corrupt-generation", "2"});
    auto file = write_policy(dir, "p2.yaml",
                             edit_policy(http_policy(), "      - path: { exact: \"/healthz\" }\n        action: allow",
                                     "      - path: { exact: \"/healthz\" }\n        action: deny"));
    auto r = ctl(env.daemon, {"apply", file});
    INFO(r.out << r.err);
    CHECK(r.exit_code == 2);
    CHECK((r.out + r.err).find("preflight") != std::string::npos);
    CHECK((r.out + r.err).find("policy says") != std::string::npos);
    CHECK(code(env.topo, "/healthz") == 200);
    CHECK(code(env.topo, "/admin") == 403);
  }

  SECTION("no daemon at the socket: exit 3") {
    auto r = run({POLICYCTL_BIN, "--socket", dir.file("none.sock"), "status"}, 10s);
    CHECK(r.exit_code == 3);
  }
}

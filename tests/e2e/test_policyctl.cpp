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

namespace {

// The line of `text` that holds every one of `parts` ("" if none does).
std::string line_with(const std::string& text, const std::vector<std::string>& parts) {
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(start, end - start);
    bool all = true;
    for (const auto& p : parts) all = all && line.find(p) != std::string::npos;
    if (all) return line;
    start = end + 1;
  }
  return {};
}

std::string scalar_text(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }

// A key of the reply that the text shows as "key: ..." (the generic rendering).
#define CHECK_MISSING_KEY(text, key)                  \
  do {                                                \
    INFO("reply key " << key);                        \
    CHECK_FALSE(line_with(text, {key + ":"}).empty()); \
  } while (0)

}  // namespace

// policyctl's text is read from the real daemon's replies: each command's text form shows what
// its JSON form carries, so a reply the renderer does not know shows up here, not only in the
// unit tests' invented replies (tests/daemon/policyctl_test.cpp).
TEST_CASE("policyctl's text shows what the daemon's replies carry", "[policyctl]") {
  Env env(http_policy());
  TempDir dir("policyctl-text");
  for (int i = 0; i < 2; ++i) REQUIRE(code(env.topo, "/healthz") == 200);
  REQUIRE(code(env.topo, "/admin") == 403);
  auto both = [&](std::vector<std::string> args) {
    auto as_json = args;
    as_json.insert(as_json.begin(), {"-o", "json"});
    auto j = ctl(env.daemon, as_json);
    INFO(j.out << j.err);
    REQUIRE(j.exit_code == 0);
    auto parsed = json::parse(j.out);
    auto text = ctl(env.daemon, args);
    INFO(text.out << text.err);
    REQUIRE(text.exit_code == 0);
    auto a = parsed.contains("arguments") ? parsed["arguments"] : parsed;
    a.erase("result");  // the reply's envelope: its outcome (the exit code) and message
    a.erase("text");
    return std::pair{a, text.out + text.err};
  };

  SECTION("status") {
    auto [a, text] = both({"status"});
    INFO(text << "\n" << a.dump(2));
    CHECK_FALSE(line_with(text, {"generation:", scalar_text(a["generation"])}).empty());
    CHECK_FALSE(line_with(text, {"pin dir:", a["pin_dir"].get<std::string>()}).empty());
    REQUIRE_FALSE(a["interfaces"].empty());
    for (const auto& i : a["interfaces"])
      CHECK_FALSE(line_with(text, {cat(i["name"].get<std::string>(), " (ifindex ", i["ifindex"].get<int>(), ")")}).empty());
    REQUIRE(a["stages"].size() >= 8);
    for (const auto& s : a["stages"]) {
      auto line = line_with(text, {cat("  ", s["name"].get<std::string>(), " "), cat("prog ", scalar_text(s["prog_id"]))});
      CHECK_FALSE(line.empty());
      CHECK((line.find("(not in chain)") != std::string::npos) == !s["in_chain"].get<bool>());
    }
    for (const auto& [key, v] : a.items())
      if (key != "version" && key != "generation" && key != "policy_source" && key != "since" && key != "pin_dir" &&
          key != "interfaces" && key != "stages")
        CHECK_MISSING_KEY(text, key);
  }

  SECTION("stats") {
    auto [a, text] = both({"stats"});
    INFO(text << "\n" << a.dump(2));
    auto verdicts = line_with(text, {"verdicts:"});
    for (const auto& [k, v] : a["verdicts"].items()) CHECK(verdicts.find(cat(k, " ", scalar_text(v))) != std::string::npos);
    REQUIRE_FALSE(a["rules"].empty());
    for (const auto& r : a["rules"])
      CHECK_FALSE(line_with(text, {r["host"].get<std::string>(), r["path"].get<std::string>(), r["action"].get<std::string>(),
                                   scalar_text(r["hits"])})
                      .empty());
    for (const auto& [k, v] : a["counters"].items()) CHECK_FALSE(line_with(text, {cat("  ", k, " ")}).empty());
    for (const auto& [k, v] : a["stages"].items()) CHECK_FALSE(line_with(text, {cat("  ", k, " ")}).empty());
    for (const auto& [key, v] : a.items())
      if (key != "counters" && key != "verdicts" && key != "fail_mode" && key != "ignored" && key != "stages" &&
          key != "rules" && key != "flows")
        CHECK_MISSING_KEY(text, key);
  }

  SECTION("apply, dry run and for real") {
    auto file = write_policy(dir, "p2.yaml",
                             edit_policy(http_policy(), "      - path: { exact: \"/healthz\" }\n        action: allow",
                                         "      - path: { exact: \"/healthz\" }\n        action: deny"));
    auto [dry, dry_text] = both({"apply", "--dry-run", file});
    INFO(dry_text << "\n" << dry.dump(2));
    REQUIRE(dry["changed"].size() == 1);
    CHECK_FALSE(line_with(dry_text, {"dry run: would change", cat(dry["changed"][0]["stage"].get<std::string>(), ": ",
                                                                   dry["changed"][0]["what"].get<std::string>())})
                    .empty());
    auto j = ctl(env.daemon, {"-o", "json", "apply", file});
    REQUIRE(j.exit_code == 0);
    auto applied = json::parse(j.out);
    if (applied.contains("arguments")) applied = applied["arguments"];
    // the text of an apply that changes something (back to the first policy)
    auto back = write_policy(dir, "p1.yaml", http_policy());
    auto t = ctl(env.daemon, {"apply", back});
    INFO(t.out << t.err);
    REQUIRE(t.exit_code == 0);
    auto st = json::parse(ctl(env.daemon, {"-o", "json", "status"}).out);
    if (st.contains("arguments")) st = st["arguments"];
    CHECK_FALSE(line_with(t.out, {cat("applied generation ", scalar_text(st["generation"])), "path: "}).empty());
    CHECK_FALSE(line_with(t.out, {"unchanged:", "host"}).empty());
    CHECK(applied["generation"].get<int>() + 1 == st["generation"].get<int>());
  }
}

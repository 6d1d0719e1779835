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

#include <sys/stat.h>

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

// Writes each variant to a file (the base policy last) and applies them in turn, `count`
// applies in all; every apply must succeed. Returns the apply latencies (us, sorted) and
// how often each stage was swapped.
struct Applies {
  std::vector<int64_t> latency_us;
  std::map<std::string, int> changed_stages;
};

Applies apply_in_turn(const Daemon& daemon, const TempDir& dir,
                      const std::vector<std::pair<std::string, std::string>>& variants, const std::string& base,
                      int count) {
  std::vector<std::string> files;
  for (size_t i = 0; i < variants.size(); ++i) {
    files.push_back(dir.file(cat("v", i, ".yaml")));
    std::ofstream(files.back()) << variants[i].second;
  }
  files.push_back(dir.file("base.yaml"));
  std::ofstream(files.back()) << base;
  Applies a;
  for (int i = 0; i < count; ++i) {
    const auto& file = files[static_cast<size_t>(i) % files.size()];
    auto r = run({POLICYCTL_BIN, "--socket", daemon.socket_path(), "-o", "json", "apply", file}, 30s);
    INFO("apply " << i << " (" << file << "): " << r.out << r.err);
    REQUIRE(r.exit_code == 0);
    auto reply = parse_reply(r.out);
    a.latency_us.push_back(reply["duration_us"].get<int64_t>());
    for (const auto& c : reply["changed"]) a.changed_stages[c["stage"].get<std::string>()]++;
  }
  std::sort(a.latency_us.begin(), a.latency_us.end());
  return a;
}

void check_no_generation_mismatch(const Daemon& daemon) {
  auto stats = run({POLICYCTL_BIN, "--socket", daemon.socket_path(), "-o", "json", "stats"}, 10s);
  REQUIRE(stats.exit_code == 0);
  CHECK(parse_reply(stats.out)["counters"]["generation_mismatch"] == 0);
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

  auto applies = apply_in_turn(env.daemon, dir, variants, base, 100);
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
  for (const char* stage : {"path", "host", "verdict", "entry", "chain"})
    CHECK(applies.changed_stages[stage] > 0);
  check_no_generation_mismatch(env.daemon);

  const auto& latency_us = applies.latency_us;
  std::cout << "hot swap: 100 applies, apply latency median " << latency_us[latency_us.size() / 2] << " us, worst "
            << latency_us.back() << " us; wrk " << wrk_requests << " requests, long-lived " << long_lived
            << " requests, 0 failed\n";
}

namespace {

// curl in the client namespace to https://NAME/PREFIX[1-COUNT] through the gateway, one
// transfer after the other, at most `rate` started per second, one line per transfer:
// "<http_code> <num_connects>". new_connections: each on a new connection (Connection:
// close), so every transfer is a new TLS handshake; else all on one kept-alive connection.
// Output in dir/<tag>.out.
std::unique_ptr<Process> https_load(const Topology& topo, const TempDir& dir, std::string_view tag,
                                    std::string_view name, std::string_view prefix, int count, int rate,
                                    bool new_connections) {
  std::vector<std::string> argv{"curl", "-sk", "--connect-to", cat("::", kServerV4, ":"), "--max-time", "5",
                                "--rate", cat(rate, "/s"), "-w", "%{http_code} %{num_connects}\n", "-o",
                                "/dev/null"};
  if (new_connections)
    for (const char* a : {"-H", "Connection: close"}) argv.push_back(a);
  argv.push_back(cat("https://", name, prefix, "[1-", count, "]"));
  return std::make_unique<Process>(topo.in(Role::client, argv), dir.file(cat(tag, ".out")),
                                   dir.file(cat(tag, ".err")));
}

struct Transfers {
  std::map<int, int> codes;  // http_code -> transfers
  int connects = 0;          // new connections made
  int total = 0;
};

Transfers transfers(const std::string& path) {
  Transfers t;
  std::ifstream in(path);
  int code = 0, connects = 0;
  while (in >> code >> connects) {
    t.codes[code]++;
    t.connects += connects;
    t.total++;
  }
  return t;
}

}  // namespace

// The sni stage swapped under TLS load: new handshakes to an allowed name keep succeeding,
// a long-lived TLS connection keeps its verdict and its requests, names every variant
// refuses are reset every time, and no packet sees a half refilled under it.
TEST_CASE("100 applies under TLS load: allowed handshakes all succeed, refused names all reset", "[hotswap][tls]") {
  const std::string base = tls_policy();
  TlsEnv env(base);
  TempDir dir("hotswap-tls");
  chmod(dir.path().c_str(), 0755);
  // every variant allows api.example.com and b.a.example.com, and refuses x.corp.example.com
  const std::vector<std::pair<std::string, std::string>> variants = {
      {"sni insert", edit_policy(base, "sni:\n", "sni:\n  - match: \"new.test\"\n    action: deny\n")},
      {"sni change", edit_policy(base, "blocked.test\"\n    action: reset", "blocked.test\"\n    action: drop")},
      {"default", edit_policy(base, "default_action: deny", "default_action: drop")},
      {"missing_sni", edit_policy(base, "missing_sni: deny", "missing_sni: allow")},
      {"head limit", edit_policy(base, "fail_mode: closed", "fail_mode: closed\nlimits:\n  max_head_bytes: 4096")},
      {"chain", edit_policy(base, "chain: [sni]", "chain: [sni, host, path]")},
  };

  // ~4 s of load each: new handshakes (two clients), one kept-alive connection, refused names
  auto fresh1 = https_load(env.topo, dir, "fresh1", "api.example.com", "/new1/", 200, 50, true);
  auto fresh2 = https_load(env.topo, dir, "fresh2", "api.example.com", "/new2/", 200, 50, true);
  auto wild = https_load(env.topo, dir, "wild", "b.a.example.com", "/wild/", 100, 25, true);
  auto kept = https_load(env.topo, dir, "kept", "api.example.com", "/kept/", 200, 50, false);
  auto refused = https_load(env.topo, dir, "refused", "x.corp.example.com", "/no/", 100, 25, true);
  std::this_thread::sleep_for(500ms);

  const auto t0 = std::chrono::steady_clock::now();
  auto applies = apply_in_turn(env.daemon, dir, variants, base, 100);
  const auto apply_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  const bool overlapped = fresh1->running() && kept->running();  // for the record: load outlasted the applies

  for (auto* p : {fresh1.get(), fresh2.get(), wild.get(), kept.get(), refused.get()}) REQUIRE(p->wait(60s).has_value());
  auto f = transfers(dir.file("fresh1.out"));
  auto f2 = transfers(dir.file("fresh2.out"));
  auto w = transfers(dir.file("wild.out"));
  auto k = transfers(dir.file("kept.out"));
  auto r = transfers(dir.file("refused.out"));
  INFO("new: codes " << json(f.codes).dump() << " and " << json(f2.codes).dump() << "; wildcard: " << json(w.codes).dump()
               << "; kept-alive: " << json(k.codes).dump() << ", " << k.connects
               << " connections; refused: " << json(r.codes).dump());
  for (auto* t : {&f, &f2}) {
    CHECK(t->codes[200] == 200);
    CHECK(t->connects == 200);  // every one a new handshake
  }
  CHECK(w.codes[200] == 100);
  CHECK(k.codes[200] == 200);
  CHECK(k.connects == 1);  // one connection all along
  CHECK(r.total == 100);
  CHECK(r.codes[0] == 100);  // never an answer
  // the refused connections were reset, each of them: none reached nginx
  CHECK(env.nginx.lines_with("sni=x.corp.example.com").empty());

  for (const char* stage : {"sni", "verdict", "chain"}) CHECK(applies.changed_stages[stage] > 0);
  check_no_generation_mismatch(env.daemon);
  std::cout << "hot swap under TLS load: 100 applies, apply latency median "
            << applies.latency_us[applies.latency_us.size() / 2] << " us, worst " << applies.latency_us.back()
            << " us, all 100 in " << apply_ms << " ms" << (overlapped ? " under load" : " (load ended first)") << "; "
            << f.total + f2.total + w.total << " new handshakes, " << k.total << " requests on one connection, 0 failed\n";
}

// Hot swap benchmark (issue 8): apply latency for a one-stage change and for a whole-policy
// change, and the requests that fail while 100 applies run under load. Not a test: it
// asserts nothing about time (it fails only if something does not work: an apply refused, a
// change that is not the kind it should be, the load ending before the applies did).
// tests/e2e/test_hotswap.cpp checks the same property as a test; this measures it, with the
// same fixtures (tests/e2e/harness.hpp).
//
// The namespace topology with nginx and policyd in the gateway (as the e2e tests start it,
// --metrics off); from the client, two wrk runs at once for the whole time: keep-alive
// (GET /static/index.html) and a new connection per request (Connection: close, GET
// /healthz), both allowed by every policy applied. Four policies, applied in turn:
//   A  -> A1   one stage: the action of one path route
//   A1 -> B    every stage: chain order, listeners and head limit (entry), sni rules, host
//              patterns, routes (path), the JWT provider, the rate limit, default_action
//   B  -> B1   one stage, as A -> A1
//   B1 -> A    every stage
// Each apply is `policyctl -o json apply FILE` (its wall time: the client's validation, the
// control socket, the daemon's compile + prepare + preflight + flip) and the daemon's own
// duration_us in the reply; applies are 50 ms apart (so no apply waits out the refill grace
// of the one before). Failed requests: wrk's non-2xx responses and socket errors (connect,
// read, write, timeout), which must all be 0.
//
// Usage: bench_hotswap [--quick] [--applies N] [--json FILE]
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench_util.hpp"
#include "harness.hpp"

using namespace policyd;
using namespace policyd::e2e;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

[[noreturn]] void die(const std::string& what) { throw std::runtime_error(what); }

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A: the base policy. Every policy here allows GET /static/... and GET /healthz on
// app.example.com (the load) and denies /admin (checked before and after).
std::string policy_a(const std::string& jwks_file) {
  return R"(# bench_hotswap: policy A
version: 1
interfaces: ["gw-c"]
listeners:
  - name: web
    port: 80
    protocol: http
  - name: secure
    port: 443
    protocol: tls
chain: [sni, host, path, jwt, ratelimit]
default_action: deny
fail_mode: closed
limits:
  max_head_bytes: 8192
sni:
  - match: "api.example.com"
    action: allow
missing_sni: deny
jwt_providers:
  main:
    issuer: "https://auth.example.com"
    audiences: ["api"]
    algorithms: [ES256]
    jwks_file: ")" + jwks_file + R"("
ratelimits:
  lots:
    key: client_ip
    rate: 1000000/s
    burst: 1000000
    action: reject
hosts:
  - match: "app.example.com"
    routes:
      - path: { prefix: "/admin" }
        action: deny
      - path: { exact: "/healthz" }
        action: allow
      - path: { prefix: "/static/" }
        ratelimit: lots
        action: allow
      - path: { prefix: "/api/" }
        jwt: main
        action: allow
)";
}

// B: every stage's slice differs from A's (and from A1's).
std::string policy_b(const std::string& jwks_file) {
  return R"(# bench_hotswap: policy B
version: 1
interfaces: ["gw-c"]
listeners:
  - name: web
    port: 80
    protocol: http
  - name: secure
    port: 8443
    protocol: tls
chain: [sni, host, path, ratelimit, jwt]
default_action: drop
fail_mode: closed
limits:
  max_head_bytes: 4096
sni:
  - match: "api.example.com"
    action: allow
  - match: "*.corp.example.com"
    action: deny
missing_sni: allow
jwt_providers:
  main:
    issuer: "https://auth2.example.com"
    audiences: ["api"]
    algorithms: [ES256]
    jwks_file: ")" + jwks_file + R"("
ratelimits:
  lots:
    key: client_ip
    rate: 2000000/s
    burst: 2000000
    action: reject
hosts:
  - match: ["app.example.com", "alias.example.com"]
    routes:
      - path: { prefix: "/admin" }
        action: deny
      - path: { exact: "/healthz" }
        action: allow
      - path: { prefix: "/static/" }
        ratelimit: lots
        action: allow
      - path: { prefix: "/api/v2/" }
        jwt: main
        action: allow
      - path: { prefix: "/private/" }
        action: deny
)";
}

// The one-stage variant: the /admin route's action (the path stage's table only).
std::string admin_action(std::string policy, const std::string& action) {
  const std::string from = "      - path: { prefix: \"/admin\" }\n        action: deny\n";
  auto at = policy.find(from);
  if (at == std::string::npos) die("no /admin route to change");
  policy.replace(at, from.size(), "      - path: { prefix: \"/admin\" }\n        action: " + action + "\n");
  return policy;
}

const std::set<std::string> kEveryStage{"chain", "entry", "sni", "host", "path", "jwt", "ratelimit", "verdict"};

struct Apply {
  int index = 0;
  std::string kind;  // "one-stage" | "whole-policy"
  std::string to;    // A, A1, B, B1
  double wall_us = 0, duration_us = 0;
  std::vector<std::string> changed;
  double at_s = 0;   // since the load started
};

json wrk_summary(const std::string& path) {
  auto j = json::parse(slurp(path), nullptr, false);
  if (j.is_discarded() || !j.contains("requests")) die("wrk wrote no summary to " + path);
  return j;
}

uint64_t failed_of(const json& w) {
  const auto& e = w["errors"];
  return e.value("status", 0ull) + e.value("connect", 0ull) + e.value("read", 0ull) + e.value("write", 0ull) +
         e.value("timeout", 0ull);
}

int run_bench(int argc, char** argv) {
  bool quick = false;
  int applies = -1;
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--applies") == 0 && i + 1 < argc) {
      applies = std::atoi(argv[++i]);
    } else if (std::strcmp(argv[i], "--json") == 0 && i + 1 < argc) {
      json_path = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--quick] [--applies N] [--json FILE]\n", argv[0]);
      return 2;
    }
  }
  if (applies < 0) applies = quick ? 10 : 100;
  if (applies < 2 || applies > 100000) die("--applies must be 2 or more");
  if (geteuid() != 0) die("needs root (network namespaces, eBPF)");
  const int ka_conns = quick ? 4 : 8, close_conns = quick ? 2 : 4;
  const auto gap = std::chrono::milliseconds(50);
  const auto started = Clock::now();

  bench::install_cleanup_handlers();
  sweep_stale();
  Topology topo;
  Backend nginx{topo};
  // many short connections: the whole port range and TIME_WAIT reuse (these namespaces only)
  for (Role role : {Role::client, Role::gw})
    topo.exec(role, {"sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=1024 65000", "net.ipv4.tcp_tw_reuse=1"});
  TempDir dir("bench-hotswap");
  chmod(dir.path().c_str(), 0755);
  // the JWT provider's key set: an ES256 key (openssl), as a JWK Set (tests/e2e/mint_jwt.py).
  // (Not HS256: `policyctl apply` validates without reading secret_file and refuses HS* providers.)
  const std::string key = dir.file("jwks.json");
  if (run({"openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", dir.file("ec.pem")},
          30s).exit_code != 0)
    die("openssl genpkey failed");
  auto jwks = run({"/usr/bin/python3", source_dir() + "/tests/e2e/mint_jwt.py", "jwks", dir.file("ec.pem") + ":ec-1"}, 30s);
  if (jwks.exit_code != 0) die("mint_jwt.py jwks failed: " + jwks.err);
  std::ofstream(key) << jwks.out;
  const std::vector<std::pair<std::string, std::string>> policies = {
      {"A", policy_a(key)}, {"A1", admin_action(policy_a(key), "drop")},
      {"B", policy_b(key)}, {"B1", admin_action(policy_b(key), "drop")}};
  for (const auto& [name, text] : policies) std::ofstream(dir.file(name + ".yaml")) << text;

  Daemon policyd{topo, policies[0].second, Daemon::Expect::ready, 30s, {"--metrics", "off"}};
  auto expect = [&](const std::string& path, int code) {
    auto r = curl(topo, "http://app.example.com" + path);
    if (r.http_code != code)
      die("GET " + path + ": expected " + std::to_string(code) + ", got " + std::to_string(r.http_code) + " " + r.err);
  };
  expect("/static/index.html", 200);
  expect("/healthz", 200);
  expect("/admin", 403);

  // the load: wrk (scripts/lib/bench-wrk.lua writes its summary as JSON when it stops)
  const std::string lua = source_dir() + "/scripts/lib/bench-wrk.lua";
  auto wrk = [&](const std::string& tag, const std::string& path, bool close, int conns) {
    return std::make_unique<Process>(
        topo.in(Role::client, {"env", "BENCH_HOST=app.example.com", "BENCH_PATH=" + path,
                               std::string("BENCH_CLOSE=") + (close ? "1" : "0"), "BENCH_OUT=" + dir.file(tag + ".json"),
                               "wrk", "-t1", "-c" + std::to_string(conns), "-d3600s", "--timeout", "2s", "--latency",
                               "-s", lua, cat("http://", kServerV4, "/")}),
        dir.file(tag + ".txt"));
  };
  std::printf("load: wrk keep-alive (-c%d, GET /static/index.html) and connection per request (-c%d, GET /healthz)\n",
              ka_conns, close_conns);
  auto keepalive = wrk("keepalive", "/static/index.html", false, ka_conns);
  auto per_request = wrk("close", "/healthz", true, close_conns);
  const auto load_start = Clock::now();
  std::this_thread::sleep_for(1s);
  if (!keepalive->running() || !per_request->running())
    die("wrk exited at once: " + slurp(dir.file("keepalive.txt")) + slurp(dir.file("close.txt")));

  // A -> A1 -> B -> B1 -> A ...: one-stage and whole-policy changes alternate
  const char* order[] = {"A1", "B", "B1", "A"};
  std::vector<Apply> done;
  for (int i = 0; i < applies; ++i) {
    Apply a;
    a.index = i + 1;
    a.to = order[i % 4];
    a.kind = i % 2 == 0 ? "one-stage" : "whole-policy";
    a.at_s = std::chrono::duration<double>(Clock::now() - load_start).count();
    const auto t0 = Clock::now();
    auto r = run({POLICYCTL_BIN, "--socket", policyd.socket_path(), "-o", "json", "apply", dir.file(a.to + ".yaml")},
                 120s);
    a.wall_us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
    if (r.exit_code != 0) die("apply " + std::to_string(a.index) + " (" + a.to + ") failed: " + r.out + r.err);
    auto reply = json::parse(r.out, nullptr, false);
    if (reply.is_discarded()) die("policyctl printed no JSON: " + r.out);
    if (reply.contains("arguments")) reply = reply["arguments"];
    a.duration_us = reply.value("duration_us", 0.0);
    for (const auto& c : reply.value("changed", json::array())) a.changed.push_back(c.value("stage", "?"));
    const std::set<std::string> changed(a.changed.begin(), a.changed.end());
    if (a.kind == "one-stage" ? changed != std::set<std::string>{"path"} : changed != kEveryStage)
      die("apply " + std::to_string(a.index) + " (" + a.to + ", " + a.kind + ") changed " + json(a.changed).dump());
    done.push_back(a);
    if (!keepalive->running() || !per_request->running()) die("wrk stopped during the applies");
    if ((i + 1) % 10 == 0 || i + 1 == applies) {
      std::printf("  %d/%d applies\n", i + 1, applies);
      std::fflush(stdout);
    }
    std::this_thread::sleep_for(gap);
  }
  const double applies_s = std::chrono::duration<double>(Clock::now() - load_start).count() - 1.0;
  std::this_thread::sleep_for(1s);
  // stop the load: SIGINT makes wrk print its figures and run the script's done()
  for (auto* p : {keepalive.get(), per_request.get()}) kill(p->pid(), SIGINT);
  for (auto* p : {keepalive.get(), per_request.get()})
    if (!p->wait(20s)) die("wrk did not stop after SIGINT");
  const json ka = wrk_summary(dir.file("keepalive.json")), cl = wrk_summary(dir.file("close.json"));
  const double load_s = std::chrono::duration<double>(Clock::now() - load_start).count();

  // the last policy applied is in force; the daemon never saw a packet straddle generations
  const std::string last = order[(applies - 1) % 4];
  expect("/static/index.html", 200);
  if (last == "A" || last == "B") expect("/admin", 403);  // (A1 and B1 drop it: curl would wait)
  auto stats = run({POLICYCTL_BIN, "--socket", policyd.socket_path(), "-o", "json", "stats"}, 30s);
  auto sj = json::parse(stats.out, nullptr, false);
  if (stats.exit_code != 0 || sj.is_discarded()) die("policyctl stats failed: " + stats.out + stats.err);
  if (sj.contains("arguments")) sj = sj["arguments"];
  const uint64_t mismatch = sj["counters"].value("generation_mismatch", 0ull);
  const uint64_t judged = sj["counters"].value("requests", 0ull);

  // summaries per kind
  json out;
  out["mode"] = quick ? "quick" : "full";
  out["applies"] = applies;
  out["gap_ms"] = gap.count();
  out["load"] = {{"keepalive", {{"path", "/static/index.html"}, {"connections", ka_conns}, {"wrk", ka}}},
                 {"close", {{"path", "/healthz"}, {"connections", close_conns}, {"wrk", cl}}},
                 {"seconds", load_s},
                 {"applies_seconds", applies_s}};
  const uint64_t failed = failed_of(ka) + failed_of(cl);
  out["failed_requests"] = failed;
  out["requests"] = ka["requests"].get<uint64_t>() + cl["requests"].get<uint64_t>();
  out["policyd_requests_judged"] = judged;
  out["generation_mismatch"] = mismatch;
  std::printf("\nhot swap: %d applies in %.1f s under load (%s)\n", applies, applies_s, quick ? "quick" : "full");
  std::printf("%-14s %8s %28s %28s\n", "change", "applies", "policyctl apply, us", "daemon duration_us");
  std::printf("%-14s %8s %28s %28s\n", "", "", "median / p99 (min-max)", "median / p99 (min-max)");
  for (const char* kind : {"one-stage", "whole-policy"}) {
    std::vector<double> wall, dur;
    for (const auto& a : done)
      if (a.kind == kind) {
        wall.push_back(a.wall_us);
        dur.push_back(a.duration_us);
      }
    auto ws = bench::summary(wall, true), ds = bench::summary(dur, true);
    out["summary"][kind] = {{"n", wall.size()}, {"wall_us", ws}, {"duration_us", ds}};
    std::printf("%-14s %8zu %8.0f / %-7.0f (%.0f-%.0f) %8.0f / %-7.0f (%.0f-%.0f)\n", kind, wall.size(),
                ws["median"].get<double>(), ws["p99"].get<double>(), ws["min"].get<double>(), ws["max"].get<double>(),
                ds["median"].get<double>(), ds["p99"].get<double>(), ds["min"].get<double>(), ds["max"].get<double>());
  }
  for (const auto& a : done)
    out["runs"].push_back({{"index", a.index}, {"kind", a.kind}, {"to", a.to}, {"wall_us", a.wall_us},
                           {"duration_us", a.duration_us}, {"changed", a.changed}, {"at_s", a.at_s}});
  std::printf("load: keep-alive %llu requests, connection per request %llu requests; failed (non-2xx or socket "
              "errors): %llu; policyd judged %llu request heads; generation mismatches: %llu\n",
              static_cast<unsigned long long>(ka["requests"].get<uint64_t>()),
              static_cast<unsigned long long>(cl["requests"].get<uint64_t>()),
              static_cast<unsigned long long>(failed), static_cast<unsigned long long>(judged),
              static_cast<unsigned long long>(mismatch));
  out["elapsed_s"] = std::chrono::duration<double>(Clock::now() - started).count();
  out["policies"] = json::object();
  for (const auto& [name, text] : policies) out["policies"][name] = text;
  if (!json_path.empty() && !bench::write_json(json_path, out)) die("cannot write " + json_path);
  if (failed != 0 || mismatch != 0) {
    std::fprintf(stderr, "bench_hotswap: %llu failed requests, %llu generation mismatches (must be 0)\n",
                 static_cast<unsigned long long>(failed), static_cast<unsigned long long>(mismatch));
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  bench::handle_sweep_flag(argc, argv);
  try {
    return run_bench(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_hotswap: %s\n", e.what());
    return 1;
  }
}

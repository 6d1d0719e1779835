// Floods (issue 17): what an attacker can send a gateway in bulk must not cost honest clients
// their connections. A SYN flood of ten times the flow table from spoofed sources (the server
// answers each), while
// established keep-alive connections make requests and new clients connect: none of them is
// reset or refused. A flood of forged tokens, while the control socket is asked for its status
// and another client sends valid tokens: it answers at once, and they are verified.
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "common.hpp"

using namespace policyd::e2e;
using json = nlohmann::json;

namespace {

constexpr int kMaxFlows = 1024;  // the smallest flow table a policy may ask for

std::string mac_of(const Topology& topo, Role role, const std::string& dev) {
  auto r = topo.exec(role, {"ip", "-j", "link", "show", "dev", dev});
  if (r.exit_code != 0) throw std::runtime_error(cat("ip link show ", dev, ": ", r.err));
  return json::parse(r.out).at(0).at("address").get<std::string>();
}

// The start of the flood tests' policies: one HTTP listener on the client side.
constexpr std::string_view kHttpHead = R"(version: 1
interfaces: ["gw-c"]
listeners:
  - name: web
    port: 80
    protocol: http
)";

// How long the daemon takes to answer `status` on its control socket, in ms (the request
// policyctl sends, without policyctl's own start); -1 if it did not answer within 5 s.
long status_answer_ms(const Daemon& d) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof(a.sun_path), "%s", d.socket_path().c_str());
  const auto t0 = std::chrono::steady_clock::now();
  long ms = -1;
  const std::string req = "{\"command\":\"status\"}\n";
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0 &&
      ::write(fd, req.data(), req.size()) == static_cast<ssize_t>(req.size())) {
    std::string got;
    char buf[4096];
    while (got.find('\n') == std::string::npos) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 5000) <= 0) break;
      ssize_t n = ::read(fd, buf, sizeof(buf));
      if (n <= 0) break;
      got.append(buf, static_cast<size_t>(n));
    }
    if (got.find('\n') != std::string::npos)
      ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  }
  ::close(fd);
  return ms;
}

}  // namespace

TEST_CASE("a SYN flood of ten times the flow table evicts no established connection", "[flood]") {
  Env env(edit_policy(http_policy(), "fail_mode:", cat("limits:\n  max_flows: ", kMaxFlows, "\nfail_mode:")));
  const auto before = ctl_json(env.daemon, "stats");
  // four keep-alive connections: a request, then (during the flood) more, the last refused
  auto get = [](const char* path) { return http_request("GET", path, "app.example.com"); };
  std::vector<std::unique_ptr<RawClient>> clients;
  for (int i = 0; i < 4; ++i) {
    json steps = json::array({get("/healthz"), json{{"await", 1}}, json{{"sleep_ms", 1500}}, get("/api/a"),
                              json{{"await", 2}}, json{{"sleep_ms", 1500}}, get("/healthz"), json{{"await", 3}},
                              get("/admin"), json{{"await", 4}}});
    clients.push_back(std::make_unique<RawClient>(env.topo, kServerV4, steps,
                                                  std::vector<std::string>{"--expect", "4", "--timeout", "40"}));
  }
  std::this_thread::sleep_for(500ms);
  // The server answers every SYN (SYN cookies once its backlog is full), and its SYN-ACKs go
  // out through the gateway's client side, past the egress program, as they would to spoofed
  // sources on the Internet: the spoofed net is routed to the client namespace, which drops
  // them (not its addresses, no forwarding there). None of these handshakes completes.
  REQUIRE(env.topo.exec(Role::gw, {"ip", "route", "add", "10.77.0.0/16", "via", std::string(kClientV4)}).exit_code ==
          0);
  const auto flood = env.topo.exec(
      Role::client,
      {"/usr/bin/python3", cat(source_dir(), "/tests/e2e/synflood.py"), "--iface", "eth0", "--src-mac",
       mac_of(env.topo, Role::client, "eth0"), "--gw-mac", mac_of(env.topo, Role::gw, std::string(kGatewayClientIf)),
       "--dst", std::string(kServerV4), "--count", std::to_string(10 * kMaxFlows)},
      60s);
  INFO(flood.out << flood.err);
  REQUIRE(flood.exit_code == 0);
  CHECK(json::parse(flood.out)["sent"] == 10 * kMaxFlows);
  // new clients during and after the flood connect and are judged
  for (int i = 0; i < 3; ++i) {
    CHECK(curl(env.topo, "http://app.example.com/healthz").http_code == 200);
    CHECK(curl(env.topo, "http://app.example.com/admin").http_code == 403);
  }
  for (auto& c : clients) {
    auto r = c->wait(60s);
    INFO(r.json << r.err);
    CHECK(r.statuses == std::vector<int>{200, 200, 200, 403});
    CHECK_FALSE(r.reset);
  }
  const auto after = ctl_json(env.daemon, "stats");
  INFO(after.dump());
  CHECK(after["counters"]["handshakes"].get<uint64_t>() >=
        before["counters"]["handshakes"].get<uint64_t>() + 10 * kMaxFlows);
  // only real clients' handshakes became connections
  CHECK(after["counters"]["flows_new"].get<uint64_t>() < before["counters"]["flows_new"].get<uint64_t>() + 100);
  CHECK(after["fail_mode"]["no_flow_state"] == before["fail_mode"]["no_flow_state"]);
  CHECK(after["fail_mode"]["flow_table_full"] == before["fail_mode"]["flow_table_full"]);
  CHECK(after["flows"]["max"] == kMaxFlows);
}

// Forged ES384 tokens (each verify costs the daemon ~0.7 ms of one core here: a flood outruns
// it) from one client, as fast as it can open connections: the daemon's control socket keeps
// answering, and another client's new, valid tokens keep being verified in their turn.
TEST_CASE("a flood of forged tokens leaves the daemon responsive and other clients' tokens verified", "[flood][jwt]") {
  TempDir dir{"jwt-flood"};
  chmod(dir.path().c_str(), 0755);
  const std::string key = dir.file("ec384.pem"), jwks = dir.file("jwks.json");
  const std::string mint = source_dir() + "/tests/e2e/mint_jwt.py";
  {
    auto r = run({"openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-out", key}, 60s);
    REQUIRE(r.exit_code == 0);
    r = run({"/usr/bin/python3", mint, "jwks", key + ":ec-1"}, 30s);
    REQUIRE(r.exit_code == 0);
    std::ofstream(jwks) << r.out;
  }
  std::vector<std::string> tokens;  // the honest client's: each new to the cache
  for (int i = 0; i < 6; ++i) {
    auto r = run({"/usr/bin/python3", mint, "token", "--alg", "ES384", "--key", key, "--kid", "ec-1"}, 30s);
    REQUIRE(r.exit_code == 0);
    tokens.push_back(r.out.substr(0, r.out.find_last_not_of("\n") + 1));
  }
  Env env(cat(kHttpHead, R"(chain: [host, path, jwt]
default_action: deny
jwt_providers:
  main:
    issuer: "https://auth.example.com"
    audiences: ["api"]
    algorithms: [ES384]
    jwks_file: ")",
              jwks, R"("
hosts:
  - match: "app.example.com"
    routes:
      - path: { prefix: "/v1/" }
        jwt: main
        action: allow
)"));
  constexpr std::string_view kHonest = "198.51.100.3";  // another address of the client namespace
  REQUIRE(env.topo.exec(Role::client, {"ip", "addr", "add", cat(kHonest, "/24"), "dev", "eth0"}).exit_code == 0);
  const auto before = ctl_json(env.daemon, "stats");
  Process flood(env.topo.in(Role::client, {"/usr/bin/python3", source_dir() + "/tests/e2e/jwtflood.py", "--dst",
                                           std::string(kServerV4), "--seconds", "20", "--conns", "128"}),
                dir.file("flood.out"), dir.file("flood.err"));
  std::this_thread::sleep_for(2s);  // the flood's first few thousand tokens are queued by now
  std::vector<long> answer_ms, policyctl_ms;
  std::vector<int> honest;
  for (const auto& t : tokens) {
    for (int i = 0; i < 3; ++i) {
      answer_ms.push_back(status_answer_ms(env.daemon));
      const auto t0 = std::chrono::steady_clock::now();
      auto r = ctl(env.daemon, {"-o", "json", "status"});
      policyctl_ms.push_back(
          std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count());
      CHECK(r.exit_code == 0);
      std::this_thread::sleep_for(100ms);
    }
    auto r = curl(env.topo, "http://app.example.com/v1/honest",
                  {"--interface", std::string(kHonest), "-H", "Authorization: Bearer " + t});
    INFO("curl exit " << r.curl_exit << " " << r.err << r.headers);
    honest.push_back(r.http_code);
  }
  const bool flooding = flood.running();
  const auto mid = ctl_json(env.daemon, "stats");
  REQUIRE(flood.wait(60s).value_or(-1) == 0);
  std::ifstream in(dir.file("flood.out"));
  const auto sent = json::parse(in);
  INFO("flood: " << sent.dump() << "\nstats during it: " << mid["jwt"].dump());
  auto list = [](const std::vector<long>& v) {
    std::string out;
    for (auto x : v) out += cat(x, " ");
    return out;
  };
  INFO("the daemon answered status in (ms): " << list(answer_ms) << "\npolicyctl status took (ms): "
                                                << list(policyctl_ms));
  CHECK(flooding);  // everything above ran while the flood did
  for (auto v : answer_ms) {
    CHECK(v >= 0);
    CHECK(v < 100);
  }
  CHECK(honest == std::vector<int>(tokens.size(), 200));
  // the flood outran the verifier: the daemon dropped what did not fit, and said so
  const auto& d0 = before["jwt"]["daemon"];
  const auto& d1 = mid["jwt"]["daemon"];
  CHECK(d1["dropped"].get<uint64_t>() > d0["dropped"].get<uint64_t>());
  CHECK(d1["received"].get<uint64_t>() > d0["received"].get<uint64_t>() + 1000);
}

// New keys in bulk (issue 17): a `host` key on a wildcard host lets a client make a new key with
// every request. 1 200 of them against a bucket table of 1024 (`max_flows`): they fill their
// limit's share and spread over its shared buckets; new clients of another limit each get a
// bucket and a burst of their own (with one table for all, they shared one bucket).
TEST_CASE("a flood of new rate-limit keys leaves other limits' new clients their own buckets", "[flood][ratelimit]") {
  Env env(cat(kHttpHead, R"(chain: [host, path, ratelimit]
default_action: deny
limits:
  max_flows: )",
              kMaxFlows, R"(
ratelimits:
  per_host:
    key: host
    rate: 1/h
    burst: 1
  per_client:
    key: client_ip
    rate: 1/h
    burst: 2
hosts:
  - match: "*.example.com"
    routes:
      - path: { prefix: "/h/" }
        ratelimit: per_host
        action: allow
      - path: { prefix: "/c/" }
        ratelimit: per_client
        action: allow
)"));
  const auto flood = env.topo.exec(Role::client,
                                   {"/usr/bin/python3", cat(source_dir(), "/tests/e2e/keyflood.py"), "--dst",
                                    std::string(kServerV4), "--path", "/h/x", "--count", "1200"},
                                   120s);
  INFO(flood.out << flood.err);
  REQUIRE(flood.exit_code == 0);
  const auto got = json::parse(flood.out);
  const int share = (kMaxFlows - 2 * 16) / 2;  // the table less 16 shared buckets a limit, halved
  const auto statuses = got["statuses"];
  CHECK(statuses.value("200", 0) > share);
  CHECK(statuses.value("200", 0) <= share + 16);
  CHECK(statuses.value("429", 0) >= 1200 - share - 16);
  const auto stats = ctl_json(env.daemon, "stats");
  INFO(stats["ratelimit"].dump());
  CHECK(stats["ratelimit"]["shared_bucket"].get<uint64_t>() >= 1200 - share);
  for (const char* addr : {"198.51.100.11", "198.51.100.12", "198.51.100.13"}) {
    INFO(addr);
    REQUIRE(env.topo.exec(Role::client, {"ip", "addr", "add", cat(addr, "/24"), "dev", "eth0"}).exit_code == 0);
    std::vector<int> codes;
    for (int i = 0; i < 3; ++i)
      codes.push_back(curl(env.topo, "http://app.example.com/c/x", {"--interface", addr}).http_code);
    CHECK(codes == std::vector<int>{200, 200, 429});
  }
}

// Slow heads (issue 17): one client holds half-sent heads open on 6 000 connections, more than
// the gateway's table of partial heads holds (4096). It keeps a share of the table (256); its other
// half heads get the fail mode. Another client's head, sent in two segments two seconds apart
// meanwhile, is still whole when its second half comes, and served.
TEST_CASE("a slow-head flood leaves other clients' split heads whole", "[flood]") {
  Env env(http_policy());
  constexpr std::string_view kSlow = "198.51.100.21";  // the flood's address
  REQUIRE(env.topo.exec(Role::client, {"ip", "addr", "add", cat(kSlow, "/24"), "dev", "eth0"}).exit_code == 0);
  TempDir dir{"slow-heads"};
  const std::string go_on = dir.file("second-half");
  const std::string req = http_request("GET", "/healthz", "app.example.com");
  RawClient honest(env.topo, kServerV4,
                   json::array({json{{"send", req.substr(0, 20)}}, json{{"wait_file", go_on}, {"max_ms", 30000}},
                                json{{"send", req.substr(20)}}, json{{"await", 1}}}),
                   {"--expect", "1", "--timeout", "40"});
  std::this_thread::sleep_for(500ms);  // its first half has passed the gateway
  const auto before = ctl_json(env.daemon, "stats");
  // the flood holds its half heads open (slowloris) until the honest head has ended
  Process flood(env.topo.in(Role::client, {"/usr/bin/python3", cat(source_dir(), "/tests/e2e/slowheads.py"), "--dst",
                                           std::string(kServerV4), "--src", std::string(kSlow), "--count", "6000",
                                           "--hold-s", "20"}),
                dir.file("flood.out"), dir.file("flood.err"));
  json sent;
  for (int i = 0; i < 600 && sent.is_null(); ++i) {  // bounded: 60 s
    std::ifstream in(dir.file("flood.out"));
    std::string line;
    if (std::getline(in, line) && !line.empty()) sent = json::parse(line);
    else std::this_thread::sleep_for(100ms);
  }
  INFO("flood: " << (sent.is_null() ? std::string("no summary") : sent.dump()));
  REQUIRE(!sent.is_null());
  CHECK(sent["sent"].get<int>() >= 5900);
  CHECK(flood.running());  // still holding them
  std::ofstream(go_on) << "go\n";
  auto r = honest.wait(60s);
  INFO(r.json << r.err);
  CHECK(r.statuses == std::vector<int>{200});
  const auto after = ctl_json(env.daemon, "stats");
  INFO(after["fail_mode"].dump());
  auto partial = [](const json& j) { return j["fail_mode"].value("partial_heads_per_client", uint64_t{0}); };
  CHECK(partial(after) >= partial(before) + 5000);
}

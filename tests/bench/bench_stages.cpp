// Micro-benchmark of the HTTP dataplane through BPF_PROG_TEST_RUN: ns per packet for each
// case, and its ratio to an empty TC program measured in the same run. Not a test: it asserts
// nothing about time. `--quick` runs every case briefly (the suite runs that, so this cannot
// rot); the full run takes the median of several rounds. `--json FILE` also writes every
// figure, with each round's value, to FILE (scripts/bench reads it); the table on stdout stays.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <fstream>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "chain/compile.hpp"
#include "chain/kernel/dataplane.hpp"
#include "config/loader.hpp"
#include "empty.skel.h"
#include "chain/jwt/jwt.hpp"
#include "packet.hpp"

#include <nlohmann/json.hpp>

using namespace policyd;
using policyd::test::Packet;

namespace {

// The policy measured: the shipped example (so the figures are for a policy users start from).
const char* kPolicyFile = POLICYD_SOURCE_DIR "/config/examples/http-basic.yaml";
const char* kTlsPolicyFile = POLICYD_SOURCE_DIR "/config/examples/tls-basic.yaml";

struct Run {
  double ns = 0;
  int retval = -1;
};

// repeat > 1: the kernel's own average over `repeat` runs of the same packet.
Run test_run(int fd, const std::vector<uint8_t>& pkt, uint32_t repeat) {
  std::vector<uint8_t> out(pkt.size() + 256);
  LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = pkt.data(), .data_out = out.data(),
              .data_size_in = static_cast<uint32_t>(pkt.size()), .data_size_out = static_cast<uint32_t>(out.size()),
              .repeat = static_cast<int>(repeat));
  if (bpf_prog_test_run_opts(fd, &o) != 0) {
    std::perror("BPF_PROG_TEST_RUN");
    std::exit(1);
  }
  return Run{static_cast<double>(o.duration), static_cast<int>(o.retval)};
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

struct BenchResult {
  std::string name;
  double ns = 0, lo = 0, hi = 0;  // median and spread over rounds
  double base = 0;                // the empty program, measured the same way
  std::vector<double> rounds, base_rounds;  // each round's value (subject, empty program)
};

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--json") == 0 && i + 1 < argc) {
      json_path = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--quick] [--json FILE]\n", argv[0]);
      return 2;
    }
  }
  const int rounds = quick ? 1 : 7;
  const uint32_t repeat = quick ? 1000 : 200000;
  const int singles = quick ? 200 : 20000;

  if (unshare(CLONE_NEWNET) != 0 || std::system("ip link set lo up") != 0) {
    std::perror("bench needs root (private network namespace)");
    return 1;
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(0, &set);
  sched_setaffinity(0, sizeof(set), &set);

  auto* empty = empty_bpf__open_and_load();
  if (!empty) {
    std::perror("loading the empty program");
    return 1;
  }
  int empty_fd = bpf_program__fd(empty->progs.pd_bench_empty);
  chain::Dataplane::Options opts;
  opts.max_flows = 65536;
  auto dp = chain::Dataplane::load(opts);
  if (!dp) {
    std::fprintf(stderr, "%s\n%s\n", dp.error().message.c_str(), dp.error().detail.c_str());
    return 1;
  }
  auto policy = config::load_policy_file(kPolicyFile);
  uint32_t gen = (*dp)->active_gen() ^ 1;
  auto tables = chain::compile(policy, gen, (*dp)->hash_seed());
  if (!tables || !(*dp)->commit(*tables, gen, 1)) {
    std::fprintf(stderr, "cannot commit the bench policy\n");
    return 1;
  }
  int entry_fd = (*dp)->entry_prog_fd();
  int flows_fd = (*dp)->map_fd(policyd::abi::Map::flows);

  std::string get = "GET /api/items?id=42 HTTP/1.1\r\nHost: app.example.com\r\nUser-Agent: curl/7.88.1\r\n"
                    "Accept: */*\r\n\r\n";
  Packet syn;
  syn.flags = test::kSyn;
  syn.seq = 999;
  syn.ack = 0;
  // the handshake (SYN, then its ACK) creates the flow: next head at seq 1000
  auto handshake = [](int fd, Packet s) {
    test_run(fd, s.build(), 1);
    s.flags = test::kAck;
    s.seq += 1;
    test_run(fd, s.build(), 1);
  };
  handshake(entry_fd, syn);

  Packet non_listener;
  non_listener.dport = 8080;
  non_listener.payload = get;
  Packet first;
  first.payload = get;
  // an established, allowed flow carrying body bytes of an earlier request
  Packet body;
  body.sport = 40001;
  Packet syn2 = syn;
  syn2.sport = 40001;
  test_run(entry_fd, syn2.build(), 1);
  // the server's side of that flow, through the program at egress: its SYN-ACK (window scale
  // 7), then a 1400-byte response segment; and a server packet of no flow
  int egress_fd = (*dp)->egress_prog_fd();
  Packet synack;
  synack.src = body.dst;
  synack.dst = body.src;
  synack.sport = body.dport;
  synack.dport = body.sport;
  synack.flags = test::kSyn | test::kAck;
  synack.seq = body.ack - 1;
  synack.ack = 1000;
  synack.tcp_options = std::string("\x01\x03\x03\x07", 4);
  test_run(egress_fd, synack.build(), 1);
  Packet response = synack;
  response.flags = test::kAck | test::kPsh;
  response.seq = body.ack;
  response.tcp_options.clear();
  response.payload = std::string(1400, 'r');
  Packet stranger = response;
  stranger.dport = 40999;
  Packet post = body;
  post.seq = 1000;
  post.payload = "POST /api/upload HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 100000000\r\n\r\n";
  if (test_run(entry_fd, post.build(), 1).retval != 0) {
    std::fprintf(stderr, "bench policy does not allow the POST\n");
    return 1;
  }
  body.seq = 1000 + static_cast<uint32_t>(post.payload.size());
  body.payload = std::string(1400, 'x');

  // first segment: every run must find the head at the flow's next sequence number
  pd_flow_key key{};
  {
    auto f = first.build();
    (void)f;
    inet_pton(AF_INET, first.src.c_str(), &key.saddr[0]);
    inet_pton(AF_INET, first.dst.c_str(), &key.daddr[0]);
    key.sport = htons(first.sport);
    key.dport = htons(first.dport);
    key.family = 4;
  }
  pd_flow fresh{};
  if (bpf_map_lookup_elem(flows_fd, &key, &fresh) != 0) {
    std::fprintf(stderr, "bench flow missing\n");
    return 1;
  }
  auto run_single = [&](int fd, const std::vector<uint8_t>& pkt, bool reset_flow) {
    std::vector<double> ns;
    ns.reserve(static_cast<size_t>(singles));
    for (int i = 0; i < singles; ++i) {
      if (reset_flow) bpf_map_update_elem(flows_fd, &key, &fresh, BPF_EXIST);
      ns.push_back(test_run(fd, pkt, 1).ns);
    }
    return median(ns);
  };

  auto first_pkt = first.build();
  if (test_run(entry_fd, first_pkt, 1).retval != 0) {
    std::fprintf(stderr, "bench policy does not allow the GET\n");
    return 1;
  }

  // ---- TLS: a second dataplane with the shipped TLS example
  auto tls_dp = chain::Dataplane::load(opts);
  if (!tls_dp) {
    std::fprintf(stderr, "%s\n", tls_dp.error().message.c_str());
    return 1;
  }
  {
    auto tls_policy = config::load_policy_file(kTlsPolicyFile);
    uint32_t g = (*tls_dp)->active_gen() ^ 1;
    auto t = chain::compile(tls_policy, g, (*tls_dp)->hash_seed());
    if (!t || !(*tls_dp)->commit(*t, g, 1)) {
      std::fprintf(stderr, "cannot commit the TLS bench policy\n");
      return 1;
    }
  }
  int tls_fd = (*tls_dp)->entry_prog_fd();
  int tls_flows = (*tls_dp)->map_fd(policyd::abi::Map::flows);
  Packet tsyn;
  tsyn.dport = 443;
  tsyn.sport = 40200;
  tsyn.flags = test::kSyn;
  tsyn.seq = 999;
  tsyn.ack = 0;
  handshake(tls_fd, tsyn);
  pd_flow_key tkey = key;
  tkey.sport = htons(40200);
  tkey.dport = htons(443);
  pd_flow tfresh{};
  if (bpf_map_lookup_elem(tls_flows, &tkey, &tfresh) != 0) {
    std::fprintf(stderr, "TLS bench flow missing\n");
    return 1;
  }
  Packet hello1 = tsyn;
  hello1.flags = test::kAck | test::kPsh;
  hello1.seq = 1000;
  hello1.payload = test::client_hello(test::Hello{.sni = "www.example.com"});
  test::Hello big;
  big.sni = "www.example.com";
  big.key_share = 1216;
  big.padding = 400;
  big.sni_last = true;
  std::string big_hello = test::client_hello(big);
  Packet seg1 = hello1, seg2 = hello1;
  seg1.payload = big_hello.substr(0, 1400);
  seg2.seq = 1000 + 1400;
  seg2.payload = big_hello.substr(1400);
  auto one_seg = hello1.build(), s1 = seg1.build(), s2 = seg2.build();
  if (test_run(tls_fd, one_seg, 1).retval != 0) {
    std::fprintf(stderr, "bench TLS policy does not allow www.example.com\n");
    return 1;
  }
  auto tls_single = [&](const std::vector<uint8_t>* before, const std::vector<uint8_t>& pkt) {
    std::vector<double> ns;
    ns.reserve(static_cast<size_t>(singles));
    for (int i = 0; i < singles; ++i) {
      bpf_map_update_elem(tls_flows, &tkey, &tfresh, BPF_EXIST);
      if (before) test_run(tls_fd, *before, 1);
      ns.push_back(test_run(tls_fd, pkt, 1).ns);
    }
    return median(ns);
  };

  // ---- JWT: a third dataplane, a route that requires an HS256 token (made by PyJWT)
  char keydir[] = "/tmp/pd-bench-jwt.XXXXXX";
  if (!mkdtemp(keydir)) {
    std::perror("mkdtemp");
    return 1;
  }
  const std::string kd = keydir;
  auto sh = [](const std::string& cmd) {
    if (std::system(cmd.c_str()) != 0) {
      std::fprintf(stderr, "failed: %s\n", cmd.c_str());
      std::exit(1);
    }
  };
  const std::string mint = std::string("/usr/bin/python3 ") + POLICYD_SOURCE_DIR + "/tests/e2e/mint_jwt.py";
  sh("echo bench-secret-0123456789 > " + kd + "/main.key");
  sh("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out " + kd + "/rsa.pem 2>/dev/null");
  sh("openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out " + kd + "/ec.pem 2>/dev/null");
  sh(mint + " jwks " + kd + "/rsa.pem:rsa-1 " + kd + "/ec.pem:ec-1 > " + kd + "/jwks.json");
  auto token_of = [&](const std::string& alg, const std::string& key, const std::string& kid) {
    sh(mint + " token --exp-in 86400 --alg " + alg + " --key " + kd + "/" + key + (kid.empty() ? "" : " --kid " + kid) +
       " > " + kd + "/token");
    std::ifstream in(kd + "/token");
    std::string t;
    std::getline(in, t);
    return t;
  };
  const std::string hs_token = token_of("HS256", "main.key", "");
  const std::string rs_token = token_of("RS256", "rsa.pem", "rsa-1");
  const std::string es_token = token_of("ES256", "ec.pem", "ec-1");
  const std::string jwt_yaml = "version: 1\ninterfaces: [\"lo\"]\nlisteners:\n  - name: web\n    port: 80\n"
                               "    protocol: http\nchain: [host, path, jwt, ratelimit]\njwt_providers:\n  main:\n"
                               "    issuer: \"https://auth.example.com\"\n    audiences: [\"api\"]\n"
                               "    algorithms: [HS256, RS256, ES256]\n    secret_file: \"" + kd + "/main.key\"\n"
                               "    jwks_file: \"" + kd + "/jwks.json\"\nhosts:\n  - match: \"app.example.com\"\n"
                               "    routes:\n      - path: { prefix: \"/api/\" }\n        jwt: main\n"
                               "        action: allow\n      - path: { prefix: \"/opn/\" }\n        action: allow\n"
                               "      - path: { prefix: \"/rlm/\" }\n        ratelimit: lots\n        action: allow\n"
                               "ratelimits:\n  lots:\n    key: client_ip\n    rate: 1000000000/s\n";
  auto jwt_dp = chain::Dataplane::load(opts);
  auto jwt_policy = config::load_policy_string(jwt_yaml, "bench-jwt.yaml");
  auto material = chain::read_key_material(jwt_policy);
  if (!jwt_dp || !material) {
    std::fprintf(stderr, "cannot load the JWT bench dataplane or keys\n");
    return 1;
  }
  {
    uint32_t g = (*jwt_dp)->active_gen() ^ 1;
    auto t = chain::compile(jwt_policy, g, (*jwt_dp)->hash_seed(), &*material);
    if (!t || !(*jwt_dp)->commit(*t, g, 1)) {
      std::fprintf(stderr, "cannot commit the JWT bench policy\n");
      return 1;
    }
  }
  int jwt_fd = (*jwt_dp)->entry_prog_fd();
  int jwt_flows = (*jwt_dp)->map_fd(policyd::abi::Map::flows);
  int jwt_cache = (*jwt_dp)->map_fd(policyd::abi::Map::jwt_cache);
  Packet jsyn = syn;
  jsyn.sport = 40300;
  handshake(jwt_fd, jsyn);
  pd_flow_key jkey = key;
  jkey.sport = htons(40300);
  pd_flow jfresh{};
  if (bpf_map_lookup_elem(jwt_flows, &jkey, &jfresh) != 0) {
    std::fprintf(stderr, "JWT bench flow missing\n");
    return 1;
  }
  Packet jget = jsyn;
  jget.flags = test::kAck | test::kPsh;
  jget.seq = 1000;
  jget.payload = "GET /api/items?id=42 HTTP/1.1\r\nHost: app.example.com\r\nAuthorization: Bearer " + hs_token +
                 "\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n";
  auto jget_pkt = jget.build();
  Packet jopen = jget;  // the same head to a route without jwt: what the stage adds is the difference
  jopen.payload.replace(jopen.payload.find("/api/"), 5, "/opn/");
  auto jopen_pkt = jopen.build();
  Packet plain = jget;  // no token: a route without anything, and one with a rate limit
  plain.payload = "GET /opn/items?id=42 HTTP/1.1\r\nHost: app.example.com\r\nUser-Agent: curl/7.88.1\r\n"
                  "Accept: */*\r\n\r\n";
  Packet limited = plain;
  limited.payload.replace(limited.payload.find("/opn/"), 5, "/rlm/");
  auto plain_pkt = plain.build(), limited_pkt = limited.build();
  if (test_run(jwt_fd, jget_pkt, 1).retval != 0) {
    std::fprintf(stderr, "the JWT bench policy does not allow its token\n");
    return 1;
  }
  auto clear_cache = [&] {
    pd_jwt_cache_key k{}, next{};
    while (bpf_map_get_next_key(jwt_cache, nullptr, &next) == 0) {
      k = next;
      bpf_map_delete_elem(jwt_cache, &k);
    }
  };
  auto jwt_single = [&](bool miss, const std::vector<uint8_t>& pkt) {
    std::vector<double> ns;
    ns.reserve(static_cast<size_t>(singles));
    for (int i = 0; i < singles; ++i) {
      bpf_map_update_elem(jwt_flows, &jkey, &jfresh, BPF_EXIST);
      if (miss) clear_cache();
      ns.push_back(test_run(jwt_fd, pkt, 1).ns);
    }
    return median(ns);
  };

  std::vector<BenchResult> results;
  auto measure = [&](const std::string& name, std::function<double()> subject, std::function<double()> base) {
    std::vector<double> s, b;
    for (int r = 0; r < rounds; ++r) {  // interleaved with the baseline: drift hits both
      b.push_back(base());
      s.push_back(subject());
    }
    BenchResult res{name, median(s), *std::min_element(s.begin(), s.end()), *std::max_element(s.begin(), s.end()),
               median(b), s, b};
    results.push_back(res);
  };
  auto empty_rep = [&] { return test_run(empty_fd, first_pkt, repeat).ns; };
  measure("non-listener packet", [&] { return test_run(entry_fd, non_listener.build(), repeat).ns; }, empty_rep);
  measure("established flow (body segment, fast path)", [&] { return test_run(entry_fd, body.build(), repeat).ns; },
          empty_rep);
  measure("server's packet of a flow (egress: ACK, window)",
          [&] { return test_run(egress_fd, response.build(), repeat).ns; }, empty_rep);
  measure("server's packet of no flow (egress)", [&] { return test_run(egress_fd, stranger.build(), repeat).ns; },
          empty_rep);
  measure("first segment of an allowed GET (host+path)", [&] { return run_single(entry_fd, first_pkt, true); },
          [&] { return run_single(empty_fd, first_pkt, false); });

  measure("TLS ClientHello in one segment (sni)", [&] { return tls_single(nullptr, one_seg); },
          [&] { return run_single(empty_fd, one_seg, false); });
  measure("TLS ClientHello, 2nd of two segments (sni)", [&] { return tls_single(&s1, s2); },
          [&] { return run_single(empty_fd, s2, false); });
  measure("TLS ClientHello, 1st of two segments (kept)", [&] { return tls_single(nullptr, s1); },
          [&] { return run_single(empty_fd, s1, false); });

  measure("GET, route without a limit", [&] { return jwt_single(false, plain_pkt); },
          [&] { return run_single(empty_fd, plain_pkt, false); });
  measure("GET, route with a rate limit (token taken)", [&] { return jwt_single(false, limited_pkt); },
          [&] { return run_single(empty_fd, limited_pkt, false); });
  measure("GET with a token, route without jwt", [&] { return jwt_single(false, jopen_pkt); },
          [&] { return run_single(empty_fd, jopen_pkt, false); });
  measure("GET + HS256 token, cache hit", [&] { return jwt_single(false, jget_pkt); },
          [&] { return run_single(empty_fd, jget_pkt, false); });
  measure("GET + HS256 token, cache miss (HMAC in dataplane)", [&] { return jwt_single(true, jget_pkt); },
          [&] { return run_single(empty_fd, jget_pkt, false); });

  // ---- the daemon's side: RS256 / ES256 verifications per second, against openssl speed
  auto keys = jwt::load_keys(jwt_policy.jwt_providers.at("main"));
  if (!keys) {
    std::fprintf(stderr, "%s\n", keys.error().message.c_str());
    return 1;
  }
  auto per_second = [&](const std::string& token) {
    const auto& p = jwt_policy.jwt_providers.at("main");
    const int n = quick ? 50 : 2000;
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i)
      if (jwt::evaluate(token, p, *keys, nullptr, std::time(nullptr)) != PD_J_OK) {
        std::fprintf(stderr, "bench token refused\n");
        std::exit(1);
      }
    return n / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  // `openssl speed` prints "... verify/s" columns; take verify/s for rsa2048 and ecdsa p256
  auto openssl_verify = [&](const std::string& algo, int column_from_end) {
    std::string out = kd + "/speed";
    sh("openssl speed -seconds " + std::string(quick ? "1" : "3") + " " + algo + " > " + out + " 2>/dev/null");
    std::ifstream in(out);
    std::string line, last;
    while (std::getline(in, line))
      if (!line.empty()) last = line;
    std::vector<std::string> words;
    for (size_t at = 0; at < last.size();) {
      size_t e = last.find_first_of(" \t", at);
      if (e == std::string::npos) e = last.size();
      if (e > at) words.push_back(last.substr(at, e - at));
      at = e + 1;
    }
    return words.size() >= static_cast<size_t>(column_from_end) ? std::atof(words[words.size() - column_from_end].c_str())
                                                                  : 0.0;
  };
  const double rs = per_second(rs_token), es = per_second(es_token);
  const double rs_ssl = openssl_verify("rsa2048", 1), es_ssl = openssl_verify("ecdsap256", 1);
  sh("rm -rf " + kd);

  std::printf("policyd dataplane, BPF_PROG_TEST_RUN (%s: %d rounds; repeat %u, single-shot medians of %d)\n",
              quick ? "quick" : "full", rounds, repeat, singles);
  std::printf("%-46s %10s %16s %10s %8s\n", "case", "ns/packet", "spread", "empty ns", "ratio");
  for (const auto& r : results)
    std::printf("%-46s %10.1f %7.1f..%-7.1f %10.1f %7.2fx\n", r.name.c_str(), r.ns, r.lo, r.hi, r.base,
                r.base > 0 ? r.ns / r.base : 0.0);
  std::printf("(single-shot cases and their baselines are single runs: each includes the kernel's timer cost)\n");
  std::printf("\ndaemon-side verification (jwt::evaluate: parse, JWKS key, signature, claims), one core\n");
  std::printf("%-46s %10.0f /s   openssl speed verify %10.0f /s   ratio %.2f\n", "RS256 (RSA 2048)", rs, rs_ssl,
              rs_ssl > 0 ? rs / rs_ssl : 0.0);
  std::printf("%-46s %10.0f /s   openssl speed verify %10.0f /s   ratio %.2f\n", "ES256 (P-256)", es, es_ssl,
              es_ssl > 0 ? es / es_ssl : 0.0);
  empty_bpf__destroy(empty);

  if (!json_path.empty()) {
    nlohmann::json j;
    j["mode"] = quick ? "quick" : "full";
    j["rounds"] = rounds;
    j["repeat"] = repeat;
    j["singles"] = singles;
    j["note"] = "ns per packet; repeat cases: the kernel's average over `repeat` runs per round; single-shot cases: "
                "the median of `singles` single runs per round (each includes the kernel's timer cost)";
    for (const auto& r : results)
      j["cases"].push_back({{"name", r.name}, {"ns_median", r.ns}, {"ns_min", r.lo}, {"ns_max", r.hi},
                            {"empty_ns_median", r.base}, {"ratio", r.base > 0 ? r.ns / r.base : 0.0},
                            {"rounds_ns", r.rounds}, {"empty_rounds_ns", r.base_rounds}});
    j["daemon"] = nlohmann::json::array(
        {{{"name", "RS256 (RSA 2048)"}, {"per_second", rs}, {"openssl_verify_per_second", rs_ssl},
          {"ratio", rs_ssl > 0 ? rs / rs_ssl : 0.0}},
         {{"name", "ES256 (P-256)"}, {"per_second", es}, {"openssl_verify_per_second", es_ssl},
          {"ratio", es_ssl > 0 ? es / es_ssl : 0.0}}});
    std::ofstream out(json_path, std::ios::trunc);
    out << j.dump(2) << "\n";
    if (!out.flush()) {
      std::fprintf(stderr, "cannot write %s\n", json_path.c_str());
      return 1;
    }
  }
  return 0;
}

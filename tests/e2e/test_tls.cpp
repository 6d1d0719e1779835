// TLS listeners and the sni stage end to end: real clients (curl, openssl s_client) and
// crafted ClientHellos (clienthello.py through rawclient.py --raw) through the gateway
// to nginx's TLS server (nginx-backend start-tls).
//
// What the gateway must do: the verdict is taken on the ClientHello's server_name and
// holds for the connection. Allowed: the handshake goes through untouched (the client
// gets nginx's ServerHello). Denied (deny or reset): RST both ways, so the client sees a
// reset at once and the server keeps no connection. drop: silence. A ClientHello in
// several segments or records is judged when it is complete (earlier segments pass); a
// malformed one gets the fail mode and is counted.
#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "common.hpp"

using namespace policyd::e2e;
using nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

namespace {

const std::string kV4{kServerV4};
const std::string kV6{kServerV6};

// --- real clients -----------------------------------------------------------------

struct Timed {
  CurlResult r;
  Millis elapsed;
};

// curl -k https://NAME/PATH to the server's address (v4 or v6) through the gateway; the
// URL's host is the SNI curl sends (curl lower-cases it and drops a trailing dot).
Timed https(const Topology& topo, std::string_view name, std::string_view path, bool v6 = false,
            std::vector<std::string> extra = {}) {
  std::vector<std::string> args{"-k", "--connect-to",
                                v6 ? cat("::[", kServerV6, "]:") : cat("::", kServerV4, ":")};
  args.insert(args.end(), extra.begin(), extra.end());
  const auto start = SteadyClock::now();
  auto r = curl(topo, cat("https://", name, path), args);
  return {r, std::chrono::duration_cast<Millis>(SteadyClock::now() - start)};
}

void check_tls_ok(const Timed& t, std::string_view sni, std::string_view path) {
  const auto& r = t.r;
  INFO("curl exit " << r.curl_exit << ", stderr: " << r.err << "\nheaders:\n" << r.headers
                    << "body: " << r.body);
  CHECK(r.curl_exit == 0);
  CHECK(r.http_code == 200);
  CHECK(r.body == cat("tls ok ", sni, " ", path, "\n"));
}

// The client saw a reset during the handshake, promptly: not a timeout, no response.
// Observed (curl 7.88.1, OpenSSL 3.0): exit 35, "Recv failure: Connection reset by peer".
void check_curl_reset(const Timed& t) {
  const auto& r = t.r;
  INFO("curl exit " << r.curl_exit << " after " << t.elapsed.count() << " ms, stderr: " << r.err
                    << "\nbody: " << r.body);
  CHECK(r.http_code == 0);
  CHECK((r.curl_exit == 35 || r.curl_exit == 56));
  CHECK(Catch::toLower(r.err).find("reset") != std::string::npos);
  CHECK(t.elapsed < 2500ms);
}

// openssl s_client completed its handshake (and closed on its EOF on stdin).
void check_s_client_ok(const SClientResult& r) {
  INFO("s_client exit " << r.exit_code << " after " << r.elapsed.count() << " ms\n" << r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.handshake);
  CHECK(!r.protocol.empty());
}

// openssl s_client was reset during the handshake: exit 1, "errno=104" (ECONNRESET), promptly.
void check_s_client_reset(const SClientResult& r) {
  INFO("s_client exit " << r.exit_code << " after " << r.elapsed.count() << " ms\n" << r.out << r.err);
  CHECK(!r.timed_out);
  CHECK(r.exit_code == 1);
  CHECK(!r.handshake);
  CHECK(r.err.find("errno=104") != std::string::npos);
  CHECK(r.elapsed < 2500ms);
}

// --- crafted ClientHellos -----------------------------------------------------------

// The server answered with its ServerHello: the ClientHello got through whole.
void check_raw_allowed(const RawResult& r) {
  INFO(r.json << r.err);
  CHECK(r.connected);
  CHECK(!r.reset);
  CHECK(got_server_hello(r));
}

// The gateway reset the connection before the server could answer anything.
void check_raw_reset(const RawResult& r) {
  INFO(r.json << r.err);
  CHECK(r.connected);
  CHECK(r.reset);
  CHECK(r.bytes == 0);
}

// Silence: no byte, no reset, no close (the client gave up after --idle-ms).
void check_raw_silent(const RawResult& r) {
  INFO(r.json << r.err);
  CHECK(r.connected);
  CHECK(!r.reset);
  CHECK(!r.closed);
  CHECK(r.bytes == 0);
}

enum class Want { allowed, reset, silent };

void check_raw(const RawResult& r, Want want) {
  switch (want) {
    case Want::allowed: check_raw_allowed(r); break;
    case Want::reset: check_raw_reset(r); break;
    case Want::silent: check_raw_silent(r); break;
  }
}

struct RawJob {
  std::string what;
  json steps;
  Want want;
  std::string host = kV4;
};

// Runs every job as its own connection, up to 12 at a time, and checks each outcome.
void run_jobs(const Topology& topo, const std::vector<RawJob>& jobs) {
  constexpr std::size_t kParallel = 12;
  for (std::size_t at = 0; at < jobs.size(); at += kParallel) {
    const std::size_t end = std::min(jobs.size(), at + kParallel);
    std::vector<std::unique_ptr<RawClient>> clients;
    for (std::size_t i = at; i < end; ++i)
      clients.push_back(std::make_unique<RawClient>(topo, jobs[i].host, jobs[i].steps, raw_tls_args()));
    for (std::size_t i = at; i < end; ++i) {
      INFO(jobs[i].what);
      auto r = clients[i - at]->wait();
      check_raw(r, jobs[i].want);
    }
  }
}

// clienthello.py --format steps with the given options.
json hello_steps(std::vector<std::string> args) {
  args.push_back("--format");
  args.push_back("steps");
  return client_hello(args);
}

struct HelloInfo {
  std::size_t length = 0;
  std::size_t sni_start = 0;  // wire offsets of the name bytes: [sni_start, sni_end)
  std::size_t sni_end = 0;
};

HelloInfo hello_info(std::vector<std::string> args) {
  args.push_back("--format");
  args.push_back("info");
  auto j = client_hello(args);
  HelloInfo h;
  h.length = j.at("length").get<std::size_t>();
  if (!j.at("sni").is_null()) {
    h.sni_start = j.at("sni").at(0).get<std::size_t>();
    h.sni_end = j.at("sni").at(1).get<std::size_t>();
  }
  return h;
}

std::string offsets(std::initializer_list<std::size_t> cuts) {
  std::string s;
  for (auto c : cuts) {
    if (!s.empty()) s.push_back(',');
    s.append(std::to_string(c));
  }
  return s;
}

// policyctl -o json stats against the daemon; the "arguments" object.
json stats(const Daemon& d) {
  auto r = run({POLICYCTL_BIN, "--socket", d.socket_path(), "-o", "json", "stats"}, 30s);
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  auto j = json::parse(r.out);
  return j.contains("arguments") ? j["arguments"] : j;
}

// The fail-mode counters of policyctl stats ({reason: count}).
json fail_counters(const Daemon& d) {
  auto s = stats(d);
  INFO(s.dump());
  REQUIRE(s.contains("fail_mode"));
  return s.at("fail_mode");
}

// Fail-mode events for a malformed ClientHello: the four reasons of chain/abi.cpp.
std::uint64_t bad_client_hellos(const json& fail) {
  INFO(fail.dump());
  std::uint64_t n = 0;
  for (const char* reason : {"not_tls", "not_client_hello", "client_hello_lengths", "bad_server_name"}) {
    REQUIRE(fail.contains(reason));
    n += fail.at(reason).get<std::uint64_t>();
  }
  return n;
}

}  // namespace

TEST_CASE("TLS: real clients are allowed or reset by their SNI", "[e2e][tls]") {
  TlsEnv env(tls_policy());
  auto& topo = env.topo;

  SECTION("curl") {
    // exact rule; --resolve as a client would use it (the SNI is the URL's host)
    {
      const auto start = SteadyClock::now();
      auto r = curl(topo, "https://api.example.com/x",
                    {"-k", "--resolve", cat("api.example.com:443:", kServerV4)});
      check_tls_ok({r, std::chrono::duration_cast<Millis>(SteadyClock::now() - start)},
                   "api.example.com", "/x");
    }
    check_tls_ok(https(topo, "b.a.example.com", "/deep"), "b.a.example.com", "/deep");  // *.example.com
    check_tls_ok(https(topo, "corp.example.com", "/corp"), "corp.example.com", "/corp");  // not *.corp.
    // curl lower-cases the host, so this is api.example.com on the wire (s_client and the
    // crafted cases below send upper case for real)
    check_tls_ok(https(topo, "API.EXAMPLE.COM", "/upper"), "api.example.com", "/upper");

    check_curl_reset(https(topo, "x.corp.example.com", "/corp-denied"));    // *.corp.example.com deny
    check_curl_reset(https(topo, "a.b.corp.example.com", "/corp-deeper"));  // deeper names too
    check_curl_reset(https(topo, "example.com", "/bare"));                  // no rule: default deny
    check_curl_reset(https(topo, "other.test", "/other"));                  // no rule: default deny
    check_curl_reset(https(topo, "blocked.test", "/blocked"));              // reset rule
    check_curl_reset(https(topo, kV4, "/no-sni"));  // an IP literal: no server_name: missing_sni deny

    env.nginx.sync();
    CHECK(env.nginx.lines_with("\"GET /x HTTP/1.1\"").size() == 1);
    CHECK(env.nginx.lines_with("sni=api.example.com ").size() == 2);  // /x and /upper
    CHECK(env.nginx.lines_with("sni=b.a.example.com ").size() == 1);
    CHECK(env.nginx.lines_with("sni=corp.example.com ").size() == 1);
    for (const char* path : {"/corp-denied", "/corp-deeper", "/bare", "/other", "/blocked", "/no-sni"}) {
      INFO(path);
      CHECK(env.nginx.lines_with(path).empty());
    }
    // nothing denied is left open on the server
    CHECK(wait_server_established_on(topo, kTlsPort, 0) == 0);
  }

  SECTION("openssl s_client") {
    check_s_client_ok(s_client(topo, kV4, "api.example.com"));
    check_s_client_ok(s_client(topo, kV4, "API.EXAMPLE.COM"));  // case-insensitive
    check_s_client_ok(s_client(topo, kV4, "b.a.example.com"));
    check_s_client_reset(s_client(topo, kV4, std::nullopt));  // -noservername: missing_sni deny
    check_s_client_reset(s_client(topo, kV4, "x.corp.example.com"));
    check_s_client_reset(s_client(topo, kV4, "example.com"));
    check_s_client_reset(s_client(topo, kV4, "blocked.test"));
    CHECK(wait_server_established_on(topo, kTlsPort, 0) == 0);
  }
}

TEST_CASE("TLS: a denied connection leaves no connection on the server", "[e2e][tls]") {
  TlsEnv env(tls_policy());
  auto& topo = env.topo;

  SECTION("curl, denied") {
    check_curl_reset(https(topo, "x.corp.example.com", "/"));
    CHECK(wait_server_established_on(topo, kTlsPort, 0) == 0);
  }

  // The first segment (the ClientHello up to the middle of the name) passes: the server
  // holds the connection. The second completes the ClientHello and is judged: denied, the
  // gateway resets both sides and the server's connection goes away while the client
  // still holds its socket; allowed, the server keeps it.
  struct Case {
    const char* what;
    std::vector<std::string> hello;
    bool allowed;
  };
  const std::vector<Case> cases = {
      {"*.corp.example.com deny", {"--sni", "x.corp.example.com"}, false},
      {"reset rule", {"--sni", "blocked.test"}, false},
      {"default deny", {"--sni", "example.com"}, false},
      {"missing_sni deny", {}, false},
      {"allowed", {"--sni", "api.example.com"}, true},
  };
  for (const auto& c : cases) {
    DYNAMIC_SECTION("raw ClientHello in two segments: " << c.what) {
      const auto info = hello_info(c.hello);
      // cut in the middle of the name, or in the middle of the message without one
      const std::size_t cut = info.sni_end ? (info.sni_start + info.sni_end) / 2 : info.length / 2;
      auto args = c.hello;
      args.insert(args.end(), {"--split", std::to_string(cut), "--hold-ms", "3000"});
      json steps = hello_steps(args);
      REQUIRE(steps.size() == 3);
      steps[0]["pause_ms"] = 1000;  // time to see the server holding the connection
      RawClient client(topo, kV4, steps, raw_tls_args());
      CHECK(wait_server_established_on(topo, kTlsPort, 1, 1500ms) == 1);
      // the second segment leaves after 1 s; the client then holds its socket for 3 s
      if (c.allowed) {
        std::this_thread::sleep_for(1500ms);
        CHECK(server_established_on(topo, kTlsPort) == 1);
      } else {
        CHECK(wait_server_established_on(topo, kTlsPort, 0, 2500ms) == 0);
      }
      auto r = client.wait();
      check_raw(r, c.allowed ? Want::allowed : Want::reset);
    }
  }
}

TEST_CASE("TLS: the ClientHello is judged whole, however it is split", "[e2e][tls][segments]") {
  TlsEnv env(tls_policy());
  auto& topo = env.topo;
  std::vector<RawJob> jobs;

  // one segment
  jobs.push_back({"one segment, allowed", hello_steps({"--sni", "api.example.com"}), Want::allowed});
  jobs.push_back({"one segment, denied", hello_steps({"--sni", "x.corp.example.com"}), Want::reset});
  jobs.push_back({"one segment, reset rule", hello_steps({"--sni", "blocked.test"}), Want::reset});
  jobs.push_back({"one segment, no server_name", hello_steps({}), Want::reset});
  // upper case on the wire, and a deeper name
  jobs.push_back({"API.EXAMPLE.COM", hello_steps({"--sni", "API.EXAMPLE.COM"}), Want::allowed});
  jobs.push_back({"X.Corp.Example.COM", hello_steps({"--sni", "X.Corp.Example.COM"}), Want::reset});
  jobs.push_back({"b.a.example.com", hello_steps({"--sni", "b.a.example.com"}), Want::allowed});
  jobs.push_back({"example.com (bare)", hello_steps({"--sni", "example.com"}), Want::reset});
  // a name whose first bytes are an allowed name
  jobs.push_back({"api.example.community", hello_steps({"--sni", "api.example.community"}), Want::reset});

  // the name in the first segment, the end of the ClientHello in the second; and the
  // name in the second segment only
  for (const auto& [name, want] : {std::pair{"api.example.com", Want::allowed},
                                   std::pair{"x.corp.example.com", Want::reset}}) {
    const auto info = hello_info({"--sni", name});
    jobs.push_back({cat(name, ": name in the first segment"),
                    hello_steps({"--sni", name, "--split", std::to_string(info.sni_end + 20)}), want});
    jobs.push_back({cat(name, ": name in the second segment"),
                    hello_steps({"--sni", name, "--split", std::to_string(info.sni_start - 20)}), want});
    jobs.push_back({cat(name, ": one byte, then the rest"), hello_steps({"--sni", name, "--split", "1"}),
                    want});
    jobs.push_back({cat(name, ": all but the last byte, then the last byte"),
                    hello_steps({"--sni", name, "--split", std::to_string(info.length - 1)}), want});
    jobs.push_back({cat(name, ": five segments"),
                    hello_steps({"--sni", name, "--split",
                                 offsets({3, 60, info.sni_start + 2, info.sni_end - 1, info.length - 10})}),
                    want});
  }

  // a cut at every offset around the name (one connection per cut): the first segment
  // alone never decides
  struct Window {
    const char* name;
    const char* mode;  // --split-around-sni K: [start-K, end+K]; --split-at-sni-edges K: +-K at both ends
    Want want;
  };
  for (const auto& w : {Window{"api.example.com", "--split-around-sni", Want::allowed},
                        Window{"x.corp.example.com", "--split-around-sni", Want::reset},
                        Window{"api.example.community", "--split-at-sni-edges", Want::reset},
                        Window{"blocked.test", "--split-at-sni-edges", Want::reset}}) {
    const auto runs = client_hello({"--sni", w.name, w.mode, "4"});
    REQUIRE(runs.size() >= 17);
    for (const auto& run : runs)
      jobs.push_back({cat(w.name, " cut at ", run.at("cut").get<int>()), run.at("steps"), w.want});
  }

  // a ~2 KB ClientHello: a 1216-byte post-quantum key share before the name, padding,
  // server_name last
  const std::vector<std::string> big = {"--key-share-bytes", "1216", "--sni-last", "--pad-to", "2048"};
  for (const auto& [name, want] : {std::pair{"api.example.com", Want::allowed},
                                   std::pair{"x.corp.example.com", Want::reset}}) {
    auto args = big;
    args.insert(args.end(), {"--sni", name});
    const auto info = hello_info(args);
    REQUIRE(info.length > 2000);
    REQUIRE(info.sni_start > 1500);
    jobs.push_back({cat(name, ": 2 KB, one write"), hello_steps(args), want});
    auto split = args;
    split.insert(split.end(), {"--split", offsets({1000, info.sni_start + 3})});
    jobs.push_back({cat(name, ": 2 KB, three segments, cut in the name"), hello_steps(split), want});
    split = args;
    split.insert(split.end(), {"--split", offsets({1400, 1448})});
    jobs.push_back({cat(name, ": 2 KB, cut at MSS-like offsets"), hello_steps(split), want});
  }

  // several TLS records (the handshake message fragmented); in one segment or cut at the
  // record boundary; a record boundary in the middle of the name; shuffled extensions
  for (const auto& [name, want] : {std::pair{"api.example.com", Want::allowed},
                                   std::pair{"x.corp.example.com", Want::reset}}) {
    jobs.push_back({cat(name, ": two records"), hello_steps({"--sni", name, "--records", "2"}), want});
    jobs.push_back({cat(name, ": record boundary in the name"),
                    hello_steps({"--sni", name, "--record-cut-in-sni"}), want});
    const auto info = hello_info({"--sni", name, "--record-cut-in-sni"});
    jobs.push_back({cat(name, ": record boundary in the name, segments cut around it"),
                    hello_steps({"--sni", name, "--record-cut-in-sni", "--split",
                                 offsets({info.sni_start + 1, info.sni_end - 1})}),
                    want});
    jobs.push_back({cat(name, ": four records, big key share"),
                    hello_steps({"--sni", name, "--records", "4", "--key-share-bytes", "1216"}), want});
    for (const char* seed : {"1", "2", "3"})
      jobs.push_back({cat(name, ": shuffled extensions, seed ", seed),
                      hello_steps({"--sni", name, "--shuffle", seed, "--seed", seed}), want});
  }

  run_jobs(topo, jobs);
  CHECK(wait_server_established_on(topo, kTlsPort, 0, 3s) == 0);
}

TEST_CASE("TLS: malformed ClientHellos get the fail mode", "[e2e][tls][fail-mode]") {
  TlsEnv env(tls_policy());
  auto& topo = env.topo;
  const auto before = fail_counters(env.daemon);

  // each with an allowed name: only the malformation can refuse it. Some leave the name
  // itself intact and break the ClientHello after it: the whole ClientHello is checked.
  const std::vector<std::vector<std::string>> bad = {
      {"--bad-record-length"},     // record ends after the random; 0x20 is no record type
      {"--huge-record-length"},    // record length 0xffff
      {"--bad-record-type"},       // an application_data record
      {"--bad-handshake-type"},    // a ServerHello
      {"--bad-handshake-length"},  // handshake length short of its content
      {"--bad-extensions-length"}, // extensions block beyond the message (name intact)
      {"--truncate-extensions"},   // last extension truncated, after the name
      {"--truncate-extensions", "--sni-last"},  // the name's extension truncated
      {"--bad-sni-length"},        // host name length beyond the server_name list
      {"--not-tls"},               // plaintext HTTP on the TLS port
  };
  std::vector<RawJob> jobs;
  for (const auto& flags : bad) {
    std::vector<std::string> args{"--sni", "api.example.com"};
    args.insert(args.end(), flags.begin(), flags.end());
    jobs.push_back({cat(flags[0], flags.size() > 1 ? " " + flags[1] : std::string()), hello_steps(args),
                    Want::reset});
  }
  // the same, split before the name (the first segment is incomplete and passes)
  for (const char* flag : {"--bad-sni-length", "--truncate-extensions", "--bad-extensions-length"})
    jobs.push_back({cat(flag, ", in two segments"),
                    hello_steps({"--sni", "api.example.com", flag, "--split", "100"}), Want::reset});
  run_jobs(topo, jobs);

  const auto after = fail_counters(env.daemon);
  INFO("fail_mode before " << before.dump() << " after " << after.dump());
  CHECK(bad_client_hellos(after) - bad_client_hellos(before) >= jobs.size());
  CHECK(wait_server_established_on(topo, kTlsPort, 0, 3s) == 0);
  // a well-formed ClientHello still goes through
  check_raw_allowed(raw_tls(topo, kV4, hello_steps({"--sni", "api.example.com"})));
}

TEST_CASE("TLS over IPv6", "[e2e][tls][ipv6]") {
  TlsEnv env(tls_policy());
  auto& topo = env.topo;

  check_tls_ok(https(topo, "api.example.com", "/v6", true), "api.example.com", "/v6");
  check_tls_ok(https(topo, "b.a.example.com", "/v6-deep", true), "b.a.example.com", "/v6-deep");
  check_curl_reset(https(topo, "x.corp.example.com", "/v6-denied", true));
  check_curl_reset(https(topo, "example.com", "/v6-bare", true));
  check_curl_reset(https(topo, cat("[", kServerV6, "]"), "/v6-no-sni", true, {"-g"}));

  check_s_client_ok(s_client(topo, kV6, "api.example.com"));
  check_s_client_reset(s_client(topo, kV6, std::nullopt));
  check_s_client_reset(s_client(topo, kV6, "blocked.test"));

  std::vector<RawJob> jobs;
  for (const auto& [name, want] : {std::pair{"api.example.com", Want::allowed},
                                   std::pair{"x.corp.example.com", Want::reset}}) {
    const auto info = hello_info({"--sni", name});
    jobs.push_back({cat("v6 ", name, ": one segment"), hello_steps({"--sni", name}), want, kV6});
    jobs.push_back({cat("v6 ", name, ": cut in the name"),
                    hello_steps({"--sni", name, "--split", std::to_string(info.sni_start + 4)}), want, kV6});
    jobs.push_back({cat("v6 ", name, ": 2 KB, name last"),
                    hello_steps({"--sni", name, "--key-share-bytes", "1216", "--sni-last", "--pad-to", "2048"}),
                    want, kV6});
  }
  jobs.push_back({"v6 malformed", hello_steps({"--sni", "api.example.com", "--truncate-extensions"}),
                  Want::reset, kV6});
  run_jobs(topo, jobs);

  CHECK(wait_server_established_on(topo, kTlsPort, 0, 3s) == 0);
  env.nginx.sync();
  const auto lines = env.nginx.lines_with("\"GET /v6 HTTP/1.1\"");
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].find(cat(" ", kClientV6, " ")) != std::string::npos);
  CHECK(lines[0].find("sni=api.example.com ") != std::string::npos);
  CHECK(env.nginx.lines_with("/v6-denied").empty());
  CHECK(env.nginx.lines_with("/v6-bare").empty());
  CHECK(env.nginx.lines_with("/v6-no-sni").empty());
}

TEST_CASE("TLS: missing_sni allow, default_action drop, fail_mode open", "[e2e][tls][fail-mode]") {
  TlsEnv env(tls_policy("allow", "drop", "open"));
  auto& topo = env.topo;
  const auto before = bad_client_hellos(fail_counters(env.daemon));

  // no server_name: allowed now
  check_tls_ok(https(topo, kV4, "/no-sni"), "", "/no-sni");
  check_s_client_ok(s_client(topo, kV4, std::nullopt));
  // rules still apply
  check_tls_ok(https(topo, "api.example.com", "/x"), "api.example.com", "/x");
  check_curl_reset(https(topo, "x.corp.example.com", "/denied"));
  // no rule: dropped, the client hears nothing until it gives up
  {
    auto t = https(topo, "other.test", "/dropped", false, {"--max-time", "2"});
    INFO("curl exit " << t.r.curl_exit << " stderr " << t.r.err);
    CHECK(t.r.curl_exit == 28);
    auto s = s_client(topo, kV4, "other.test", {}, 3s);
    INFO(s.out << s.err);
    CHECK(s.timed_out);
    CHECK(!s.handshake);
  }
  std::vector<RawJob> jobs = {
      {"no rule: silence", hello_steps({"--sni", "other.test"}), Want::silent},
      {"no server_name: allowed", hello_steps({}), Want::allowed},
  };
  run_jobs(topo, jobs);

  // fail_mode open: malformed ClientHellos pass, so nginx itself answers (with an alert,
  // or with HTTP 400 to plaintext), and they are still counted. The name is one the rules
  // deny, but in each of these it cannot be read with certainty.
  const std::vector<std::vector<std::string>> bad = {
      {"--bad-handshake-type"}, {"--bad-sni-length"}, {"--truncate-extensions", "--sni-last"},
      {"--bad-record-length"}};
  for (const auto& flags : bad) {
    INFO(flags[0]);
    std::vector<std::string> args{"--sni", "x.corp.example.com"};
    args.insert(args.end(), flags.begin(), flags.end());
    auto r = raw_tls(topo, kV4, hello_steps(args));
    INFO(r.json);
    CHECK(!r.reset);
    CHECK(got_tls_alert(r));
  }
  auto plain = raw_tls(topo, kV4, hello_steps({"--not-tls"}));
  INFO(plain.json);
  CHECK(!plain.reset);
  CHECK(raw_head_hex(plain).rfind("485454502f", 0) == 0);  // "HTTP/"
  CHECK(bad_client_hellos(fail_counters(env.daemon)) - before >= bad.size() + 1);

  env.nginx.sync();
  CHECK(env.nginx.lines_with("\"GET /no-sni HTTP/1.1\"").size() == 1);
  CHECK(env.nginx.lines_with("/dropped").empty());
  CHECK(env.nginx.lines_with("/denied").empty());
}

TEST_CASE("TLS: missing_sni drop and reset", "[e2e][tls]") {
  SECTION("drop: silence") {
    TlsEnv env(tls_policy("drop"));
    auto t = https(env.topo, kV4, "/no-sni", false, {"--max-time", "2"});
    INFO("curl exit " << t.r.curl_exit << " stderr " << t.r.err);
    CHECK(t.r.curl_exit == 28);
    check_raw_silent(raw_tls(env.topo, kV4, hello_steps({})));
    check_raw_allowed(raw_tls(env.topo, kV4, hello_steps({"--sni", "api.example.com"})));
  }
  SECTION("reset: RST both ways") {
    TlsEnv env(tls_policy("reset"));
    check_curl_reset(https(env.topo, kV4, "/no-sni"));
    check_s_client_reset(s_client(env.topo, kV4, std::nullopt));
    check_raw_reset(raw_tls(env.topo, kV4, hello_steps({})));
    CHECK(wait_server_established_on(env.topo, kTlsPort, 0) == 0);
    check_raw_allowed(raw_tls(env.topo, kV4, hello_steps({"--sni", "api.example.com"})));
  }
}

// The JWT stage packet by packet, through the real programs: every token of the corpus
// tests/jwt/make_tokens.py makes with independent tools (PyJWT, cryptography, hmac by hand)
// goes in an "Authorization: Bearer" header to a route that requires the provider the case
// describes, at the case's wall-clock time. The verdict must be the reason the corpus gives
// (which the C++ verifier's own tests also check): 401 with that reason counted, or the
// request passed. HS* tokens are verified in the dataplane; RS*/ES* tokens (and the few
// whose JSON the dataplane leaves to the daemon) are held and sent through the ring
// buffer: this test answers as the daemon does (chain::jwt_answer), and the resent segment
// must find the answer. The same token again is a cache hit with the same verdict.
#include <catch2/catch.hpp>

#include <bpf/libbpf.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "chain/compile.hpp"
#include "config/loader.hpp"
#include "fixture.hpp"
#include "chain/jwt/jwt.hpp"
#include "tests/jwt/support.hpp"
#include "faults.hpp"

using namespace policyd;
using namespace policyd::test;
using nlohmann::json;

namespace {

const std::vector<std::string> kAllAlgorithms{"HS256", "HS384", "HS512", "RS256",
                                              "RS384", "RS512", "ES256", "ES384"};

struct Corpus {
  jwt::test::TempDir dir;
  json spec;
};

const Corpus& corpus() {
  static const std::unique_ptr<Corpus> made = [] {
    auto c = std::make_unique<Corpus>();
    const std::string cmd = std::string("'") + BPF_TESTS_PYTHON + "' '" + BPF_TESTS_MAKE_TOKENS + "' '" +
                            c->dir.file("") + "' > /dev/null";
    if (!c->dir.ok() || std::system(cmd.c_str()) != 0) throw std::runtime_error("failed: " + cmd);
    std::ifstream in(c->dir.file("cases.json"));
    c->spec = json::parse(in);
    return c;
  }();
  return *made;
}

unsigned jwt_counter(unsigned reason) { return unsigned{PD_C_JWT_BASE} + reason; }

pd_jwt_reason reason_of(const std::string& name) {
  if (name == "ok") return PD_J_OK;
  for (unsigned r = 1; r < PD_J_MAX; ++r)
    if (jwt::reason_name(static_cast<pd_jwt_reason>(r)) == name) return static_cast<pd_jwt_reason>(r);
  throw std::runtime_error("unknown reason " + name);
}

std::string yaml_list(const std::vector<std::string>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", \"" : "\"") + v[i] + "\"";
  return s + "]";
}

// The policy a case describes: one provider "main", a route /v1/ that requires it.
std::string policy_for(const Corpus& g, const json& c) {
  std::string require;
  if (c.contains("require")) {
    require = ", require: {";
    bool first = true;
    for (const auto& [k, v] : c["require"].items()) {
      require += (first ? "" : ", ") + k + ": \"" + v.get<std::string>() + "\"";
      first = false;
    }
    require += "}";
  }
  return policy_with(std::string(R"(chain: [host, path, jwt]
default_action: deny
limits:
  max_head_bytes: 16384
jwt_providers:
  main:
    issuer: ")") + g.spec["issuer"].get<std::string>() + R"("
    audiences: )" + yaml_list(c.value("audiences", g.spec["audiences"].get<std::vector<std::string>>())) + R"(
    algorithms: )" + yaml_list(c.value("algorithms", kAllAlgorithms)) + R"(
    secret_file: ")" + g.dir.file("secret.key") + R"("
    jwks_file: ")" + g.dir.file(c.value("jwks", "") == "single" ? "jwks-single.json" : "jwks.json") + R"("
    clock_skew: )" + std::to_string(c.value("skew", 30)) + R"(s
    require_exp: )" + (c.value("require_exp", true) ? "true" : "false") + R"(
hosts:
  - match: "app.example.com"
    routes:
      - path: { prefix: "/v1/" }
        jwt: { provider: main)" + require + R"( }
        action: allow
      - path: { prefix: "/open/" }
        action: allow
)");
}

std::string request(const std::string& token) {
  return "GET /v1/items HTTP/1.1\r\nHost: app.example.com\r\nAuthorization: Bearer " + token +
         "\r\nAccept: */*\r\n\r\n";
}

// Plays the daemon: every token in the ring buffer is verified and answered in the cache.
struct FakeDaemon {
  chain::Dataplane& dp;
  const config::Policy& policy;
  const chain::Tables& tables;
  const jwt::Keys& keys;
  int64_t now;
  std::vector<pd_event_jwt> events;

  static int on_event(void* self, void* data, size_t size) {
    if (size >= sizeof(pd_event_jwt)) static_cast<FakeDaemon*>(self)->events.push_back(*static_cast<pd_event_jwt*>(data));
    return 0;
  }

  size_t answer_all() {
    ring_buffer* rb = ring_buffer__new(dp.map_fd(policyd::abi::Map::events), &FakeDaemon::on_event, this, nullptr);
    REQUIRE(rb);
    ring_buffer__consume(rb);
    ring_buffer__free(rb);
    for (const auto& ev : events) {
      std::string_view token(reinterpret_cast<const char*>(ev.token), ev.token_len);
      auto v = chain::jwt_answer(token, policy.jwt_providers.at("main"), keys, tables.jwt_claims,
                                 tables.config.hash_seed, now);
      v.tail = ev.tail;
      REQUIRE(dp.put_jwt_answer(ev.key, v));
    }
    return events.size();
  }
};

std::string counters(const Outcome& o) {
  std::string s;
  for (size_t i = 0; i < o.delta.size(); ++i)
    if (o.delta[i]) s += std::to_string(i) + "+" + std::to_string(o.delta[i]) + " ";
  return s;
}

// Sends `head` in segments of at most kMss bytes but the last; returns where the last starts.
constexpr size_t kMss = 1400;
size_t send_all_but_last(Conn& conn, const std::string& head) {
  size_t at = 0;
  while (head.size() - at > kMss) {
    Outcome part = conn.send(head.substr(at, kMss));
    CHECK(part.passed_unchanged());  // an incomplete head passes: the server cannot act on it
    at += kMss;
  }
  return at;
}

void check_verdict(const Outcome& o, pd_jwt_reason want) {
  INFO("retval " << o.retval << ", counters " << counters(o) << "(jwt base " << PD_C_JWT_BASE << ")");
  if (want == PD_J_OK) {
    CHECK(o.passed_unchanged());
    CHECK(o.verdict(PD_ACT_ALLOW) == 1);
    CHECK(o.counter(jwt_counter(PD_J_OK)) == 1);
  } else {
    CHECK(o.refused());
    CHECK(o.verdict(PD_ACT_UNAUTH) == 1);
    CHECK(o.counter(jwt_counter(want)) == 1);
  }
}

}  // namespace

TEST_CASE("every token of the corpus gets its reason from the dataplane", "[jwt]") {
  const Corpus& g = corpus();
  Fixture fx(policy_with("chain: [host, path]\nhosts:\n  - match: \"x.test\"\n    routes:\n      - path: { prefix: \"/\" }\n        action: allow\n"), Fixture::Load::fresh);
  auto& dp = fx.dp();
  std::string applied;
  uint16_t sport = 20000;
  size_t judged = 0, in_kernel = 0, by_daemon = 0, skipped = 0;
  for (const auto& c : g.spec["cases"]) {
    const std::string name = c["name"];
    const std::string token = c["token"];
    const pd_jwt_reason want = reason_of(c["expect"]);
    if (const char* only = std::getenv("JWT_CASE"); only && name != only) continue;
    if (token.find_first_of("\r\n") != std::string::npos || token.size() > 12000) {
      ++skipped;  // cannot be a header value, or over the largest head
      continue;
    }
    INFO("case: " << name << " (want " << c["expect"].get<std::string>() << ")\ntoken: " << token.substr(0, 300));
    std::string yaml = policy_for(g, c);
    if (yaml != applied) {
      fx.apply(yaml);
      applied = yaml;
    }
    const int64_t now = c.value("now", g.spec["now"].get<int64_t>());
    REQUIRE(policyd::testing::set_wall_clock(dp, now));

    Conn conn(fx, 4, sport++);
    conn.syn();
    const std::string head = request(token);
    const size_t last_at = send_all_but_last(conn, head);
    Outcome o = conn.send(head.substr(last_at));
    if (o.dropped() && o.counter(PD_C_JWT_PUNTED) == 1) {
      // held: the daemon's turn, then TCP's resend
      auto policy = config::load_policy_string(yaml, "test.yaml");
      auto material = chain::read_key_material(policy);
      REQUIRE(material);
      auto tables = chain::compile(policy, dp.active_gen(), dp.hash_seed(), &*material);
      REQUIRE(tables);
      auto keys = jwt::load_keys(policy.jwt_providers.at("main"));
      REQUIRE(keys);
      FakeDaemon d{dp, policy, *tables, *keys, now, {}};
      REQUIRE(d.answer_all() == 1);
      o = conn.send_at(static_cast<uint32_t>(last_at), head.substr(last_at));  // TCP's resend
      CHECK(o.counter(PD_C_JWT_CACHE_HIT) == 1);
      ++by_daemon;
    } else if (o.counter(PD_C_JWT_VERIFIED) == 1) {
      ++in_kernel;
    }
    check_verdict(o, want);
    ++judged;

    // the same token on another connection: from the cache (or refused before it, when there is no token to cache)
    Conn again(fx, 4, sport++);
    again.syn();
    Outcome o2 = again.send(head.substr(send_all_but_last(again, head)));
    check_verdict(o2, want);
    if (want != PD_J_MISSING && want != PD_J_TOO_LARGE && o.counter(jwt_counter(PD_J_MALFORMED)) == 0)
      CHECK(o2.counter(PD_C_JWT_CACHE_HIT) == 1);
  }
  INFO(judged << " judged, " << in_kernel << " HMAC-verified in the dataplane, " << by_daemon << " by the daemon, "
              << skipped << " skipped");
  CHECK(judged >= 130);
  CHECK(in_kernel >= 10);
  CHECK(by_daemon >= 10);
}

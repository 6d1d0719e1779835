// Decision events through the real programs: every refusal (deny, 429, 401, reset, drop) and
// every fail-mode decision puts exactly one event in the ring buffer pd_log, with its flow,
// listener, rule, reason and status; an allowed request, later packets of a refused
// connection and preflight probes put none; and a CPU sends at most its budget (exact counts
// of sent and suppressed events).
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <sched.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <bpf/libbpf.h>

#include "chain/compile.hpp"
#include "chain/kernel/preflight.hpp"
#include "config/loader.hpp"
#include "fixture.hpp"

using namespace policyd;
using namespace policyd::test;

namespace {

// The route numbers (RuleInfo.rule) below follow policy order: /admin/ is route 0.
std::string policy(const std::string& extra = "", const std::string& fail_mode = "closed") {
  return policy_with("chain: [sni, host, path, jwt, ratelimit]\ndefault_action: deny\nfail_mode: " + fail_mode + "\n" +
                         extra + R"(ratelimits:
  tight:
    key: client_ip
    rate: 1/h
    burst: 1
sni:
  - match: "api.example.com"
    action: allow
  - match: "blocked.test"
    action: deny
hosts:
  - match: "app.example.com"
    routes:
      - path: { prefix: "/admin/" }
        action: deny
      - path: { prefix: "/limited/" }
        ratelimit: tight
        action: allow
      - path: { prefix: "/" }
        action: allow
)",
                     "  - name: secure\n    port: 443\n    protocol: tls\n");
}

std::string get(const std::string& path, const std::string& host = "app.example.com") {
  return "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: t\r\n\r\n";
}

// The events the dataplane wrote since the last take().
class Log {
 public:
  explicit Log(Fixture& fx) {
    rb_ = ring_buffer__new(fx.dp().map_fd(policyd::abi::Map::log), &Log::on_event, this, nullptr);
    REQUIRE(rb_ != nullptr);
  }
  ~Log() { ring_buffer__free(rb_); }
  Log(const Log&) = delete;
  Log& operator=(const Log&) = delete;

  std::vector<pd_event_decision> take() {
    REQUIRE(ring_buffer__consume(rb_) >= 0);
    return std::exchange(events_, {});
  }

 private:
  static int on_event(void* self, void* data, size_t size) {
    REQUIRE(size == sizeof(pd_event_decision));
    pd_event_decision e{};
    std::memcpy(&e, data, sizeof e);
    static_cast<Log*>(self)->events_.push_back(e);
    return 0;
  }
  ring_buffer* rb_ = nullptr;
  std::vector<pd_event_decision> events_;
};

std::string host_of(const pd_event_decision& e) {
  return std::string(reinterpret_cast<const char*>(e.host), std::min<size_t>(e.host_len, PD_LOG_HOST));
}
std::string path_of(const pd_event_decision& e) {
  return std::string(reinterpret_cast<const char*>(e.path), std::min<size_t>(e.path_len, PD_LOG_PATH));
}
std::string addr4(uint32_t a) {
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &a, buf, sizeof buf);
  return buf;
}

// Keeps this thread on one CPU while it lives: the budget is per CPU.
class PinnedCpu {
 public:
  PinnedCpu() {
    REQUIRE(sched_getaffinity(0, sizeof old_, &old_) == 0);
    int cpu = sched_getcpu();
    REQUIRE(cpu >= 0);
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    REQUIRE(sched_setaffinity(0, sizeof one, &one) == 0);
  }
  ~PinnedCpu() { sched_setaffinity(0, sizeof old_, &old_); }

 private:
  cpu_set_t old_;
};

}  // namespace

TEST_CASE("a refused request is one event with its rule, flow and status; an allowed one none", "[events]") {
  Fixture fx(policy(), Fixture::Load::fresh);
  REQUIRE(fx.dp().set_event_budget(1000, 1000));
  Log log(fx);

  Conn ok(fx, 4, 40100);
  ok.syn();
  Outcome o = ok.send(get("/index.html"));
  CHECK(o.passed_unchanged());
  CHECK(o.counter(PD_C_EV_SENT) == 0);
  CHECK(log.take().empty());

  Conn c(fx, 4, 40101);
  CHECK(c.syn().counter(PD_C_EV_SENT) == 0);
  o = c.send(get("/admin/users?id=1"));
  CHECK(o.refused());
  CHECK(o.counter(PD_C_EV_SENT) == 1);
  auto ev = log.take();
  REQUIRE(ev.size() == 1);
  const auto& e = ev[0];
  CHECK(e.type == PD_EV_DECISION);
  CHECK(e.action == PD_ACT_DENY);
  CHECK(e.status == 403);
  CHECK(e.reason == PD_R_NONE);
  CHECK(e.rule == 0);
  CHECK(e.stage == PD_STAGE_PATH);
  CHECK(e.listener == 0);
  CHECK(e.proto == PD_PROTO_HTTP);
  CHECK(e.gen_tag == 1);
  CHECK(e.method == PD_M_GET);
  CHECK(host_of(e) == "app.example.com");
  CHECK(path_of(e) == "/admin/users");
  CHECK(e.flow.family == 4);
  CHECK(addr4(e.flow.saddr[0]) == "198.51.100.2");
  CHECK(addr4(e.flow.daddr[0]) == "192.0.2.2");
  CHECK(ntohs(e.flow.sport) == 40101);
  CHECK(ntohs(e.flow.dport) == 80);
  uint64_t now = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                           std::chrono::steady_clock::now().time_since_epoch())
                                           .count());
  CHECK(e.ktime_ns <= now);
  CHECK(now - e.ktime_ns < 10'000'000'000ULL);

  // the refused connection's later packets are the fast path: no more events
  o = c.send(get("/admin/again"));
  CHECK(o.counter(PD_C_FAST_PATH) == 1);
  CHECK(o.counter(PD_C_EV_SENT) == 0);
  c.fin();
  CHECK(log.take().empty());
}

TEST_CASE("each kind of refusal and fail-mode decision has its event", "[events]") {
  Fixture fx(policy(), Fixture::Load::fresh);
  REQUIRE(fx.dp().set_event_budget(1000, 1000));
  Log log(fx);
  auto one = [&](Conn& c, const std::string& data) {
    c.syn();
    c.send(data);
    auto ev = log.take();
    REQUIRE(ev.size() == 1);
    return ev[0];
  };

  SECTION("no host matched: the default action, no rule") {
    Conn c(fx);
    auto e = one(c, get("/", "other.example.net"));
    CHECK(e.action == PD_ACT_DENY);
    CHECK(e.status == 403);
    CHECK(e.rule == PD_RULE_NONE);
    CHECK(e.stage == PD_STAGE_VERDICT);
    CHECK(host_of(e) == "other.example.net");
  }
  SECTION("over a rate limit: 429 with the limit") {
    Conn first(fx);
    first.syn();
    CHECK(first.send(get("/limited/a")).passed_unchanged());
    CHECK(log.take().empty());
    Conn c(fx);
    auto e = one(c, get("/limited/b"));
    CHECK(e.action == PD_ACT_REJECT);
    CHECK(e.status == 429);
    CHECK(e.rule == 1);
    CHECK(e.ratelimit == 1);
    CHECK(e.stage == PD_STAGE_RATELIMIT);
  }
  SECTION("fail mode closed: a request without Host") {
    Conn c(fx);
    auto e = one(c, "GET / HTTP/1.1\r\nUser-Agent: t\r\n\r\n");
    CHECK(e.action == PD_ACT_DENY);
    CHECK(e.status == 403);
    CHECK(e.reason == PD_R_NO_HOST);
    CHECK(e.stage == PD_STAGE_HTTP);
  }
  SECTION("data on a connection whose start was never seen: reset") {
    Conn c(fx, 4, 40150);
    c.send(get("/"));  // no SYN first
    auto ev = log.take();
    REQUIRE(ev.size() == 1);
    CHECK(ev[0].action == PD_ACT_RESET);
    CHECK(ev[0].status == 0);
    CHECK(ev[0].reason == PD_R_NO_FLOW);
    CHECK(ev[0].stage == PD_STAGE_ENTRY);
  }
  SECTION("a TLS handshake refused by an sni rule") {
    Conn c(fx, 4, 0, -1, 443);
    Hello h;
    h.sni = "blocked.test";
    auto e = one(c, client_hello(h));
    CHECK(e.action == PD_ACT_DENY);
    CHECK(e.status == 0);  // RST both ways
    CHECK(e.proto == PD_PROTO_TLS);
    CHECK(e.listener == 1);
    CHECK(e.rule == PD_MAX_RULES - 1 - 1);  // sni rule 1
    CHECK(e.stage == PD_STAGE_SNI);
    CHECK(host_of(e) == "blocked.test");
  }
}

TEST_CASE("a route that requires a token: 401 with the token's reason", "[events][jwt]") {
  HsProvider provider;
  Fixture fx(policy_with("chain: [host, path, jwt]\ndefault_action: deny\n" + provider.yaml() + R"(hosts:
  - match: "app.example.com"
    routes:
      - path: { prefix: "/api/" }
        jwt: main
        action: allow
)"), Fixture::Load::fresh);
  REQUIRE(fx.dp().set_event_budget(1000, 1000));
  Log log(fx);
  Conn c(fx);
  c.syn();
  c.send(get("/api/x"));
  auto ev = log.take();
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].action == PD_ACT_UNAUTH);
  CHECK(ev[0].status == 401);
  CHECK(ev[0].jwt_reason == PD_J_MISSING);
  CHECK(ev[0].stage == PD_STAGE_JWT);
  CHECK(ev[0].rule == 0);
}

TEST_CASE("fail mode open: the request passes and its event says so", "[events]") {
  Fixture fx(policy("", "open"), Fixture::Load::fresh);
  REQUIRE(fx.dp().set_event_budget(1000, 1000));
  Log log(fx);
  Conn c(fx);
  c.syn();
  Outcome o = c.send("GET / HTTP/1.1\r\nUser-Agent: t\r\n\r\n");
  CHECK(o.passed_unchanged());
  auto ev = log.take();
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].action == PD_ACT_ALLOW);
  CHECK(ev[0].reason == PD_R_NO_HOST);
  CHECK(ev[0].status == 0);
}

TEST_CASE("preflight probes are not traffic: no events", "[events][preflight]") {
  const std::string text = policy();
  Fixture fx(text, Fixture::Load::fresh);
  REQUIRE(fx.dp().set_event_budget(1000, 1000));
  Log log(fx);
  auto p = config::load_policy_string(text, "test.yaml");
  uint32_t gen = fx.dp().inactive_gen();
  auto tables = chain::compile(p, gen, fx.dp().hash_seed());
  REQUIRE(tables);
  REQUIRE(fx.dp().prepare(*tables, gen, 2));
  auto before = fx.dp().read_counters().values;
  auto report = chain::preflight(fx.dp(), p, gen);
  REQUIRE(report);
  CHECK(report->failures.empty());
  CHECK(report->probes > 4);  // refusals among them
  auto after = fx.dp().read_counters().values;
  CHECK(after[PD_C_EV_SENT] == before[PD_C_EV_SENT]);
  CHECK(after[PD_C_EV_SUPPRESSED] == before[PD_C_EV_SUPPRESSED]);
  CHECK(log.take().empty());
}

TEST_CASE("a CPU sends at most its budget; the rest are counted as suppressed", "[events]") {
  Fixture fx(policy(), Fixture::Load::fresh);
  Log log(fx);
  PinnedCpu pin;
  auto deny = [&](int n) {
    for (int i = 0; i < n; ++i) {
      Conn c(fx);
      c.syn();
      REQUIRE(c.send(get("/admin/" + std::to_string(i))).refused());
    }
  };
  auto counters = [&] {
    auto v = fx.dp().read_counters().values;
    return std::pair{v[PD_C_EV_SENT], v[PD_C_EV_SUPPRESSED]};
  };

  SECTION("a burst of 5 at 2/s: 20 refusals send 5") {
    REQUIRE(fx.dp().set_event_budget(2, 5));
    auto started = std::chrono::steady_clock::now();
    deny(20);
    auto took = std::chrono::steady_clock::now() - started;
    auto [sent, suppressed] = counters();
    // 20 refusals take milliseconds; a refill in that time would be at most 2 per second
    INFO("20 refusals took " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms");
    REQUIRE(took < std::chrono::milliseconds(450));
    CHECK(sent == 5);
    CHECK(suppressed == 15);
    CHECK(log.take().size() == 5);

    // 1.2 s later 2.4 events have accrued: the next 5 refusals send exactly 2
    std::this_thread::sleep_for(std::chrono::milliseconds(1200));
    started = std::chrono::steady_clock::now();
    deny(5);
    took = std::chrono::steady_clock::now() - started;
    INFO("5 refusals took " << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms");
    REQUIRE(took < std::chrono::milliseconds(250));
    auto [sent2, suppressed2] = counters();
    CHECK(sent2 - sent == 2);
    CHECK(suppressed2 - suppressed == 3);
    CHECK(log.take().size() == 2);
  }
  SECTION("rate 0: events are off, every refusal is counted") {
    REQUIRE(fx.dp().set_event_budget(0, 0));
    deny(3);
    auto [sent, suppressed] = counters();
    CHECK(sent == 0);
    CHECK(suppressed == 3);
    CHECK(log.take().empty());
  }
}

// The sni stage, packet by packet: ClientHellos built here (GREASE, a large key_share, the
// server_name anywhere among the extensions, several records, malformations), in one or
// several TCP segments, through the real programs.
#include <catch2/catch.hpp>

#include <cstring>
#include <optional>

#include "fixture.hpp"

using namespace policyd::test;

namespace {

const std::string kPolicy = R"(version: 1
interfaces: ["lo"]
listeners:
  - name: web
    port: 80
    protocol: http
  - name: secure
    port: 443
    protocol: tls
chain: [sni, host, path]
default_action: deny
sni:
  - match: "api.example.com"
    action: allow
  - match: "*.corp.example.com"
    action: deny
  - match: "*.example.com"
    action: allow
  - match: "blocked.test"
    action: reset
  - match: "dropped.test"
    action: drop
missing_sni: deny
hosts:
  - match: "app.example.com"
    routes:
      - path: { prefix: "/" }
        action: allow
)";

Conn tls(Fixture& fx, int family = 4) { return Conn(fx, family, 0, -1, 443); }

}  // namespace

TEST_CASE("sni rules: first match wins; missing_sni; default", "[sni]") {
  Fixture fx(kPolicy);
  struct Case {
    const char* what;
    std::optional<std::string> sni;
    unsigned action;
  } cases[] = {
      {"exact", "api.example.com", PD_ACT_ALLOW},
      {"exact, upper case", "API.Example.COM", PD_ACT_ALLOW},
      {"exact, trailing dot", "api.example.com.", PD_ACT_ALLOW},
      {"wildcard deny before the broader allow", "x.corp.example.com", PD_ACT_DENY},
      {"broader wildcard", "b.a.example.com", PD_ACT_ALLOW},
      {"wildcard does not match the bare suffix", "example.com", PD_ACT_DENY},
      {"reset rule", "blocked.test", PD_ACT_RESET},
      {"drop rule", "dropped.test", PD_ACT_DROP},
      {"no rule: default_action", "other.org", PD_ACT_DENY},
      {"no server_name: missing_sni", std::nullopt, PD_ACT_DENY},
  };
  for (int family : {4, 6})
    for (const auto& c : cases) {
      INFO(c.what << " (IPv" << family << ")");
      Conn conn = tls(fx, family);
      REQUIRE(conn.syn().passed_unchanged());
      Hello h;
      h.sni = c.sni;
      auto o = conn.send(client_hello(h));
      CHECK(o.verdict(c.action) == 1);
      if (c.action == PD_ACT_ALLOW) {
        CHECK(o.passed_unchanged());
        // the verdict holds for the connection: later records pass on the fast path
        auto later = conn.send(std::string("\x17\x03\x03\x00\x05hello", 10));
        CHECK(later.passed_unchanged());
        CHECK(later.counter(PD_C_FAST_PATH) == 1);
      } else if (c.action == PD_ACT_DROP) {
        CHECK(o.dropped());
      } else {
        CHECK(o.refused());  // RST both ways
        CHECK(o.tcp.tcp_csum_ok);
      }
    }
}

TEST_CASE("a ClientHello split over segments at every offset around the name", "[sni][accumulation]") {
  Fixture fx(kPolicy);
  for (const char* name : {"api.example.com", "x.corp.example.com"}) {
    Hello h;
    h.sni = name;
    size_t at = 0;
    std::string hello = client_hello(h, &at);
    REQUIRE(at > 0);
    REQUIRE(hello.substr(at, std::strlen(name)) == name);
    const bool allowed = std::string(name) == "api.example.com";
    for (size_t cut = at - 6; cut <= at + std::strlen(name) + 6; ++cut) {
      INFO(name << " cut at " << cut);
      Conn c = tls(fx);
      c.syn();
      auto first = c.send(hello.substr(0, cut));
      CHECK(first.passed_unchanged());
      CHECK(first.counter(PD_C_HEAD_PARTIAL) == 1);
      auto second = c.send(hello.substr(cut));
      if (allowed)
        CHECK(second.passed_unchanged());
      else
        CHECK(second.refused());
      CHECK(second.verdict(allowed ? PD_ACT_ALLOW : PD_ACT_DENY) == 1);
    }
  }
}

TEST_CASE("browser-sized ClientHellos: a 1.2 KB key_share before the name, two segments, two records",
          "[sni]") {
  Fixture fx(kPolicy);
  Hello big;
  big.key_share = 1216;  // an ML-KEM-768 + X25519 share
  big.sni_last = true;
  big.padding = 400;
  big.sni = "x.corp.example.com";
  std::string hello = client_hello(big);
  REQUIRE(hello.size() > 1400);
  {
    Conn c = tls(fx);
    c.syn();
    CHECK(c.send(hello.substr(0, 1400)).passed_unchanged());  // one MSS: the name is not in it
    CHECK(c.send(hello.substr(1400)).refused());
  }
  big.sni = "api.example.com";
  big.records = 2;
  hello = client_hello(big);
  {
    Conn c = tls(fx);
    c.syn();
    CHECK(c.send(hello.substr(0, 1000)).passed_unchanged());
    auto o = c.send(hello.substr(1000));
    CHECK(o.passed_unchanged());
    CHECK(o.verdict(PD_ACT_ALLOW) == 1);
  }
  big.records = 3;
  big.sni = "blocked.test";
  {
    Conn c = tls(fx);
    c.syn();
    auto o = c.send(client_hello(big));
    CHECK(o.refused());
    CHECK(o.verdict(PD_ACT_RESET) == 1);
  }
}

TEST_CASE("malformed ClientHellos get the fail mode", "[sni]") {
  Fixture fx(kPolicy);
  std::string good = client_hello(Hello{});
  // each malformation is counted under its own reason
  auto expect_fail = [&](const std::string& bytes, const char* what, unsigned reason) {
    INFO(what);
    Conn c = tls(fx);
    c.syn();
    auto o = c.send(bytes);
    CHECK(o.refused());
    CHECK(o.reason(reason) == 1);
  };
  expect_fail("GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n", "not TLS on a TLS listener", PD_R_NOT_TLS);
  std::string app = good;
  app[0] = 0x17;
  expect_fail(app, "not a handshake record", PD_R_NOT_TLS);
  std::string sh = good;
  sh[5] = 0x02;
  expect_fail(sh, "a ServerHello, not a ClientHello", PD_R_TLS_NOT_HELLO);
  std::string short_hs = good;
  short_hs[8] = static_cast<char>(short_hs[8] - 10);  // handshake shorter than its record
  expect_fail(short_hs, "handshake length does not match the record", PD_R_TLS_LENGTH);
  std::string bad_ext = good;
  bad_ext[bad_ext.size() - 6] = '\x7f';  // the last extension (ALPN) claims more bytes than there are
  expect_fail(bad_ext, "truncated extension", PD_R_TLS_LENGTH);
  Hello two;
  two.two_sni = true;
  expect_fail(client_hello(two), "two server_name extensions", PD_R_TLS_BAD_SNI);
  Hello bad_name;
  bad_name.sni = "api example.com";
  expect_fail(client_hello(bad_name), "a space in the name", PD_R_TLS_BAD_SNI);
}

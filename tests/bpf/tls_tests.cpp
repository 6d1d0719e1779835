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

void put16(std::string& s, size_t v) {
  s.push_back(static_cast<char>(v >> 8));
  s.push_back(static_cast<char>(v));
}

std::string ext(uint16_t type, const std::string& body) {
  std::string e;
  put16(e, type);
  put16(e, body.size());
  return e + body;
}

struct Hello {
  std::optional<std::string> sni = "api.example.com";
  size_t key_share = 32;
  bool sni_last = false;
  int records = 1;
  bool two_sni = false;
  size_t padding = 0;  // a padding extension (browsers pad to ~2 KB)
};

// Returns the bytes, and (via sni_at) the offset of the name within them.
std::string client_hello(const Hello& h, size_t* sni_at = nullptr) {
  std::string exts;
  std::string sni_ext;
  if (h.sni) {
    std::string list;
    list.push_back(0);  // host_name
    put16(list, h.sni->size());
    list += *h.sni;
    std::string body;
    put16(body, list.size());
    sni_ext = ext(0x0000, body + list);
  }
  std::string ks_entry;
  put16(ks_entry, 0x11ec);  // a hybrid post-quantum group id
  put16(ks_entry, h.key_share);
  ks_entry += std::string(h.key_share, '\x42');
  std::string ks;
  put16(ks, ks_entry.size());
  ks += ks_entry;
  std::vector<std::string> list = {
      ext(0x0a0a, ""),                               // GREASE
      ext(0x002b, std::string("\x02\x03\x04", 3)),    // supported_versions
      ext(0x000a, std::string("\x00\x04\x11\xec\x00\x1d", 6)),
      ext(0x000d, std::string("\x00\x02\x04\x03", 4)),
      ext(0x0033, ks),                               // key_share
      ext(0x0010, std::string("\x00\x03\x02h2", 5)),  // ALPN
  };
  size_t pos = h.sni_last ? list.size() : 1;
  if (h.padding && !h.sni_last) throw std::logic_error("padding goes with sni_last in these tests");
  size_t before = 0;
  for (size_t i = 0; i < pos; ++i) before += list[i].size();
  if (h.sni) list.insert(list.begin() + static_cast<long>(pos), sni_ext);
  if (h.two_sni) list.push_back(sni_ext);
  if (h.padding) list.insert(list.begin() + 1, ext(0x0015, std::string(h.padding, '\0')));
  for (const auto& e : list) exts += e;

  std::string body = std::string("\x03\x03", 2) + std::string(32, '\x11');
  body.push_back(32);
  body += std::string(32, '\x22');
  body += std::string("\x00\x06\x13\x01\x13\x02\x13\x03", 8);
  body += std::string("\x01\x00", 2);
  std::string ex_len;
  put16(ex_len, exts.size());
  size_t ext_start_in_body = body.size() + 2;
  body += ex_len + exts;
  std::string hs;
  hs.push_back(0x01);
  hs.push_back(static_cast<char>(body.size() >> 16));
  put16(hs, body.size() & 0xffff);
  hs += body;
  // records
  std::string out;
  size_t per = (hs.size() + static_cast<size_t>(h.records) - 1) / static_cast<size_t>(h.records);
  for (size_t off = 0; off < hs.size(); off += per) {
    std::string frag = hs.substr(off, per);
    out += std::string("\x16\x03\x01", 3);
    put16(out, frag.size());
    out += frag;
  }
  if (sni_at && h.sni && h.records == 1)
    *sni_at = 5 + 4 + ext_start_in_body + before + 4 + 2 + 1 + 2;
  return out;
}

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
  auto expect_fail = [&](const std::string& bytes, const char* what) {
    INFO(what);
    Conn c = tls(fx);
    c.syn();
    auto o = c.send(bytes);
    CHECK(o.refused());
    CHECK(o.reason(PD_R_BAD_TLS) == 1);
  };
  expect_fail("GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n", "not TLS on a TLS listener");
  std::string app = good;
  app[0] = 0x17;
  expect_fail(app, "not a handshake record");
  std::string sh = good;
  sh[5] = 0x02;
  expect_fail(sh, "a ServerHello, not a ClientHello");
  std::string short_hs = good;
  short_hs[8] = static_cast<char>(short_hs[8] - 10);  // handshake shorter than its record
  expect_fail(short_hs, "handshake length does not match the record");
  std::string bad_ext = good;
  bad_ext[bad_ext.size() - 6] = '\x7f';  // the last extension (ALPN) claims more bytes than there are
  expect_fail(bad_ext, "truncated extension");
  Hello two;
  two.two_sni = true;
  expect_fail(client_hello(two), "two server_name extensions");
  Hello bad_name;
  bad_name.sni = "api example.com";
  expect_fail(client_hello(bad_name), "a space in the name");
}

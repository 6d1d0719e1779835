// The HTTP dataplane, packet by packet, through the real programs (BPF_PROG_TEST_RUN).
#include <catch2/catch.hpp>

#include "fixture.hpp"

using namespace policyd::test;

namespace {

const std::string kPolicy = policy_with(R"(chain: [host, path]
default_action: deny
limits:
  max_head_bytes: 2048
hosts:
  - match: ["app.example.com", "www.app.example.com"]
    routes:
      - path: { prefix: "/admin" }
        action: deny
      - path: { exact: "/healthz" }
        action: allow
      - path: { prefix: "/api/" }
        methods: [GET, POST]
        action: allow
      - path: { prefix: "/static/" }
        action: allow
      - path: { prefix: "/drop" }
        action: drop
      - path: { prefix: "/reset" }
        action: reset
      - path: { exact: "/" }
        action: allow
  - match: "*.example.com"
    routes:
      - path: { prefix: "/public/" }
        action: allow
  - match: "*"
    routes:
      - path: { prefix: "/open/" }
        action: allow
)");

std::string req(const std::string& method, const std::string& target, const std::string& host,
                const std::string& extra = "") {
  return method + " " + target + " HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: t\r\n" + extra + "\r\n";
}

std::string get(const std::string& target, const std::string& host = "app.example.com") {
  return req("GET", target, host);
}

enum class Expect { Allow, Deny, Drop, Reset, Fail };

struct Case {
  const char* what;
  std::string head;
  Expect expect;
  unsigned reason = PD_R_NONE;
};

void check(const Outcome& o, const Case& c) {
  INFO(c.what << "\n--- head ---\n" << c.head << "--- retval " << o.retval << " out " << o.out.size()
               << " in " << o.in.size());
  switch (c.expect) {
    case Expect::Allow:
      CHECK(o.passed_unchanged());
      CHECK(o.verdict(PD_ACT_ALLOW) == 1);
      break;
    case Expect::Deny:
      CHECK(o.refused());
      CHECK(o.verdict(PD_ACT_DENY) == 1);
      break;
    case Expect::Drop:
      CHECK(o.dropped());
      CHECK(o.verdict(PD_ACT_DROP) == 1);
      break;
    case Expect::Reset:
      CHECK(o.refused());
      CHECK(o.verdict(PD_ACT_RESET) == 1);
      break;
    case Expect::Fail:
      CHECK(o.refused());
      CHECK(o.reason(c.reason) == 1);
      break;
  }
}

std::vector<Case> single_segment_cases() {
  return {
      {"exact route allows", get("/healthz"), Expect::Allow},
      {"exact does not match a longer path", get("/healthz/x"), Expect::Deny},
      {"prefix deny", get("/admin"), Expect::Deny},
      {"prefix deny covers deeper paths", get("/admin/users"), Expect::Deny},
      {"prefix is a byte prefix", get("/administrator"), Expect::Deny},
      {"earlier route wins", get("/api/x"), Expect::Allow},
      {"default action for an unmatched path", get("/nothing"), Expect::Deny},
      {"query string is ignored", get("/healthz?x=1&y=/admin"), Expect::Allow},
      {"root exact", get("/"), Expect::Allow},
      {"method allowed", req("POST", "/api/x", "app.example.com", "Content-Length: 0\r\n"), Expect::Allow},
      {"method not in the route's list", req("DELETE", "/api/x", "app.example.com"), Expect::Deny},
      {"unknown method token", req("BREW", "/api/x", "app.example.com"), Expect::Deny},
      {"any method where none listed", req("DELETE", "/static/a", "app.example.com"), Expect::Allow},
      {"drop action", get("/drop"), Expect::Drop},
      {"reset action", get("/reset"), Expect::Reset},
      // host matching
      {"host upper case", get("/healthz", "APP.Example.COM"), Expect::Allow},
      {"host with port", get("/healthz", "app.example.com:8080"), Expect::Allow},
      {"host with trailing dot", get("/healthz", "app.example.com."), Expect::Allow},
      {"second pattern of a host", get("/healthz", "www.app.example.com"), Expect::Allow},
      {"wildcard one label", get("/public/x", "a.example.com"), Expect::Allow},
      {"wildcard deeper", get("/public/x", "b.a.example.com"), Expect::Allow},
      {"wildcard does not match the bare suffix", get("/public/x", "example.com"), Expect::Deny},
      {"exact host wins over the wildcard (listed first)", get("/public/x", "app.example.com"), Expect::Deny},
      {"catch-all host", get("/open/x", "other.org"), Expect::Allow},
      {"catch-all host, unmatched path", get("/public/x", "other.org"), Expect::Deny},
      {"ipv6 literal host", get("/open/x", "[2001:db8::1]:80"), Expect::Allow},
      {"absolute-form uses its authority", "GET http://a.example.com/public/x HTTP/1.1\r\nHost: other.org\r\n\r\n",
       Expect::Allow},
      {"absolute-form authority over Host (deny side)",
       "GET http://other.org/public/x HTTP/1.1\r\nHost: a.example.com\r\n\r\n", Expect::Deny},
      {"absolute-form without a path is /", "GET http://app.example.com HTTP/1.1\r\nHost: x\r\n\r\n", Expect::Allow},
      {"Host header name case", "GET /healthz HTTP/1.1\r\nhOsT: app.example.com\r\n\r\n", Expect::Allow},
      {"Host after many headers",
       "GET /healthz HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\nF: 6\r\nHost: app.example.com\r\n\r\n",
       Expect::Allow},
      {"bare LF line endings", "GET /healthz HTTP/1.1\nHost: app.example.com\n\n", Expect::Allow},
      {"leading empty line", "\r\nGET /healthz HTTP/1.1\r\nHost: app.example.com\r\n\r\n", Expect::Allow},
      {"HTTP/1.0 with Host", "GET /healthz HTTP/1.0\r\nHost: app.example.com\r\n\r\n", Expect::Allow},
      // path normalization
      {"dot-dot to a denied path", get("/api/../admin"), Expect::Deny},
      {"dot-dot beyond the root", get("/../../admin"), Expect::Deny},
      {"dot segment", get("/./admin"), Expect::Deny},
      {"repeated slashes", get("//admin"), Expect::Deny},
      {"percent-encoded unreserved", get("/%61dmin"), Expect::Deny},
      {"percent-encoded dots", get("/api/%2e%2e/admin"), Expect::Deny},
      {"dot-dot into an allowed prefix", get("/admin/../api/x"), Expect::Allow},
      {"encoded slash is the fail mode", get("/%2Fadmin"), Expect::Fail, PD_R_BAD_PATH},
      {"encoded backslash", get("/api/%5c..%5cadmin"), Expect::Fail, PD_R_BAD_PATH},
      {"encoded NUL", get("/api/%00"), Expect::Fail, PD_R_BAD_PATH},
      {"literal backslash", get("/api\\..\\admin"), Expect::Fail, PD_R_BAD_PATH},
      {"bad percent escape", get("/api/%zz"), Expect::Fail, PD_R_BAD_PATH},
      {"target not origin-form", get("admin"), Expect::Fail, PD_R_BAD_PATH},
      {"reserved escape stays encoded", get("/api/a%3Fb"), Expect::Allow},
      // malformed heads get the fail mode
      {"no Host", "GET /healthz HTTP/1.1\r\nUser-Agent: t\r\n\r\n", Expect::Fail, PD_R_NO_HOST},
      {"two Host headers", "GET /healthz HTTP/1.1\r\nHost: app.example.com\r\nHost: evil.org\r\n\r\n",
       Expect::Fail, PD_R_MULTI_HOST},
      {"empty Host", "GET /healthz HTTP/1.1\r\nHost: \r\n\r\n", Expect::Fail, PD_R_NO_HOST},
      {"Host with userinfo", get("/healthz", "evil.org@app.example.com"), Expect::Fail, PD_R_BAD_HOST},
      {"Host with space inside", get("/healthz", "app.example.com x"), Expect::Fail, PD_R_BAD_HOST},
      {"bad version", "GET /healthz HTTP/2.0\r\nHost: app.example.com\r\n\r\n", Expect::Fail, PD_R_BAD_REQUEST_LINE},
      {"HTTP/0.9 style", "GET /healthz\r\nHost: app.example.com\r\n\r\n", Expect::Fail, PD_R_BAD_REQUEST_LINE},
      {"double space in request line", "GET  /healthz HTTP/1.1\r\nHost: app.example.com\r\n\r\n", Expect::Fail,
       PD_R_BAD_REQUEST_LINE},
      {"obs-fold", "GET /healthz HTTP/1.1\r\nHost: app.example.com\r\nX: a\r\n b\r\n\r\n", Expect::Fail,
       PD_R_BAD_HEADER},
      {"space before colon", "GET /healthz HTTP/1.1\r\nHost : app.example.com\r\n\r\n", Expect::Fail,
       PD_R_BAD_HEADER},
      {"NUL in a header value", std::string("GET /healthz HTTP/1.1\r\nHost: app.example.com\r\nX: a") + '\0' + "b\r\n\r\n",
       Expect::Fail, PD_R_BAD_HEADER},
      {"bare CR", "GET /healthz HTTP/1.1\r\nHost: app.example.com\rX: y\r\n\r\n", Expect::Fail, PD_R_BAD_HEADER},
      {"Content-Length with Transfer-Encoding",
       req("POST", "/api/x", "app.example.com", "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n"),
       Expect::Fail, PD_R_SMUGGLING},
      {"Transfer-Encoding other than chunked", req("POST", "/api/x", "app.example.com", "Transfer-Encoding: gzip\r\n"),
       Expect::Fail, PD_R_SMUGGLING},
      {"conflicting Content-Length", req("POST", "/api/x", "app.example.com", "Content-Length: 1\r\nContent-Length: 2\r\n"),
       Expect::Fail, PD_R_BAD_BODY},
      {"Content-Length list", req("POST", "/api/x", "app.example.com", "Content-Length: 1, 1\r\n"), Expect::Fail,
       PD_R_BAD_BODY},
      {"negative Content-Length", req("POST", "/api/x", "app.example.com", "Content-Length: -1\r\n"), Expect::Fail,
       PD_R_BAD_BODY},
      {"Content-Length with a space inside", req("POST", "/api/x", "app.example.com", "Content-Length: 1 0\r\n"),
       Expect::Fail, PD_R_BAD_BODY},
      // trailing whitespace is not part of a field value (RFC 9110 5.5; nginx trims it)
      {"Content-Length with trailing whitespace", req("POST", "/api/x", "app.example.com", "Content-Length: 0 \t\r\n"),
       Expect::Allow},
  };
}

}  // namespace

TEST_CASE("single-segment requests, IPv4", "[http]") {
  Fixture fx(kPolicy);
  for (const auto& c : single_segment_cases()) {
    Conn conn(fx, 4);
    REQUIRE(conn.syn().passed_unchanged());
    check(conn.send(c.head), c);
  }
}

TEST_CASE("single-segment requests, IPv6", "[http][ipv6]") {
  Fixture fx(kPolicy);
  for (const auto& c : single_segment_cases()) {
    Conn conn(fx, 6);
    REQUIRE(conn.syn().passed_unchanged());
    check(conn.send(c.head), c);
  }
}

TEST_CASE("single-segment requests, 802.1Q tagged", "[http][vlan]") {
  Fixture fx(kPolicy);
  for (const auto& c : single_segment_cases()) {
    Conn conn(fx, 4, 0, 42);
    REQUIRE(conn.syn().passed_unchanged());
    check(conn.send(c.head), c);
  }
}

TEST_CASE("traffic that is not to a listener passes untouched and uncounted", "[entry]") {
  Fixture fx(kPolicy);
  Packet p;
  p.dport = 8080;
  p.payload = get("/admin");
  auto o = fx.run(p);
  CHECK(o.passed_unchanged());
  CHECK(o.counter(PD_C_PACKETS) == 0);
  Packet u;
  u.proto = 17;
  u.payload = "hello";
  auto ou = fx.run(u);
  CHECK(ou.passed_unchanged());
  CHECK(ou.counter(PD_C_PACKETS) == 0);
  Packet v6 = p;
  v6.family = 6;
  v6.src = "2001:db8:c::2";
  v6.dst = "2001:db8:5::2";
  CHECK(fx.run(v6).passed_unchanged());
}

TEST_CASE("a deny turns the request into a RST to the server with valid checksums", "[verdict]") {
  Fixture fx(kPolicy);
  for (int family : {4, 6}) {
    Conn c(fx, family);
    c.syn();
    auto o = c.send(get("/admin"));
    REQUIRE(o.refused());
    CHECK(o.tcp.dst == c.base().dst);  // still toward the server
    CHECK(o.tcp.src == c.base().src);
    CHECK(o.tcp.seq == 100001);       // exactly where the server expects the next byte
    CHECK(o.tcp.payload.empty());
    CHECK(o.tcp.tcp_csum_ok);
    CHECK(o.tcp.ip_csum_ok);
    // the connection is refused from now on: later data is answered with a RST to the client
    auto later = c.send("more");
    CHECK(later.retval == 7);  // TC_ACT_REDIRECT
    CHECK((later.tcp.flags & kRst));
    CHECK(later.tcp.dst == c.base().src);
    CHECK(later.tcp.tcp_csum_ok);
  }
}

TEST_CASE("a head split over segments is judged by the segment that completes it", "[accumulation]") {
  Fixture fx(kPolicy);
  const std::string allowed = get("/healthz"), denied = get("/admin");
  for (size_t cut : {1ul, 5ul, 20ul, 30ul, allowed.size() - 2}) {
    Conn a(fx);
    a.syn();
    auto first = a.send(allowed.substr(0, cut));
    INFO("cut at " << cut);
    CHECK(first.passed_unchanged());
    CHECK(first.counter(PD_C_HEAD_PARTIAL) == 1);
    CHECK(first.counter(PD_C_REQUESTS) == 0);
    auto second = a.send(allowed.substr(cut));
    CHECK(second.passed_unchanged());
    CHECK(second.verdict(PD_ACT_ALLOW) == 1);

    size_t dcut = std::min(cut, denied.size() - 2);
    Conn d(fx);
    d.syn();
    CHECK(d.send(denied.substr(0, dcut)).passed_unchanged());
    CHECK(d.send(denied.substr(dcut)).refused());
  }
  // three segments, the Host value split in the middle
  Conn t(fx);
  t.syn();
  CHECK(t.send("GET /admin HTTP/1.1\r\n").passed_unchanged());
  CHECK(t.send("Host: app.exa").passed_unchanged());
  CHECK(t.send("mple.com\r\n\r\n").refused());
}

TEST_CASE("a request line without a version (HTTP/0.9) is judged when it ends, not held as a partial head",
          "[accumulation][http09]") {
  // nginx serves "GET /path" + CRLF at once, without headers: it is not an incomplete head
  Fixture fx(kPolicy);
  for (const std::string line : {"GET /admin\r\n", "GET /healthz\r\n", "GET /admin\n", "\r\nGET /admin\r\n"}) {
    INFO(line);
    Conn c(fx);
    c.syn();
    auto o = c.send(line);
    CHECK(o.refused());
    CHECK(o.reason(PD_R_BAD_REQUEST_LINE) == 1);
    CHECK(o.counter(PD_C_HEAD_PARTIAL) == 0);
  }
  SECTION("the line completed by a later segment") {
    Conn c(fx);
    c.syn();
    CHECK(c.send("GET /adm").passed_unchanged());  // an incomplete request line passes
    CHECK(c.send("in").passed_unchanged());
    auto o = c.send("\r\n");
    CHECK(o.refused());
    CHECK(o.reason(PD_R_BAD_REQUEST_LINE) == 1);
  }
  SECTION("a versioned request line still waits for its headers") {
    for (const std::string line : {"GET /healthz HTTP/1.1\r\n", "GET /healthz HTTP/1.0\n"}) {
      INFO(line);
      Conn c(fx);
      c.syn();
      auto first = c.send(line);
      CHECK(first.passed_unchanged());
      CHECK(first.counter(PD_C_HEAD_PARTIAL) == 1);
      CHECK(c.send("Host: app.example.com\r\n\r\n").verdict(PD_ACT_ALLOW) == 1);
    }
  }
}

TEST_CASE("after the server's 101 to the first request's Upgrade, the connection is not parsed as HTTP",
          "[upgrade]") {
  Fixture fx(kPolicy);
  const std::string upgrade = req("GET", "/api/ws", "app.example.com",
                                  "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n");
  const std::string frames(5000, '\x81');  // far more than a head may be: parsed, it would be head_too_large
  const std::string switched = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
  SECTION("WebSocket: frames pass, in segments of any size") {
    Conn c(fx);
    c.syn();
    c.syn_ack(7, 512);
    CHECK(c.send(upgrade).verdict(PD_ACT_ALLOW) == 1);
    auto s = c.server_send(static_cast<uint32_t>(upgrade.size()), 512, switched);
    CHECK(s.counter(PD_C_UPGRADED) == 1);
    for (int i = 0; i < 4; ++i) {
      auto o = c.send(frames.substr(0, 1400));
      CHECK(o.passed_unchanged());
      CHECK(o.counter(PD_C_REQUESTS) == 0);
      CHECK(o.counter(PD_C_HEAD_PARTIAL) == 0);
    }
    CHECK(c.send("GET /admin HTTP/1.1\r\nHost: app.example.com\r\n\r\n").passed_unchanged());  // frames, to the server
  }
  SECTION("the upgrade request itself is judged like any other") {
    Conn c(fx);
    c.syn();
    c.syn_ack(7, 512);
    CHECK(c.send(req("GET", "/admin", "app.example.com", "Upgrade: websocket\r\nConnection: Upgrade\r\n")).refused());
  }
  SECTION("a 101 from the client's side (spoofed, routed back out) changes nothing") {
    Conn c(fx);
    c.syn();
    c.syn_ack(7, 512);
    CHECK(c.send(upgrade).verdict(PD_ACT_ALLOW) == 1);
    Packet spoofed = c.base();  // what server_send would send, but received on the client's interface
    std::swap(spoofed.src, spoofed.dst);
    std::swap(spoofed.sport, spoofed.dport);
    spoofed.flags = kAck | kPsh;
    spoofed.seq = c.server_next();
    spoofed.ack = 100001 + static_cast<uint32_t>(upgrade.size());
    spoofed.payload = switched;
    CHECK(fx.run_egress(spoofed, kTestRunIf).counter(PD_C_UPGRADED) == 0);
    // the same bytes from the server's side do switch it
    CHECK(fx.run_egress(spoofed, kTestRunIf + 1).counter(PD_C_UPGRADED) == 1);
    // and after a spoofed one alone, the next request is judged
    Conn d(fx);
    d.syn();
    d.syn_ack(7, 512);
    CHECK(d.send(upgrade).verdict(PD_ACT_ALLOW) == 1);
    Packet spoofed_d = d.base();
    std::swap(spoofed_d.src, spoofed_d.dst);
    std::swap(spoofed_d.sport, spoofed_d.dport);
    spoofed_d.flags = kAck | kPsh;
    spoofed_d.seq = d.server_next();
    spoofed_d.ack = spoofed.ack;
    spoofed_d.payload = switched;
    CHECK(fx.run_egress(spoofed_d, kTestRunIf).counter(PD_C_UPGRADED) == 0);
    CHECK(d.send(get("/admin")).refused());
  }
  SECTION("no 101: the connection stays HTTP") {
    Conn c(fx);
    c.syn();
    c.syn_ack(7, 512);
    CHECK(c.send(upgrade).verdict(PD_ACT_ALLOW) == 1);
    auto s = c.server_send(static_cast<uint32_t>(upgrade.size()), 512, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    CHECK(s.counter(PD_C_UPGRADED) == 0);
    CHECK(c.send(get("/admin")).refused());
  }
  SECTION("a 101 that is not the first bytes of the server, or without an Upgrade request, changes nothing") {
    Conn c(fx);
    c.syn();
    c.syn_ack(7, 512);
    const std::string first = get("/api/a");
    CHECK(c.send(first).verdict(PD_ACT_ALLOW) == 1);
    // a response body that carries "HTTP/1.1 101" at a segment boundary
    c.server_send(static_cast<uint32_t>(first.size()), 512, "HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n");
    CHECK(c.server_send(static_cast<uint32_t>(first.size()), 512, switched).counter(PD_C_UPGRADED) == 0);
    CHECK(c.send(upgrade).verdict(PD_ACT_ALLOW) == 1);  // an Upgrade on the second request
    CHECK(c.server_send(static_cast<uint32_t>(first.size() + upgrade.size()), 512, switched).counter(PD_C_UPGRADED) ==
          0);
    CHECK(c.send(get("/admin")).refused());
    Conn n(fx);  // a first request without Upgrade, answered 101 (as a server never does)
    n.syn();
    n.syn_ack(7, 512);
    CHECK(n.send(first).verdict(PD_ACT_ALLOW) == 1);
    CHECK(n.server_send(static_cast<uint32_t>(first.size()), 512, switched).counter(PD_C_UPGRADED) == 0);
    CHECK(n.send(get("/admin")).refused());
  }
}

TEST_CASE("paths are matched decoded, as nginx matches its locations: every escape is its byte", "[http][path]") {
  Fixture fx(policy_with(R"(chain: [host, path]
default_action: deny
hosts:
  - match: "app.example.com"
    routes:
      - path: { prefix: "/r@w/" }
        action: deny
      - path: { exact: "/en%3Dcoded" }
        action: deny
      - path: { exact: "/caf%C3%A9" }
        action: allow
      - path: { prefix: "/ok/" }
        action: allow
)"));
  const std::vector<Case> cases = {
      {"a reserved character written in the route, encoded in the request", get("/r%40w/x"), Expect::Deny},
      {"a reserved character as written", get("/r@w/x"), Expect::Deny},
      {"encoded in the route, literal in the request", get("/en=coded"), Expect::Deny},
      {"encoded in both, lower-case hex", get("/en%3dcoded"), Expect::Deny},
      {"an encoded ';' and ',' still take their route", get("/r%40w/a%3Bb%2Cc"), Expect::Deny},
      {"UTF-8, escaped in lower case", get("/caf%c3%a9"), Expect::Allow},
      {"UTF-8, escaped in upper case", get("/caf%C3%A9"), Expect::Allow},
      {"an encoded '?' is a character of the path, not a query", get("/ok/%3F"), Expect::Allow},
      {"an encoded '.' is a dot: dot segments apply", get("/ok/%2e%2e/r@w/x"), Expect::Deny},
      {"an encoded '%'", get("/ok/100%25"), Expect::Allow},
      {"raw UTF-8 in a request target is not a request line", get("/caf\xc3\xa9"), Expect::Fail, PD_R_BAD_REQUEST_LINE},
      {"an encoded '/' is still the fail mode", get("/ok%2F..%2Fr@w/x"), Expect::Fail, PD_R_BAD_PATH},
  };
  for (const auto& c : cases) {
    Conn conn(fx);
    conn.syn();
    check(conn.send(c.head), c);
  }
}

TEST_CASE("accumulation refuses what it cannot trust", "[accumulation]") {
  Fixture fx(kPolicy);
  const std::string head = get("/healthz");
  SECTION("a segment ahead of the missing bytes is dropped, then the in-order data is judged") {
    Conn c(fx);
    c.syn();
    CHECK(c.send(head.substr(0, 10)).passed_unchanged());
    auto ahead = c.send_at(20, head.substr(20));
    CHECK(ahead.dropped());
    CHECK(ahead.reason(PD_R_OUT_OF_ORDER) == 1);
    CHECK(c.send_at(10, head.substr(10)).passed_unchanged());
  }
  SECTION("an identical retransmission of held bytes passes") {
    Conn c(fx);
    c.syn();
    CHECK(c.send(head.substr(0, 10)).passed_unchanged());
    CHECK(c.send_at(0, head.substr(0, 10)).passed_unchanged());
    CHECK(c.send_at(10, head.substr(10)).verdict(PD_ACT_ALLOW) == 1);
  }
  SECTION("a retransmission with different bytes is the fail mode") {
    Conn c(fx);
    c.syn();
    CHECK(c.send(get("/healthz").substr(0, 12)).passed_unchanged());
    auto o = c.send_at(0, get("/admin").substr(0, 12) + "x");
    CHECK(o.refused());
    CHECK(o.reason(PD_R_INCONSISTENT) == 1);
  }
  SECTION("a head over max_head_bytes is the fail mode") {
    Conn c(fx);
    c.syn();
    std::string big = "GET /healthz HTTP/1.1\r\nHost: app.example.com\r\nX: " + std::string(1500, 'a') + "\r\n";
    CHECK(c.send(big).passed_unchanged());
    auto o = c.send("Y: " + std::string(1000, 'b') + "\r\n\r\n");
    CHECK(o.refused());
    CHECK(o.reason(PD_R_HEAD_TOO_LARGE) == 1);
  }
  SECTION("data on a connection whose start was never seen is the fail mode") {
    Packet p;
    p.sport = 39999;
    p.payload = get("/healthz");
    auto o = fx.run(p);
    CHECK(o.refused());
    CHECK(o.reason(PD_R_NO_FLOW) == 1);
  }
}

TEST_CASE("every request on a keep-alive connection is judged", "[keepalive]") {
  Fixture fx(kPolicy);
  SECTION("allowed, allowed, denied") {
    Conn c(fx);
    c.syn();
    CHECK(c.send(get("/healthz")).verdict(PD_ACT_ALLOW) == 1);
    CHECK(c.send(get("/api/a")).verdict(PD_ACT_ALLOW) == 1);
    CHECK(c.send(get("/admin")).refused());
  }
  SECTION("a Content-Length with trailing whitespace frames its body like any other") {
    Conn c(fx);
    c.syn();
    const std::string post = req("POST", "/api/up", "app.example.com", "Content-Length: 5 \r\n") + "hello";
    auto o = c.send(post + get("/admin"));
    CHECK(o.counter(PD_C_REQUESTS) == 2);  // the body skipped, the next head judged
    CHECK(o.truncated());                  // the refused head held back, what came before passes
    CHECK(c.send_at(static_cast<uint32_t>(post.size()), get("/admin")).refused());
  }
  SECTION("a Content-Length body that looks like a request is body, not a request") {
    Conn c(fx);
    c.syn();
    std::string body = "GET /admin HTTP/1.1\r\nHost: app.example.com\r\n\r\n";
    auto post = c.send(req("POST", "/api/up", "app.example.com",
                           "Content-Length: " + std::to_string(body.size() + 8) + "\r\n"));
    CHECK(post.verdict(PD_ACT_ALLOW) == 1);
    auto b1 = c.send(body);
    CHECK(b1.passed_unchanged());
    CHECK(b1.counter(PD_C_REQUESTS) == 0);
    CHECK(c.send("12345678").passed_unchanged());
    CHECK(c.send(get("/admin")).refused());  // the next real request is judged
  }
  SECTION("body and next head in one segment") {
    Conn c(fx);
    c.syn();
    auto o = c.send(req("POST", "/api/up", "app.example.com", "Content-Length: 5\r\n") + "hello" + get("/healthz"));
    CHECK(o.passed_unchanged());
    CHECK(o.counter(PD_C_REQUESTS) == 2);
    CHECK(o.verdict(PD_ACT_ALLOW) == 2);
  }
  SECTION("chunked body then the next request") {
    Conn c(fx);
    c.syn();
    CHECK(c.send(req("POST", "/api/up", "app.example.com", "Transfer-Encoding: chunked\r\n")).verdict(PD_ACT_ALLOW) == 1);
    CHECK(c.send("5\r\nhello\r\n").passed_unchanged());
    // chunk data that looks like a request is skipped by its length
    std::string fake = "GET /admin HTTP/1.1\r\nHost: app.example.com\r\n\r\n";
    char size[16];
    std::snprintf(size, sizeof(size), "%zx;ext=1\r\n", fake.size());
    CHECK(c.send(std::string(size) + fake + "\r\n").passed_unchanged());
    CHECK(c.send("0\r\nTrailer: x\r\n\r\n").passed_unchanged());
    CHECK(c.send(get("/admin")).refused());
  }
  SECTION("chunked body ending in the same segment as the next head") {
    Conn c(fx);
    c.syn();
    auto o = c.send(req("POST", "/api/up", "app.example.com", "Transfer-Encoding: chunked\r\n") +
                    "3\r\nabc\r\n0\r\n\r\n" + get("/healthz"));
    CHECK(o.passed_unchanged());
    CHECK(o.verdict(PD_ACT_ALLOW) == 2);
  }
  // issue 17: whatever nginx accepts is walked, however the framing falls into segments
  SECTION("many tiny chunks in one segment, then the next head") {
    Conn c(fx);
    c.syn();
    REQUIRE(c.send(req("POST", "/api/up", "app.example.com", "Transfer-Encoding: chunked\r\n")).verdict(PD_ACT_ALLOW) == 1);
    std::string body;
    for (int i = 0; i < 400; ++i) body += "1\r\na\r\n";  // 2 400 framing bytes and data
    auto o = c.send(body + "0\r\n\r\n" + get("/admin"));
    CHECK(o.reason(PD_R_BAD_BODY) == 0);
    CHECK(o.counter(PD_C_REQUESTS) == 1);  // the head after the body, judged
    CHECK(o.truncated());                  // and refused: the body passes, the head is held back
  }
  SECTION("a long extension and a long trailer, lines across segments") {
    Conn c(fx);
    c.syn();
    REQUIRE(c.send(req("POST", "/api/up", "app.example.com", "Transfer-Encoding: chunked\r\n")).verdict(PD_ACT_ALLOW) == 1);
    CHECK(c.send("00000000000000005;" + std::string(3000, 'e') + "\x01\x7f\r").passed_unchanged());
    CHECK(c.send("\nhel").passed_unchanged());
    CHECK(c.send("lo\r").passed_unchanged());
    CHECK(c.send("\n1").passed_unchanged());
    CHECK(c.send("0\r\n0123456789abcdef\r\n0\r\nX-Trailer: " + std::string(3000, 't') + "\x02\r\n").passed_unchanged());
    CHECK(c.send("\r\n").passed_unchanged());
    CHECK(c.send(get("/admin")).refused());  // the body ended where nginx ends it
  }
  SECTION("chunk sizes past 32 bits") {
    Conn c(fx);
    c.syn();
    REQUIRE(c.send(req("POST", "/api/up", "app.example.com", "Transfer-Encoding: chunked\r\n")).verdict(PD_ACT_ALLOW) == 1);
    // 2^32 + 3 bytes: skipped in steps of 2^30 sequence numbers, walked on where each step ends
    const std::string line = "100000003\r\n";
    auto o = c.send(line + "abc");
    CHECK(o.passed_unchanged());
    const uint32_t data0 = c.next_rel() - 3;  // where the chunk's data starts
    for (uint32_t k = 1; k <= 3; ++k) {
      INFO("step " << k);
      // data before the step's end passes as data; a segment across it is walked on
      CHECK(c.send_at(data0 + k * (1u << 30) - 8, "abcd").passed_unchanged());
      CHECK(c.send_at(data0 + k * (1u << 30) - 2, "abcd").passed_unchanged());
    }
    // a segment past the data's end before the bytes that lead there: out of order
    CHECK(c.send_at(data0 + 4 * (1u << 30) + 100, "zz").dropped());
    // 2^32 after data0 is data0 again in sequence space: the data's last 3 bytes, its CRLF, the end
    auto end = c.send_at(data0 + 4 * (1u << 30), "xyz\r\n0\r\n\r\n" + get("/admin"));
    CHECK(end.reason(PD_R_BAD_BODY) == 0);
    CHECK(end.counter(PD_C_REQUESTS) == 1);
    CHECK(end.truncated());
  }
  SECTION("a chunk size past 2^63 is refused, as nginx refuses it") {
    Conn c(fx);
    c.syn();
    REQUIRE(c.send(req("POST", "/api/up", "app.example.com", "Transfer-Encoding: chunked\r\n")).verdict(PD_ACT_ALLOW) == 1);
    auto o = c.send("80000000000000000\r\n");
    CHECK(o.refused());
    CHECK(o.reason(PD_R_BAD_BODY) == 1);
  }
  SECTION("broken chunk framing resets the connection") {
    Conn c(fx);
    c.syn();
    c.send(req("POST", "/api/up", "app.example.com", "Transfer-Encoding: chunked\r\n"));
    auto o = c.send("zz\r\nhello\r\n");
    CHECK(o.refused());
    CHECK(o.reason(PD_R_BAD_BODY) == 1);
  }
}

TEST_CASE("pipelined requests in one segment", "[pipeline]") {
  Fixture fx(kPolicy);
  SECTION("three allowed") {
    Conn c(fx);
    c.syn();
    auto o = c.send(get("/healthz") + get("/api/a") + get("/static/b"));
    CHECK(o.passed_unchanged());
    CHECK(o.verdict(PD_ACT_ALLOW) == 3);
  }
  SECTION("allowed, denied, allowed: the segment is cut before the denied head") {
    Conn c(fx);
    c.syn();
    std::string first = get("/healthz");
    auto o = c.send(first + get("/admin") + get("/api/a"));
    CHECK(o.truncated());
    CHECK(o.tcp.payload == first);
    CHECK(o.tcp.tcp_csum_ok);
    CHECK(o.tcp.ip_csum_ok);
    // TCP resends the rest; now the denied head is first and refused
    auto again = c.send_at(static_cast<uint32_t>(first.size()), get("/admin") + get("/api/a"));
    CHECK(again.refused());
  }
  SECTION("more heads than one segment may judge: the rest is cut and judged when resent") {
    Conn c(fx);
    c.syn();
    std::string all;
    for (int i = 0; i < 12; ++i) all += get("/healthz");
    auto o = c.send(all);
    INFO("retval " << o.retval << " out " << o.out.size() << " in " << o.in.size() << " allow "
                   << o.verdict(PD_ACT_ALLOW) << " missed " << o.reason(PD_R_MISSED_TAIL_CALL) << " reply_failed "
                   << o.reason(PD_R_REPLY_FAILED));
    CHECK(o.truncated());
    CHECK(o.verdict(PD_ACT_ALLOW) >= 1);
    CHECK(o.tcp.payload.size() % get("/healthz").size() == 0);
    CHECK(o.reason(PD_R_TOO_MANY_REQUESTS) == 1);
  }
}

TEST_CASE("fail_mode open lets what cannot be judged pass, counted", "[failmode]") {
  Fixture fx(policy_with(R"(chain: [host, path]
fail_mode: open
hosts:
  - match: "app.example.com"
    routes:
      - path: { prefix: "/" }
        action: allow
)"));
  Conn c(fx);
  c.syn();
  auto o = c.send(get("/%2Fx"));
  CHECK(o.passed_unchanged());
  CHECK(o.reason(PD_R_BAD_PATH) == 1);
  CHECK(o.counter(PD_C_FAIL_OPEN) == 1);
}

TEST_CASE("a new generation judges the next request; the old one is untouched until the flip", "[generation]") {
  Fixture fx(kPolicy);
  Conn c(fx);
  c.syn();
  CHECK(c.send(get("/healthz")).verdict(PD_ACT_ALLOW) == 1);
  uint32_t before = fx.dp().active_gen();
  fx.apply(policy_with(R"(chain: [host, path]
hosts:
  - match: "app.example.com"
    routes:
      - path: { exact: "/healthz" }
        action: deny
)"));
  CHECK(fx.dp().active_gen() == (before ^ 1));
  CHECK(c.send(get("/healthz")).refused());
}

TEST_CASE("rule hit counters count the running generation only", "[http][counters]") {
  // Each generation counts its rules' hits in its half of pd_rule_hits. A half is reused by
  // every second apply: what it counted for the generation before must not show again.
  Fixture fx(kPolicy);
  const std::vector<uint32_t> rules{0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  auto hits = [&] {
    uint64_t sum = 0;
    for (const auto& [rule, n] : fx.dp().read_counters(fx.dp().active_gen(), rules).rule_hits) sum += n;
    return sum;
  };
  for (int i = 0; i < 3; ++i) {
    Conn c(fx, 4);
    REQUIRE(c.syn().passed_unchanged());
    CHECK(c.send("GET /admin HTTP/1.1\r\nHost: app.example.com\r\n\r\n").refused());
  }
  CHECK(hits() == 3);
  fx.apply(kPolicy);  // into the other half
  CHECK(hits() == 0);
  fx.apply(kPolicy);  // back into the half that counted 3
  CHECK(hits() == 0);
  Conn c(fx, 4);
  REQUIRE(c.syn().passed_unchanged());
  CHECK(c.send("GET /healthz HTTP/1.1\r\nHost: app.example.com\r\n\r\n").passed_unchanged());
  CHECK(hits() == 1);
}

// Below L7 (issue 9), packet by packet through the real programs: segments the server would
// discard are dropped unjudged, judged bytes that come again must be the same, urgent data and
// IP fragments are never judged, QUIC to a TLS listener is dropped. The live counterparts, with
// nginx's access log as the judge, are tests/e2e/test_evasion.cpp.
#include <catch2/catch.hpp>

#include "fixture.hpp"

using namespace policyd::test;

namespace {

const std::string kRoutes = R"(chain: [host, path]
default_action: deny
hosts:
  - match: "app.example.com"
    routes:
      - path: { prefix: "/ok/" }
        action: allow
)";
const std::string kPolicy = policy_with(kRoutes);
const std::string kOpenPolicy = policy_with(kRoutes + "fail_mode: open\n");

std::string get(const std::string& path) { return "GET " + path + " HTTP/1.1\r\nHost: app.example.com\r\n\r\n"; }
const std::string kAllowed = get("/ok/aaaaa");
const std::string kRefused = get("/admin/ab");  // same length as kAllowed
const std::string kHostsAll = "hosts:\n  - match: \"*\"\n    routes:\n      - path: { prefix: \"/\" }\n        action: allow\n";

uint64_t ignored(const Outcome& o, unsigned why) { return o.counter(PD_C_IGNORED_BASE + why); }

// A Timestamp option with TSval v: after two NOPs (where stacks put it), or first and the NOPs
// after it.
std::string ts(uint32_t v, bool canonical = true) {
  std::string val;
  for (int i = 3; i >= 0; --i) val.push_back(static_cast<char>(v >> (8 * i)));
  return canonical ? std::string("\x01\x01\x08\x0a", 4) + val + std::string(4, '\0')
                   : std::string("\x08\x0a", 2) + val + std::string(4, '\0') + std::string("\x01\x01", 2);
}

// A connection that negotiated timestamps: its SYN carried TSval tsval.
Conn ts_conn(Fixture& fx, uint32_t tsval) {
  Conn conn(fx);
  Packet syn = conn.base();
  syn.flags = kSyn;
  syn.seq = 100000;
  syn.ack = 0;
  syn.tcp_options = ts(tsval);
  REQUIRE(fx.run(syn).passed_unchanged());
  return conn;
}

}  // namespace

TEST_CASE("segments the server would discard are dropped unjudged", "[evasion]") {
  REQUIRE(kAllowed.size() == kRefused.size());
  Fixture fx(kPolicy);
  struct Case {
    const char* what;
    unsigned why;
    void (*spoil)(Packet&);
  };
  const Case cases[] = {
      {"bad TCP checksum", PD_IG_CHECKSUM, [](Packet& p) { p.bad_checksum = true; }},
      {"TTL 1", PD_IG_TTL, [](Packet& p) { p.ttl = 1; }},
      {"TTL 0", PD_IG_TTL, [](Packet& p) { p.ttl = 0; }},
      {"no ACK flag", PD_IG_NO_ACK, [](Packet& p) { p.flags = kPsh; }},
      {"MD5 option", PD_IG_TCP_SIG, [](Packet& p) { p.tcp_options = std::string("\x13\x12", 2) + std::string(16, 'm'); }},
      {"TCP-AO option", PD_IG_TCP_SIG, [](Packet& p) { p.tcp_options = std::string("\x1d\x08", 2) + std::string(6, 'a'); }},
  };
  for (const int family : {4, 6}) {
    for (const auto& c : cases) {
      INFO(c.what << ", IPv" << family);
      Conn conn(fx, family);
      REQUIRE(conn.syn().passed_unchanged());
      // the allowed head in a segment the server drops: not judged, not passed
      Packet bad = conn.at(0, kAllowed);
      c.spoil(bad);
      auto o = fx.run(bad);
      CHECK(o.dropped());
      CHECK(ignored(o, c.why) == 1);
      CHECK(o.counter(PD_C_REQUESTS) == 0);
      // the refused head at the same place, valid: judged and refused
      auto r = conn.send_at(0, kRefused);
      CHECK(r.refused());
      CHECK(r.verdict(PD_ACT_DENY) == 1);
    }
  }
}

TEST_CASE("a timestamp older than the connection's is dropped (PAWS)", "[evasion]") {
  Fixture fx(kPolicy);
  Conn conn = ts_conn(fx, 5000);
  Packet old = conn.at(0, kAllowed);
  old.tcp_options = ts(1000);
  auto o = fx.run(old);
  CHECK(o.dropped());
  CHECK(ignored(o, PD_IG_PAWS) == 1);
  Packet now = conn.at(0, kRefused);
  now.tcp_options = ts(5001);
  CHECK(fx.run(now).refused());
}

// Issue 17, class 4: the server drops the judged copy (its timestamp older than one a pure
// ACK raised) and takes a shorter head with another path at the same sequence number.
TEST_CASE("segments that pass unjudged move the timestamp the gateway holds to (PAWS)", "[evasion]") {
  Fixture fx(kPolicy);
  Conn conn = ts_conn(fx, 5000);
  auto pure_ack = [&](uint32_t tsval, bool canonical = true, bool bad = false) {
    Packet a = conn.at(0, "");
    a.flags = kAck;
    a.tcp_options = ts(tsval, canonical);
    a.bad_checksum = bad;
    return fx.run(a);
  };
  auto head = [&](const std::string& h, uint32_t tsval) {
    Packet d = conn.at(0, h);
    d.tcp_options = ts(tsval);
    return fx.run(d);
  };
  SECTION("a pure ACK with a newer timestamp: the judged head's stale copy is dropped, as the server drops it") {
    REQUIRE(pure_ack(9000).passed_unchanged());
    auto o = head(kAllowed, 5001);
    CHECK(o.dropped());
    CHECK(ignored(o, PD_IG_PAWS) == 1);
    CHECK(o.counter(PD_C_REQUESTS) == 0);
    // the shorter head with another path, sent with the new timestamp: judged
    auto r = head(get("/admin"), 9000);
    CHECK(r.refused());
    CHECK(r.verdict(PD_ACT_DENY) == 1);
  }
  SECTION("the timestamp option in another place is read too") {
    REQUIRE(pure_ack(9000, false).passed_unchanged());
    CHECK(ignored(head(kAllowed, 5001), PD_IG_PAWS) == 1);
  }
  SECTION("a pure ACK the server would discard moves nothing") {
    REQUIRE(pure_ack(9000, true, true).passed_unchanged());  // a bad checksum
    CHECK(head(kAllowed, 5001).passed_unchanged());
  }
  SECTION("body bytes of an allowed request move it") {
    const std::string post = "POST /ok/x HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 10\r\n\r\n";
    REQUIRE(head(post, 5000).passed_unchanged());
    Packet body = conn.at(static_cast<uint32_t>(post.size()), "0123456789");
    body.tcp_options = ts(9000);
    REQUIRE(fx.run(body).passed_unchanged());
    Packet next = conn.at(static_cast<uint32_t>(post.size() + 10), kAllowed);
    next.tcp_options = ts(5001);
    auto o = fx.run(next);
    CHECK(o.dropped());
    CHECK(ignored(o, PD_IG_PAWS) == 1);
  }
}

TEST_CASE("a shorter head sent where an allowed head was is held to the judged bytes", "[evasion]") {
  for (const bool open : {false, true}) {
    INFO((open ? "fail_mode open" : "fail_mode closed"));
    Fixture fx(open ? kOpenPolicy : kPolicy);
    Conn conn(fx);
    REQUIRE(conn.syn().passed_unchanged());
    REQUIRE(conn.send(kAllowed).passed_unchanged());
    SECTION("a whole head, shorter") {
      auto r = conn.send_at(0, "GET /admin HTTP/1.1\r\n\r\n");
      CHECK(r.refused());
      CHECK(r.reason(PD_R_INCONSISTENT) == 1);
    }
    SECTION("an HTTP/0.9 request line") {
      auto r = conn.send_at(0, "GET /admin\r\n");
      CHECK(r.refused());
      CHECK(r.reason(PD_R_INCONSISTENT) == 1);
    }
    SECTION("pieces that end a head before the judged one ends") {
      const std::string first = "GET /admin HTTP/1.1\r\nX: ";
      REQUIRE(first.size() < kAllowed.size());
      CHECK(conn.send_at(0, first).passed_unchanged());  // part of a head: cannot be acted on
      auto r = conn.send_at(static_cast<uint32_t>(first.size()), "a\r\n\r\n");
      CHECK(r.refused());
      CHECK(r.reason(PD_R_INCONSISTENT) == 1);
    }
    SECTION("the same bytes in three pieces still pass") {
      CHECK(conn.send_at(0, kAllowed.substr(0, 7)).passed_unchanged());
      CHECK(conn.send_at(7, kAllowed.substr(7, 20)).passed_unchanged());
      CHECK(conn.send_at(27, kAllowed.substr(27)).passed_unchanged());
    }
  }
}

TEST_CASE("judged bytes that arrive again must be the same bytes", "[evasion]") {
  for (const bool open : {false, true}) {
    INFO((open ? "fail_mode open" : "fail_mode closed"));
    Fixture fx(open ? kOpenPolicy : kPolicy);
    SECTION("a one-segment head: the same copy passes, another resets") {
      Conn conn(fx);
      REQUIRE(conn.syn().passed_unchanged());
      REQUIRE(conn.send(kAllowed).passed_unchanged());
      CHECK(conn.send_at(0, kAllowed).passed_unchanged());
      auto r = conn.send_at(0, kRefused);
      CHECK(r.refused());
      CHECK(r.reason(PD_R_INCONSISTENT) == 1);
    }
    SECTION("resent in pieces from its first byte: checked when complete") {
      Conn conn(fx);
      REQUIRE(conn.syn().passed_unchanged());
      REQUIRE(conn.send(kAllowed).passed_unchanged());
      // the same bytes in two pieces
      CHECK(conn.send_at(0, kAllowed.substr(0, 10)).passed_unchanged());
      CHECK(conn.send_at(10, kAllowed.substr(10)).passed_unchanged());
      // now held: a piece from the middle is compared byte by byte
      CHECK(conn.send_at(4, kAllowed.substr(4, 8)).passed_unchanged());
      auto r = conn.send_at(4, kRefused.substr(4, 8));
      CHECK(r.refused());
      CHECK(r.reason(PD_R_INCONSISTENT) == 1);
    }
    SECTION("different bytes in pieces: the completing piece resets") {
      Conn conn(fx);
      REQUIRE(conn.syn().passed_unchanged());
      REQUIRE(conn.send(kAllowed).passed_unchanged());
      CHECK(conn.send_at(0, kRefused.substr(0, 10)).passed_unchanged());  // part of a head: cannot be acted on
      auto r = conn.send_at(10, kRefused.substr(10));
      CHECK(r.refused());
      CHECK(r.reason(PD_R_INCONSISTENT) == 1);
    }
    SECTION("a piece from the middle of a one-segment head cannot be checked: dropped") {
      Conn conn(fx);
      REQUIRE(conn.syn().passed_unchanged());
      REQUIRE(conn.send(kAllowed).passed_unchanged());
      auto o = conn.send_at(4, kRefused.substr(4, 8));
      CHECK(o.dropped());
      CHECK(o.reason(PD_R_INCONSISTENT) == 0);
    }
    SECTION("a head that came in two segments: its bytes are held") {
      Conn conn(fx);
      REQUIRE(conn.syn().passed_unchanged());
      REQUIRE(conn.send(kAllowed.substr(0, 12)).passed_unchanged());
      REQUIRE(conn.send(kAllowed.substr(12)).passed_unchanged());
      CHECK(conn.send_at(6, kAllowed.substr(6, 10)).passed_unchanged());
      auto r = conn.send_at(6, kRefused.substr(6, 10));
      CHECK(r.refused());
      CHECK(r.reason(PD_R_INCONSISTENT) == 1);
    }
  }
}

TEST_CASE("urgent data in a connection being judged resets it", "[evasion]") {
  for (const bool open : {false, true}) {
    INFO((open ? "fail_mode open" : "fail_mode closed"));
    Fixture fx(open ? kOpenPolicy : kPolicy);
    Conn conn(fx);
    REQUIRE(conn.syn().passed_unchanged());
    Packet p = conn.at(0, get("/ok/aXdmin"));
    p.flags = kAck | kPsh | kUrg;
    p.urgent = 7;
    auto r = fx.run(p);
    CHECK(r.refused());
    CHECK(r.reason(PD_R_URGENT) == 1);
    CHECK(r.verdict(PD_ACT_ALLOW) == 0);
  }
}

TEST_CASE("IP fragments of listener traffic get the fail mode", "[evasion]") {
  for (const bool open : {false, true}) {
    INFO((open ? "fail_mode open" : "fail_mode closed"));
    Fixture fx(open ? kOpenPolicy : kPolicy);
    Conn conn(fx);
    REQUIRE(conn.syn().passed_unchanged());
    Packet first = conn.at(0, kAllowed);
    first.more_fragments = true;
    auto o = fx.run(first);
    CHECK(o.reason(PD_R_FRAGMENT) == 1);
    CHECK(o.counter(PD_C_REQUESTS) == 0);  // never judged
    if (open)
      CHECK(o.passed_unchanged());
    else
      CHECK(o.dropped());
  }
}

TEST_CASE("IPv6 extension headers: any chain Linux walks is walked, a longer one gets the fail mode", "[evasion][ipv6]") {
  using Ext = std::vector<std::pair<uint8_t, size_t>>;
  constexpr uint8_t kHop = 0, kRouting = 43, kFrag = 44, kAh = 51, kDst = 60;
  SECTION("the head behind extension headers is judged as without them") {
    const std::vector<std::pair<const char*, Ext>> chains = {
        {"one destination options header", {{kDst, 8}}},
        {"hop-by-hop, routing, destination options, AH", {{kHop, 8}, {kRouting, 8}, {kDst, 16}, {kAh, 24}}},
        {"one large destination options header (2 KB)", {{kDst, 2048}}},
        {"an atomic fragment header (offset 0, no more fragments)", {{kFrag, 8}}},
        {"sixteen destination options headers", Ext(16, {kDst, 8})},
        {"sixteen headers of 128 bytes", Ext(16, {kDst, 128})},
    };
    Fixture fx(kPolicy);
    for (const auto& [what, chain] : chains) {
      INFO(what);
      for (const auto& [head, allowed] : {std::pair{kAllowed, true}, std::pair{kRefused, false}}) {
        Conn conn(fx, 6);
        REQUIRE(conn.syn().passed_unchanged());
        Packet p = conn.at(0, head);
        p.ipv6_ext = chain;
        auto o = fx.run(p);
        CHECK(o.counter(PD_C_REQUESTS) == 1);
        if (allowed) {
          CHECK(o.passed_unchanged());
        } else {
          CHECK(o.refused());  // the RST to the server, without the extension headers
          CHECK(o.tcp.tcp_csum_ok);
          CHECK(o.reason(PD_R_REPLY_FAILED) == 0);
        }
      }
    }
  }
  SECTION("a first fragment behind other extension headers gets the fail mode") {
    Fixture fx(kPolicy);
    Conn conn(fx, 6);
    REQUIRE(conn.syn().passed_unchanged());
    Packet p = conn.at(0, kAllowed);
    p.ipv6_ext = {{kDst, 8}, {kDst, 8}, {kDst, 8}, {kDst, 8}, {kDst, 8}, {kFrag, 8}};
    p.more_fragments = true;
    auto o = fx.run(p);
    CHECK(o.reason(PD_R_FRAGMENT) == 1);
    CHECK(o.dropped());
  }
  SECTION("seventeen headers: the fail mode, whatever the segment carries") {
    for (const bool open : {false, true}) {
      INFO((open ? "fail_mode open" : "fail_mode closed"));
      Fixture fx(open ? kOpenPolicy : kPolicy);
      Conn conn(fx, 6);
      REQUIRE(conn.syn().passed_unchanged());
      Packet p = conn.at(0, kRefused);
      p.ipv6_ext = Ext(17, {kDst, 8});
      auto o = fx.run(p);
      CHECK(o.reason(PD_R_IPV6_CHAIN) == 1);
      CHECK(o.counter(PD_C_REQUESTS) == 0);
      if (open)
        CHECK(o.passed_unchanged());
      else
        CHECK(o.dropped());
      // and a packet to no listener too: its port is behind the headers, unknown
      Packet other = p;
      other.dport = 8080;
      CHECK(fx.run(other).reason(PD_R_IPV6_CHAIN) == 1);
    }
  }
}

TEST_CASE("a head across the 2^32 sequence wrap is judged", "[evasion]") {
  Fixture fx(kPolicy);
  for (const auto& [head, allowed] : {std::pair{kAllowed, true}, std::pair{kRefused, false}}) {
    Conn conn(fx);
    conn.set_isn(0xfffffff0u);  // data starts at 2^32 - 15
    REQUIRE(conn.syn().passed_unchanged());
    REQUIRE(conn.send(head.substr(0, 20)).passed_unchanged());  // accumulated across the wrap
    auto r = conn.send(head.substr(20));
    if (allowed)
      CHECK(r.passed_unchanged());
    else
      CHECK(r.refused());
  }
}

TEST_CASE("QUIC to a TLS listener: dropped with quic: deny, passed with allow", "[evasion][quic]") {
  for (const bool deny : {true, false}) {
    INFO((deny ? "quic: deny" : "quic: allow"));
    Fixture fx(policy_with(std::string("chain: [sni, host, path]\ndefault_action: deny\nsni:\n  - match: \"*\"\n"
                                       "    action: allow\n") + kHostsAll,
                           std::string("  - name: tls\n    port: 443\n    protocol: tls\n    quic: ") +
                               (deny ? "deny" : "allow") + "\n"));
    Packet u;
    u.proto = 17;
    u.dport = 443;
    u.payload = std::string(1200, '\xc3');
    auto o = fx.run(u);
    CHECK(o.counter(PD_C_QUIC_DENIED) == (deny ? 1u : 0u));
    if (deny)
      CHECK(o.dropped());
    else
      CHECK(o.passed_unchanged());
    u.dport = 4433;  // not a listener
    CHECK(fx.run(u).passed_unchanged());
  }
}

// ---- the server's side: pd_egress records what the server's packets say -------------------

TEST_CASE("a segment starting beyond the server's receive window is dropped unjudged", "[evasion][server]") {
  Fixture fx(kPolicy);
  const uint32_t n = static_cast<uint32_t>(kAllowed.size());
  {
    INFO("the SYN-ACK's window is never scaled");
    Conn conn(fx);
    REQUIRE(conn.syn().passed_unchanged());
    REQUIRE(conn.syn_ack(7, 10).passed_unchanged());  // right edge: 10 bytes in, not 10 << 7
    // the first head starts inside the window and runs past it: the server may take it
    // (Linux does when its queue is empty), so it is judged
    REQUIRE(conn.send(kAllowed).passed_unchanged());
    // the next one starts beyond the edge: the server drops it, and so does the gateway
    auto o = conn.send_at(n, kRefused);
    CHECK(o.dropped());
    CHECK(ignored(o, PD_IG_WINDOW) == 1);
    CHECK(o.counter(PD_C_REQUESTS) == 0);
    // the server takes the first head and opens its window (scaled by 2^7 now): judged
    REQUIRE(conn.server(n, 1).passed_unchanged());
    auto r = conn.send_at(n, kRefused);
    CHECK(r.refused());
    CHECK(r.verdict(PD_ACT_DENY) == 1);
  }
  {
    INFO("later windows are scaled by the shift the SYN-ACK set");
    for (const int ws : {-1, 0, 4}) {
      INFO("window scale option " << ws);
      Conn conn(fx);
      REQUIRE(conn.syn().passed_unchanged());
      REQUIRE(conn.syn_ack(ws, 10).passed_unchanged());
      REQUIRE(conn.send(kAllowed).passed_unchanged());
      // acknowledges all but 20 bytes of the first head, offers 3 << ws bytes: the right
      // edge is 28 bytes past the head with a shift of 4, 17 bytes short of its end without
      REQUIRE(conn.server(n - 20, 3).passed_unchanged());
      auto o = conn.send_at(n, kAllowed);
      if (ws == 4) {
        CHECK(o.passed_unchanged());  // inside the window: judged and allowed
        CHECK(o.counter(PD_C_REQUESTS) == 1);
      } else {
        CHECK(o.dropped());
        CHECK(ignored(o, PD_IG_WINDOW) == 1);
      }
    }
  }
  {
    INFO("without the server's side (no SYN-ACK seen) nothing is assumed");
    Conn conn(fx);
    REQUIRE(conn.syn().passed_unchanged());
    REQUIRE(conn.send(kAllowed).passed_unchanged());
    CHECK(conn.send_at(n, kRefused).refused());
  }
}

TEST_CASE("data acknowledging what the server has not sent is dropped unjudged", "[evasion][server]") {
  Fixture fx(kPolicy);
  Conn conn(fx);
  REQUIRE(conn.syn().passed_unchanged());
  REQUIRE(conn.syn_ack(7, 65535).passed_unchanged());
  REQUIRE(conn.send("").passed_unchanged());  // the client's ACK completes the handshake
  Packet ahead = conn.at(0, kAllowed);
  ahead.ack = conn.server_next() + 1000;
  auto o = fx.run(ahead);
  CHECK(o.dropped());
  CHECK(ignored(o, PD_IG_ACK_UNSENT) == 1);
  // once the server has sent those bytes the same ACK is fine
  REQUIRE(conn.server(0, 512, 1000).passed_unchanged());
  CHECK(fx.run(ahead).passed_unchanged());
}

TEST_CASE("a SYN flag on a segment of an established connection is dropped unjudged", "[evasion][server]") {
  Fixture fx(kPolicy);
  Conn conn(fx);
  REQUIRE(conn.syn().passed_unchanged());
  Packet p = conn.at(0, kAllowed);
  p.flags = kSyn | kAck;
  auto o = fx.run(p);
  CHECK(o.dropped());
  CHECK(ignored(o, PD_IG_SYN) == 1);
  CHECK(conn.send_at(0, kRefused).refused());
}

// A connection whose first segment carried kAllowed and h2, both allowed (with the server's
// SYN-ACK seen through pd_egress when server_side).
static Conn two_heads(Fixture& fx, const std::string& h2, bool server_side = true) {
  Conn conn(fx);
  REQUIRE(conn.syn().passed_unchanged());
  if (server_side) REQUIRE(conn.syn_ack(7, 65535).passed_unchanged());
  REQUIRE(conn.send(kAllowed + h2).passed_unchanged());
  return conn;
}

TEST_CASE("earlier judged heads are held to their bytes until the server has them", "[evasion][server]") {
  const uint32_t n = static_cast<uint32_t>(kAllowed.size());
  const std::string h2 = get("/ok/bbbbb");
  REQUIRE(h2.size() == n);
  for (const bool open : {false, true}) {
    INFO((open ? "fail_mode open" : "fail_mode closed"));
    Fixture fx(open ? kOpenPolicy : kPolicy);
    for (const bool server_side : {true, false}) {
      INFO((server_side ? "with the server's side" : "without the server's side"));
      {
        INFO(std::string("a changed copy of the first of two pipelined heads resets") + (open ? " (open)" : "") +
              (server_side ? "" : " (no SYN-ACK)"));
        Conn conn = two_heads(fx, h2, server_side);
        CHECK(conn.send_at(0, kAllowed).passed_unchanged());  // the same copy
        CHECK(conn.send_at(0, kAllowed + h2).passed_unchanged());
        auto r = conn.send_at(0, kRefused);
        CHECK(r.refused());
        CHECK(r.reason(PD_R_INCONSISTENT) == 1);
      }
    }
    {
      INFO(std::string("a kept head is checked even after the server acknowledged it") + (open ? " (open)" : ""));
      Conn conn = two_heads(fx, h2);
      REQUIRE(conn.server(n, 512).passed_unchanged());  // has the first head, not the second
      CHECK(conn.send_at(0, kAllowed).passed_unchanged());
      // a piece of the acknowledged head cannot be checked, but the server drops it: passed
      auto piece = conn.send_at(4, kRefused.substr(4, 8));
      CHECK(piece.passed_unchanged());
      CHECK(piece.reason(PD_R_UNCHECKED) == 0);
      // a whole changed copy is evasion, acknowledged or not
      auto r = conn.send_at(0, kRefused);
      CHECK(r.refused());
      CHECK(r.reason(PD_R_INCONSISTENT) == 1);
    }
    {
      INFO(std::string("a piece of an earlier head cannot be checked: the fail mode") + (open ? " (open)" : ""));
      Conn conn = two_heads(fx, h2);
      auto r = conn.send_at(4, kAllowed.substr(4, 8));
      CHECK(r.reason(PD_R_UNCHECKED) == 1);
      if (open)
        CHECK(r.passed_unchanged());
      else
        CHECK(r.refused());
    }
    {
      INFO(std::string("more unacknowledged heads than are kept: the oldest cannot be checked") +
            (open ? " (open)" : ""));
      Conn conn(fx);
      REQUIRE(conn.syn().passed_unchanged());
      REQUIRE(conn.syn_ack(7, 65535).passed_unchanged());
      std::string five;
      for (char c : std::string("abcde")) five += get("/ok/" + std::string(5, c));
      REQUIRE(conn.send(five).passed_unchanged());
      REQUIRE(conn.server(0, 512).passed_unchanged());
      // heads 2-5 are kept: a copy of head 3 is checked and passes
      CHECK(conn.send_at(2 * n, five.substr(2 * n, n)).passed_unchanged());
      // head 1 is not: even the same bytes cannot be told from others
      auto r = conn.send_at(0, five.substr(0, n));
      CHECK(r.reason(PD_R_UNCHECKED) == 1);
      if (open)
        CHECK(r.passed_unchanged());
      else
        CHECK(r.refused());
      if (open) {
        // acknowledged, it no longer matters
        REQUIRE(conn.server(n, 512).passed_unchanged());
        auto again = conn.send_at(0, five.substr(0, n));
        CHECK(again.passed_unchanged());
        CHECK(again.reason(PD_R_UNCHECKED) == 0);
      }
    }
  }
}

TEST_CASE("a SYN on an open connection's 4-tuple changes nothing until the server takes it", "[evasion][server]") {
  Fixture fx(kPolicy);
  uint16_t port = 41000;  // a 4-tuple of its own for each case
  // a connection on port whose SYN-ACK went through pd_egress, and one head allowed
  auto open_conn = [&](bool with_head) {
    Conn conn(fx, 4, port);
    REQUIRE(conn.syn().passed_unchanged());
    REQUIRE(conn.syn_ack(7, 65535).passed_unchanged());
    REQUIRE(conn.send("").passed_unchanged());  // the client's ACK completes the handshake
    if (with_head) REQUIRE(conn.send(kAllowed).passed_unchanged());
    return conn;
  };
  {
    ++port;
    INFO("the server ignores it: the old connection's next head is still judged");
    Conn conn = open_conn(true);
    // a SYN 2^30 ahead: restarting the flow there would make the old connection's bytes
    // "before the head" (passed unjudged) while the established server reads them
    Conn other(fx, 4, port);
    other.set_isn(100000 + 0x40000000u);
    CHECK(other.syn().passed_unchanged());  // the server answers it (with a challenge ACK)
    REQUIRE(conn.server(static_cast<uint32_t>(kAllowed.size()), 512).passed_unchanged());
    auto r = conn.send(kRefused);
    CHECK(r.refused());
    CHECK(r.verdict(PD_ACT_DENY) == 1);
  }
  {
    ++port;
    INFO("the server answers it with a SYN-ACK: a new connection, judged from its start");
    Conn conn = open_conn(true);
    Conn other(fx, 4, port);
    other.set_isn(100000 + 0x40000000u);
    REQUIRE(other.syn().passed_unchanged());
    REQUIRE(other.syn_ack(7, 65535).passed_unchanged());
    CHECK(other.send(kAllowed).passed_unchanged());
    CHECK(other.send(kRefused).refused());
  }
  {
    ++port;
    INFO("data on such a SYN is dropped: it belongs to no connection yet");
    Conn conn = open_conn(false);
    Conn other(fx, 4, port);
    other.set_isn(5000);
    Packet p = other.base();
    p.flags = kSyn;
    p.seq = 5000;
    p.ack = 0;
    p.payload = kAllowed;
    CHECK(fx.run(p).dropped());
    CHECK(conn.send(kRefused).refused());
  }
  {
    ++port;
    INFO("a SYN sent again before the handshake completes: the SYN-ACK sent again restarts nothing");
    Conn conn(fx, 4, port);
    REQUIRE(conn.syn().passed_unchanged());
    REQUIRE(conn.syn_ack(7, 65535).passed_unchanged());
    REQUIRE(conn.syn().passed_unchanged());
    REQUIRE(conn.syn_ack(7, 65535).passed_unchanged());
    CHECK(conn.send(kAllowed).passed_unchanged());
    CHECK(conn.send(kRefused).refused());
  }
}

TEST_CASE("data on the SYN (TCP Fast Open) is cut off, and judged when the client sends it again", "[evasion][tfo]") {
  Fixture fx(kPolicy);
  for (const auto& [head, allowed] : {std::pair{kAllowed, true}, std::pair{kRefused, false}}) {
    Conn conn(fx);
    Packet syn = conn.base();
    syn.flags = kSyn;
    syn.seq = 100000;  // Conn's ISN
    syn.ack = 0;
    syn.payload = head;
    auto o = fx.run(syn);
    CHECK(o.counter(PD_C_REQUESTS) == 0);
    CHECK(o.counter(PD_C_SYN_NEW) == 1);
    REQUIRE(o.tcp.ok);  // a plain SYN goes on, with valid checksums
    CHECK(o.tcp.flags == kSyn);
    CHECK(o.tcp.payload.empty());
    CHECK(o.tcp.tcp_csum_ok);
    CHECK(o.tcp.ip_csum_ok);
    // the server acknowledges none of it: the client sends it after the handshake
    auto again = conn.send_at(0, head);
    CHECK(again.counter(PD_C_REQUESTS) == 1);
    if (allowed)
      CHECK(again.passed_unchanged());
    else
      CHECK(again.refused());
  }
}

TEST_CASE("SYNs never push established connections out of the flow table", "[evasion][flows]") {
  // the fixture's flow table holds 4096 connections: ten times as many SYNs from other sources,
  // half of them answered by the server
  Fixture fx(kPolicy);
  Conn live(fx);
  REQUIRE(live.syn().passed_unchanged());
  live.syn_ack(7, 512);
  REQUIRE(live.send(kAllowed).passed_unchanged());
  Conn live2(fx, 6);  // one whose SYN-ACK was not seen: completed by its ACK
  REQUIRE(live2.syn().passed_unchanged());
  REQUIRE(live2.send(kAllowed).passed_unchanged());
  uint64_t syns = 0, created = 0;
  for (uint32_t i = 0; i < 40960; ++i) {
    Packet s;
    s.flags = kSyn;
    s.seq = i * 7919u;
    s.ack = 0;
    s.src = "10." + std::to_string(i >> 16 & 255) + "." + std::to_string(i >> 8 & 255) + "." + std::to_string(i & 255);
    s.sport = static_cast<uint16_t>(1024 + i % 60000);
    syns += fx.run(s).counter(PD_C_SYN_NEW);
    if (i % 2 == 0) {
      // the server answers it (as it does, with SYN cookies, under a flood): the SYN-ACK goes to
      // the spoofed address, whose owner never acknowledges it
      Packet sa = s;
      std::swap(sa.src, sa.dst);
      std::swap(sa.sport, sa.dport);
      sa.flags = kSyn | kAck;
      sa.seq = 0x50000000u + i;
      sa.ack = s.seq + 1;
      created += fx.run_egress(sa).counter(PD_C_FLOWS_NEW);
    }
  }
  CHECK(syns == 40960);
  CHECK(created == 0);
  auto use = fx.dp().flow_use();
  REQUIRE(use);
  CHECK(use->entries == 2);  // the two connections, nothing else
  // both go on being judged: keep-alive requests, allowed and refused
  for (Conn* c : {&live, &live2}) {
    CHECK(c->send(kAllowed).passed_unchanged());
    CHECK(c->send(kRefused).refused());
  }
}

TEST_CASE("a handshake is complete when the client acknowledges the server's SYN-ACK, not before", "[evasion][flows][server]") {
  Fixture fx(kPolicy);
  Conn c(fx);
  REQUIRE(c.syn().passed_unchanged());
  CHECK(c.syn_ack(7, 512).counter(PD_C_FLOWS_NEW) == 0);
  // an ACK that does not acknowledge the SYN-ACK (a blind guess at the server's ISN): no flow;
  // its data meets the fail mode
  Packet guess = c.at(0, "");
  guess.flags = kAck;
  guess.ack = c.server_next() + 12345;
  CHECK(fx.run(guess).counter(PD_C_FLOWS_NEW) == 0);
  Packet data = c.at(0, kAllowed);
  data.ack = c.server_next() + 12345;
  auto d = fx.run(data);
  CHECK(d.reason(PD_R_NO_FLOW) == 1);
  CHECK(d.counter(PD_C_REQUESTS) == 0);
  // the real ACK: the connection starts, with the server's side the SYN-ACK told
  Packet ack = c.at(0, "");
  ack.flags = kAck;
  CHECK(fx.run(ack).counter(PD_C_FLOWS_NEW) == 1);
  CHECK(c.send(kAllowed).passed_unchanged());
  // the SYN-ACK's window (512, never scaled) was taken: data past its edge is dropped unjudged
  Packet far = c.at(600, kAllowed);
  auto o = fx.run(far);
  CHECK(o.dropped());
  CHECK(ignored(o, PD_IG_WINDOW) == 1);
  CHECK(c.send(kRefused).refused());
}

TEST_CASE("a SYN on an evicted connection's 4-tuple answered by a challenge ACK does not start a flow",
          "[evasion][flows][server]") {
  // the server still has the connection (the gateway lost it): it ignores the SYN, answers
  // with an ACK of its own stream, and reads on in the old stream
  Fixture fx(kPolicy);
  Conn c(fx);
  c.set_isn(500000);
  REQUIRE(c.syn().passed_unchanged());
  // the server's challenge ACK: no SYN flag, acknowledging the old stream, not the SYN
  Packet challenge = c.base();
  std::swap(challenge.src, challenge.dst);
  std::swap(challenge.sport, challenge.dport);
  challenge.flags = kAck;
  challenge.seq = 900000;
  challenge.ack = 123456;
  auto ch = fx.run_egress(challenge);
  CHECK(ch.counter(PD_C_SYN_REFUSED) == 1);
  // the old stream's next request, at the sequence the client picked for its "new" one
  auto o = c.send(kRefused);
  CHECK(o.reason(PD_R_NO_FLOW) == 1);
  CHECK(o.refused());
  CHECK(o.counter(PD_C_REQUESTS) == 0);
  auto a = c.send(kAllowed);  // nothing of it passes either
  CHECK(a.reason(PD_R_NO_FLOW) == 1);
}

TEST_CASE("chunked-body framing the server may not have is held to its bytes", "[evasion][server][chunked]") {
  for (const bool open : {false, true}) {
    INFO((open ? "fail_mode open" : "fail_mode closed"));
    Fixture fx(open ? kOpenPolicy : kPolicy);
    const std::string post =
        "POST /ok/up HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: chunked\r\n\r\n";
    const std::string chunk = "5\r\nhello\r\n";
    const std::string smuggle = "0\r\n\r\nGET /";  // same length: ends the body early
    REQUIRE(chunk.size() == smuggle.size());
    const uint32_t p = static_cast<uint32_t>(post.size());
    // a connection whose body has begun with one chunk, resent once unchanged
    auto begun = [&] {
      Conn conn(fx);
      REQUIRE(conn.syn().passed_unchanged());
      REQUIRE(conn.syn_ack(7, 65535).passed_unchanged());
      REQUIRE(conn.send(post).passed_unchanged());
      REQUIRE(conn.send(chunk).passed_unchanged());
      CHECK(conn.send_at(p, chunk).passed_unchanged());  // the same copy
      return conn;
    };
    {
      Conn conn = begun();
      INFO(std::string("a copy with other framing resets") + (open ? " (open)" : ""));
      auto r = conn.send_at(p, smuggle);
      CHECK(r.refused());
      CHECK(r.reason(PD_R_INCONSISTENT) == 1);
    }
    {
      Conn conn = begun();
      INFO(std::string("the body goes on and ends; the next head is judged") + (open ? " (open)" : ""));
      CHECK(conn.send("3\r\nabc\r\n0\r\n\r\n").passed_unchanged());
      CHECK(conn.send(kRefused).refused());
    }
  }
}

// Issue 17: slow heads. The fixture's table of partial heads holds 64; a client's share is 16
// (a sixteenth of the table, at least 16). One client holding half-sent heads on 100
// connections keeps 16 of them; the others get the fail mode. Another client's head, sent in
// two segments meanwhile, is still whole when its second segment comes.
TEST_CASE("one client's partial heads take at most its share of the table", "[evasion][flood]") {
  Fixture fx(kPolicy);
  const std::string half = kAllowed.substr(0, 20);
  Conn honest(fx);
  honest.set_src("203.0.113.9");
  REQUIRE(honest.syn().passed_unchanged());
  REQUIRE(honest.send(half).passed_unchanged());
  std::vector<Conn> slow;
  int held = 0, refused = 0;
  for (int i = 0; i < 100; ++i) {
    slow.emplace_back(fx);
    REQUIRE(slow.back().syn().passed_unchanged());
    auto o = slow.back().send(half);
    held += o.counter(PD_C_HEAD_PARTIAL) == 1;
    refused += o.reason(PD_R_PARTIAL_HEADS) == 1;
  }
  CHECK(held == 16);
  CHECK(refused == 84);
  CHECK(fx.dp().recount_partial_heads() == 17);
  // the honest client's head was not pushed out
  auto done = honest.send(kAllowed.substr(20));
  CHECK(done.passed_unchanged());
  CHECK(done.counter(PD_C_REQUESTS) == 1);
  // a slow client that finishes its head frees its place for another
  REQUIRE(slow[0].send(kAllowed.substr(20)).passed_unchanged());
  Conn again(fx);
  REQUIRE(again.syn().passed_unchanged());
  CHECK(again.send(half).counter(PD_C_HEAD_PARTIAL) == 1);
  // so does one that gives up on its head with a reset
  Conn full(fx);
  REQUIRE(full.syn().passed_unchanged());
  CHECK(full.send(half).reason(PD_R_PARTIAL_HEADS) == 1);
  Packet rst = slow[1].at(static_cast<uint32_t>(half.size()), "");
  rst.flags = kRst | kAck;
  REQUIRE(fx.run(rst).passed_unchanged());
  Conn after_rst(fx);
  REQUIRE(after_rst.syn().passed_unchanged());
  CHECK(after_rst.send(half).counter(PD_C_HEAD_PARTIAL) == 1);
}

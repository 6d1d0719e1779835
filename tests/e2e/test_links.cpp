// rtnetlink: the chain follows the interfaces. The policy names "gwl*" only; a second
// client<->gateway link (client eth1 <-> gateway gwl0, 203.0.113.0/24, the client's route to
// the server's IPv4 address through it) is created after the daemon started. IPv6 still goes
// through gw-c, which matches no glob and must be left alone.
//
// Asserted: the new link is attached (ingress and egress) and enforced; gw-c is never touched;
// deleting the clsact qdisc, just the ingress filter or just the egress filter gets it back
// (logged) and enforcement resumes; a rename out of the
// globs detaches, a rename back attaches; a deleted link is forgotten. The waits are bounds
// (5 s) on behaviour; the reaction times measured are printed, and the daemon keeps its own
// (status: links.max_reaction_us).
#include <chrono>
#include <string>
#include <thread>

#include "common.hpp"

using namespace policyd::e2e;
using json = nlohmann::json;

namespace {

constexpr const char* kLinkGw = "203.0.113.1/24";
constexpr const char* kLinkClient = "203.0.113.2/24";

json status(const Daemon& d) { return ctl_json(d, "status"); }

// The TC filters at one hook of a gateway interface ("ingress" / "egress"), as `tc` prints them.
std::string tc_filters(const Topology& topo, const std::string& ifname, const char* hook) {
  auto r = topo.exec(Role::gw, {"tc", "filter", "show", "dev", ifname, hook});
  return r.out;
}

// policyd's two filters: the chain at ingress, the server-side recorder at egress.
int policyd_filters(const Topology& topo, const std::string& ifname) {
  return (tc_filters(topo, ifname, "ingress").find("pd_entry") != std::string::npos) +
         (tc_filters(topo, ifname, "egress").find("pd_egress") != std::string::npos);
}

// Both of them (true), or neither (false).
bool has_policyd_filter(const Topology& topo, const std::string& ifname) { return policyd_filters(topo, ifname) == 2; }
bool no_policyd_filter(const Topology& topo, const std::string& ifname) { return policyd_filters(topo, ifname) == 0; }

// Polls (bounded) until has_policyd_filter(ifname) == want; returns the time it took, or
// nullopt if the bound passed.
std::optional<std::chrono::microseconds> wait_filter(const Topology& topo, const std::string& ifname, bool want,
                                                     Millis bound = 5s) {
  const auto start = std::chrono::steady_clock::now();
  while (std::chrono::steady_clock::now() - start < bound) {
    if (want ? has_policyd_filter(topo, ifname) : no_policyd_filter(topo, ifname))
      return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start);
    std::this_thread::sleep_for(2ms);
  }
  return std::nullopt;
}

void ip(const Topology& topo, Role role, std::vector<std::string> args) {
  args.insert(args.begin(), "ip");
  auto r = topo.exec(role, args);
  std::string line;
  for (const auto& a : args) line += a + " ";
  INFO(line << ": " << r.err);
  REQUIRE(r.exit_code == 0);
}

// The second link, addressed and routed: the client reaches the server's IPv4 address
// through it (a /32 beats the default route), IPv6 still through eth0/gw-c.
void add_link(const Topology& topo, const std::string& gw_name) {
  auto r = run({"ip", "link", "add", "name", "eth1", "netns", topo.netns(Role::client), "type", "veth", "peer", "name",
                gw_name, "netns", topo.netns(Role::gw)},
               10s);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  ip(topo, Role::client, {"addr", "add", kLinkClient, "dev", "eth1"});
  ip(topo, Role::gw, {"addr", "add", kLinkGw, "dev", gw_name});
  ip(topo, Role::client, {"link", "set", "eth1", "up"});
  ip(topo, Role::gw, {"link", "set", gw_name, "up"});
  ip(topo, Role::client, {"route", "add", cat(kServerV4, "/32"), "via", "203.0.113.1", "dev", "eth1"});
}

CurlResult via_v4(const Topology& topo, const char* path) { return curl(topo, cat("http://app.example.com", path)); }
CurlResult via_v6(const Topology& topo, const char* path) {
  return curl(topo, cat("http://app.example.com", path), {"--connect-to", cat("::[", kServerV6, "]:")});
}

// Received packets on a gateway interface (proves which link the requests took).
uint64_t rx_packets(const Topology& topo, const std::string& ifname) {
  auto r = topo.exec(Role::gw, {"cat", cat("/sys/class/net/", ifname, "/statistics/rx_packets")});
  return r.exit_code == 0 ? std::stoull(r.out) : 0;
}

void report(const char* what, std::optional<std::chrono::microseconds> t) {
  if (t) std::printf("  [links] %s: filter seen after %.1f ms (polling every 2 ms)\n", what, t->count() / 1000.0);
}

}  // namespace

TEST_CASE("rtnetlink: late links are attached, removed filters come back, renames are followed", "[rtnetlink]") {
  Topology topo;
  Backend nginx(topo);
  Daemon daemon(topo, edit_policy(http_policy("deny"), "interfaces: [\"gw-c\"]", "interfaces: [\"gwl*\"]"));
  REQUIRE(daemon.log().find("nothing is enforced until one appears") != std::string::npos);

  // before the link exists: nothing enforces, and gw-c is not ours
  CHECK(via_v4(topo, "/admin").http_code == 200);
  CHECK(no_policyd_filter(topo, "gw-c"));

  add_link(topo, "gwl0");
  auto t = wait_filter(topo, "gwl0", true);
  REQUIRE(t);
  report("new link gwl0", t);
  {
    const uint64_t rx = rx_packets(topo, "gwl0");
    check_gateway_403(via_v4(topo, "/admin"));
    check_from_nginx(via_v4(topo, "/healthz"), "GET", "app.example.com", "/healthz");
    CHECK(rx_packets(topo, "gwl0") > rx);  // the requests took the new link
  }
  // a non-matching interface is left alone: IPv6 through gw-c is not enforced
  CHECK(via_v6(topo, "/admin").http_code == 200);
  CHECK(no_policyd_filter(topo, "gw-c"));
  {
    auto s = status(daemon);
    INFO(s.dump());
    REQUIRE(s["interfaces"].size() == 1);
    CHECK(s["interfaces"][0]["name"] == "gwl0");
    CHECK(s["links"]["attached_later"] == 1);
  }

  SECTION("someone deletes the clsact qdisc, then only the filter") {
    REQUIRE(topo.exec(Role::gw, {"tc", "qdisc", "del", "dev", "gwl0", "clsact"}).exit_code == 0);
    t = wait_filter(topo, "gwl0", true);
    REQUIRE(t);
    report("clsact qdisc deleted", t);
    check_gateway_403(via_v4(topo, "/admin"));
    CHECK(daemon.log().find("policyd's filter on gwl0 was removed (") != std::string::npos);

    REQUIRE(topo.exec(Role::gw, {"tc", "filter", "del", "dev", "gwl0", "ingress"}).exit_code == 0);
    t = wait_filter(topo, "gwl0", true);
    REQUIRE(t);
    report("ingress filters deleted", t);
    check_gateway_403(via_v4(topo, "/admin"));

    // the egress filter alone (the server's side): put back too
    REQUIRE(topo.exec(Role::gw, {"tc", "filter", "del", "dev", "gwl0", "egress"}).exit_code == 0);
    t = wait_filter(topo, "gwl0", true);
    REQUIRE(t);
    report("egress filters deleted", t);
    check_gateway_403(via_v4(topo, "/admin"));
    auto s = status(daemon);
    INFO(s.dump());
    CHECK(s["links"]["reattached"] == 3);
    CHECK(s["links"]["max_reaction_us"].get<int64_t>() > 0);
    // and the same counts on the metrics endpoint (the daemon's default 127.0.0.1:9464)
    auto m = topo.exec(Role::gw, {"curl", "-s", "--max-time", "5", "http://127.0.0.1:9464/metrics"});
    INFO(m.out);
    CHECK(m.out.find("policyd_interface_changes_total{change=\"reattached\"} 3\n") != std::string::npos);
    CHECK(m.out.find("policyd_interface_changes_total{change=\"attached\"} 1\n") != std::string::npos);
    CHECK(m.out.find("policyd_interface_attached{interface=\"gwl0\",ifindex=") != std::string::npos);
    std::printf("  [links] the daemon's own reaction (notification read -> filter attached): last %lld us, max %lld us\n",
                static_cast<long long>(s["links"]["last_reaction_us"].get<int64_t>()),
                static_cast<long long>(s["links"]["max_reaction_us"].get<int64_t>()));
  }

  SECTION("renamed out of the globs and back; then deleted") {
    ip(topo, Role::gw, {"link", "set", "gwl0", "down"});
    ip(topo, Role::gw, {"link", "set", "gwl0", "name", "gwx0"});
    REQUIRE(wait_filter(topo, "gwx0", false));
    ip(topo, Role::gw, {"link", "set", "gwx0", "up"});
    ip(topo, Role::client, {"route", "replace", cat(kServerV4, "/32"), "via", "203.0.113.1", "dev", "eth1"});
    CHECK(via_v4(topo, "/admin").http_code == 200);  // gwx0 matches nothing: not enforced
    CHECK(status(daemon)["interfaces"].empty());

    ip(topo, Role::gw, {"link", "set", "gwx0", "down"});
    ip(topo, Role::gw, {"link", "set", "gwx0", "name", "gwl7"});
    t = wait_filter(topo, "gwl7", true);
    REQUIRE(t);
    report("renamed into the globs", t);
    ip(topo, Role::gw, {"link", "set", "gwl7", "up"});
    ip(topo, Role::client, {"route", "replace", cat(kServerV4, "/32"), "via", "203.0.113.1", "dev", "eth1"});
    check_gateway_403(via_v4(topo, "/admin"));
    {
      auto s = status(daemon);
      INFO(s.dump());
      REQUIRE(s["interfaces"].size() == 1);
      CHECK(s["interfaces"][0]["name"] == "gwl7");
    }

    ip(topo, Role::gw, {"link", "del", "gwl7"});
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    json s;
    do {
      s = status(daemon);
      if (s["interfaces"].empty()) break;
      std::this_thread::sleep_for(10ms);
    } while (std::chrono::steady_clock::now() < deadline);
    INFO(s.dump());
    CHECK(s["interfaces"].empty());
    CHECK(s["links"]["forgotten"] == 1);
    CHECK(daemon.log().find("gwl7 (ifindex") != std::string::npos);
    CHECK(daemon.running());
  }
}

TEST_CASE("rtnetlink: an apply that changes the globs moves the chain", "[rtnetlink]") {
  Topology topo;
  Backend nginx(topo);
  Daemon daemon(topo, http_policy("deny"));
  add_link(topo, "gwl0");
  check_gateway_403(via_v6(topo, "/admin"));  // gw-c is enforced
  CHECK(via_v4(topo, "/admin").http_code == 200);  // gwl0 matches nothing yet
  CHECK(no_policyd_filter(topo, "gwl0"));

  // Only `interfaces` differs, so the tables are unchanged ("policy unchanged" is the reload's
  // outcome line) and the attachments move right after it: wait for them, bounded.
  auto out = daemon.reload(edit_policy(http_policy("deny"), "interfaces: [\"gw-c\"]", "interfaces: [\"gwl*\"]"));
  INFO(out);
  CHECK(wait_filter(topo, "gwl0", true));
  CHECK(wait_filter(topo, "gw-c", false));
  check_gateway_403(via_v4(topo, "/admin"));
  CHECK(via_v6(topo, "/admin").http_code == 200);
  CHECK(daemon.log().find("detached from gw-c") != std::string::npos);
}

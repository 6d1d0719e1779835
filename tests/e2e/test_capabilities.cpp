// The unit's capability set is enough and not too much: policyd runs under setpriv with
// exactly the capabilities systemd/policyd.service.in grants (read from the unit, so the
// two cannot drift apart) and does all of its work: a fresh load, enforcement, a reload,
// stats, re-attaching a removed filter (rtnetlink + TC). Then, for each of CAP_BPF,
// CAP_PERFMON and CAP_NET_ADMIN, a start without it fails with an error that names it and
// leaves nothing half done.
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "common.hpp"

using namespace policyd::e2e;

namespace {

// The value of `key=` in the unit, split on blanks.
std::vector<std::string> unit_list(const std::string& key) {
  std::ifstream in(cat(source_dir(), "/systemd/policyd.service.in"));
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key + "=", 0) == 0) {
      std::istringstream words(line.substr(key.size() + 1));
      std::vector<std::string> out;
      for (std::string w; words >> w;) out.push_back(w);
      return out;
    }
  return {};
}

// setpriv: stay uid 0 but hold only `caps` (CAP_X -> +x), in every set that matters.
std::vector<std::string> setpriv_with(const std::vector<std::string>& caps) {
  std::string list = "-all";
  for (const auto& c : caps) {
    std::string name = c.substr(4);  // drop "CAP_"
    for (auto& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    list += ",+" + name;
  }
  return {"setpriv", "--reuid=0", "--inh-caps=" + list, "--ambient-caps=" + list, "--bounding-set=" + list};
}

// Takes the chain away (as an operator's `policyd --detach`), so the next start loads fresh:
// loading, not adopting, is what needs the capabilities.
void detach(const Topology& topo, const Daemon& d) {
  auto r = topo.exec(Role::gw, {POLICYD_BIN, "--detach", "--pin-dir", d.pin_dir()});
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
}

bool filter_on_gw_c(const Topology& topo) {
  return topo.exec(Role::gw, {"tc", "filter", "show", "dev", "gw-c", "ingress"}).out.find("pd_entry") !=
         std::string::npos;
}

}  // namespace

TEST_CASE("policyd works with exactly the unit's capabilities, and needs each of them", "[capabilities]") {
  const auto caps = unit_list("CapabilityBoundingSet");
  REQUIRE_FALSE(caps.empty());
  CHECK(unit_list("AmbientCapabilities") == caps);
  CHECK(std::find(caps.begin(), caps.end(), "CAP_SYS_ADMIN") == caps.end());

  Env env(http_policy("deny"));
  env.daemon.stop();
  detach(env.topo, env.daemon);
  CHECK(curl(env.topo, "http://app.example.com/admin").http_code == 200);  // nothing enforces now

  env.daemon.set_launcher(setpriv_with(caps));
  env.daemon.restart();
  CHECK(env.daemon.log().find("adopted the chain") == std::string::npos);  // a fresh load
  check_gateway_403(curl(env.topo, "http://app.example.com/admin"));
  check_from_nginx(curl(env.topo, "http://app.example.com/healthz"), "GET", "app.example.com", "/healthz");

  auto out = env.daemon.reload(http_policy("allow"));
  INFO(out);
  REQUIRE(out.find("ready: generation 2") != std::string::npos);
  CHECK(curl(env.topo, "http://app.example.com/no-route-here").http_code == 200);

  auto stats = run({POLICYCTL_BIN, "--socket", env.daemon.socket_path(), "-o", "json", "stats"}, 10s);
  INFO(stats.out << stats.err);
  CHECK(stats.exit_code == 0);

  REQUIRE(env.topo.exec(Role::gw, {"tc", "qdisc", "del", "dev", "gw-c", "clsact"}).exit_code == 0);
  bool back = false;
  for (int i = 0; i < 250 && !back; ++i) {  // bounded: 5 s
    back = filter_on_gw_c(env.topo);
    if (!back) std::this_thread::sleep_for(20ms);
  }
  CHECK(back);
  check_gateway_403(curl(env.topo, "http://app.example.com/admin"));

  for (const char* needed : {"CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"}) {
    DYNAMIC_SECTION("without " << needed) {
      std::vector<std::string> fewer;
      for (const auto& c : caps)
        if (c != needed) fewer.push_back(c);
      REQUIRE(fewer.size() + 1 == caps.size());
      env.daemon.stop();
      detach(env.topo, env.daemon);
      env.daemon.set_launcher(setpriv_with(fewer));
      env.daemon.restart(45s, {}, Daemon::Expect::exit);
      INFO(env.daemon.log());
      CHECK(env.daemon.exit_code() == 2);
      CHECK(env.daemon.log().find(cat("lacks ", needed)) != std::string::npos);
      CHECK_FALSE(filter_on_gw_c(env.topo));  // nothing half attached
    }
  }
}

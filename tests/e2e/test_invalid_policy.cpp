// An invalid policy: policyd refuses it with file:line:col and attaches nothing.
#include <regex>

#include <catch2/catch.hpp>

#include "common.hpp"
#include "harness.hpp"

using namespace policyd::e2e;

namespace {

struct Invalid {
  const char* what;
  std::string yaml;
  int line;  // the line the error must name (1-based)
};

std::string with_line(std::string yaml, const std::string& from, const std::string& to) {
  yaml.replace(yaml.find(from), from.size(), to);
  return yaml;
}

}  // namespace

TEST_CASE("an invalid policy is refused with file:line:col and nothing is attached",
          "[e2e][config]") {
  // Lines of http_policy(): 1 version, 2 interfaces, 3 listeners, 4 - name, 5 port,
  // 6 protocol, 7 chain, 8 default_action, 9 fail_mode, 10 hosts, 11 - match,
  // 12 routes, 13 - path /admin, 14 action: deny, ...
  const std::vector<Invalid> cases = {
      {"unknown key", with_line(http_policy(), "default_action: deny", "defualt_action: deny"), 8},
      {"bad action value",
       with_line(http_policy(), "        action: deny\n", "        action: permit\n"), 14},
      {"bad listener port", with_line(http_policy(), "port: 80", "port: 80000"), 5},
  };

  for (const auto& c : cases) {
    DYNAMIC_SECTION(c.what) {
      Topology topo;
      Backend nginx{topo};
      Daemon policyd{topo, c.yaml, Daemon::Expect::exit};
      const std::string log = policyd.log();
      INFO("policyd log:\n" << log);

      REQUIRE(policyd.exit_code().has_value());
      CHECK(*policyd.exit_code() != 0);
      std::smatch m;
      const std::regex where(std::regex_replace(policyd.policy_path(), std::regex(R"([.^$|()\[\]{}*+?\\])"), R"(\$&)") +
                             R"(:([0-9]+):([0-9]+): \S)");
      REQUIRE(std::regex_search(log, m, where));
      CHECK(std::stoi(m[1]) == c.line);
      CHECK(std::stoi(m[2]) >= 1);

      // nothing attached: no TC filter on the client-facing interface, and a request
      // the policy would deny passes untouched to nginx
      auto tc = topo.exec(Role::gw, {"tc", "filter", "show", "dev", "gw-c", "ingress"});
      CHECK(tc.out.empty());
      check_from_nginx(curl(topo, "http://app.example.com/admin"), "GET", "app.example.com",
                       "/admin");
    }
  }
}

// The same policy through the IPv6 addresses.
#include <catch2/catch.hpp>

#include "common.hpp"
#include "harness.hpp"

using namespace policyd::e2e;
using nlohmann::json;

TEST_CASE("IPv6: allow and deny work the same", "[e2e][ipv6]") {
  Env env(http_policy());
  const std::vector<std::string> v6 = {"--connect-to", cat("::[", kServerV6, "]:")};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.begin(), v6.begin(), v6.end());
    return extra;
  };

  check_from_nginx(curl(env.topo, "http://app.example.com/healthz", with({})), "GET",
                   "app.example.com", "/healthz");
  check_gateway_403(curl(env.topo, "http://app.example.com/admin", with({})));
  check_gateway_403(curl(env.topo, "http://app.example.com/api/x", with({"-d", "a=1"})));
  check_from_nginx(curl(env.topo, "http://b.a.example.com/x", with({})), "GET", "b.a.example.com",
                   "/x");
  check_gateway_403(curl(env.topo, "http://files.example.org/api/%2e%2e/admin",
                         with({"--path-as-is"})));
  auto dropped = curl(env.topo, "http://app.example.com/drop/x", with({"--max-time", "3"}));
  CHECK(dropped.curl_exit == 28);

  json steps = {http_request("GET", "/healthz", "app.example.com"), {{"await", 1}},
                http_request("GET", "/admin", "app.example.com"), {{"await", 2}}};
  auto r = raw_client(env.topo, std::string(kServerV6), steps, {"--expect", "2"});
  INFO(r.json << r.err);
  REQUIRE(r.statuses == std::vector<int>{200, 403});
  check_gateway_403(r.responses[1]);

  env.nginx.sync();
  const auto healthz = env.nginx.lines_with(logged("GET", "/healthz"));
  REQUIRE(healthz.size() == 2);
  for (const auto& line : healthz) CHECK(line.find(cat(" ", kClientV6, " ")) != std::string::npos);
  CHECK(env.nginx.lines_with("/admin").empty());
  CHECK(env.nginx.lines_with("/drop/").empty());
  CHECK(env.nginx.lines_with(logged("POST", "/api/x")).empty());
}

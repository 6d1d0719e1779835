// HTTP policy end to end: verdicts, actions, host matching, and that a denied
// request never reaches the backend.
#include <thread>

#include <catch2/catch.hpp>

#include "common.hpp"
#include "harness.hpp"

using namespace policyd::e2e;

TEST_CASE("allowed requests reach nginx; denied ones get the gateway's 403", "[e2e][http]") {
  Env env(http_policy());

  check_from_nginx(curl(env.topo, "http://app.example.com/healthz"), "GET", "app.example.com",
                   "/healthz");
  check_from_nginx(curl(env.topo, "http://app.example.com/api/users"), "GET", "app.example.com",
                   "/api/users");
  check_gateway_403(curl(env.topo, "http://app.example.com/admin"));
  check_gateway_403(curl(env.topo, "http://app.example.com/admin/users"));
  // exact: /healthz/ and /healthzz are not /healthz; no other route -> default deny
  check_gateway_403(curl(env.topo, "http://app.example.com/healthz/"));
  check_gateway_403(curl(env.topo, "http://app.example.com/healthzz"));

  env.nginx.sync();
  CHECK(env.nginx.lines_with(logged("GET", "/healthz")).size() == 1);
  CHECK(env.nginx.lines_with(logged("GET", "/api/users")).size() == 1);
  CHECK(env.nginx.lines_with("/admin").empty());
  CHECK(env.nginx.lines_with("/healthz/").empty());
  CHECK(env.nginx.lines_with("/healthzz").empty());
}

TEST_CASE("a route with methods only matches those methods", "[e2e][http]") {
  Env env(http_policy());

  check_from_nginx(curl(env.topo, "http://app.example.com/api/items"), "GET", "app.example.com",
                   "/api/items");
  check_gateway_403(curl(env.topo, "http://app.example.com/api/items", {"-d", "name=x"}));
  check_gateway_403(curl(env.topo, "http://app.example.com/api/items", {"-X", "DELETE"}));
  check_from_nginx(curl(env.topo, "http://app.example.com/forms/contact", {"-d", "name=x"}),
                   "POST", "app.example.com", "/forms/contact");
  check_gateway_403(curl(env.topo, "http://app.example.com/forms/contact"));

  env.nginx.sync();
  CHECK(env.nginx.lines_with(logged("GET", "/api/items")).size() == 1);
  CHECK(env.nginx.lines_with(logged("POST", "/api/items")).empty());
  CHECK(env.nginx.lines_with(logged("DELETE", "/api/items")).empty());
  CHECK(env.nginx.lines_with(logged("POST", "/forms/contact")).size() == 1);
  CHECK(env.nginx.lines_with(logged("GET", "/forms/contact")).empty());
}

TEST_CASE("drop discards silently and reset resets both sides", "[e2e][http]") {
  Env env(http_policy());

  auto reset = curl(env.topo, "http://app.example.com/reset/x", {"--max-time", "3"});
  INFO("reset: curl exit " << reset.curl_exit << " " << reset.err);
  // 56: "Recv failure: Connection reset by peer"; 52 "Empty reply" if the RST races a FIN.
  CHECK((reset.curl_exit == 56 || reset.curl_exit == 52));
  CHECK(reset.http_code == 0);
  // reset goes both ways: nothing is left established on the server
  CHECK(wait_server_established(env.topo, 0, 2s) == 0);

  // (the server side of a dropped flow stays established until nginx times it out,
  // so this comes after the check above)
  auto dropped = curl(env.topo, "http://app.example.com/drop/x", {"--max-time", "3"});
  INFO("drop: curl exit " << dropped.curl_exit << " " << dropped.err);
  CHECK(dropped.curl_exit == 28);  // operation timed out
  CHECK(dropped.http_code == 0);

  env.nginx.sync();
  CHECK(env.nginx.lines_with("/drop/x").empty());
  CHECK(env.nginx.lines_with("/reset/x").empty());
}

TEST_CASE("default_action applies to hosts no rule matches", "[e2e][http]") {
  SECTION("deny") {
    Env env(http_policy("deny"));
    check_gateway_403(curl(env.topo, "http://unknown.test/"));
    check_gateway_403(curl(env.topo, "http://app.example.com/no-route-for-this"));
    env.nginx.sync();
    CHECK(env.nginx.access_log().empty());
  }
  SECTION("allow") {
    Env env(http_policy("allow"));
    check_from_nginx(curl(env.topo, "http://unknown.test/x"), "GET", "unknown.test", "/x");
    check_from_nginx(curl(env.topo, "http://app.example.com/no-route-for-this"), "GET",
                     "app.example.com", "/no-route-for-this");
    // explicit rules still apply
    check_gateway_403(curl(env.topo, "http://app.example.com/admin"));
  }
  SECTION("drop") {
    Env env(http_policy("drop"));
    auto r = curl(env.topo, "http://unknown.test/", {"--max-time", "3"});
    INFO("curl exit " << r.curl_exit << " " << r.err);
    CHECK(r.curl_exit == 28);
    check_from_nginx(curl(env.topo, "http://app.example.com/healthz"), "GET", "app.example.com",
                     "/healthz");
    env.nginx.sync();
    CHECK(env.nginx.lines_with("unknown.test").empty());
  }
}

TEST_CASE("wildcard hosts match deeper names only", "[e2e][http][host]") {
  Env env(http_policy());

  check_from_nginx(curl(env.topo, "http://a.example.com/x"), "GET", "a.example.com", "/x");
  check_from_nginx(curl(env.topo, "http://b.a.example.com/x"), "GET", "b.a.example.com", "/x");
  check_gateway_403(curl(env.topo, "http://example.com/x"));
  check_gateway_403(curl(env.topo, "http://badexample.com/x"));
  check_gateway_403(curl(env.topo, "http://a.example.com.evil.test/x"));

  env.nginx.sync();
  CHECK(env.nginx.lines_with("host=example.com ").empty());
  CHECK(env.nginx.lines_with("host=badexample.com ").empty());
  CHECK(env.nginx.lines_with("evil.test").empty());
}

TEST_CASE("the host is compared lower-cased and without port or trailing dot", "[e2e][http][host]") {
  Env env(http_policy());

  for (const char* host : {"app.example.com:80", "app.example.com.", "APP.Example.COM",
                           "App.Example.Com.:80"}) {
    INFO("Host: " << host);
    const std::string h = cat("Host: ", host);
    check_from_nginx(curl(env.topo, "http://x.invalid/healthz", {"-H", h}), "GET",
                     "app.example.com", "/healthz");
    // and app.example.com's deny applies to the same spellings
    check_gateway_403(curl(env.topo, "http://x.invalid/admin", {"-H", h}));
  }
  env.nginx.sync();
  CHECK(env.nginx.lines_with(logged("GET", "/healthz")).size() == 4);
  CHECK(env.nginx.lines_with("/admin").empty());
}

TEST_CASE("an absolute-form request target's authority is the host", "[e2e][http][host]") {
  Env env(http_policy());

  // Host: other.invalid would be denied; the target's authority is app.example.com.
  check_from_nginx(
      curl(env.topo, "http://other.invalid/", {"--request-target", "http://app.example.com/healthz"}),
      "GET", "app.example.com", "/healthz");
  // Host: a.example.com would be allowed; the target's authority says app.example.com /admin.
  check_gateway_403(
      curl(env.topo, "http://a.example.com/", {"--request-target", "http://app.example.com/admin"}));
  // Host: app.example.com would be allowed; the authority is unknown -> default deny.
  check_gateway_403(curl(env.topo, "http://app.example.com/",
                         {"--request-target", "http://unknown.invalid/healthz"}));

  env.nginx.sync();
  CHECK(env.nginx.lines_with(logged("GET", "http://app.example.com/healthz")).size() == 1);
  CHECK(env.nginx.lines_with("/admin").empty());
  CHECK(env.nginx.lines_with("unknown.invalid").empty());
}

TEST_CASE("a denied request never reaches nginx", "[e2e][http][backend]") {
  Env env(http_policy());
  const std::string host = std::string(kServerV4);

  SECTION("allowed: nginx holds the keep-alive connection") {
    RawClient c(env.topo, host,
                {{{"sleep_ms", 300}}, http_request("GET", "/healthz", "app.example.com"),
                 {{"await", 1}}, {{"sleep_ms", 2500}}},
                {"--expect", "1", "--linger-ms", "0"});
    std::this_thread::sleep_for(1200ms);  // the client holds the connection until ~3 s
    CHECK(server_established(env.topo) == 1);
    auto r = c.wait();
    INFO(r.json);
    CHECK(r.statuses == std::vector<int>{200});
    env.nginx.sync();
    CHECK(env.nginx.lines_with(logged("GET", "/healthz")).size() == 1);
  }
  SECTION("denied: 403, and the server side is reset while the client still holds its end") {
    RawClient c(env.topo, host,
                {{{"sleep_ms", 800}}, http_request("GET", "/admin", "app.example.com"),
                 {{"await", 1}}, {{"sleep_ms", 3000}}},
                {"--expect", "1", "--linger-ms", "0"});
    // before the request: the handshake went through, nginx has the connection
    CHECK(wait_server_established(env.topo, 1, 700ms) == 1);
    // after the denied request (sent at ~0.8 s; the client keeps its end open until
    // ~3.8 s): the gateway's RST has removed it from the server
    CHECK(wait_server_established(env.topo, 0, 2500ms) == 0);
    auto r = c.wait();
    INFO(r.json);
    REQUIRE(r.statuses.size() == 1);
    check_gateway_403(r.responses[0]);
    env.nginx.sync();
    CHECK(env.nginx.lines_with("/admin").empty());
  }
}

TEST_CASE("SIGTERM leaves the chain enforcing; --detach removes it", "[e2e][lifecycle]") {
  Env env(http_policy());
  check_gateway_403(curl(env.topo, "http://app.example.com/admin"));

  const int status = env.daemon.stop();
  CHECK(status == 0);
  // no daemon, still enforced (pinned and attached)
  check_gateway_403(curl(env.topo, "http://app.example.com/admin"));
  check_from_nginx(curl(env.topo, "http://app.example.com/healthz"), "GET", "app.example.com",
                   "/healthz");

  auto d = env.topo.exec(Role::gw, {policyd_bin(), "--detach", "--pin-dir", env.daemon.pin_dir()});
  INFO("detach: " << d.exit_code << " " << d.out << d.err);
  CHECK(d.exit_code == 0);
  check_from_nginx(curl(env.topo, "http://app.example.com/admin"), "GET", "app.example.com",
                   "/admin");
  auto tc = env.topo.exec(Role::gw, {"tc", "filter", "show", "dev", "gw-c", "ingress"});
  CHECK(tc.out.empty());
}

// Path normalization end to end: every spelling of a denied path is denied, paths
// that cannot be normalized safely get the fail mode, the query string is ignored.
// files.example.org allows everything but /admin, so a spelling that escaped
// normalization would be allowed (and show up in nginx's log).
#include <catch2/catch.hpp>

#include "common.hpp"
#include "harness.hpp"

using namespace policyd::e2e;

namespace {

const char* const kAdminSpellings[] = {
    "/admin",
    "/api/../admin",
    "//admin",
    "/./admin",
    "/x/y/../../admin",
    "/%61dmin",           // percent-encoded unreserved character
    "/%61%64%6D%69%6E",   // all of it, upper-case hex
    "/api/%2e%2e/admin",  // encoded dot segment
    "/api/.%2E/admin",
    "/admin?x=1",
    "/admin/../admin/x",
};

}  // namespace

TEST_CASE("every spelling of a denied path is denied", "[e2e][path]") {
  Env env(http_policy());

  for (const char* target : kAdminSpellings) {
    INFO("target " << target);
    check_gateway_403(curl(env.topo, cat("http://files.example.org", target),
                           {"--path-as-is"}));
  }
  // matching is case-sensitive, and /administrator is a byte prefix match of /admin
  check_from_nginx(curl(env.topo, "http://files.example.org/ADMIN"), "GET", "files.example.org",
                   "/ADMIN");
  check_gateway_403(curl(env.topo, "http://files.example.org/administrator"));
  check_from_nginx(curl(env.topo, "http://files.example.org/public/../index.html", {"--path-as-is"}),
                   "GET", "files.example.org", "/index.html");

  env.nginx.sync();
  CHECK(env.nginx.lines_with("dmin").empty());
  CHECK(env.nginx.lines_with("%6").empty());
  CHECK(env.nginx.lines_with(logged("GET", "/ADMIN")).size() == 1);
}

TEST_CASE("the query string is not part of the path", "[e2e][path]") {
  Env env(http_policy());

  check_from_nginx(curl(env.topo, "http://app.example.com/healthz?x=1"), "GET", "app.example.com",
                   "/healthz");
  check_from_nginx(curl(env.topo, "http://app.example.com/healthz?next=/admin"), "GET",
                   "app.example.com", "/healthz");
  check_gateway_403(curl(env.topo, "http://app.example.com/admin?healthz"));
  env.nginx.sync();
  CHECK(env.nginx.lines_with(logged("GET", "/healthz?x=1")).size() == 1);
}

TEST_CASE("paths that cannot be normalized safely get the fail mode", "[e2e][path][fail-mode]") {
  // encoded slash, backslash (raw and encoded), encoded NUL
  const std::vector<std::string> targets = {"/%2Fadmin", "/x%2F..%2Fadmin", "/\\admin",
                                            "/%5Cadmin", "/adm%00in"};

  SECTION("fail_mode: closed denies them") {
    Env env(http_policy("deny", "closed"));
    for (const auto& t : targets) {
      INFO("target " << t);
      check_gateway_403(
          curl(env.topo, "http://files.example.org/", {"--request-target", t}));
    }
    env.nginx.sync();
    CHECK(env.nginx.access_log().empty());
  }
  SECTION("fail_mode: open lets them pass (so it is the fail mode that decides)") {
    Env env(http_policy("deny", "open"));
    for (const auto& t : targets) {
      INFO("target " << t);
      auto r = curl(env.topo, "http://files.example.org/", {"--request-target", t});
      // nginx itself answers 400 to an encoded NUL; everything else it serves
      CHECK(r.http_code == (t == "/adm%00in" ? 400 : 200));
      CHECK(r.header("Server").value_or("").rfind("nginx", 0) == 0);
    }
    env.nginx.sync();
    CHECK(env.nginx.access_log().size() == targets.size());
  }
}

// nginx decodes every %XX of the path before it matches a location and before $uri; so does
// policyd, in requests and in routes. A route that names a reserved character is matched by
// its encoded spelling, and a route written encoded by the literal one.
TEST_CASE("routes and requests are compared decoded, as nginx compares them", "[e2e][path]") {
  const std::string policy = edit_policy(http_policy(), "  - match: [\"files.example.org\"]\n    routes:\n",
                                         "  - match: [\"files.example.org\"]\n    routes:\n"
                                         "      - path: { prefix: \"/r@w/\" }\n        action: deny\n"
                                         "      - path: { exact: \"/en%3Dcoded\" }\n        action: deny\n"
                                         "      - path: { prefix: \"/semi;\" }\n        action: deny\n");
  Env env(policy);
  for (const char* target : {"/r%40w/x", "/r@w/x", "/en=coded", "/en%3Dcoded", "/en%3dcoded", "/semi%3Bcolon",
                             "/semi;colon"}) {
    INFO("target " << target);
    check_gateway_403(curl(env.topo, cat("http://files.example.org", target), {"--path-as-is"}));
  }
  // nginx serves such paths, decoded ($uri), when they are allowed
  check_from_nginx(curl(env.topo, "http://files.example.org/ok%40x", {"--path-as-is"}), "GET", "files.example.org",
                   "/ok@x");
  check_from_nginx(curl(env.topo, "http://files.example.org/caf%C3%A9", {"--path-as-is"}), "GET",
                   "files.example.org", "/caf\xC3\xA9");
  env.nginx.sync();
  CHECK(env.nginx.lines_with("r%40w").empty());
  CHECK(env.nginx.lines_with("r@w").empty());
  CHECK(env.nginx.lines_with("coded").empty());
  CHECK(env.nginx.lines_with("semi").empty());
}

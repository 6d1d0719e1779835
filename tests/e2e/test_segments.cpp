// Request heads split over segments, pipelining and keep-alive, with the raw client.
#include <catch2/catch.hpp>

#include "common.hpp"
#include "harness.hpp"

using namespace policyd::e2e;
using nlohmann::json;

namespace {

const std::string kServer{kServerV4};

std::string rest_of_head() { return "User-Agent: e2e-rawclient\r\nConnection: close\r\n\r\n"; }

}  // namespace

TEST_CASE("a request head split over several segments is judged on the whole head",
          "[e2e][segments]") {
  Env env(http_policy());

  struct Case {
    const char* what;
    json steps;
    int status;
  };
  const std::vector<Case> cases = {
      {"request line | Host | rest, allowed",
       {"GET /healthz HTTP/1.1\r\n", "Host: app.example.com\r\n", rest_of_head()}, 200},
      {"request line | Host | rest, denied",
       {"GET /admin HTTP/1.1\r\n", "Host: app.example.com\r\n", rest_of_head()}, 403},
      {"split inside the Host value, allowed",
       {"GET /healthz HTTP/1.1\r\nHost: app.exa", cat("mple.com\r\n", rest_of_head())}, 200},
      {"split inside the Host value, denied",
       {"GET /admin HTTP/1.1\r\nHost: app.exa", cat("mple.com\r\n", rest_of_head())}, 403},
      // the first segment alone would look like host "a" (default deny) or like
      // "app.example.co" (no rule): only the whole value counts
      {"split after the first Host character, allowed",
       {"GET /healthz HTTP/1.1\r\nHost: a", cat("pp.example.com\r\n", rest_of_head())}, 200},
      {"split inside the path, denied",
       {"GET /adm", cat("in HTTP/1.1\r\nHost: app.example.com\r\n", rest_of_head())}, 403},
      {"split inside the path, allowed",
       {"GET /api/it", cat("ems HTTP/1.1\r\nHost: app.example.com\r\n", rest_of_head())}, 200},
      {"one byte, then the rest, denied",
       {"G", cat("ET /admin HTTP/1.1\r\nHost: app.example.com\r\n", rest_of_head())}, 403},
      {"split between the final CR LF, denied",
       {"GET /admin HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r", "\n"}, 403},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    auto r = raw_client(env.topo, kServer, c.steps, {"--expect", "1"});
    INFO(r.json << r.err);
    REQUIRE(r.statuses.size() == 1);
    CHECK(r.statuses[0] == c.status);
    if (c.status == 200)
      CHECK(r.responses[0].header("Server").value_or("").rfind("nginx", 0) == 0);
    else
      check_gateway_403(r.responses[0]);
  }

  env.nginx.sync();
  CHECK(env.nginx.served_with(logged("GET", "/healthz")).size() == 3);
  CHECK(env.nginx.served_with(logged("GET", "/api/items")).size() == 1);
  // nginx saw the first segments of the denied heads (they pass through until the
  // head is complete) and logs a 400 for each reset connection, but served none
  CHECK(env.nginx.served_with("/admin").empty());
  CHECK(env.nginx.served_with("/adm").empty());
}

TEST_CASE("pipelined requests are each judged", "[e2e][pipelining]") {
  Env env(http_policy());

  SECTION("three allowed requests in one segment") {
    const std::string chunk = http_request("GET", "/api/p1", "app.example.com") +
                              http_request("GET", "/healthz", "app.example.com") +
                              http_request("GET", "/api/p3", "app.example.com");
    auto r = raw_client(env.topo, kServer, json::array({chunk}), {"--expect", "3"});
    INFO(r.json << r.err);
    CHECK(r.statuses == std::vector<int>{200, 200, 200});
    env.nginx.sync();
    CHECK(env.nginx.lines_with(logged("GET", "/api/p1")).size() == 1);
    CHECK(env.nginx.lines_with(logged("GET", "/healthz")).size() == 1);
    CHECK(env.nginx.lines_with(logged("GET", "/api/p3")).size() == 1);
  }
  SECTION("allowed, denied, allowed in one segment") {
    const std::string chunk = http_request("GET", "/api/p1", "app.example.com") +
                              http_request("GET", "/admin", "app.example.com") +
                              http_request("GET", "/api/p3", "app.example.com");
    auto r = raw_client(env.topo, kServer, json::array({chunk}), {"--expect", "2"});
    INFO(r.json << r.err);
    REQUIRE(r.statuses == std::vector<int>{200, 403});
    CHECK(r.responses[0].body == "ok GET app.example.com /api/p1\n");
    check_gateway_403(r.responses[1]);
    CHECK((r.closed || r.reset));
    CHECK(r.trailing == 0);
    env.nginx.sync();
    CHECK(env.nginx.lines_with(logged("GET", "/api/p1")).size() == 1);
    CHECK(env.nginx.lines_with("/admin").empty());
    CHECK(env.nginx.lines_with("/api/p3").empty());
  }
  SECTION("allowed, then denied in the second of two segments") {
    const std::string first = http_request("GET", "/api/p1", "app.example.com") +
                              http_request("GET", "/api/p2", "app.example.com");
    const std::string second = http_request("GET", "/admin", "app.example.com") +
                               http_request("GET", "/api/p4", "app.example.com");
    auto r = raw_client(env.topo, kServer, {first, second}, {"--expect", "3"});
    INFO(r.json << r.err);
    REQUIRE(r.statuses == std::vector<int>{200, 200, 403});
    check_gateway_403(r.responses[2]);
    env.nginx.sync();
    CHECK(env.nginx.lines_with("/api/p2").size() == 1);
    CHECK(env.nginx.lines_with("/admin").empty());
    CHECK(env.nginx.lines_with("/api/p4").empty());
  }
}

TEST_CASE("every request on a keep-alive connection is judged", "[e2e][keep-alive]") {
  Env env(http_policy());

  SECTION("allowed, allowed, denied") {
    json steps = {http_request("GET", "/healthz", "app.example.com"), {{"await", 1}},
                  http_request("GET", "/api/k2", "app.example.com"), {{"await", 2}},
                  http_request("GET", "/admin", "app.example.com"), {{"await", 3}}};
    auto r = raw_client(env.topo, kServer, steps, {"--expect", "3"});
    INFO(r.json << r.err);
    REQUIRE(r.statuses == std::vector<int>{200, 200, 403});
    check_gateway_403(r.responses[2]);
    env.nginx.sync();
    const auto lines = env.nginx.access_log();
    REQUIRE(lines.size() == 2);
    CHECK(lines[0].find(logged("GET", "/healthz")) != std::string::npos);
    CHECK(lines[1].find(logged("GET", "/api/k2")) != std::string::npos);
    CHECK(lines[1].find("#2 ") != std::string::npos);  // same connection, second request
  }
  SECTION("a POST body that looks like a request is body, not a request") {
    const std::string body = "GET /admin HTTP/1.1\r\nHost: app.example.com\r\n\r\n";
    json steps = {http_request("POST", "/forms/upload", "app.example.com", body), {{"await", 1}},
                  http_request("GET", "/healthz", "app.example.com"), {{"await", 2}},
                  http_request("GET", "/admin", "app.example.com"), {{"await", 3}}};
    auto r = raw_client(env.topo, kServer, steps, {"--expect", "3"});
    INFO(r.json << r.err);
    REQUIRE(r.statuses == std::vector<int>{200, 200, 403});
    CHECK(r.responses[0].body == "ok POST app.example.com /forms/upload\n");
    CHECK(r.responses[1].body == "ok GET app.example.com /healthz\n");
    check_gateway_403(r.responses[2]);
    env.nginx.sync();
    CHECK(env.nginx.lines_with(logged("POST", "/forms/upload")).size() == 1);
    CHECK(env.nginx.lines_with(logged("GET", "/healthz")).size() == 1);
    CHECK(env.nginx.lines_with("/admin").empty());
  }
  SECTION("the body arrives in its own segments, one of them starting like a request") {
    const std::string part1 = "field=1&";
    const std::string part2 = "GET /admin HTTP/1.1\r\nHost: app.example.com\r\n\r\n";
    const std::string head = cat("POST /forms/upload HTTP/1.1\r\nHost: app.example.com\r\n",
                                 "Content-Length: ", part1.size() + part2.size(), "\r\n\r\n");
    json steps = {head, part1, part2, {{"await", 1}},
                  http_request("GET", "/api/after", "app.example.com"), {{"await", 2}},
                  http_request("POST", "/api/after", "app.example.com", "x=1"), {{"await", 3}}};
    auto r = raw_client(env.topo, kServer, steps, {"--expect", "3"});
    INFO(r.json << r.err);
    REQUIRE(r.statuses == std::vector<int>{200, 200, 403});
    check_gateway_403(r.responses[2]);
    env.nginx.sync();
    CHECK(env.nginx.lines_with(logged("POST", "/forms/upload")).size() == 1);
    CHECK(env.nginx.lines_with(logged("GET", "/api/after")).size() == 1);
    CHECK(env.nginx.lines_with(logged("POST", "/api/after")).empty());
    CHECK(env.nginx.lines_with("/admin").empty());
  }
  // issue 17: whatever framing nginx accepts is walked, however long, however it is cut
  SECTION("a chunked body of 400 tiny chunks, a long extension and a long trailer") {
    std::string body = cat("000000000005;", std::string(2000, 'e'), "\r\nhello\r\n");
    for (int i = 0; i < 400; ++i) body += "1\r\na\r\n";
    body += cat("0\r\nX-Trailer: ", std::string(2000, 't'), "\r\n\r\n");
    const std::string head = "POST /forms/chunks HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: chunked\r\n\r\n";
    // the head, the body in one send (segments as TCP cuts it), then two more requests
    json steps = {head, body, {{"await", 1}}, http_request("GET", "/healthz", "app.example.com"), {{"await", 2}},
                  http_request("GET", "/admin", "app.example.com"), {{"await", 3}}};
    auto r = raw_client(env.topo, kServer, steps, {"--expect", "3"});
    INFO(r.json << r.err);
    REQUIRE(r.statuses == std::vector<int>{200, 200, 403});
    CHECK(r.responses[0].body == "ok POST app.example.com /forms/chunks\n");
    env.nginx.sync();
    CHECK(env.nginx.lines_with(logged("POST", "/forms/chunks")).size() == 1);
    CHECK(env.nginx.lines_with("/admin").empty());
  }
  SECTION("a request after the body in the same segment is judged") {
    const std::string body = "GET /admin HTTP/1.1\r\n\r\n";
    const std::string chunk = http_request("POST", "/forms/upload", "app.example.com", body) +
                              http_request("GET", "/admin", "app.example.com");
    auto r = raw_client(env.topo, kServer, json::array({chunk}), {"--expect", "2"});
    INFO(r.json << r.err);
    REQUIRE(r.statuses == std::vector<int>{200, 403});
    env.nginx.sync();
    CHECK(env.nginx.lines_with(logged("POST", "/forms/upload")).size() == 1);
    CHECK(env.nginx.lines_with("/admin").empty());
  }
}

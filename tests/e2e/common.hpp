// Policies and checks shared by the end-to-end test cases.
#pragma once

#include <string>
#include <string_view>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "harness.hpp"

namespace policyd::e2e {

// The policy most tests run under. Hosts and routes, and what each one is for:
//   app.example.com    /admin deny; /healthz exact allow; /api/ GET only; /forms/ POST only;
//                      /drop/ drop; /reset/ reset; anything else: no route -> default_action
//   files.example.org  /admin deny, everything else allowed (so a path that escaped
//                      normalization would be allowed: the normalization tests use it)
//   *.example.com      everything allowed (a.example.com, b.a.example.com; not example.com)
//   anything else      default_action
inline std::string http_policy(std::string_view default_action = "deny",
                               std::string_view fail_mode = "closed") {
  std::string p = R"(version: 1
interfaces: ["gw-c"]
listeners:
  - name: web
    port: 80
    protocol: http
chain: [host, path]
default_action: DEFAULT_ACTION
fail_mode: FAIL_MODE
hosts:
  - match: "app.example.com"
    routes:
      - path: { prefix: "/admin" }
        action: deny
      - path: { exact: "/healthz" }
        action: allow
      - path: { prefix: "/api/" }
        methods: [GET]
        action: allow
      - path: { prefix: "/forms/" }
        methods: [POST]
        action: allow
      - path: { prefix: "/drop/" }
        action: drop
      - path: { prefix: "/reset/" }
        action: reset
  - match: ["files.example.org"]
    routes:
      - path: { prefix: "/admin" }
        action: deny
      - path: { prefix: "/" }
        action: allow
  - match: ["*.example.com"]
    routes:
      - path: { prefix: "/" }
        action: allow
)";
  auto replace = [&p](std::string_view key, std::string_view value) {
    p.replace(p.find(key), key.size(), value);
  };
  replace("DEFAULT_ACTION", default_action);
  replace("FAIL_MODE", fail_mode);
  return p;
}

// nginx answered: its 200 with the body it generates for (method, host, uri).
inline void check_from_nginx(const CurlResult& r, std::string_view method, std::string_view host,
                             std::string_view uri) {
  INFO("curl exit " << r.curl_exit << ", stderr: " << r.err << "\nheaders:\n" << r.headers
                    << "body: " << r.body);
  CHECK(r.curl_exit == 0);
  CHECK(r.http_code == 200);
  CHECK(r.body == cat("ok ", method, " ", host, " ", uri, "\n"));
  CHECK(r.header("Server").value_or("").rfind("nginx", 0) == 0);
}

// The gateway answered with its own 403: not nginx's headers or body, Connection: close.
inline void check_gateway_403(const CurlResult& r) {
  INFO("curl exit " << r.curl_exit << ", stderr: " << r.err << "\nheaders:\n" << r.headers
                    << "body: " << r.body);
  if (r.http_code != 403) {
    FAIL_CHECK("expected the gateway's 403, got HTTP " << r.http_code);
    return;
  }
  CHECK(r.curl_exit == 0);
  CHECK(r.header("Server").value_or("").find("nginx") == std::string::npos);
  CHECK(r.body.rfind("ok ", 0) != 0);
  CHECK(r.body.find("nginx") == std::string::npos);
  CHECK(Catch::toLower(r.header("Connection").value_or("")) == "close");
}

inline void check_gateway_403(const RawResponse& r) {
  INFO("status " << r.status << " body: " << r.body);
  if (r.status != 403) {
    FAIL_CHECK("expected the gateway's 403, got HTTP " << r.status);
    return;
  }
  CHECK(r.header("Server").value_or("").find("nginx") == std::string::npos);
  CHECK(r.body.rfind("ok ", 0) != 0);
  CHECK(Catch::toLower(r.header("Connection").value_or("")) == "close");
}

// The request line as nginx logs it, quoted: "\"GET /admin HTTP/1.1\"".
inline std::string logged(std::string_view method, std::string_view target) {
  return cat("\"", method, " ", target, " HTTP/1.1\"");
}

// policyctl against the daemon's control socket.
inline ExecResult ctl(const Daemon& d, std::vector<std::string> args, Millis timeout = 30s) {
  std::vector<std::string> argv{POLICYCTL_BIN, "--socket", d.socket_path()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, timeout);
}

// `policyctl -o json COMMAND` (status, stats, ...), which must succeed: its answer's arguments.
inline nlohmann::json ctl_json(const Daemon& d, const std::string& command) {
  auto r = ctl(d, {"-o", "json", command});
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  auto j = nlohmann::json::parse(r.out);
  return j.contains("arguments") ? j["arguments"] : j;
}

// Everything a test needs, declared in the order that tears it down correctly.
// `text` with its first `from` replaced by `to` (a policy variant); throws if absent.
inline std::string edit_policy(std::string text, const std::string& from, const std::string& to) {
  auto at = text.find(from);
  if (at == std::string::npos) throw std::runtime_error(cat("policy text has no '", from, "'"));
  return text.replace(at, from.size(), to);
}

struct Env {
  explicit Env(std::string_view policy) : daemon(topo, policy) {}
  Topology topo;
  Backend nginx{topo};
  Daemon daemon;
};

// The policy of the TLS tests. Names and what each one is for:
//   api.example.com          allow (first rule, exact; case-insensitive)
//   *.corp.example.com       deny (x.corp.example.com, a.b.corp.example.com)
//   *.example.com            allow (b.a.example.com, corp.example.com; not example.com)
//   blocked.test             reset
//   anything else            default_action; no server_name: missing_sni
inline std::string tls_policy(std::string_view missing_sni = "deny", std::string_view default_action = "deny",
                       std::string_view fail_mode = "closed") {
  return cat(R"(version: 1
interfaces: ["gw-c"]
listeners:
  - name: secure
    port: 443
    protocol: tls
chain: [sni]
default_action: )",
             default_action, R"(
fail_mode: )",
             fail_mode, R"(
sni:
  - match: "api.example.com"
    action: allow
  - match: "*.corp.example.com"
    action: deny
  - match: "*.example.com"
    action: allow
  - match: "blocked.test"
    action: reset
missing_sni: )",
             missing_sni, "\n");
}

// A TLS test's fixtures, torn down in reverse: the daemon (and its chain) first, then
// nginx, then the namespaces.
struct TlsEnv {
  explicit TlsEnv(std::string_view policy) : daemon(topo, policy) {}
  Topology topo;
  TlsBackend nginx{topo};
  Daemon daemon;
};

}  // namespace policyd::e2e

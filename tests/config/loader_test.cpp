// Loading valid policies: every key of POLICY.md lands in the structs; defaults; helpers.
#include "config/loader.hpp"

#include <catch2/catch.hpp>
#include <filesystem>
#include <string>

#include "config/policy.hpp"

using namespace policyd::config;

namespace {

const std::string kSourceDir = POLICYD_SOURCE_DIR;

// The smallest valid policy; tests append to it.
const std::string kMinimal = R"(version: 1
interfaces: [eth0]
listeners:
  - name: web
    port: 80
    protocol: http
)";

std::string error_of(const std::string& yaml, const std::string& name = "test.yaml") {
  try {
    load_policy_string(yaml, name);
  } catch (const PolicyError& e) {
    return e.what();
  }
  return "(no error)";
}

std::array<uint8_t, 16> bytes(std::initializer_list<uint8_t> b) {
  std::array<uint8_t, 16> out{};
  std::copy(b.begin(), b.end(), out.begin());
  return out;
}

}  // namespace

TEST_CASE("full example: every key of POLICY.md is parsed", "[config][loader]") {
  const std::string path = kSourceDir + "/config/examples/full.yaml";
  const Policy p = load_policy_file(path);

  CHECK(p.version == 1);
  CHECK(p.source_path == path);
  CHECK(p.interfaces == std::vector<std::string>{"eth0", "veth*"});

  REQUIRE(p.listeners.size() == 2);
  CHECK(p.listeners[0].name == "web");
  CHECK(p.listeners[0].port == 80);
  CHECK(p.listeners[0].protocol == Protocol::Http);
  CHECK(p.listeners[0].quic == QuicMode::Deny);
  CHECK_FALSE(p.listeners[0].address.has_value());
  CHECK(p.listeners[1].name == "secure");
  CHECK(p.listeners[1].port == 443);
  CHECK(p.listeners[1].protocol == Protocol::Tls);
  CHECK(p.listeners[1].quic == QuicMode::Deny);
  CHECK(p.listeners[1].loc.file == path);
  CHECK(p.listeners[1].loc.line > p.listeners[0].loc.line);

  CHECK(p.chain == std::vector<StageKind>{StageKind::Sni, StageKind::Host, StageKind::Path,
                                          StageKind::Jwt, StageKind::Ratelimit});
  CHECK(p.default_action == Action::Deny);
  CHECK(p.fail_mode == FailMode::Closed);
  CHECK(p.limits.max_head_bytes == 8192);
  CHECK(p.limits.max_flows == 262144);

  REQUIRE(p.sni.size() == 2);
  CHECK(p.sni[0].match == "api.example.com");
  CHECK(p.sni[0].action == Action::Allow);
  CHECK(p.sni[1].match == "*.corp.example.com");
  CHECK(p.sni[1].action == Action::Deny);
  CHECK(p.missing_sni == Action::Deny);

  REQUIRE(p.hosts.size() == 2);
  CHECK(p.hosts[0].matches == std::vector<std::string>{"api.example.com", "*.api.example.com"});
  REQUIRE(p.hosts[0].routes.size() == 3);
  const Route& admin = p.hosts[0].routes[0];
  CHECK(admin.path == PathMatch{PathMatch::Prefix, "/admin"});
  CHECK(admin.methods == 0);
  CHECK(admin.action == Action::Deny);
  CHECK_FALSE(admin.jwt.has_value());
  CHECK_FALSE(admin.ratelimit.has_value());
  CHECK(p.hosts[0].routes[1].path == PathMatch{PathMatch::Exact, "/healthz"});
  CHECK(p.hosts[0].routes[1].action == Action::Allow);
  const Route& v1 = p.hosts[0].routes[2];
  CHECK(v1.path == PathMatch{PathMatch::Prefix, "/v1/"});
  CHECK(v1.methods == (GET | POST));
  REQUIRE(v1.jwt.has_value());
  CHECK(v1.jwt->provider == "main");
  CHECK(v1.jwt->require.empty());
  CHECK(v1.ratelimit == std::optional<std::string>("per_client"));
  CHECK(v1.action == Action::Allow);
  CHECK(v1.loc.file == path);
  CHECK(v1.loc.line > 0);
  CHECK(p.hosts[1].matches == std::vector<std::string>{"*"});
  REQUIRE(p.hosts[1].routes.size() == 1);
  CHECK(p.hosts[1].routes[0].path == PathMatch{PathMatch::Prefix, "/"});
  CHECK(p.hosts[1].routes[0].action == Action::Deny);

  REQUIRE(p.jwt_providers.size() == 1);
  const JwtProvider& main = p.jwt_providers.at("main");
  CHECK(main.name == "main");
  CHECK(main.issuer == "https://auth.example.com");
  CHECK(main.audiences == std::vector<std::string>{"api"});
  CHECK(main.algorithms == std::vector<std::string>{"HS256"});
  CHECK(main.secret_file == std::optional<std::string>("/etc/policyd/main.key"));
  CHECK_FALSE(main.jwks_file.has_value());
  CHECK(main.clock_skew == std::chrono::seconds(30));
  CHECK(main.require_exp == true);
  CHECK(main.loc.file == path);

  REQUIRE(p.ratelimits.size() == 1);
  const RateLimit& rl = p.ratelimits.at("per_client");
  CHECK(rl.name == "per_client");
  CHECK(rl.key == RateLimit::ClientIp);
  CHECK(rl.rate == 100);
  CHECK(rl.unit == RateLimit::PerSecond);
  CHECK(rl.burst == 200);
  CHECK(rl.action == LimitAction::Reject);
}

TEST_CASE("every example in config/examples loads", "[config][examples]") {
  int loaded = 0;
  for (const auto& entry : std::filesystem::directory_iterator(kSourceDir + "/config/examples")) {
    if (entry.path().extension() != ".yaml") continue;
    INFO(entry.path().string());
    CHECK_NOTHROW(load_policy_file(entry.path().string()));
    ++loaded;
  }
  CHECK(loaded >= 3);
}

TEST_CASE("http-basic example", "[config][examples]") {
  const Policy p = load_policy_file(kSourceDir + "/config/examples/http-basic.yaml");
  CHECK(p.interfaces == std::vector<std::string>{"veth*"});
  REQUIRE(p.listeners.size() == 1);
  CHECK(p.listeners[0].name == "web");
  CHECK(p.listeners[0].port == 80);
  CHECK(p.listeners[0].protocol == Protocol::Http);
  CHECK(p.chain == std::vector<StageKind>{StageKind::Host, StageKind::Path});
  CHECK(p.default_action == Action::Deny);
  REQUIRE(p.hosts.size() == 2);
  CHECK(p.hosts[0].matches == std::vector<std::string>{"app.example.com"});
  REQUIRE(p.hosts[0].routes.size() == 4);
  CHECK(p.hosts[0].routes[0].path == PathMatch{PathMatch::Prefix, "/admin"});
  CHECK(p.hosts[0].routes[0].action == Action::Deny);
  CHECK(p.hosts[0].routes[1].path == PathMatch{PathMatch::Exact, "/healthz"});
  CHECK(p.hosts[0].routes[2].path == PathMatch{PathMatch::Prefix, "/api/"});
  CHECK(p.hosts[0].routes[2].methods == (GET | POST));
  CHECK(p.hosts[0].routes[3].path == PathMatch{PathMatch::Prefix, "/static/"});
  CHECK(p.hosts[1].matches == std::vector<std::string>{"*.example.com"});
  REQUIRE(p.hosts[1].routes.size() == 1);
  CHECK(p.hosts[1].routes[0].path == PathMatch{PathMatch::Prefix, "/public/"});
  CHECK(p.hosts[1].routes[0].action == Action::Allow);
}

TEST_CASE("tls-basic example", "[config][examples]") {
  const Policy p = load_policy_file(kSourceDir + "/config/examples/tls-basic.yaml");
  REQUIRE(p.listeners.size() == 1);
  CHECK(p.listeners[0].protocol == Protocol::Tls);
  CHECK(p.listeners[0].port == 443);
  CHECK(p.chain == std::vector<StageKind>{StageKind::Sni});
  REQUIRE(p.sni.size() == 4);
  CHECK(p.sni[2].match == "*.internal.example.com");
  CHECK(p.sni[2].action == Action::Reset);
}

TEST_CASE("defaults when optional keys are absent", "[config][loader]") {
  const Policy p = load_policy_string(kMinimal, "min.yaml");
  CHECK(p.chain == std::vector<StageKind>{StageKind::Sni, StageKind::Host, StageKind::Path,
                                          StageKind::Jwt, StageKind::Ratelimit});
  CHECK(p.default_action == Action::Deny);
  CHECK(p.fail_mode == FailMode::Closed);
  CHECK(p.missing_sni == Action::Deny);
  CHECK(p.limits == Limits{});
  CHECK(p.limits.max_head_bytes == 8192);
  CHECK(p.limits.max_flows == 262144);
  CHECK(p.sni.empty());
  CHECK(p.hosts.empty());
  CHECK(p.jwt_providers.empty());
  CHECK(p.ratelimits.empty());
  CHECK(p.source_path == "min.yaml");
  CHECK(p.listeners[0].quic == QuicMode::Deny);
  CHECK(p.listeners[0].loc.file == "min.yaml");
  CHECK(p.listeners[0].loc.line == 4);
  CHECK(p.listeners[0].loc.column == 5);
}

TEST_CASE("non-default values of every optional key", "[config][loader]") {
  const Policy p = load_policy_string(kMinimal + R"(  - name: tls6
    port: 443
    protocol: tls
    quic: allow
    address: "2001:db8::/64"
  - name: tls4
    port: 443
    protocol: tls
    address: 192.0.2.10
chain: [sni, host, path, ratelimit, jwt]
default_action: reset
fail_mode: open
limits: { max_head_bytes: 16384, max_flows: 1024 }
sni:
  - { match: "Www.Example.COM.", action: drop }
missing_sni: allow
hosts:
  - match: "API.example.com"
    routes:
      - path: { exact: "/a%20b" }
        methods: PATCH
        jwt: { provider: rsa, require: { scope: "read", sub: 42 } }
        ratelimit: global_hourly
        action: allow
jwt_providers:
  rsa:
    issuer: iss
    audiences: single-aud
    algorithms: [RS256, ES384, HS512]
    jwks_file: keys/jwks.json
    secret_file: ../secret.key
    clock_skew: 2m
    require_exp: false
ratelimits:
  global_hourly: { key: global, rate: 5/h, action: drop }
  per_minute: { key: route, rate: 10/m }
  hosts: { key: host, rate: 1/s, burst: 1000000000 }
)",
                                      "/srv/policies/p.yaml");
  REQUIRE(p.listeners.size() == 3);
  const Listener& v6 = p.listeners[1];
  CHECK(v6.quic == QuicMode::Allow);
  REQUIRE(v6.address.has_value());
  CHECK(v6.address->family == 6);
  CHECK(v6.address->prefix_len == 64);
  CHECK(v6.address->addr == bytes({0x20, 0x01, 0x0d, 0xb8}));
  const Listener& v4 = p.listeners[2];
  REQUIRE(v4.address.has_value());
  CHECK(v4.address->family == 4);
  CHECK(v4.address->prefix_len == 32);
  CHECK(v4.address->addr == bytes({192, 0, 2, 10}));

  CHECK(p.chain == std::vector<StageKind>{StageKind::Sni, StageKind::Host, StageKind::Path,
                                          StageKind::Ratelimit, StageKind::Jwt});
  CHECK(p.default_action == Action::Reset);
  CHECK(p.fail_mode == FailMode::Open);
  CHECK(p.limits.max_head_bytes == 16384);
  CHECK(p.limits.max_flows == 1024);
  REQUIRE(p.sni.size() == 1);
  CHECK(p.sni[0].match == "www.example.com");
  CHECK(p.sni[0].action == Action::Drop);
  CHECK(p.missing_sni == Action::Allow);

  REQUIRE(p.hosts.size() == 1);
  CHECK(p.hosts[0].matches == std::vector<std::string>{"api.example.com"});
  const Route& r = p.hosts[0].routes.at(0);
  CHECK(r.path == PathMatch{PathMatch::Exact, "/a b"});  // escapes decoded, as requests' are
  CHECK(r.methods == PATCH);
  REQUIRE(r.jwt.has_value());
  CHECK(r.jwt->provider == "rsa");
  CHECK(r.jwt->require == std::map<std::string, std::string>{{"scope", "read"}, {"sub", "42"}});
  CHECK(r.ratelimit == std::optional<std::string>("global_hourly"));

  const JwtProvider& rsa = p.jwt_providers.at("rsa");
  CHECK(rsa.audiences == std::vector<std::string>{"single-aud"});
  CHECK(rsa.algorithms == std::vector<std::string>{"RS256", "ES384", "HS512"});
  CHECK(rsa.jwks_file == std::optional<std::string>("/srv/policies/keys/jwks.json"));
  CHECK(rsa.secret_file == std::optional<std::string>("/srv/secret.key"));
  CHECK(rsa.clock_skew == std::chrono::seconds(120));
  CHECK(rsa.require_exp == false);

  const RateLimit& hourly = p.ratelimits.at("global_hourly");
  CHECK(hourly.key == RateLimit::Global);
  CHECK(hourly.rate == 5);
  CHECK(hourly.unit == RateLimit::PerHour);
  CHECK(hourly.burst == 5);
  CHECK(hourly.action == LimitAction::Drop);
  const RateLimit& per_minute = p.ratelimits.at("per_minute");
  CHECK(per_minute.key == RateLimit::Route);
  CHECK(per_minute.unit == RateLimit::PerMinute);
  CHECK(per_minute.burst == 10);
  CHECK(per_minute.action == LimitAction::Reject);
  CHECK(p.ratelimits.at("hosts").key == RateLimit::Host);
  CHECK(p.ratelimits.at("hosts").burst == 1000000000);
}

TEST_CASE("jwt_sub rate limits after the jwt stage", "[config][loader]") {
  const Policy p = load_policy_string(kMinimal + R"(hosts:
  - match: "*"
    routes:
      - path: { prefix: "/" }
        jwt: auth
        ratelimit: per_user
        action: allow
jwt_providers:
  auth: { issuer: i, audiences: [a], algorithms: [ES256], jwks_file: /k.json }
ratelimits:
  per_user: { key: jwt_sub, rate: 3/s }
)",
                                      "x.yaml");
  CHECK(p.ratelimits.at("per_user").key == RateLimit::JwtSub);
}

TEST_CASE("an empty chain and hosts without their stages", "[config][loader]") {
  const Policy p = load_policy_string(kMinimal + "chain: []\n", "x.yaml");
  CHECK(p.chain.empty());
  CHECK(
      error_of(kMinimal + "chain: [sni]\nhosts:\n  - match: a\n    routes:\n      - {path: "
                          "{prefix: /}, action: allow}\n") ==
      "test.yaml:8:1: hosts are defined but 'host' is not in the chain, so they would never apply");
}

TEST_CASE("listeners may share a port on disjoint addresses", "[config][loader]") {
  const Policy p = load_policy_string(kMinimal + R"(    address: 10.0.0.0/16
  - { name: b, port: 80, protocol: http, address: 10.1.0.0/16 }
  - { name: c, port: 80, protocol: http, address: "2001:db8::1" }
  - { name: d, port: 81, protocol: http }
)",
                                      "x.yaml");
  CHECK(p.listeners.size() == 4);
  CHECK(error_of(kMinimal + "    address: 10.0.0.0/8\n  - { name: b, port: 80, protocol: tls, "
                            "address: 10.1.0.0/16 }\n") ==
        "test.yaml:8:22: port 80 is already used by listener 'web' at 4:5 for an overlapping "
        "address");
}

TEST_CASE("relative key files resolve against the policy's directory", "[config][loader]") {
  const std::string yaml = kMinimal + R"(jwt_providers:
  hs: { issuer: i, audiences: [a], algorithms: [HS256], secret_file: keys/hs.key }
)";
  CHECK(load_policy_string(yaml, "/etc/policyd/policy.yaml").jwt_providers.at("hs").secret_file ==
        std::optional<std::string>("/etc/policyd/keys/hs.key"));
  const std::string cwd = std::filesystem::current_path().string();
  CHECK(load_policy_string(yaml, "policy.yaml").jwt_providers.at("hs").secret_file ==
        std::optional<std::string>(cwd + "/keys/hs.key"));
}

TEST_CASE("PolicyError carries file, line, column and message", "[config][loader]") {
  try {
    load_policy_string(kMinimal + "  - name: web2\n    port: 81\n    protocol: smtp\n", "p.yaml");
    FAIL("no error");
  } catch (const PolicyError& e) {
    CHECK(e.file() == "p.yaml");
    CHECK(e.line() == 9);
    CHECK(e.column() == 15);
    CHECK(e.message() == "expected one of http, tls for 'protocol', got 'smtp'");
    CHECK(std::string(e.what()) ==
          "p.yaml:9:15: expected one of http, tls for 'protocol', got 'smtp'");
  }
}

TEST_CASE("a file that cannot be read", "[config][loader]") {
  const std::string missing = kSourceDir + "/tests/config/no-such-policy.yaml";
  try {
    load_policy_file(missing);
    FAIL("no error");
  } catch (const PolicyError& e) {
    CHECK(std::string(e.what()) == missing + ": cannot read: No such file or directory");
    CHECK(e.line() == 0);
    CHECK(e.column() == 0);
    CHECK(e.message() == "cannot read: No such file or directory");
  }
  const std::string dir = kSourceDir + "/config/examples";
  try {
    load_policy_file(dir);
    FAIL("no error");
  } catch (const PolicyError& e) {
    CHECK(std::string(e.what()) == dir + ": cannot read: Is a directory");
  }
}

TEST_CASE("empty policies", "[config][loader]") {
  CHECK(error_of("") ==
        "test.yaml:1:1: the policy is empty (expected a mapping with version, interfaces and "
        "listeners)");
  CHECK(error_of("# nothing\n") ==
        "test.yaml:1:1: the policy is empty (expected a mapping with version, interfaces and "
        "listeners)");
}

TEST_CASE("route and host pattern limits", "[config][loader]") {
  SECTION("65536 routes load, 65537 do not") {
    std::string yaml =
        kMinimal + "chain: [host, path]\nhosts:\n  - match: a.example\n    routes:\n";
    const std::string route = "      - {path: {prefix: /}, action: allow}\n";
    for (int i = 0; i < 65536; ++i) yaml += route;
    CHECK(load_policy_string(yaml, "big.yaml").hosts[0].routes.size() == 65536);
    yaml += route;
    CHECK(error_of(yaml) == "test.yaml:65547:9: too many routes: a policy holds at most 65536");
  }
  SECTION("16384 host patterns load, 16385 do not") {
    std::string yaml = kMinimal + "chain: [host, path]\nhosts:\n";
    for (int i = 0; i < 16384; ++i) {
      yaml += "  - {match: h" + std::to_string(i) +
              ".example, routes: [{path: {prefix: /}, action: allow}]}\n";
    }
    CHECK(load_policy_string(yaml, "big.yaml").hosts.size() == 16384);
    yaml += "  - {match: [x.example], routes: [{path: {prefix: /}, action: allow}]}\n";
    CHECK(error_of(yaml) ==
          "test.yaml:16393:14: too many host patterns: a policy holds at most 16384");
  }
  SECTION("8192 sni rules load, 8193 do not") {
    std::string yaml = kMinimal + "chain: [sni]\nsni:\n";
    for (int i = 0; i < 8192; ++i) yaml += "  - {match: s" + std::to_string(i) + ".example, action: allow}\n";
    CHECK(load_policy_string(yaml, "big.yaml").sni.size() == 8192);
    yaml += "  - {match: x.example, action: allow}\n";
    CHECK(error_of(yaml).find(":8201:5: too many sni rules: a policy holds at most 8192") != std::string::npos);
  }
}

TEST_CASE("policies compare by content, not by position", "[config][policy]") {
  const Policy a = load_policy_string(kMinimal, "a.yaml");
  Policy b = load_policy_string("\n\n# moved down\n" + kMinimal, "a.yaml");
  CHECK(a.listeners[0].loc.line != b.listeners[0].loc.line);
  CHECK(a == b);
  b.listeners[0].port = 81;
  CHECK_FALSE(a == b);
  const Policy full1 = load_policy_file(kSourceDir + "/config/examples/full.yaml");
  Policy full2 = full1;
  CHECK(full1 == full2);
  full2.hosts[0].routes[2].jwt->require["scope"] = "write";
  CHECK(full1 != full2);
}

TEST_CASE("names of enumerations and methods", "[config][policy]") {
  CHECK(to_string(Action::Allow) == "allow");
  CHECK(to_string(Action::Reset) == "reset");
  CHECK(to_string(LimitAction::Reject) == "reject");
  CHECK(to_string(FailMode::Open) == "open");
  CHECK(to_string(Protocol::Tls) == "tls");
  CHECK(to_string(QuicMode::Allow) == "allow");
  CHECK(to_string(StageKind::Ratelimit) == "ratelimit");
  CHECK(to_string(StageKind::Sni) == "sni");
  CHECK(to_string(PathMatch::Exact) == "exact");
  CHECK(to_string(RateLimit::JwtSub) == "jwt_sub");
  CHECK(to_string(RateLimit::PerHour) == "h");
  CHECK(to_string(DELETE) == "DELETE");

  CHECK(method_bit("GET") == std::optional<uint32_t>(GET));
  CHECK(method_bit("PATCH") == std::optional<uint32_t>(1u << 8));
  CHECK_FALSE(method_bit("get").has_value());
  CHECK_FALSE(method_bit("PROPFIND").has_value());
  uint32_t all = 0;
  for (const char* m :
       {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}) {
    const auto bit = method_bit(m);
    REQUIRE(bit.has_value());
    CHECK((all & *bit) == 0);
    all |= *bit;
  }
  CHECK(all == 0x1ff);
}

TEST_CASE("a route path's escapes are decoded into bytes, as requests' are (and nginx's locations)", "[config][loader]") {
  auto p = load_policy_string(kMinimal + R"(chain: [host, path]
hosts:
  - match: a.example
    routes:
      - path: { exact: "/caf%c3%a9" }
        action: allow
      - path: { prefix: "/x%2a/" }
        action: deny
      - path: { prefix: "/%7Euser/%61%40b%3F%23%25" }
        action: deny
)",
                              "escapes.yaml");
  CHECK(p.hosts[0].routes[0].path == PathMatch{PathMatch::Exact, "/caf\xc3\xa9"});
  CHECK(p.hosts[0].routes[1].path == PathMatch{PathMatch::Prefix, "/x*/"});
  CHECK(p.hosts[0].routes[2].path == PathMatch{PathMatch::Prefix, "/~user/a@b?#%"});
  // written back as a request would carry them (display, preflight requests)
  CHECK(encode_path(p.hosts[0].routes[0].path.value) == "/caf%C3%A9");
  CHECK(encode_path(p.hosts[0].routes[2].path.value) == "/~user/a@b%3F%23%25");
  // what decoding would turn into something no request path holds is refused
  const std::string head = kMinimal + "chain: [host, path]\nhosts:\n  - match: a.example\n    routes:\n";
  CHECK(error_of(head + "      - {path: {prefix: \"/a%2F\"}, action: deny}\n").find("is an encoded '/'") !=
        std::string::npos);
  CHECK(error_of(head + "      - {path: {prefix: \"/a/%2E/b\"}, action: deny}\n").find("dot segments") !=
        std::string::npos);
  CHECK(error_of(head + "      - {path: {prefix: \"/a%2f%2f\"}, action: deny}\n").find("is an encoded '/'") !=
        std::string::npos);
}

// plan(): exactly the stages whose slice of the policy changed appear in the plan.
#include <catch2/catch.hpp>

#include <set>

#include "chain/stage.hpp"
#include "config/loader.hpp"

using namespace policyd;

namespace {

const std::string kBase = R"(version: 1
interfaces: ["eth0"]
listeners:
  - name: web
    port: 80
    protocol: http
chain: [host, path]
default_action: deny
fail_mode: closed
hosts:
  - match: ["app.example.com"]
    routes:
      - path: { prefix: "/admin" }
        action: deny
      - path: { exact: "/healthz" }
        action: allow
      - path: { prefix: "/api/" }
        methods: [GET]
        action: allow
  - match: "*.example.com"
    routes:
      - path: { prefix: "/public/" }
        action: allow
)";

chain::Tables tables(const std::string& yaml, uint32_t gen = 0) {
  auto policy = config::load_policy_string(yaml, "test.yaml");
  auto t = chain::compile(policy, gen, 0x1234);
  if (!t) FAIL(t.error().message);
  return t.value();
}

std::set<std::string> changed(const std::string& from, const std::string& to) {
  auto p = chain::plan(tables(from, 0), tables(to, 1));
  std::set<std::string> out;
  for (const auto& c : p.changes) out.insert(c.stage);
  return out;
}

std::string edit(std::string s, const std::string& from, const std::string& to) {
  auto at = s.find(from);
  REQUIRE(at != std::string::npos);
  return s.replace(at, from.size(), to);
}

using Set = std::set<std::string>;

}  // namespace

TEST_CASE("the same policy in the other generation is no change", "[plan]") {
  auto p = chain::plan(tables(kBase, 0), tables(kBase, 1));
  CHECK(p.empty());
  CHECK(p.unchanged.size() == chain::stages().size());
}

TEST_CASE("each change touches exactly its stage", "[plan]") {
  SECTION("a route's action: path") {
    CHECK(changed(kBase, edit(kBase, "        action: allow\n      - path: { prefix: \"/api/\" }",
                              "        action: deny\n      - path: { prefix: \"/api/\" }")) == Set{"path"});
  }
  SECTION("a route's methods: path") {
    CHECK(changed(kBase, edit(kBase, "methods: [GET]", "methods: [GET, POST]")) == Set{"path"});
  }
  SECTION("a new route with a prefix length already used by the host: path") {
    CHECK(changed(kBase, edit(kBase, "      - path: { prefix: \"/public/\" }",
                              "      - path: { prefix: \"/pubxyz/\" }\n        action: deny\n"
                              "      - path: { prefix: \"/public/\" }")) == Set{"path"});
  }
  SECTION("a new prefix length: the host carries it, so host and path") {
    CHECK(changed(kBase, edit(kBase, "      - path: { prefix: \"/public/\" }",
                              "      - path: { prefix: \"/p/\" }\n        action: deny\n"
                              "      - path: { prefix: \"/public/\" }")) == Set{"host", "path"});
  }
  SECTION("another host pattern for the same routes: host") {
    CHECK(changed(kBase, edit(kBase, "[\"app.example.com\"]", "[\"app.example.com\", \"app.example.org\"]")) ==
          Set{"host"});
  }
  SECTION("default_action: verdict") {
    CHECK(changed(kBase, edit(kBase, "default_action: deny", "default_action: drop")) == Set{"verdict"});
  }
  SECTION("fail_mode: verdict") {
    CHECK(changed(kBase, edit(kBase, "fail_mode: closed", "fail_mode: open")) == Set{"verdict"});
  }
  SECTION("a listener's port: entry") {
    CHECK(changed(kBase, edit(kBase, "port: 80", "port: 8080")) == Set{"entry"});
  }
  SECTION("the head limit: entry") {
    CHECK(changed(kBase, edit(kBase, "fail_mode: closed", "fail_mode: closed\nlimits:\n  max_head_bytes: 4096")) ==
          Set{"entry"});
  }
  SECTION("a host and its routes: host and path") {
    CHECK(changed(kBase, edit(kBase, "  - match: \"*.example.com\"\n    routes:\n      - path: { prefix: \"/public/\" }\n"
                                     "        action: allow\n",
                              "")) == Set{"host", "path"});
  }
}

TEST_CASE("the stage order is a change of its own", "[plan]") {
  const std::string no_hosts = R"(version: 1
interfaces: ["eth0"]
listeners:
  - name: web
    port: 80
    protocol: http
chain: CHAIN
default_action: allow
)";
  auto a = edit(no_hosts, "CHAIN", "[host, path]");
  auto b = edit(no_hosts, "CHAIN", "[]");
  auto p = chain::plan(tables(a, 0), tables(b, 1));
  REQUIRE(p.changes.size() == 1);
  CHECK(p.changes[0].stage == "chain");
  CHECK(p.changes[0].what == "[host, path] -> []");
}

TEST_CASE("what a change says", "[plan]") {
  auto p = chain::plan(tables(kBase, 0), tables(edit(kBase, "default_action: deny", "default_action: allow"), 1));
  REQUIRE(p.changes.size() == 1);
  CHECK(p.changes[0].what == "default_action deny -> allow");
}

// Rule ids: routes count up from 0 and sni rules down from PD_MAX_RULES - 1, each with its
// own hit counter, so together they must fit; a policy where they would meet is refused.
TEST_CASE("routes and sni rules share the rule ids: a policy where they would meet is refused", "[compile]") {
  std::string yaml = R"(version: 1
interfaces: [eth0]
listeners:
  - name: web
    port: 80
    protocol: http
  - name: tls
    port: 443
    protocol: tls
chain: [sni, host, path]
sni:
  - {match: a.example, action: allow}
  - {match: b.example, action: allow}
hosts:
  - match: app.example
    routes:
)";
  for (int i = 0; i < PD_MAX_RULES - 2; ++i) yaml += "      - {path: {exact: /r" + std::to_string(i) + "}, action: allow}\n";
  auto fits = policyd::config::load_policy_string(yaml, "ids.yaml");
  REQUIRE(policyd::chain::compile(fits, 0, 1));
  yaml += "      - {path: {exact: /one-more}, action: allow}\n";
  auto over = policyd::chain::compile(policyd::config::load_policy_string(yaml, "ids.yaml"), 0, 1);
  REQUIRE_FALSE(over);
  CHECK(over.error().message == "ids.yaml:65551:9: more than 65534 routes beside 2 sni rules");
}

// Every stage with a slice of its own is changed alone once, and only it is in the plan (the
// daemon applies exactly that: the other stages' tables are written again unchanged).
TEST_CASE("each stage changed alone is the only change in the plan", "[plan]") {
  const std::string full = R"(version: 1
interfaces: ["eth0"]
listeners:
  - {name: web, port: 80, protocol: http}
  - {name: secure, port: 443, protocol: tls}
chain: [sni, host, path, jwt, ratelimit]
default_action: deny
sni:
  - {match: "api.example.com", action: allow}
  - {match: "*.corp.example.com", action: deny}
missing_sni: deny
hosts:
  - match: ["api.example.com"]
    routes:
      - path: { prefix: "/v1/" }
        jwt: main
        ratelimit: per_client
        action: allow
jwt_providers:
  main:
    issuer: "https://auth.example.com"
    audiences: ["api"]
    algorithms: [HS256]
    secret_file: /etc/policyd/main.key
    clock_skew: 30s
ratelimits:
  per_client: {key: client_ip, rate: 100/s, burst: 200, action: reject}
)";
  auto compiled = [](const std::string& yaml, uint32_t gen, const std::string& secret = "s3cret") {
    auto policy = config::load_policy_string(yaml, "full.yaml");
    chain::JwtKeyMaterial keys;
    keys.secrets["main"] = secret;
    auto t = chain::compile(policy, gen, 0x1234, &keys);
    if (!t) FAIL(t.error().message);
    return t.value();
  };
  auto alone = [&](const std::string& to, const std::string& secret = "s3cret") {
    std::set<std::string> out;
    for (const auto& c : chain::plan(compiled(full, 0), compiled(to, 1, secret)).changes) out.insert(c.stage);
    return out;
  };
  CHECK(chain::plan(compiled(full, 0), compiled(full, 1)).empty());
  SECTION("an sni rule's action: sni") {
    CHECK(alone(edit(full, "{match: \"api.example.com\", action: allow}", "{match: \"api.example.com\", action: deny}")) ==
          Set{"sni"});
  }
  SECTION("missing_sni: sni") { CHECK(alone(edit(full, "missing_sni: deny", "missing_sni: allow")) == Set{"sni"}); }
  SECTION("a provider's clock skew: jwt") { CHECK(alone(edit(full, "clock_skew: 30s", "clock_skew: 60s")) == Set{"jwt"}); }
  SECTION("a provider's audiences: jwt") {
    CHECK(alone(edit(full, "audiences: [\"api\"]", "audiences: [\"api\", \"web\"]")) == Set{"jwt"});
  }
  SECTION("a provider's secret (a rotated secret_file): jwt") { CHECK(alone(full, "rotated") == Set{"jwt"}); }
  SECTION("a limit's rate: ratelimit") { CHECK(alone(edit(full, "rate: 100/s", "rate: 50/s")) == Set{"ratelimit"}); }
  SECTION("a limit's burst: ratelimit") { CHECK(alone(edit(full, "burst: 200", "burst: 10")) == Set{"ratelimit"}); }
  SECTION("a limit's action: ratelimit") {
    CHECK(alone(edit(full, "action: reject}", "action: drop}")) == Set{"ratelimit"});
  }
}

// Stages from object files: an own stage takes the first own slot, runs after the stage it
// names, and a new build of its object (another digest) is a change of that stage alone; a
// built-in's new build is a change of the built-in.
TEST_CASE("stages from object files: their place in the chain and their changes", "[plan][stages]") {
  const std::string with_stages = kBase + R"(stages:
  - { name: path, object: /x/path.bpf.o }
  - { name: canary, object: /x/canary.bpf.o, after: host }
)";
  auto policy = config::load_policy_string(with_stages, "s.yaml");
  auto compiled = [&](uint64_t path_digest, uint64_t canary_digest, uint32_t gen) {
    chain::ObjectDigests d{{"path", path_digest}, {"canary", canary_digest}};
    auto t = chain::compile(policy, gen, 0x1234, nullptr, &d);
    if (!t) FAIL(t.error().message);
    return t.value();
  };
  const auto t = compiled(1, 2, 0);
  CHECK(t.stages == std::vector<uint32_t>{PD_STAGE_HOST, PD_STAGE_OWN, PD_STAGE_PATH});
  CHECK(t.next[PD_STAGE_HOST] == PD_STAGE_OWN);
  CHECK(t.next[PD_STAGE_OWN] == PD_STAGE_PATH);
  CHECK(t.stage_name(PD_STAGE_OWN) == "canary");
  REQUIRE(t.program(PD_STAGE_PATH));
  CHECK_FALSE(t.program(PD_STAGE_PATH)->own);
  CHECK(chain::plan(t, compiled(1, 2, 1)).empty());
  auto stages_of = [](const chain::Plan& p) {
    std::set<std::string> s;
    for (const auto& c : p.changes) s.insert(c.stage);
    return s;
  };
  CHECK(stages_of(chain::plan(t, compiled(1, 3, 1))) == Set{"canary"});
  CHECK(stages_of(chain::plan(t, compiled(4, 2, 1))) == Set{"path"});
  // the own stage removed: the chain order and the stage itself
  auto without = chain::compile(config::load_policy_string(kBase, "b.yaml"), 1, 0x1234);
  REQUIRE(without);
  CHECK(stages_of(chain::plan(t, *without)) == Set{"chain", "canary", "path"});
}

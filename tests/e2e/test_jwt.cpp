// The JWT stage end to end: curl through the gateway to nginx with tokens made by PyJWT
// (tests/e2e/mint_jwt.py) and keys made by openssl. A valid token reaches nginx; a missing
// or bad one gets the gateway's 401 with WWW-Authenticate and never reaches nginx.
// HS256 is verified in the dataplane; RS256 and ES256 by the daemon (the first request with
// a new token is held until TCP resends it). A token that expires during the test is
// refused from then on; a rotated secret_file takes effect on reload.
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <random>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "common.hpp"

using namespace policyd::e2e;

namespace {

struct Keys {
  TempDir dir{"jwt-keys"};
  std::string secret = dir.file("main.key");
  std::string rsa = dir.file("rsa.pem");
  std::string ec = dir.file("ec.pem");
  std::string jwks = dir.file("jwks.json");

  Keys() {
    chmod(dir.path().c_str(), 0755);
    std::random_device rd;  // each Keys its own secret (the "other secret" cases need one)
    std::ofstream(secret) << "e2e-secret-" << rd() << "-" << rd() << "\n";
    for (const auto& [file, args] : std::vector<std::pair<std::string, std::vector<std::string>>>{
             {rsa, {"-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"}},
             {ec, {"-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"}}}) {
      std::vector<std::string> argv{"openssl", "genpkey"};
      argv.insert(argv.end(), args.begin(), args.end());
      argv.insert(argv.end(), {"-out", file});
      auto r = run(argv, 60s);
      if (r.exit_code != 0) throw std::runtime_error("openssl genpkey: " + r.err);
    }
    auto r = run({"/usr/bin/python3", mint(), "jwks", rsa + ":rsa-1", ec + ":ec-1"}, 30s);
    if (r.exit_code != 0) throw std::runtime_error("mint_jwt.py jwks: " + r.err);
    std::ofstream(jwks) << r.out;
  }

  static std::string mint() { return source_dir() + "/tests/e2e/mint_jwt.py"; }

  // A token from PyJWT; extra: mint_jwt.py token options.
  std::string token(const std::string& alg, std::vector<std::string> extra = {}) const {
    std::vector<std::string> argv{"/usr/bin/python3", mint(), "token", "--alg", alg, "--key",
                                  alg.rfind("HS", 0) == 0 ? secret : alg.rfind("RS", 0) == 0 ? rsa : ec};
    if (alg.rfind("RS", 0) == 0) argv.insert(argv.end(), {"--kid", "rsa-1"});
    if (alg.rfind("ES", 0) == 0) argv.insert(argv.end(), {"--kid", "ec-1"});
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto r = run(argv, 30s);
    if (r.exit_code != 0) throw std::runtime_error("mint_jwt.py token: " + r.err);
    return r.out.substr(0, r.out.find_last_not_of("\n") + 1);
  }
};

std::string jwt_policy(const Keys& k, std::string_view skew = "30s") {
  return cat(R"(version: 1
interfaces: ["gw-c"]
listeners:
  - name: web
    port: 80
    protocol: http
chain: [host, path, jwt]
default_action: deny
jwt_providers:
  main:
    issuer: "https://auth.example.com"
    audiences: ["api"]
    algorithms: [HS256, RS256, ES256]
    secret_file: ")",
             k.secret, R"("
    jwks_file: ")",
             k.jwks, R"("
    clock_skew: )",
             skew, R"(
hosts:
  - match: "app.example.com"
    routes:
      - path: { prefix: "/admin/" }
        jwt: { provider: main, require: { scope: "admin" } }
        action: allow
      - path: { prefix: "/v1/" }
        jwt: main
        action: allow
      - path: { prefix: "/" }
        action: allow
)");
}

CurlResult get_with(const Topology& topo, const std::string& path, const std::vector<std::string>& tokens) {
  std::vector<std::string> args;
  for (const auto& t : tokens) args.insert(args.end(), {"-H", "Authorization: Bearer " + t});
  return curl(topo, "http://app.example.com" + path, args);
}

// The gateway's 401: not from nginx, with a Bearer challenge naming why.
void check_401(const CurlResult& r, std::string_view why) {
  INFO("curl exit " << r.curl_exit << ", stderr: " << r.err << "\nheaders:\n" << r.headers << "body: " << r.body);
  CHECK(r.http_code == 401);
  CHECK(r.header("Server").value_or("") == "policyd");
  const std::string challenge = r.header("WWW-Authenticate").value_or("");
  CHECK(challenge.rfind("Bearer error=\"invalid_token\"", 0) == 0);
  CHECK(challenge.find(why) != std::string::npos);
}

}  // namespace

TEST_CASE("HS256 tokens are judged in the dataplane: valid ones reach nginx, bad ones get 401", "[jwt]") {
  Keys k;
  Env env(jwt_policy(k));
  const std::string good = k.token("HS256");

  SECTION("valid tokens, and the route's require claim") {
    check_from_nginx(get_with(env.topo, "/v1/items", {good}), "GET", "app.example.com", "/v1/items");
    check_from_nginx(get_with(env.topo, "/v1/items", {good}), "GET", "app.example.com", "/v1/items");  // cached
    const std::string admin = k.token("HS256", {"--claims", R"({"scope": "read admin"})"});
    check_from_nginx(get_with(env.topo, "/admin/x", {admin}), "GET", "app.example.com", "/admin/x");
    check_401(get_with(env.topo, "/admin/y", {good}), "required claim missing");
    check_from_nginx(get_with(env.topo, "/public", {}), "GET", "app.example.com", "/public");  // no jwt on this route
  }

  SECTION("every kind of bad token is refused before nginx") {
    Keys other;  // another secret and other keys
    const size_t dot1 = good.find('.'), dot2 = good.rfind('.');
    const std::string payload = good.substr(dot1 + 1, dot2 - dot1 - 1);
    const std::string mallory = k.token("HS256", {"--claims", R"({"sub": "mallory"})"});
    const std::vector<std::tuple<std::string, std::vector<std::string>, std::string>> bad = {
        {"no token", {}, "no bearer token"},
        {"two Authorization headers", {good, good}, "malformed token"},
        {"expired", {k.token("HS256", {"--exp-in", "-120"})}, "token expired"},
        {"not yet valid", {k.token("HS256", {"--nbf-in", "600"})}, "token not yet valid"},
        {"wrong issuer", {k.token("HS256", {"--claims", R"({"iss": "https://evil.example"})"})}, "wrong issuer"},
        {"wrong audience", {k.token("HS256", {"--claims", R"({"aud": ["web", "mobile"]})"})}, "wrong audience"},
        {"no exp (require_exp)", {k.token("HS256", {"--no-exp"})}, "required claim missing"},
        {"signed with another secret", {other.token("HS256")}, "invalid signature"},
        {"alg none", {"eyJhbGciOiJub25lIn0." + payload + "."}, "algorithm not allowed"},  // {"alg":"none"}
        {"signature spliced onto another payload", {mallory.substr(0, mallory.rfind('.')) + good.substr(dot2)},
         "invalid signature"},
        {"not base64url", {"abc+def.ghi.jkl"}, "malformed token"},
        {"too large", {good + std::string(4200, 'A')}, "token too large"},
    };
    int n = 0;
    for (const auto& [what, tokens, why] : bad) {
      INFO(what);
      check_401(get_with(env.topo, cat("/v1/bad", ++n), tokens), why);
    }
    env.nginx.sync();
    CHECK(env.nginx.lines_with("\"GET /v1/").empty());  // none of them reached nginx
    auto stats = run({POLICYCTL_BIN, "--socket", env.daemon.socket_path(), "-o", "json", "stats"}, 10s);
    REQUIRE(stats.exit_code == 0);
    auto j = nlohmann::json::parse(stats.out);
    auto tokens = (j.contains("arguments") ? j["arguments"] : j)["jwt"]["tokens"];
    INFO(tokens.dump());
    for (const char* reason : {"missing", "malformed", "too_large", "alg", "signature", "expired", "not_yet_valid",
                               "issuer", "audience", "claim"})
      CHECK(tokens[reason].get<uint64_t>() >= 1);
  }
}

TEST_CASE("RS256 and ES256 tokens are verified by the daemon; the held request goes through on resend", "[jwt]") {
  Keys k;
  Env env(jwt_policy(k));
  for (const char* alg : {"RS256", "ES256"}) {
    INFO(alg);
    const std::string t = k.token(alg);
    const auto start = std::chrono::steady_clock::now();
    check_from_nginx(get_with(env.topo, "/v1/first", {t}), "GET", "app.example.com", "/v1/first");
    const auto first = std::chrono::steady_clock::now() - start;
    check_from_nginx(get_with(env.topo, "/v1/second", {t}), "GET", "app.example.com", "/v1/second");
    const auto second = std::chrono::steady_clock::now() - start - first;
    std::cout << alg << ": first request (held, verified by the daemon, resent by TCP) "
              << std::chrono::duration_cast<std::chrono::milliseconds>(first).count() << " ms; again (cached) "
              << std::chrono::duration_cast<std::chrono::milliseconds>(second).count() << " ms\n";
    // refused by the daemon: an unknown kid, a signature by a key not in the set
    const std::string unknown = k.token(alg, {"--kid", "nobody"});
    check_401(get_with(env.topo, "/v1/unknown", {unknown}), "unknown key id");
  }
  Keys other;
  check_401(get_with(env.topo, "/v1/forged", {other.token("ES256")}), "invalid signature");
  env.nginx.sync();
  CHECK(env.nginx.lines_with("/v1/unknown").empty());
  CHECK(env.nginx.lines_with("/v1/forged").empty());
}

TEST_CASE("a token that expires during the test is refused after its exp", "[jwt]") {
  Keys k;
  Env env(jwt_policy(k, "0s"));
  const std::string t = k.token("HS256", {"--exp-in", "2"});
  check_from_nginx(get_with(env.topo, "/v1/before", {t}), "GET", "app.example.com", "/v1/before");
  std::this_thread::sleep_for(3500ms);  // past exp (whole seconds), clock_skew 0
  check_401(get_with(env.topo, "/v1/after", {t}), "token expired");
  env.nginx.sync();
  CHECK(env.nginx.lines_with("/v1/after").empty());
}

TEST_CASE("a rotated secret_file takes effect on reload; tokens of the old secret are refused", "[jwt]") {
  Keys k;
  const std::string policy = jwt_policy(k);
  Env env(policy);
  const std::string old_token = k.token("HS256");
  check_from_nginx(get_with(env.topo, "/v1/a", {old_token}), "GET", "app.example.com", "/v1/a");
  // a keep-alive connection carrying requests that need no token, across the rotation:
  // nothing of it is dropped
  nlohmann::json steps = nlohmann::json::array();
  const int n = 60;
  for (int i = 0; i < n; ++i) {
    steps.push_back(http_request("GET", cat("/public/", i), "app.example.com"));
    steps.push_back(nlohmann::json{{"await", i + 1}});
    steps.push_back(nlohmann::json{{"sleep_ms", 25}});
  }
  RawClient kept(env.topo, kServerV4, steps, {"--expect", std::to_string(n), "--timeout", "30"});
  std::this_thread::sleep_for(300ms);
  std::ofstream(k.secret) << "a-completely-new-secret-after-rotation\n";
  const std::string log = env.daemon.reload(policy);
  INFO(log);
  auto r = kept.wait(40s);
  CHECK(r.statuses.size() == static_cast<size_t>(n));
  CHECK(std::all_of(r.statuses.begin(), r.statuses.end(), [](int s) { return s == 200; }));
  CHECK_FALSE(r.reset);
  CHECK(log.find("jwt: provider 'main' changed") != std::string::npos);
  check_401(get_with(env.topo, "/v1/b", {old_token}), "invalid signature");  // cached under the old key: gone
  check_from_nginx(get_with(env.topo, "/v1/c", {k.token("HS256")}), "GET", "app.example.com", "/v1/c");
}

// Two providers with key sets of their own, both verified by the daemon (RS256/ES256): the
// daemon looks up each token's provider from the route that took it, and checks it against
// that provider's keys and issuer only (the same kids in both sets name different keys).
TEST_CASE("two JWT providers: each route's tokens are checked against its own provider", "[jwt]") {
  Keys main_keys, partner;
  Env env(cat(R"(version: 1
interfaces: ["gw-c"]
listeners:
  - name: web
    port: 80
    protocol: http
chain: [host, path, jwt]
default_action: deny
jwt_providers:
  main:
    issuer: "https://auth.example.com"
    audiences: ["api"]
    algorithms: [RS256, ES256]
    jwks_file: ")",
              main_keys.jwks, R"("
  partner:
    issuer: "https://partner.example.com"
    audiences: ["api"]
    algorithms: [ES256]
    jwks_file: ")",
              partner.jwks, R"("
hosts:
  - match: "app.example.com"
    routes:
      - path: { prefix: "/v1/" }
        jwt: main
        action: allow
      - path: { prefix: "/partner/" }
        jwt: partner
        action: allow
)"));
  const std::vector<std::string> as_partner{"--claims", R"({"iss": "https://partner.example.com"})"};
  check_from_nginx(get_with(env.topo, "/v1/main-rs", {main_keys.token("RS256")}), "GET", "app.example.com",
                   "/v1/main-rs");
  check_from_nginx(get_with(env.topo, "/v1/main-es", {main_keys.token("ES256")}), "GET", "app.example.com",
                   "/v1/main-es");
  check_from_nginx(get_with(env.topo, "/partner/ok", {partner.token("ES256", as_partner)}), "GET", "app.example.com",
                   "/partner/ok");
  // each provider's keys only: the other set has the same kid, with another key
  check_401(get_with(env.topo, "/partner/main-key", {main_keys.token("ES256", as_partner)}), "invalid signature");
  check_401(get_with(env.topo, "/v1/partner-key", {partner.token("ES256")}), "invalid signature");
  // each provider's issuer only, and its algorithms: main's RS256 is not partner's
  check_401(get_with(env.topo, "/partner/main-iss", {partner.token("ES256")}), "");
  check_401(get_with(env.topo, "/partner/rs256", {main_keys.token("RS256", as_partner)}), "");
  env.nginx.sync();
  for (const char* refused : {"/partner/main-key", "/v1/partner-key", "/partner/main-iss", "/partner/rs256"})
    CHECK(env.nginx.lines_with(refused).empty());
}

// Tokens made by PyJWT and cryptography (make_tokens.py, run here at test time), each with the
// reason POLICY.md gives it: every algorithm valid, and every way to be refused.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "chain/jwt/jwt.hpp"
#include "tests/jwt/support.hpp"

using nlohmann::json;
using namespace policyd;
using namespace policyd::jwt;

namespace {

const std::vector<std::string> kAllAlgorithms{"HS256", "HS384", "HS512", "RS256",
                                              "RS384", "RS512", "ES256", "ES384"};

// make_tokens.py's output, made once per run.
struct Generated {
  test::TempDir dir;
  std::string error;  // why generating failed; "" when it worked
  json spec;
};

const Generated& generated() {
  static const std::unique_ptr<Generated> made = [] {
    auto g = std::make_unique<Generated>();
    if (!g->dir.ok()) {
      g->error = "cannot create a temporary directory";
      return g;
    }
    const std::string command = std::string("'") + JWT_TESTS_PYTHON + "' '" +
                                JWT_TESTS_MAKE_TOKENS + "' '" + g->dir.file("") + "'";
    if (std::system(command.c_str()) != 0) {
      g->error = "failed: " + command;
      return g;
    }
    std::ifstream in(g->dir.file("cases.json"));
    g->spec = json::parse(in, nullptr, false);
    if (g->spec.is_discarded()) g->error = "cases.json is not JSON";
    return g;
  }();
  return *made;
}

// The provider a case describes: make_tokens.py's issuer and audiences, all algorithms, 30 s
// skew, require_exp, unless the case says otherwise.
config::JwtProvider provider_for(const Generated& g, const json& c) {
  config::JwtProvider p =
      test::provider(g.spec["issuer"].get<std::string>(), c.value("algorithms", kAllAlgorithms));
  p.audiences = c.value("audiences", g.spec["audiences"].get<std::vector<std::string>>());
  p.clock_skew = std::chrono::seconds(c.value("skew", 30));
  p.require_exp = c.value("require_exp", true);
  p.secret_file = g.dir.file("secret.key");
  p.jwks_file = g.dir.file(c.value("jwks", "") == "single" ? "jwks-single.json" : "jwks.json");
  return p;
}

}  // namespace

TEST_CASE("make_tokens.py keys load as expected", "[jwt]") {
  const Generated& g = generated();
  REQUIRE(g.error == "");
  auto keys = load_keys(provider_for(g, json::object()));
  REQUIRE(keys.ok());
  // The file holds the secret and a newline; the newline is not part of the secret.
  std::ifstream in(g.dir.file("secret.key"), std::ios::binary);
  const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(keys->secret);
  CHECK(file == *keys->secret + "\n");

  std::multiset<std::string> kids;
  for (const Jwk& key : keys->jwks) kids.insert(key.kid.value_or("(none)"));
  CHECK(kids == std::multiset<std::string>{"rsa-1", "rsa-512-only", "ec-256", "ec-384", "shared",
                                           "shared"});
  REQUIRE(keys->skipped.size() == 3);
  CHECK(keys->skipped[0] ==
        g.dir.file("jwks.json") + ": key 2 (kid \"enc-1\"): \"use\": \"enc\" (an encryption key)");
  CHECK(keys->skipped[1] == g.dir.file("jwks.json") +
                                ": key 6 (kid \"ec-521\"): EC key on curve \"P-521\" (usable: "
                                "P-256, P-384)");
  CHECK(keys->skipped[2] ==
        g.dir.file("jwks.json") + ": key 7 (kid \"ed\"): kty \"OKP\" (usable: RSA, EC)");
}

TEST_CASE("tokens made by PyJWT get the reason POLICY.md gives them", "[jwt]") {
  const Generated& g = generated();
  REQUIRE(g.error == "");
  const int64_t default_now = g.spec["now"].get<int64_t>();

  std::map<std::string, Keys> keys_by_file;  // loaded once per jwks file
  std::set<std::string> reasons_seen;
  size_t count = 0;
  for (const json& c : g.spec["cases"]) {
    const std::string name = c["name"].get<std::string>();
    const std::string token = c["token"].get<std::string>();
    const std::string expect = c["expect"].get<std::string>();
    INFO(name);
    INFO(token);
    const config::JwtProvider provider = provider_for(g, c);
    if (!keys_by_file.count(*provider.jwks_file)) {
      auto loaded = load_keys(provider);
      REQUIRE(loaded.ok());
      keys_by_file.emplace(*provider.jwks_file, std::move(*loaded));
    }
    const Keys& keys = keys_by_file.at(*provider.jwks_file);

    config::JwtRef route;
    route.provider = provider.name;
    if (c.contains("require"))
      route.require = c["require"].get<std::map<std::string, std::string>>();
    const config::JwtRef* require = c.contains("require") ? &route : nullptr;
    const int64_t now = c.value("now", default_now);

    const Verdict verdict = check(token, provider, keys, require, now);
    INFO(verdict.detail);
    CHECK(reason_name(verdict.reason) == expect);
    CHECK(evaluate(token, provider, keys, require, now) == verdict.reason);
    if (verdict.ok()) {
      CHECK(verdict.detail.empty());
      if (c.contains("sub")) CHECK(verdict.sub == c["sub"].get<std::string>());
      if (c.contains("exp")) CHECK(verdict.exp == c["exp"].get<int64_t>());
    } else {
      CHECK_FALSE(verdict.detail.empty());
      CHECK(verdict.sub.empty());
      CHECK_FALSE(verdict.exp);
    }
    // The same token in an Authorization value.
    if (!token.empty() && token.find_first_of(" \t") == std::string::npos) {
      CHECK(bearer_token("Bearer " + token) == std::string_view(token));
    }
    reasons_seen.insert(expect);
    ++count;
  }
  CHECK(count > 100);
  // Every reason but "unverified" (the daemon's timeout) is reached by some token.
  for (int r = PD_J_OK; r < PD_J_MAX; ++r) {
    const std::string reason(reason_name(static_cast<pd_jwt_reason>(r)));
    if (reason == "unknown" || reason == "unverified") continue;
    INFO(reason);
    CHECK(reasons_seen.count(reason) == 1);
  }
}

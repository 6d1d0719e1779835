// RFC 7515 appendix A: the published HS256 (A.1), RS256 (A.2) and ES256 (A.3) examples, with
// their keys, verbatim. Their payload {"iss":"joe","exp":1300819380,"http://example.com/is_root":
// true} has no "aud", so a token whose signature verifies (and is not expired) stops at the
// audience check; an expired one at exp; a tampered one at the signature.
#include <catch2/catch.hpp>
#include <string>
#include <string_view>

#include "chain/jwt/jwt.hpp"
#include "tests/jwt/support.hpp"

using namespace policyd;
using namespace policyd::jwt;

namespace {

constexpr int64_t kExp = 1300819380;

// A.1.1: the JWK {"kty":"oct","k":...} and the octets it stands for.
constexpr std::string_view kA1Key =
    "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
constexpr std::string_view kA1KeyHex =
    "0323354b2b0fa5bc837e0665777ba68f5ab328e6f054c928a90f84b2d2502ebf"
    "d3fb5a92d20647ef968ab4c377623d223d2e2172052e4f08c0cd9af567d080a3";
constexpr std::string_view kA1Token =
    "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9"
    "."
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
    "."
    "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

// A.2.1: the RSA key's public members.
constexpr std::string_view kA2Jwks = R"({"keys":[{"kty":"RSA",
  "n":"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ",
  "e":"AQAB"}]})";
constexpr std::string_view kA2Token =
    "eyJhbGciOiJSUzI1NiJ9"
    "."
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
    "."
    "cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5j"
    "ujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_"
    "nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07"
    "Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-"
    "eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUT"
    "I8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";

// A.3.1: the EC key, private member "d" included (a verifier ignores it).
constexpr std::string_view kA3Jwks = R"({"keys":[{"kty":"EC","crv":"P-256",
  "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
  "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
  "d":"jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI"}]})";
constexpr std::string_view kA3Token =
    "eyJhbGciOiJFUzI1NiJ9"
    "."
    "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
    "."
    "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";

std::string hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (const char c : bytes) {
    out += kDigits[static_cast<unsigned char>(c) >> 4];
    out += kDigits[static_cast<unsigned char>(c) & 15];
  }
  return out;
}

// The token with one character of its signature changed.
std::string tampered(std::string_view token) {
  std::string out(token);
  const size_t at = out.rfind('.') + 5;
  out[at] = out[at] == 'A' ? 'B' : 'A';
  return out;
}

// What every example must show; `unlisted` is an algorithm the token does not use.
void check_example(std::string_view token, config::JwtProvider provider, const Keys& keys,
                   std::string unlisted) {
  const Verdict before = check(token, provider, keys, nullptr, kExp - 1);
  INFO(before.detail);
  CHECK(before.reason == PD_J_AUDIENCE);  // signature, exp, nbf and iss all passed
  CHECK(evaluate(token, provider, keys, nullptr, kExp + 30) == PD_J_AUDIENCE);  // within skew
  CHECK(evaluate(token, provider, keys, nullptr, kExp + 31) == PD_J_EXPIRED);
  CHECK(evaluate(tampered(token), provider, keys, nullptr, kExp - 1) == PD_J_SIGNATURE);
  config::JwtProvider other_issuer = provider;
  other_issuer.issuer = "jane";
  CHECK(evaluate(token, other_issuer, keys, nullptr, kExp - 1) == PD_J_ISSUER);
  provider.algorithms = {std::move(unlisted)};
  CHECK(evaluate(token, provider, keys, nullptr, kExp - 1) == PD_J_ALG);
}

// An example whose key is the one key of a jwks_file (so the token, without kid, selects it).
void check_jwks_example(const std::string& alg, std::string_view jwks, std::string_view token,
                        const std::string& unlisted) {
  const test::TempDir dir;
  config::JwtProvider provider = test::provider("joe", {alg});
  provider.jwks_file = dir.write("jwks.json", jwks);
  const auto keys = load_keys(provider);
  REQUIRE(keys.ok());
  REQUIRE(keys.value().jwks.size() == 1);
  check_example(token, provider, keys.value(), unlisted);
}

}  // namespace

TEST_CASE("RFC 7515 A.1: HS256", "[jwt][rfc7515]") {
  const auto key = base64url_decode(kA1Key);
  REQUIRE(key);
  REQUIRE(hex(*key) == kA1KeyHex);
  const test::TempDir dir;
  config::JwtProvider provider = test::provider("joe", {"HS256"});
  provider.secret_file = dir.write("a1.key", *key);
  const auto keys = load_keys(provider);
  REQUIRE(keys.ok());
  REQUIRE(keys.value().secret == *key);  // the key does not end in a newline: nothing stripped

  const Parsed parsed = parse(kA1Token);
  REQUIRE(parsed.token);
  const Token& token = *parsed.token;
  CHECK(token.alg == "HS256");
  CHECK_FALSE(token.kid);
  CHECK(token.header.at("typ") == "JWT");
  CHECK(token.iss == "joe");
  CHECK(token.exp == kExp);
  CHECK_FALSE(token.aud);
  CHECK(token.payload.at("http://example.com/is_root") == true);
  CHECK(token.signing_input == kA1Token.substr(0, kA1Token.rfind('.')));
  CHECK(token.signature.size() == 32);

  check_example(kA1Token, provider, keys.value(), "HS512");
}

TEST_CASE("RFC 7515 A.2: RS256", "[jwt][rfc7515]") {
  check_jwks_example("RS256", kA2Jwks, kA2Token, "RS512");
}

TEST_CASE("RFC 7515 A.3: ES256", "[jwt][rfc7515]") {
  check_jwks_example("ES256", kA3Jwks, kA3Token, "ES384");
}

TEST_CASE("RFC 7515 examples do not verify with each other's keys", "[jwt][rfc7515]") {
  const test::TempDir dir;
  config::JwtProvider provider = test::provider("joe", {"RS256", "ES256"});
  provider.jwks_file = dir.write("a3.json", kA3Jwks);
  const auto ec_only = load_keys(provider);
  REQUIRE(ec_only.ok());
  // An RS256 token and only an EC key: no RSA key to choose.
  CHECK(evaluate(kA2Token, provider, ec_only.value(), nullptr, kExp - 1) == PD_J_UNKNOWN_KID);
}

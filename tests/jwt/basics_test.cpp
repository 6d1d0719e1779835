// Names, strict base64url, the Authorization value, and what parse() keeps of a token.
#include <catch2/catch.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "chain/jwt/jwt.hpp"

using namespace policyd::jwt;

TEST_CASE("reason and algorithm names", "[jwt]") {
  const std::vector<std::pair<pd_jwt_reason, std::string_view>> reasons{
      {PD_J_OK, "ok"},
      {PD_J_MISSING, "missing"},
      {PD_J_MALFORMED, "malformed"},
      {PD_J_TOO_LARGE, "too_large"},
      {PD_J_ALG, "alg"},
      {PD_J_UNKNOWN_KID, "unknown_kid"},
      {PD_J_SIGNATURE, "signature"},
      {PD_J_EXPIRED, "expired"},
      {PD_J_NOT_YET_VALID, "not_yet_valid"},
      {PD_J_ISSUER, "issuer"},
      {PD_J_AUDIENCE, "audience"},
      {PD_J_CLAIM, "claim"},
      {PD_J_UNVERIFIED, "unverified"},
      {static_cast<pd_jwt_reason>(13), "unknown"},
  };
  for (const auto& [reason, name] : reasons) CHECK(reason_name(reason) == name);

  for (int a = PD_ALG_HS256; a <= PD_ALG_ES384; ++a) {
    const auto alg = static_cast<pd_jwt_alg>(a);
    CHECK(alg_from_name(alg_name(alg)) == alg);
  }
  CHECK(alg_name(PD_ALG_RS384) == "RS384");
  CHECK(alg_name(PD_ALG_NONE) == "none");
  for (const char* refused : {"none", "None", "hs256", "PS256", "ES512", ""}) {
    INFO(refused);
    CHECK_FALSE(alg_from_name(refused));
  }
}

TEST_CASE("base64url is strict", "[jwt]") {
  const std::vector<std::pair<std::string_view, std::string_view>> valid{
      {"", ""}, {"Zg", "f"}, {"Zm8", "fo"}, {"Zm9v", "foo"}, {"-_8", "\xfb\xff"}};
  for (const auto& [text, bytes] : valid) CHECK(base64url_decode(text) == bytes);
  const std::vector<std::string_view> invalid{"Zh",     "Zm9",    // unused bits set
                                              "Z",      "Zm9vY",  // a length of 1 mod 4
                                              "Zg==",   "Zg=",    // padding
                                              "+_8",    "-/8",    // the standard alphabet
                                              "Zm9v\n", "Zm 9v", std::string_view("Zm\0v", 4)};
  for (const std::string_view text : invalid) {
    INFO(text);
    CHECK_FALSE(base64url_decode(text));
  }
}

TEST_CASE("bearer_token", "[jwt]") {
  CHECK(bearer_token("Bearer abc.def.ghi") == "abc.def.ghi");
  CHECK(bearer_token("bearer abc") == "abc");
  CHECK(bearer_token("BEARER    abc") == "abc");
  CHECK(bearer_token("bEaReR a+b/c=") == "a+b/c=");  // parse() judges the token itself
  for (const char* refused : {"", "Bearer", "Bearer ", "Bearer    ", "Bearerabc", "Bearer\tabc",
                              "Bearer abc def", "Bearer abc ", "Bearer abc\t", " Bearer abc",
                              "Basic YWxhZGRpbjpvcGVuc2VzYW1l", "Bearers abc"}) {
    INFO(refused);
    CHECK_FALSE(bearer_token(refused));
  }
}

TEST_CASE("parse keeps the claims and refuses what is not a JWS of JSON objects", "[jwt]") {
  // {"alg":"HS256","kid":"k1"} . {"iss":"i","sub":"s","aud":["a","b"],"exp":10.9,"nbf":5.1} . "sig"
  const std::string token =
      "eyJhbGciOiJIUzI1NiIsImtpZCI6ImsxIn0."
      "eyJpc3MiOiJpIiwic3ViIjoicyIsImF1ZCI6WyJhIiwiYiJdLCJleHAiOjEwLjksIm5iZiI6NS4xfQ.c2ln";
  const Parsed parsed = parse(token);
  INFO(parsed.detail);
  REQUIRE(parsed.reason == PD_J_OK);
  REQUIRE(parsed.token);
  const Token& t = *parsed.token;
  CHECK(t.alg == "HS256");
  CHECK(t.kid == "k1");
  CHECK(t.iss == "i");
  CHECK(t.sub == "s");
  CHECK(t.aud == std::vector<std::string>{"a", "b"});
  CHECK(t.exp == 10);  // exp rounds down, nbf up: whole-second comparisons stay exact
  CHECK(t.nbf == 6);
  CHECK(t.signature == "sig");
  CHECK(t.signing_input == token.substr(0, token.rfind('.')));

  const Parsed empty = parse("");
  CHECK(empty.reason == PD_J_MISSING);
  CHECK_FALSE(empty.token);
  const Parsed large = parse(std::string(PD_JWT_MAX + 1, 'a'));
  CHECK(large.reason == PD_J_TOO_LARGE);
  CHECK(large.detail == "4097 bytes, over the 4096 judged");
  const Parsed dots = parse("..");
  CHECK(dots.reason == PD_J_MALFORMED);
  CHECK(dots.detail ==
        "header: not JSON: parse error at line 1, column 1: syntax error while "
        "parsing value - unexpected end of input; expected '[', '{', or a literal");
  CHECK(parse("a.b").detail == "not three dot-separated parts");
  CHECK(parse("e30.e30.").detail == "header \"alg\" is missing or not a string");
  CHECK(parse("eyJhbGciOiJIUzI1NiIsImNyaXQiOltdfQ.e30.").detail ==
        "header has \"crit\" (no extensions are understood)");
  CHECK(parse("eyJhbGciOiJIUzI1NiJ9.e30.a+b").detail == "the signature is not base64url");
  CHECK(parse("eyJhbGciOiJIUzI1NiJ9.e30.").reason == PD_J_OK);  // {"alg":"HS256"}.{}.""
}

// Loading secret_file and jwks_file: what is accepted, what is skipped, and errors that name the
// file and the key.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <string>

#include "chain/jwt/jwt.hpp"
#include "tests/jwt/support.hpp"

using namespace policyd;
using namespace policyd::jwt;

namespace {

// Public members of RFC 7515 A.2.1 (RSA, 2048 bits) and A.3.1 (P-256).
const std::string kRsaN =
    "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-"
    "4qPCJrcS2mJPMEzP1Pt0Bm4d4Q"
    "lL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-"
    "bSf63kpaSHSXndS5z5rexMdbBY"
    "UsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-"
    "DWNm"
    "oudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
const std::string kEcX = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
const std::string kEcY = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";

const std::string kRsa = R"({"kty":"RSA","n":")" + kRsaN + R"(","e":"AQAB"})";
const std::string kEc = R"({"kty":"EC","crv":"P-256","x":")" + kEcX + R"(","y":")" + kEcY + R"("})";

// The error of loading `content` as a jwks_file, with the file's path replaced by "jwks.json".
std::string jwks_error(const std::string& content) {
  const test::TempDir dir;
  const std::string path = dir.write("jwks.json", content);
  const auto keys = load_jwks(path);
  if (keys.ok()) return "(loaded)";
  std::string message = keys.error().message;
  if (message.rfind(path, 0) == 0) message = "jwks.json" + message.substr(path.size());
  return message;
}

std::string keys_of(std::initializer_list<std::string> keys) {
  std::string out = R"({"keys":[)";
  for (const std::string& key : keys) out += (out.back() == '[' ? "" : ",") + key;
  return out + "]}";
}

}  // namespace

TEST_CASE("jwks_file errors name the file and the key", "[jwt][keys]") {
  CHECK(jwks_error(keys_of({kRsa, R"({"kty":"EC","kid":"x","crv":"P-256","x":")" + kEcX +
                                      "\"}"})) == "jwks.json: key 2 (kid \"x\"): EC key without y");
  CHECK(jwks_error(keys_of({R"({"kty":"EC","crv":"P-256","y":")" + kEcY + "\"}"})) ==
        "jwks.json: key 1: EC key without x");
  CHECK(jwks_error(keys_of({R"({"kty":"EC","x":")" + kEcX + "\"}"})) ==
        "jwks.json: key 1: EC key without crv");
  CHECK(jwks_error(keys_of({R"({"kty":"RSA","kid":"r","n":")" + kRsaN + "\"}"})) ==
        "jwks.json: key 1 (kid \"r\"): RSA key without e");
  CHECK(jwks_error(keys_of({R"({"kty":"RSA","n":")" + kRsaN + R"(=","e":"AQAB"})"})) ==
        "jwks.json: key 1: \"n\" is not base64url");
  CHECK(jwks_error(keys_of({R"({"kty":"RSA","n":")" + kRsaN + R"(","e":""})"})) ==
        "jwks.json: key 1: \"e\" is empty");
  CHECK(jwks_error(keys_of({R"({"kty":"RSA","n":")" + kRsaN + R"(","e":"AQ"})"})) ==
        "jwks.json: key 1: RSA exponent \"e\" is not an odd number between 1 and n");
  CHECK(jwks_error(keys_of({R"({"kty":"RSA","n":")" + kRsaN + R"(","e":1})"})) ==
        "jwks.json: key 1: \"e\" is not a string");
  CHECK(jwks_error(keys_of({R"({"kty":"EC","crv":"P-256","x":")" + kEcX.substr(4) + R"(","y":")" +
                            kEcY + "\"}"})) ==
        "jwks.json: key 1: \"x\" is 29 bytes, P-256 needs 32");
  CHECK(jwks_error(keys_of({R"({"kty":"EC","crv":"P-256","x":")" + kEcX + R"(","y":")" + kEcX +
                            "\"}"})) == "jwks.json: key 1: (x, y) is not a point on P-256");
  CHECK(jwks_error(keys_of({R"({"kid":"k"})"})) == "jwks.json: key 1 (kid \"k\"): key without kty");
  CHECK(jwks_error(keys_of({R"({"kid":7,"kty":"RSA"})"})) ==
        "jwks.json: key 1: \"kid\" is not a string");
  CHECK(jwks_error(keys_of({R"({"kty":"RSA","use":1})"})) ==
        "jwks.json: key 1: \"use\" is not a string");
  CHECK(jwks_error(keys_of({"1"})) == "jwks.json: key 1: not a JSON object");
  CHECK(jwks_error(keys_of({R"({"kty":"RSA","kid":"a","n":")" + kRsaN + R"(","e":"AQAB"})",
                            R"({"kty":"RSA","kid":"a","n":")" + kRsaN + R"(","e":"AQAB"})"})) ==
        "jwks.json: key 2 (kid \"a\"): a second RSA key with this kid");
  CHECK(jwks_error(R"({"keys":{}})") ==
        "jwks.json: not a JWK Set (an object with a \"keys\" array)");
  CHECK(jwks_error(R"([])") == "jwks.json: not a JSON object");
  CHECK(jwks_error(R"({"keys":[],"keys":[]})") == "jwks.json: duplicate member \"keys\"");
  CHECK(jwks_error("{\"keys\": [") ==
        "jwks.json: not JSON: parse error at line 1, column 11: syntax error while parsing value "
        "- unexpected end of input; expected '[', '{', or a literal");
  CHECK(jwks_error(keys_of({})) == "jwks.json: no usable key (0 skipped)");
}

TEST_CASE("jwks_file keys that are skipped, not errors", "[jwt][keys]") {
  const test::TempDir dir;
  const std::string small_rsa =
      R"({"kty":"RSA","kid":"old","n":")" + kRsaN.substr(0, 172) + R"(","e":"AQAB"})";  // 1032 bits
  const std::string path =
      dir.write("jwks.json", keys_of({small_rsa, R"({"kty":"oct","k":"AAAA"})",
                                      R"({"kty":"EC","crv":"P-521","x":"AA","y":"AA"})",
                                      R"({"kty":"RSA","use":"enc"})", kEc}));
  const auto keys = load_jwks(path);
  REQUIRE(keys.ok());
  REQUIRE(keys.value().jwks.size() == 1);
  CHECK(keys.value().jwks[0].type == Jwk::Type::Ec);
  CHECK(keys.value().jwks[0].crv == "P-256");
  CHECK(keys.value().skipped ==
        std::vector<std::string>{
            path + ": key 1 (kid \"old\"): RSA key of 1032 bits (usable: 2048 to 16384)",
            path + ": key 2: kty \"oct\" (usable: RSA, EC)",
            path + ": key 3: EC key on curve \"P-521\" (usable: P-256, P-384)",
            path + ": key 4: \"use\": \"enc\" (an encryption key)",
        });

  // Nothing usable is an error, and its detail lists what was skipped.
  const std::string none = dir.write("none.json", keys_of({R"({"kty":"oct","k":"AAAA"})"}));
  const auto error = load_jwks(none);
  REQUIRE_FALSE(error.ok());
  CHECK(error.error().message == none + ": no usable key (1 skipped)");
  CHECK(error.error().detail == none + ": key 1: kty \"oct\" (usable: RSA, EC)\n");
}

TEST_CASE("jwks_file keys keep kid and alg; private members are ignored", "[jwt][keys]") {
  const auto keys =
      parse_jwks(keys_of({R"({"kty":"RSA","kid":"r1","alg":"RS384","use":"sig","d":"AQAB","n":")" +
                          kRsaN + R"(","e":"AQAB"})"}),
                 "inline");
  REQUIRE(keys.ok());
  REQUIRE(keys.value().jwks.size() == 1);
  const Jwk& key = keys.value().jwks[0];
  CHECK(key.type == Jwk::Type::Rsa);
  CHECK(key.kid == "r1");
  CHECK(key.alg == "RS384");
  CHECK(key.key != nullptr);
}

TEST_CASE("secret_file: bytes without one trailing line end", "[jwt][keys]") {
  const test::TempDir dir;
  CHECK(load_secret(dir.write("a", "s3cret")).value() == "s3cret");
  CHECK(load_secret(dir.write("b", "s3cret\n")).value() == "s3cret");
  CHECK(load_secret(dir.write("c", "s3cret\r\n")).value() == "s3cret");
  CHECK(load_secret(dir.write("d", "s3cret\n\n")).value() == "s3cret\n");
  CHECK(load_secret(dir.write("e", " s3cret \r")).value() == " s3cret \r");
  CHECK(load_secret(dir.write("f", std::string("\0\xff\n", 3))).value() ==
        std::string("\0\xff", 2));

  for (const char* empty : {"", "\n", "\r\n"}) {
    const std::string path = dir.write("empty", empty);
    const auto secret = load_secret(path);
    REQUIRE_FALSE(secret.ok());
    CHECK(secret.error().message == path + ": the secret is empty");
  }
  const auto missing = load_secret(dir.file("missing.key"));
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().message ==
        dir.file("missing.key") + ": cannot open: No such file or directory");
  const auto directory = load_secret(dir.file(""));
  REQUIRE_FALSE(directory.ok());
  CHECK(directory.error().message == dir.file("") + ": not a regular file");
}

TEST_CASE("load_keys names the provider's file that fails", "[jwt][keys]") {
  const test::TempDir dir;
  config::JwtProvider provider = test::provider("https://auth.example.com", {"HS256", "RS256"});
  provider.secret_file = dir.file("main.key");
  provider.jwks_file = dir.write("jwks.json", keys_of({kRsa}));
  auto keys = load_keys(provider);
  REQUIRE_FALSE(keys.ok());
  CHECK(keys.error().message == dir.file("main.key") + ": cannot open: No such file or directory");

  dir.write("main.key", "secret\n");
  provider.jwks_file = dir.file("missing.json");
  keys = load_keys(provider);
  REQUIRE_FALSE(keys.ok());
  CHECK(keys.error().message ==
        dir.file("missing.json") + ": cannot open: No such file or directory");

  provider.jwks_file = dir.file("jwks.json");
  keys = load_keys(provider);
  REQUIRE(keys.ok());
  CHECK(keys->secret == "secret");
  CHECK(keys->jwks.size() == 1);
}

TEST_CASE("a key file is read only if it is a regular file, and errors never show its bytes", "[jwt][keys]") {
  const test::TempDir dir;
  REQUIRE(dir.ok());
  SECTION("a FIFO is refused at once (opening it for reading would wait for a writer)") {
    const std::string fifo = dir.file("fifo");
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    for (const auto& r : {load_secret(fifo), read_key_file(fifo)}) {
      REQUIRE_FALSE(r.ok());
      CHECK(r.error().message == fifo + ": not a regular file");
    }
    CHECK(load_jwks(fifo).error().message == fifo + ": not a regular file");
  }
  SECTION("a device or a directory is refused without being opened for reading") {
    CHECK(read_key_file("/dev/null").error().message == "/dev/null: not a regular file");
    CHECK(read_key_file(dir.file("")).error().message.ends_with(": not a regular file"));
  }
  SECTION("a file that is not JSON: the error says where, not what") {
    const std::string path = dir.write("passwd", "root:x:0:0:secret-token-1234:/root:/bin/bash\n");
    const auto r = load_jwks(path);
    REQUIRE_FALSE(r.ok());
    INFO(r.error().message);
    CHECK(r.error().message.find("root") == std::string::npos);
    CHECK(r.error().message.find("secret") == std::string::npos);
    CHECK(r.error().message.starts_with(path + ": not JSON: parse error at line 1, column "));
  }
  SECTION("larger than 1 MiB") {
    const std::string path = dir.write("big", std::string((1 << 20) + 1, 'a'));
    CHECK(read_key_file(path).error().message == path + ": larger than 1 MiB");
  }
}

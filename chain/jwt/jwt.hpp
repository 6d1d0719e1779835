// JWT verification (RFC 7515 JWS compact form, RFC 7519 claims) for the tokens the dataplane hands
// to the daemon (RS*/ES*), and the reference evaluation of POLICY.md's JWT rules that tests and
// the controller's preflight compare the dataplane against.
#pragma once

#include <openssl/types.h>

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "chain/base/result.hpp"
#include "config/policy.hpp"

extern "C" {
#include "pd_abi.h"
}

namespace policyd::jwt {

// "missing", "malformed", ..., "unverified"; "ok" for PD_J_OK, "unknown" for anything else.
std::string_view reason_name(pd_jwt_reason reason);
// The JWS "alg" names this project knows (case-sensitive, RFC 7515 4.1.1). "none" and every other
// name have no pd_jwt_alg: they are never accepted.
std::optional<pd_jwt_alg> alg_from_name(std::string_view name);
std::string_view alg_name(pd_jwt_alg alg);  // "HS256", ...; "none" for PD_ALG_NONE and unknowns

// Strict base64url (RFC 7515 section 2): only [A-Za-z0-9_-], no padding, no whitespace, not a
// length of 1 mod 4, unused trailing bits zero. Anything else is nullopt.
std::optional<std::string> base64url_decode(std::string_view text);

// The token of an Authorization field value (OWS already removed, as HTTP parsing does):
// "Bearer" in any case, one or more spaces, then a token with no space or tab. Anything else
// (another scheme, no token, a tab separator, a space inside the token) is nullopt.
std::optional<std::string_view> bearer_token(std::string_view authorization_value);

// A compact JWS whose header and payload are JSON objects, with the claims this project reads.
// Nothing in it is trusted before verify() says PD_J_OK.
struct Token {
  std::string alg;                 // header "alg", as written
  std::optional<std::string> kid;  // header "kid"
  std::optional<std::string> iss;  // payload claims
  std::optional<std::string> sub;
  std::optional<std::vector<std::string>> aud;  // a string "aud" is a list of one
  // NumericDates in whole seconds: a fractional exp rounded down, nbf up, so that comparing them
  // with a whole-second now gives the answer the exact values would.
  std::optional<int64_t> exp;
  std::optional<int64_t> nbf;
  nlohmann::json header;  // the decoded JSON objects
  nlohmann::json payload;
  std::string signing_input;  // "header.payload" exactly as sent (ASCII)
  std::string signature;      // the decoded third part
};

// parse: a Token, or why there is none — PD_J_MISSING (empty), PD_J_TOO_LARGE (over PD_JWT_MAX
// bytes), PD_J_MALFORMED (not three base64url parts; header or payload not a JSON object, or
// with a duplicate member name; header "alg" not a string, "kid" not a string, "crit" present;
// "iss"/"sub" not strings, "aud" not a string or an array of strings, "exp"/"nbf" not numbers).
struct Parsed {
  pd_jwt_reason reason = PD_J_MALFORMED;  // PD_J_OK iff token is set
  std::string detail;                     // what was wrong, for logs
  std::optional<Token> token;
};
Parsed parse(std::string_view compact);

// One verification key of a jwks_file.
struct PkeyFree {
  void operator()(EVP_PKEY* key) const noexcept;
};
struct Jwk {
  enum class Type { Rsa, Ec };
  Type type = Type::Rsa;
  std::optional<std::string> kid;
  std::optional<std::string> alg;  // the key's own "alg"; a token must then use exactly that
  std::string crv;                 // EC: "P-256" or "P-384"
  std::unique_ptr<EVP_PKEY, PkeyFree> key;
};

// A provider's keys. Move-only; safe to share between threads for verify().
struct Keys {
  std::optional<std::string> secret;  // HS*: the bytes of secret_file
  std::vector<Jwk> jwks;              // RS*/ES*: the usable keys of jwks_file
  std::vector<std::string> skipped;   // jwks entries left out, each saying which and why
};

// A key file's bytes: a regular file (a FIFO, device or directory is refused without being
// opened for reading) of at most 1 MiB. Errors name the file, never its contents.
Result<std::string> read_key_file(const std::string& path);
// Any regular file of at most max_bytes, read the way key files are (never a FIFO or a device;
// errors name the file): the stage object files use it too.
Result<std::string> read_regular_file(const std::string& path, size_t max_bytes);
// secret_file: the file's bytes without one trailing "\n" or "\r\n" (what `echo` and editors
// add). Errors (unreadable, empty) name the file.
Result<std::string> load_secret(const std::string& path);
// An RFC 7517 JWK Set. `name` (the file) starts every error: "jwks.json: key 2 (kid "x"): EC key
// without y"; keys are counted from 1. Keys with "use": "enc", of a kty other than RSA/EC, on a
// curve other than P-256/P-384, or RSA outside 2048..16384 bits are skipped (RFC 7517 5) and
// listed in Keys::skipped. A set with no usable key is an error.
Result<Keys> parse_jwks(std::string_view text, const std::string& name);
Result<Keys> load_jwks(const std::string& path);
// The secret and/or the JWK Set a provider names.
Result<Keys> load_keys(const config::JwtProvider& provider);

struct Verdict {
  pd_jwt_reason reason = PD_J_MALFORMED;
  std::optional<int64_t> exp;  // set only when valid: the token's exp, for caching the verdict
  std::string sub;             // set only when valid: the token's sub ("" without one)
  std::string detail;          // why not valid, for logs; "" when valid

  bool ok() const { return reason == PD_J_OK; }
};

// Judges a parsed token for a provider and, optionally, a route's require claims. The first
// failing check wins, in this order (the reason in brackets):
//   1. alg: the header alg is listed in provider.algorithms and is not "none" [alg]
//   2. key: HS* use the secret (a header kid is ignored). RS*/ES* use the jwks key with the
//      header's kid [unknown_kid if none]; without a kid, the only key of the alg's kty
//      [unknown_kid if none or several]. The key must be of the alg's kind (RSA for RS*, EC on
//      P-256 for ES256, on P-384 for ES384) and, if it has an alg, exactly the header alg [alg]
//   3. signature: HMAC, RSASSA-PKCS1-v1_5, or ECDSA with raw R||S [signature]
//   4. exp: absent under require_exp [claim]; now > exp + clock_skew [expired]
//   5. nbf: now < nbf - clock_skew [not_yet_valid]
//   6. iss: present and equal to provider.issuer [issuer]
//   7. aud: a string equal to one of provider.audiences, or an array holding one [audience]
//   8. each route require claim, in name order: a string claim equal to the value (for "scope":
//      one of its space-separated words), or an array claim holding the value [claim]
Verdict verify(const Token& token, const config::JwtProvider& provider, const Keys& keys,
               const config::JwtRef* route_require, int64_t now_unix_seconds);

// parse + verify of a bare token (not the Authorization value).
Verdict check(std::string_view token, const config::JwtProvider& provider, const Keys& keys,
              const config::JwtRef* route_require, int64_t now_unix_seconds);
// The reference evaluation the controller compares the dataplane against: check(...).reason.
pd_jwt_reason evaluate(std::string_view token, const config::JwtProvider& provider,
                       const Keys& keys, const config::JwtRef* route_require,
                       int64_t now_unix_seconds);

}  // namespace policyd::jwt

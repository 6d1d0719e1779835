// The JWT stage's tables: providers (algorithms, clock skew, HMAC key midstates, the claim
// bits their issuer and audiences set) and the claims table that turns a payload claim
// (name, value) into claim bits, so the dataplane checks iss, aud and every route's
// `require` with one lookup per claim value and one mask per route.
//
// Bits: each provider gets an issuer bit and an audience bit; each distinct (claim, value)
// a route requires gets a bit of its own. At most PD_JWT_CLAIM_BITS in all.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "chain/abi.hpp"
#include "chain/base/result.hpp"
#include "config/policy.hpp"
#include "chain/jwt/jwt.hpp"

namespace policyd::chain {

// Key material of the providers, read by the caller (the daemon reads secret_file and
// jwks_file): name -> bytes. A provider listing an HS* algorithm needs its secret.
struct JwtKeyMaterial {
  std::map<std::string, std::string> secrets;
  std::map<std::string, std::string> jwks;  // the JWK Set text (only its digest is used here)
};

// Reads every provider's secret_file and jwks_file (errors name the file and the provider).
Result<JwtKeyMaterial> read_key_material(const config::Policy& policy);
// A provider's keys for the daemon's verifier, from the bytes read_key_material read (not
// from the files again: the dataplane's HMAC keys and the daemon's must be one version of a
// file being rotated). Errors name the provider and the file.
Result<jwt::Keys> provider_keys(const JwtKeyMaterial& material, const std::string& name,
                                const config::JwtProvider& provider);

struct JwtClaimEntry {
  pd_jwt_claim_key key;
  uint64_t bits = 0;
};

struct JwtLayout {
  std::vector<std::string> providers;  // index -> provider name (slot jwt = index + 1)
  std::map<std::pair<std::string, std::string>, unsigned> require_bits;  // (claim, value) -> bit
  unsigned bits_used = 0;
};

// Bit assignment for a policy (deterministic: providers by name, require pairs in route order).
Result<JwtLayout> jwt_layout(const config::Policy& policy);
// The provider index + 1 and the require mask of a route (0, 0 without jwt).
std::pair<uint8_t, uint64_t> jwt_route(const JwtLayout& layout, const config::Route& route);

// Provider entries (index in the generation -> value) and claim entries for generation `gen`.
Status compile_jwt(const config::Policy& policy, const JwtLayout& layout, const JwtKeyMaterial* keys,
                   uint32_t gen, uint64_t seed, std::vector<std::pair<uint32_t, pd_jwt_provider>>& providers,
                   std::vector<JwtClaimEntry>& claims);

// The claim bits, exp, nbf and sub hash of a verified token's payload, computed as the
// dataplane's scanner does (the daemon fills the cache with them for tokens it verified).
struct PayloadFacts {
  uint64_t claims = 0;
  int64_t exp = PD_JWT_NO_TIME;
  int64_t nbf = -PD_JWT_NO_TIME;
  uint64_t sub = 0;
};
PayloadFacts payload_facts(const std::vector<JwtClaimEntry>& claims, uint64_t seed, const nlohmann::json& payload);

// The daemon's answer for a token the dataplane sent it: verified with jwt/ for `provider`;
// a token whose signature holds is VALID with its facts (claims are judged per request),
// anything else INVALID with the reason. `tail` is left for the caller.
pd_jwt_cache_val jwt_answer(std::string_view token, const config::JwtProvider& provider, const jwt::Keys& keys,
                            const std::vector<JwtClaimEntry>& claims, uint64_t seed, int64_t now,
                            std::string* detail = nullptr);

}  // namespace policyd::chain

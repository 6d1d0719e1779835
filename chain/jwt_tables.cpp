#include "chain/jwt_tables.hpp"

#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "chain/hash.hpp"
#include "chain/hmac.hpp"
#include "chain/jwt/jwt.hpp"

namespace policyd::chain {

namespace {

std::string where(const config::SourceLoc& loc) { return fmt::format("{}:{}:{}", loc.file, loc.line, loc.column); }

// Names whose meaning the dataplane fixes; a route cannot require them by value.
bool fixed_claim(const std::string& name) { return name == "exp" || name == "nbf" || name == "iat"; }

uint64_t fnv_mix(uint64_t h, std::string_view s) {
  for (unsigned char c : s) h = (h ^ c) * kFnvPrime;
  return (h ^ 0xff) * kFnvPrime;  // a separator, so ("ab","c") and ("a","bc") differ
}

int alg_bits(std::string_view name) {
  if (name == "HS256") return PD_ALG_HS256;
  if (name == "HS384") return PD_ALG_HS384;
  if (name == "HS512") return PD_ALG_HS512;
  if (name == "RS256") return PD_ALG_RS256;
  if (name == "RS384") return PD_ALG_RS384;
  if (name == "RS512") return PD_ALG_RS512;
  if (name == "ES256") return PD_ALG_ES256;
  if (name == "ES384") return PD_ALG_ES384;
  return PD_ALG_NONE;
}

}  // namespace

Result<JwtKeyMaterial> read_key_material(const config::Policy& policy) {
  JwtKeyMaterial m;
  for (const auto& [name, p] : policy.jwt_providers) {
    if (p.secret_file) {
      auto secret = jwt::load_secret(*p.secret_file);
      if (!secret) return make_error(fmt::format("jwt provider '{}': {}", name, secret.error().message));
      m.secrets[name] = std::move(*secret);
    }
    if (p.jwks_file) {
      auto text = jwt::read_key_file(*p.jwks_file);
      if (!text) return make_error(fmt::format("jwt provider '{}': {}", name, text.error().message));
      m.jwks[name] = std::move(*text);
    }
  }
  return m;
}

Result<jwt::Keys> provider_keys(const JwtKeyMaterial& material, const std::string& name,
                                const config::JwtProvider& provider) {
  jwt::Keys keys;
  if (provider.jwks_file) {
    auto text = material.jwks.find(name);
    if (text == material.jwks.end())
      return make_error(fmt::format("jwt provider '{}': {} was not read", name, *provider.jwks_file));
    auto parsed = jwt::parse_jwks(text->second, *provider.jwks_file);
    if (!parsed) return make_error(fmt::format("jwt provider '{}': {}", name, parsed.error().message));
    keys = std::move(*parsed);
  }
  if (provider.secret_file) {
    auto secret = material.secrets.find(name);
    if (secret == material.secrets.end())
      return make_error(fmt::format("jwt provider '{}': {} was not read", name, *provider.secret_file));
    keys.secret = secret->second;
  }
  return keys;
}

Result<JwtLayout> jwt_layout(const config::Policy& policy) {
  JwtLayout l;
  for (const auto& [name, p] : policy.jwt_providers) {
    if (l.providers.size() >= PD_JWT_PROVIDERS)
      return make_error(fmt::format("{}: more than {} jwt providers", where(p.loc), PD_JWT_PROVIDERS));
    l.providers.push_back(name);
  }
  l.bits_used = 2 * static_cast<unsigned>(l.providers.size());
  for (const auto& h : policy.hosts)
    for (const auto& r : h.routes) {
      if (!r.jwt) continue;
      for (const auto& [claim, value] : r.jwt->require) {
        if (fixed_claim(claim))
          return make_error(fmt::format("{}: route requires claim '{}' by value; exp and nbf are checked "
                                        "against the clock (see require_exp and clock_skew)",
                                        where(r.loc), claim));
        auto key = std::make_pair(claim, value);
        if (l.require_bits.count(key)) continue;
        if (l.bits_used >= PD_JWT_CLAIM_BITS)
          return make_error(fmt::format("{}: more than {} distinct required claims and providers in one policy",
                                        where(r.loc), PD_JWT_CLAIM_BITS - 2 * l.providers.size()));
        l.require_bits.emplace(key, l.bits_used++);
      }
    }
  return l;
}

std::pair<uint8_t, uint64_t> jwt_route(const JwtLayout& layout, const config::Route& route) {
  if (!route.jwt) return {0, 0};
  uint8_t idx = 0;
  for (size_t i = 0; i < layout.providers.size(); ++i)
    if (layout.providers[i] == route.jwt->provider) idx = static_cast<uint8_t>(i + 1);
  uint64_t mask = 0;
  for (const auto& kv : route.jwt->require) {
    auto it = layout.require_bits.find(kv);
    if (it != layout.require_bits.end()) mask |= 1ULL << it->second;
  }
  return {idx, mask};
}

Status compile_jwt(const config::Policy& policy, const JwtLayout& layout, const JwtKeyMaterial* keys, uint32_t gen,
                   uint64_t seed, std::vector<std::pair<uint32_t, pd_jwt_provider>>& providers,
                   std::vector<JwtClaimEntry>& claims) {
  std::map<std::pair<uint64_t, uint64_t>, uint64_t> bits;  // (name hash, value hash) -> bits
  std::map<uint64_t, bool> names;                          // name-only entries
  auto add = [&](const std::string& name, const std::string& value, unsigned bit) {
    bits[{hash_forward(seed, name), hash_forward(seed, value)}] |= 1ULL << bit;
  };
  // the layout itself goes into every provider's epoch: a renumbered bit must not reuse a cache entry
  uint64_t layout_digest = kFnvOffset;
  for (const auto& [kv, bit] : layout.require_bits)
    layout_digest = fnv_mix(fnv_mix(fnv_mix(layout_digest, kv.first), kv.second), std::to_string(bit));

  for (size_t i = 0; i < layout.providers.size(); ++i) {
    const auto& name = layout.providers[i];
    const auto& cfg = policy.jwt_providers.at(name);
    pd_jwt_provider p{};
    p.skew = static_cast<uint32_t>(cfg.clock_skew.count());
    p.require_exp = cfg.require_exp ? 1 : 0;
    p.iss_bit = static_cast<uint8_t>(2 * i);
    p.aud_bit = static_cast<uint8_t>(2 * i + 1);
    add("iss", cfg.issuer, p.iss_bit);
    for (const auto& aud : cfg.audiences) add("aud", aud, p.aud_bit);
    uint64_t epoch = fnv_mix(fnv_mix(layout_digest, name), cfg.issuer);
    for (const auto& aud : cfg.audiences) epoch = fnv_mix(epoch, aud);
    epoch = fnv_mix(epoch, fmt::format("{} {} {}", p.skew, p.require_exp, i));
    for (const auto& alg : cfg.algorithms) {
      int a = alg_bits(alg);
      p.algs |= 1u << a;
      epoch = fnv_mix(epoch, alg);
      if (a < PD_ALG_HS256 || a > PD_ALG_HS512) continue;
      const std::string* secret = nullptr;
      if (keys) {
        auto it = keys->secrets.find(name);
        if (it != keys->secrets.end()) secret = &it->second;
      }
      if (!secret)
        return make_error(fmt::format("{}: jwt provider '{}': its secret_file was not read", where(cfg.loc), name));
      auto m = hmac_midstates(a == PD_ALG_HS256 ? 256 : a == PD_ALG_HS384 ? 384 : 512, *secret);
      std::memcpy(p.hs_inner[a - PD_ALG_HS256], m.inner.data(), sizeof(p.hs_inner[0]));
      std::memcpy(p.hs_outer[a - PD_ALG_HS256], m.outer.data(), sizeof(p.hs_outer[0]));
      epoch = fnv_mix(epoch, *secret);
    }
    if (keys)
      if (auto it = keys->jwks.find(name); it != keys->jwks.end()) epoch = fnv_mix(epoch, it->second);
    p.epoch = epoch ? epoch : 1;
    providers.emplace_back(gen * PD_JWT_PROVIDERS + static_cast<uint32_t>(i), p);
  }
  for (const auto& [kv, bit] : layout.require_bits) {
    const auto& [claim, value] = kv;
    add(claim, value, bit);
    if (claim != "iss" && claim != "aud" && claim != "sub" && claim != "scope")
      names[hash_forward(seed, claim)] = true;
  }
  for (const auto& [k, b] : bits) {
    JwtClaimEntry e{};
    e.key.gen = gen;
    e.key.name_hash = k.first;
    e.key.value_hash = k.second;
    e.bits = b;
    claims.push_back(e);
  }
  for (const auto& [h, _] : names) {
    JwtClaimEntry e{};
    e.key.gen = gen;
    e.key.flags = PD_JWT_NAME;
    e.key.name_hash = h;
    claims.push_back(e);
  }
  return Ok{};
}

PayloadFacts payload_facts(const std::vector<JwtClaimEntry>& claims, uint64_t seed, const nlohmann::json& payload) {
  PayloadFacts f;
  std::map<std::pair<uint64_t, uint64_t>, uint64_t> bits;
  for (const auto& e : claims)
    if (!(e.key.flags & PD_JWT_NAME)) bits[{e.key.name_hash, e.key.value_hash}] = e.bits;
  if (!payload.is_object()) return f;
  for (const auto& [name, value] : payload.items()) {
    const uint64_t nh = hash_forward(seed, name);
    auto lookup = [&](const std::string& v) {
      auto it = bits.find({nh, hash_forward(seed, v)});
      if (it != bits.end()) f.claims |= it->second;
    };
    if ((name == "exp" || name == "nbf") && value.is_number()) {
      double d = value.get<double>();
      int64_t t = static_cast<int64_t>(std::floor(d));
      if (name == "nbf" && static_cast<double>(t) < d) ++t;  // nbf rounds up, exp down (as jwt::parse)
      (name == "exp" ? f.exp : f.nbf) = t;
      continue;
    }
    if (value.is_string()) {
      const auto& str = value.get_ref<const std::string&>();
      if (name == "sub") {
        uint64_t h = hash_forward(seed, str);
        f.sub = h ? h : 1;
      }
      if (name != "scope") {
        lookup(str);
        continue;
      }
      size_t at = 0;  // a scope string is judged word by word
      while (at <= str.size()) {
        size_t sp = str.find(' ', at);
        if (sp == std::string::npos) sp = str.size();
        if (sp > at) lookup(str.substr(at, sp - at));
        at = sp + 1;
      }
    } else if (value.is_array() && name != "iss" && name != "sub") {
      for (const auto& el : value)
        if (el.is_string()) lookup(el.get<std::string>());
    }
  }
  return f;
}

pd_jwt_cache_val jwt_answer(std::string_view token, const config::JwtProvider& provider,
                           const jwt::Keys& keys, const std::vector<JwtClaimEntry>& claims,
                           uint64_t seed, int64_t now, std::string* detail) {
  pd_jwt_cache_val v{};
  v.state = PD_JC_INVALID;
  v.exp = PD_JWT_NO_TIME;
  v.nbf = -PD_JWT_NO_TIME;
  v.token_len = static_cast<uint32_t>(token.size());
  auto parsed = jwt::parse(token);
  if (!parsed.token) {
    v.reason = static_cast<uint8_t>(parsed.reason);
    if (detail) *detail = parsed.detail;
    return v;
  }
  auto verdict = jwt::verify(*parsed.token, provider, keys, nullptr, now);
  if (detail) *detail = verdict.detail;
  switch (verdict.reason) {
    case PD_J_OK:
    case PD_J_EXPIRED:
    case PD_J_NOT_YET_VALID:
    case PD_J_ISSUER:
    case PD_J_AUDIENCE:
    case PD_J_CLAIM: {
      // the signature holds: the claims are judged per request, from the facts
      auto facts = payload_facts(claims, seed, parsed.token->payload);
      v.state = PD_JC_VALID;
      v.reason = PD_J_OK;
      v.claims = facts.claims;
      v.sub = facts.sub;
      v.exp = parsed.token->exp ? *parsed.token->exp : PD_JWT_NO_TIME;
      v.nbf = parsed.token->nbf ? *parsed.token->nbf : -PD_JWT_NO_TIME;
      return v;
    }
    default:
      v.reason = static_cast<uint8_t>(verdict.reason);
      return v;
  }
}

}  // namespace policyd::chain

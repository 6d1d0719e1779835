#include "chain/stages/jwt.hpp"

#include <map>

#include "chain/stages/common.hpp"

namespace policyd::chain::builtin {

using config::Action;

Status JwtStage::compile(const CompileInput& in, Tables& t) const {
  return compile_jwt(in.policy, t.jwt, in.keys, in.gen, in.seed, t.jwt_providers, t.jwt_claims);
}

std::string JwtStage::diff(const Tables& a, const Tables& b) const {
  std::vector<std::string> parts;
  auto providers = [](const Tables& t) {
    std::map<std::string, uint64_t> m;  // name -> epoch (a digest of everything about it)
    for (size_t i = 0; i < t.jwt_providers.size() && i < t.jwt.providers.size(); ++i)
      m[t.jwt.providers[i]] = t.jwt_providers[i].second.epoch;
    return m;
  };
  auto pa = providers(a), pb = providers(b);
  for (const auto& [name, epoch] : pb) {
    auto it = pa.find(name);
    if (it == pa.end())
      parts.push_back(fmt::format("provider '{}' added", name));
    else if (it->second != epoch)
      parts.push_back(fmt::format("provider '{}' changed", name));
  }
  for (const auto& [name, _] : pa)
    if (!pb.count(name)) parts.push_back(fmt::format("provider '{}' removed", name));
  if (a.jwt.require_bits != b.jwt.require_bits) parts.push_back("required claims changed");
  return join(parts);
}

Status JwtStage::write(const Tables& t, uint32_t gen, TableWriter& w) const {
  if (auto st = w.erase_if<pd_jwt_claim_key>(abi::Map::jwt_claims, [gen](const pd_jwt_claim_key& k) { return k.gen == gen; });
      !st)
    return st;
  for (uint32_t i = 0; i < PD_JWT_PROVIDERS; ++i) {  // unused slots are zero: no algorithm
    pd_jwt_provider p{};
    for (const auto& [idx, val] : t.jwt_providers)
      if (idx % PD_JWT_PROVIDERS == i) p = val;
    if (auto st = w.put(abi::Map::jwt_providers, gen * PD_JWT_PROVIDERS + i, p); !st) return st;
  }
  for (const auto& e : t.jwt_claims) {
    pd_jwt_claim_key k = e.key;
    k.gen = gen;
    if (auto st = w.put(abi::Map::jwt_claims, k, e.bits); !st) return st;
  }
  return Ok{};
}

}  // namespace policyd::chain::builtin

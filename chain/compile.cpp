#include "chain/compile.hpp"

#include <cstring>
#include <iterator>
#include <numeric>
#include <algorithm>
#include <map>
#include <tuple>

#include <fmt/format.h>

#include "chain/hash.hpp"
#include "chain/stage.hpp"

namespace policyd::chain {

using config::Action;
using config::StageKind;

uint32_t stage_of(StageKind kind) {
  switch (kind) {
    case StageKind::Sni: return PD_STAGE_SNI;
    case StageKind::Host: return PD_STAGE_HOST;
    case StageKind::Path: return PD_STAGE_PATH;
    case StageKind::Jwt: return PD_STAGE_JWT;
    case StageKind::Ratelimit: return PD_STAGE_RATELIMIT;
  }
  return PD_STAGE_NONE;
}

uint8_t action_of(Action action) {
  switch (action) {
    case Action::Allow: return PD_ACT_ALLOW;
    case Action::Deny: return PD_ACT_DENY;
    case Action::Drop: return PD_ACT_DROP;
    case Action::Reset: return PD_ACT_RESET;
  }
  return PD_ACT_DENY;
}


Result<Tables> compile(const config::Policy& policy, uint32_t gen, uint64_t seed, const JwtKeyMaterial* keys) {
  Tables t;
  t.config.hash_seed = seed;
  auto layout = jwt_layout(policy);
  if (!layout) return layout.error();
  t.jwt = std::move(*layout);

  // ---- the chain order
  for (auto& n : t.next) n = PD_STAGE_NONE;
  for (auto kind : policy.chain) {
    t.stages.push_back(stage_of(kind));
  }
  uint32_t first = t.stages.empty() ? uint32_t{PD_STAGE_VERDICT} : t.stages.front();
  t.next[PD_STAGE_ENTRY] = first;
  t.next[PD_STAGE_HTTP] = first;
  for (size_t i = 0; i < t.stages.size(); ++i)
    t.next[t.stages[i]] = i + 1 < t.stages.size() ? t.stages[i + 1] : uint32_t{PD_STAGE_VERDICT};
  t.config.first_stage = static_cast<uint8_t>(first);
  // k pipelined heads cost k * (parser + stages + verdict) + (k - 1) re-entries tail calls
  t.config.max_pipeline = static_cast<uint8_t>((PD_TAIL_CALL_BUDGET + 1) / (t.stages.size() + 3));

  // ---- each stage's slice
  const CompileInput in{policy, gen, seed, keys};
  for (const auto& stage : stages())
    if (auto st = stage->compile(in, t); !st) return st.error();
  return t;
}

// ---- plan ---------------------------------------------------------------------------

Plan plan(const Tables& a, const Tables& b) {
  Plan p;
  if (a.stages != b.stages) {
    auto names = [](const std::vector<uint32_t>& s) {
      std::vector<std::string> n;
      for (auto id : s) n.emplace_back(abi::stage_name(id));
      return fmt::format("[{}]", fmt::join(n, ", "));
    };
    p.changes.push_back(Change{"chain", fmt::format("{} -> {}", names(a.stages), names(b.stages))});
  }
  for (const auto& stage : stages()) {
    auto what = stage->diff(a, b);
    if (what.empty())
      p.unchanged.emplace_back(stage->name());
    else
      p.changes.push_back(Change{std::string(stage->name()), what});
  }
  return p;
}

Result<Compiled> compile_policy(const config::Policy& policy, uint32_t gen, uint64_t seed, KeyFiles key_files) {
  std::vector<std::string> warnings;
  JwtKeyMaterial material;
  std::map<std::string, jwt::Keys> keys;
  if (auto read = read_key_material(policy)) {
    material = std::move(*read);
    for (const auto& [name, provider] : policy.jwt_providers) {
      auto k = provider_keys(material, name, provider);
      if (!k) return k.error();
      for (const auto& skipped : k->skipped) warnings.push_back(fmt::format("jwt provider '{}': {}", name, skipped));
      keys.emplace(name, std::move(*k));
    }
  } else if (key_files == KeyFiles::WhereReadable) {
    warnings.push_back(read.error().message + " (not checked here; the daemon reads it at apply)");
    for (const auto& [name, provider] : policy.jwt_providers)
      if (provider.secret_file) material.secrets[name] = "unread";  // compiles; never sent anywhere
  } else {
    return read.error();
  }
  auto tables = compile(policy, gen, seed, &material);
  if (!tables) return tables.error();
  tables->warnings.insert(tables->warnings.begin(), warnings.begin(), warnings.end());
  return Compiled{std::move(*tables), std::move(keys)};
}

uint64_t tables_digest(const Tables& t) {
  uint64_t h = 0xcbf29ce484222325ULL;
  auto mix = [&h](const void* p, size_t n) {
    auto* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 0x100000001b3ULL;
  };
  pd_config c = t.config;
  c.gen_tag = 0;
  mix(&c, sizeof(c));
  mix(t.next, sizeof(t.next));
  for (auto e : t.listeners) {
    e.key.gen = 0;
    mix(&e, sizeof(e));
  }
  for (auto e : t.hosts) {
    e.key.gen = 0;
    mix(&e, sizeof(e));
  }
  for (auto e : t.routes) {
    e.key.gen = 0;
    mix(&e, sizeof(e));
  }
  for (auto [idx, p] : t.jwt_providers) {
    idx %= PD_JWT_PROVIDERS;
    mix(&idx, sizeof(idx));
    mix(&p, sizeof(p));
  }
  for (auto e : t.jwt_claims) {
    e.key.gen = 0;
    mix(&e, sizeof(e));
  }
  for (const auto& l : t.limits) mix(&l, sizeof(l));
  return h;
}

}  // namespace policyd::chain

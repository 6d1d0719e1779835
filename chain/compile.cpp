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


const ProgramSource* Tables::program(uint32_t stage) const {
  for (const auto& p : programs)
    if (p.stage == stage) return &p;
  return nullptr;
}

std::string Tables::stage_name(uint32_t stage) const {
  if (const auto* p = program(stage); p && p->own) return p->name;
  return std::string(abi::stage_name(stage));
}

Result<Tables> compile(const config::Policy& policy, uint32_t gen, uint64_t seed, const JwtKeyMaterial* keys,
                       const ObjectDigests* digests) {
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
  // ---- stages from object files: built-ins' new builds keep their slot; own stages take the
  // slots after the built-in ones and run after the stage they name
  uint32_t own_slot = kOwnStageBase;
  for (const auto& spec : policy.stages) {
    ProgramSource src;
    src.name = spec.name;
    src.path = spec.object;
    if (digests)
      if (auto it = digests->find(spec.name); it != digests->end()) src.digest = it->second;
    if (!spec.after) {
      for (const auto& s : stages())
        if (s->name() == spec.name) src.stage = s->id();
      t.programs.push_back(src);
      continue;
    }
    if (own_slot >= PD_STAGE_MAX)
      return make_error(fmt::format("{}:{}:{}: stage '{}': this build has room for {} own stages", spec.loc.file,
                                    spec.loc.line, spec.loc.column, spec.name, PD_STAGE_MAX - kOwnStageBase));
    src.stage = own_slot++;
    src.own = true;
    uint32_t after = PD_STAGE_NONE;
    for (auto kind : policy.chain)
      if (config::to_string(kind) == *spec.after) after = stage_of(kind);
    for (const auto& p : t.programs)
      if (p.own && p.name == *spec.after) after = p.stage;
    auto at = std::find(t.stages.begin(), t.stages.end(), after);
    if (at == t.stages.end())
      return make_error(fmt::format("{}:{}:{}: stage '{}' runs after '{}', which is not in the chain", spec.loc.file,
                                    spec.loc.line, spec.loc.column, spec.name, *spec.after));
    t.stages.insert(at + 1, src.stage);
    t.programs.push_back(src);
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

namespace {

std::string program_text(const ProgramSource* p) {
  if (!p) return "built in";
  return fmt::format("{} ({:016x})", p->path, p->digest);
}

}  // namespace

Plan plan(const Tables& a, const Tables& b) {
  Plan p;
  auto names = [](const Tables& t) {
    std::vector<std::string> n;
    for (auto id : t.stages) n.push_back(t.stage_name(id));
    return n;
  };
  if (names(a) != names(b))
    p.changes.push_back(Change{"chain", fmt::format("[{}] -> [{}]", fmt::join(names(a), ", "), fmt::join(names(b), ", "))});
  for (const auto& stage : stages()) {
    std::string what = stage->diff(a, b);
    // a new build of the stage's program is a change of that stage
    const ProgramSource *pa = a.program(stage->id()), *pb = b.program(stage->id());
    if ((pa == nullptr) != (pb == nullptr) || (pa && (pa->digest != pb->digest || pa->path != pb->path))) {
      std::string prog = fmt::format("program {} -> {}", program_text(pa), program_text(pb));
      what = what.empty() ? prog : what + "; " + prog;
    }
    if (what.empty())
      p.unchanged.emplace_back(stage->name());
    else
      p.changes.push_back(Change{std::string(stage->name()), what});
  }
  // own stages, by name
  auto own = [](const Tables& t) {
    std::map<std::string, const ProgramSource*> m;
    for (const auto& src : t.programs)
      if (src.own) m[src.name] = &src;
    return m;
  };
  const auto oa = own(a), ob = own(b);
  for (const auto& [name, src] : ob) {
    auto it = oa.find(name);
    if (it == oa.end())
      p.changes.push_back(Change{name, fmt::format("own stage added: {}", program_text(src))});
    else if (it->second->digest != src->digest || it->second->path != src->path)
      p.changes.push_back(Change{name, fmt::format("program {} -> {}", program_text(it->second), program_text(src))});
    else
      p.unchanged.push_back(name);
  }
  for (const auto& [name, src] : oa)
    if (!ob.count(name)) p.changes.push_back(Change{name, "own stage removed"});
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
  // the stage object files: read once, here, so what is loaded is what was compiled
  ObjectDigests digests;
  std::map<std::string, std::vector<unsigned char>> bytes;
  for (const auto& spec : policy.stages) {
    auto elf = jwt::read_regular_file(spec.object, kMaxStageObject);
    if (!elf) {
      const std::string why = fmt::format("{}:{}:{}: stage '{}': {}", spec.loc.file, spec.loc.line, spec.loc.column,
                                          spec.name, elf.error().message);
      if (key_files == KeyFiles::Required) return make_error(why);
      warnings.push_back(why + " (not checked here; the daemon reads it at apply)");
      continue;
    }
    digests[spec.name] = hash_forward(0, *elf);
    bytes[spec.name].assign(elf->begin(), elf->end());
  }
  auto tables = compile(policy, gen, seed, &material, &digests);
  if (!tables) return tables.error();
  tables->warnings.insert(tables->warnings.begin(), warnings.begin(), warnings.end());
  Compiled out{std::move(*tables), std::move(keys), {}};
  for (const auto& p : out.tables.programs)
    if (auto it = bytes.find(p.name); it != bytes.end()) out.objects[p.stage] = std::move(it->second);
  return out;
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
  for (const auto& p : t.programs) {
    mix(&p.stage, sizeof(p.stage));
    mix(&p.digest, sizeof(p.digest));
    mix(p.name.data(), p.name.size());
  }
  return h;
}

}  // namespace policyd::chain

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


namespace {

std::string where(const config::SourceLoc& loc) {
  return fmt::format("{}:{}:{}", loc.file, loc.line, loc.column);
}

void set_prefix_bit(pd_host_val& v, size_t len) {
  v.prefix_lens[(len >> 3) & (PD_PATTERN_MAX / 8 - 1)] |= static_cast<uint8_t>(1u << (len & 7));
}

}  // namespace

Status EntryStage::compile(const config::Policy& policy, uint32_t gen, uint64_t, Tables& t) const {
  t.config.max_head_bytes = policy.limits.max_head_bytes;
  for (size_t i = 0; i < policy.listeners.size(); ++i) {
    const auto& l = policy.listeners[i];
    for (const auto& other : t.listeners)
      if (other.key.port == l.port)
        return make_error(fmt::format("{}: listener '{}': port {} is already used by listener {}; "
                                      "one listener per port is supported",
                                      where(l.loc), l.name, l.port, other.val.id));
    ListenerEntry e{};
    e.key.gen = gen;
    e.key.port = l.port;
    e.val.id = static_cast<uint16_t>(i);
    e.val.proto = l.protocol == config::Protocol::Tls ? PD_PROTO_TLS : PD_PROTO_HTTP;
    // UDP to a TLS listener's port is QUIC (HTTP/3), which would never meet the SNI stage
    if (l.protocol == config::Protocol::Tls && l.quic == config::QuicMode::Deny) {
      e.val.quic_deny = 1;
      t.config.quic_deny = 1;
    }
    if (l.address) {
      e.val.addr_family = static_cast<uint8_t>(l.address->family);
      e.val.prefix_len = static_cast<uint8_t>(l.address->prefix_len);
      std::memcpy(e.val.addr, l.address->addr.data(), 16);
    }
    t.listeners.push_back(e);
  }
  return Ok{};
}

Status VerdictStage::compile(const config::Policy& policy, uint32_t, uint64_t, Tables& t) const {
  t.config.default_action = action_of(policy.default_action);
  t.config.fail_open = policy.fail_mode == config::FailMode::Open ? 1 : 0;
  return Ok{};
}

namespace {

// A pattern ("name", "*.suffix", "*") as a name-table key kind (host kinds; sni adds its
// offset) and the name stored for verification.
std::pair<uint32_t, std::string> pattern_kind(const std::string& m) {
  if (m == "*") return {PD_HOST_ANY, ""};
  if (m.rfind("*.", 0) == 0) return {PD_HOST_WILD, m.substr(2)};
  return {PD_HOST_EXACT, m};
}

}  // namespace

Status SniStage::compile(const config::Policy& policy, uint32_t gen, uint64_t seed, Tables& t) const {
  t.config.missing_sni = action_of(policy.missing_sni);
  for (size_t i = 0; i < policy.sni.size(); ++i) {
    const auto& rule = policy.sni[i];
    auto [kind, name] = pattern_kind(rule.match);
    if (name.size() >= PD_PATTERN_MAX)
      return make_error(fmt::format("{}: sni pattern '{}' is too long", where(rule.loc), rule.match));
    HostEntry e{};
    e.key.gen = gen;
    e.key.kind = kind + PD_SNI_KIND_OFFSET;
    e.key.hash = kind == PD_HOST_ANY ? 0 : hash_reverse(seed, name);
    e.val.host_id = static_cast<uint32_t>(i);
    e.val.action = action_of(rule.action);
    e.val.name_len = static_cast<uint32_t>(name.size());
    std::memcpy(e.val.name, name.data(), name.size());
    bool dup = false;
    for (const auto& other : t.hosts)
      if (other.key.kind == e.key.kind && other.key.hash == e.key.hash) dup = true;
    if (dup) {
      t.warnings.push_back(fmt::format("{}: sni pattern '{}' already appears in an earlier rule, which wins",
                                       where(rule.loc), rule.match));
      continue;
    }
    t.hosts.push_back(e);
    RuleInfo info;
    info.rule = PD_MAX_RULES - 1 - static_cast<uint32_t>(i);
    info.host_index = static_cast<uint32_t>(i);
    info.host_pattern = rule.match;
    info.path = "sni";
    info.action = std::string(config::to_string(rule.action));
    t.rules.push_back(info);
  }
  return Ok{};
}

Status HostStage::compile(const config::Policy& policy, uint32_t gen, uint64_t seed, Tables& t) const {
  std::map<std::tuple<uint32_t, uint64_t>, size_t> index;  // (kind, hash) -> hosts[]
  for (size_t hi = 0; hi < policy.hosts.size(); ++hi) {
    const auto& h = policy.hosts[hi];
    pd_host_val base{};
    base.host_id = static_cast<uint32_t>(hi);
    for (const auto& r : h.routes)  // the prefix lengths the path stage will look up
      if (r.path.kind == config::PathMatch::Prefix && !r.path.value.empty() && r.path.value.size() < PD_PATTERN_MAX)
        set_prefix_bit(base, r.path.value.size());
    for (const auto& m : h.matches) {
      HostEntry e{};
      e.val = base;
      std::string name;
      if (m == "*") {
        e.key.kind = PD_HOST_ANY;
      } else if (m.rfind("*.", 0) == 0) {
        name = m.substr(2);
        e.key.kind = PD_HOST_WILD;
        e.key.hash = hash_reverse(seed, name);
      } else {
        name = m;
        e.key.kind = PD_HOST_EXACT;
        e.key.hash = hash_reverse(seed, name);
      }
      if (name.size() >= PD_PATTERN_MAX)
        return make_error(fmt::format("{}: host pattern '{}' is too long", where(h.loc), m));
      e.key.gen = gen;
      e.val.name_len = static_cast<uint32_t>(name.size());
      std::memcpy(e.val.name, name.data(), name.size());
      auto key = std::make_tuple(e.key.kind, e.key.hash);
      auto found = index.find(key);
      if (found != index.end()) {
        const auto& prev = t.hosts[found->second].val;
        if (prev.name_len != e.val.name_len || std::memcmp(prev.name, e.val.name, prev.name_len) != 0)
          return make_error(fmt::format("{}: host '{}' collides with another pattern's hash; apply "
                                        "again (a new seed is chosen)",
                                        where(h.loc), m));
        t.warnings.push_back(fmt::format("{}: host pattern '{}' already appears in an earlier host "
                                         "entry, which wins",
                                         where(h.loc), m));
        continue;
      }
      index.emplace(key, t.hosts.size());
      t.hosts.push_back(e);
    }
  }
  return Ok{};
}

Status PathStage::compile(const config::Policy& policy, uint32_t gen, uint64_t seed, Tables& t) const {
  std::map<std::tuple<uint32_t, uint32_t, uint32_t, uint64_t>, size_t> index;
  uint32_t rule = 0;
  for (size_t hi = 0; hi < policy.hosts.size(); ++hi) {
    const auto& h = policy.hosts[hi];
    for (size_t ri = 0; ri < h.routes.size(); ++ri, ++rule) {
      const auto& r = h.routes[ri];
      // rule ids: routes count up from 0, sni rules down from PD_MAX_RULES - 1 (counters are per id)
      if (rule >= PD_MAX_RULES - policy.sni.size())
        return make_error(fmt::format("{}: more than {} routes{}", where(r.loc), PD_MAX_RULES - policy.sni.size(),
                                      policy.sni.empty() ? "" : fmt::format(" beside {} sni rules", policy.sni.size())));
      const std::string& pat = r.path.value;
      if (pat.empty() || pat.size() >= PD_PATTERN_MAX)
        return make_error(fmt::format("{}: path pattern must be 1..{} bytes", where(r.loc), PD_PATTERN_MAX - 1));
      uint32_t kind = r.path.kind == config::PathMatch::Exact ? PD_ROUTE_EXACT : PD_ROUTE_PREFIX;
      uint64_t hash = hash_forward(seed, pat);
      auto key = std::make_tuple(static_cast<uint32_t>(hi), kind, static_cast<uint32_t>(pat.size()), hash);
      auto it = index.find(key);
      if (it == index.end()) {
        RouteEntry e{};
        e.key = pd_route_key{gen, static_cast<uint32_t>(hi), kind, static_cast<uint32_t>(pat.size()), hash};
        e.val.pattern_len = static_cast<uint32_t>(pat.size());
        std::memcpy(e.val.pattern, pat.data(), pat.size());
        it = index.emplace(key, t.routes.size()).first;
        t.routes.push_back(e);
      }
      auto& val = t.routes[it->second].val;
      if (std::memcmp(val.pattern, pat.data(), pat.size()) != 0)
        return make_error(fmt::format("{}: path '{}' collides with another pattern's hash; "
                                      "apply again (a new seed is chosen)",
                                      where(r.loc), pat));
      // an earlier route with the same path already takes every request this one could
      bool shadowed = false;
      for (uint32_t s = 0; s < val.nslots; ++s)
        if (val.slots[s].methods == 0 || (r.methods != 0 && (val.slots[s].methods & r.methods) == r.methods))
          shadowed = true;
      RuleInfo info;
      info.rule = rule;
      info.host_index = static_cast<uint32_t>(hi);
      info.route_index = static_cast<uint32_t>(ri);
      info.host_pattern = h.matches.empty() ? "" : h.matches.front();
      info.path = fmt::format("{} {}", config::to_string(r.path.kind), config::encode_path(pat));
      info.action = std::string(config::to_string(r.action));
      t.rules.push_back(info);
      if (shadowed) {
        t.warnings.push_back(fmt::format("{}: route never matches: an earlier route of this host has "
                                         "the same path and covers its methods",
                                         where(r.loc)));
        continue;
      }
      if (val.nslots >= PD_ROUTE_SLOTS)
        return make_error(fmt::format("{}: more than {} routes of one host share the path '{}'", where(r.loc),
                                      PD_ROUTE_SLOTS, pat));
      auto& slot = val.slots[val.nslots++];
      slot.rule = rule;
      slot.methods = r.methods;
      slot.action = action_of(r.action);
      std::tie(slot.jwt, slot.jwt_require) = jwt_route(t.jwt, r);
      if (r.ratelimit) {
        auto it = policy.ratelimits.find(*r.ratelimit);
        slot.ratelimit = static_cast<uint8_t>(std::distance(policy.ratelimits.begin(), it) + 1);
      }
    }
  }
  return Ok{};
}

const std::vector<std::unique_ptr<Stage>>& stages() {
  static const std::vector<std::unique_ptr<Stage>> all = [] {
    std::vector<std::unique_ptr<Stage>> v;
    v.push_back(std::make_unique<EntryStage>());
    v.push_back(std::make_unique<SniStage>());
    v.push_back(std::make_unique<HostStage>());
    v.push_back(std::make_unique<PathStage>());
    v.push_back(std::make_unique<JwtStage>());
    v.push_back(std::make_unique<RateLimitStage>());
    v.push_back(std::make_unique<VerdictStage>());
    return v;
  }();
  return all;
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
  for (const auto& stage : stages())
    if (auto st = stage->compile(policy, gen, seed, t); !st) return st.error();
  if (auto st = compile_jwt(policy, t.jwt, keys, gen, seed, t.jwt_providers, t.jwt_claims); !st) return st.error();
  return t;
}

// ---- plan ---------------------------------------------------------------------------
namespace {

template <typename Entry, typename Key>
std::string diff_entries(const std::vector<Entry>& a, const std::vector<Entry>& b, const char* noun) {
  // entries compared without their generation
  auto norm = [](Entry e) {
    e.key.gen = 0;
    return std::string(reinterpret_cast<const char*>(&e), sizeof(e));
  };
  std::map<std::string, int> seen;
  for (const auto& e : a) seen[norm(e)] -= 1;
  for (const auto& e : b) seen[norm(e)] += 1;
  size_t added = 0, removed = 0;
  for (const auto& [k, n] : seen) {
    if (n > 0) added += static_cast<size_t>(n);
    if (n < 0) removed += static_cast<size_t>(-n);
  }
  if (!added && !removed) return {};
  return fmt::format("{} {} added, {} removed", noun, added, removed);
}

std::string join(const std::vector<std::string>& parts) {
  std::string out;
  for (const auto& p : parts) {
    if (p.empty()) continue;
    if (!out.empty()) out += "; ";
    out += p;
  }
  return out;
}

}  // namespace

std::string EntryStage::diff(const Tables& a, const Tables& b) const {
  std::vector<std::string> parts{diff_entries<ListenerEntry, pd_listener_key>(a.listeners, b.listeners, "listeners:")};
  if (a.config.max_head_bytes != b.config.max_head_bytes)
    parts.push_back(fmt::format("max_head_bytes {} -> {}", a.config.max_head_bytes, b.config.max_head_bytes));
  return join(parts);
}

std::vector<HostEntry> of_kinds(const std::vector<HostEntry>& all, bool sni) {
  std::vector<HostEntry> out;
  for (const auto& e : all)
    if ((e.key.kind > PD_HOST_ANY) == sni) out.push_back(e);
  return out;
}

std::string HostStage::diff(const Tables& a, const Tables& b) const {
  return diff_entries<HostEntry, pd_host_key>(of_kinds(a.hosts, false), of_kinds(b.hosts, false), "host patterns:");
}

std::string SniStage::diff(const Tables& a, const Tables& b) const {
  std::vector<std::string> parts{
      diff_entries<HostEntry, pd_host_key>(of_kinds(a.hosts, true), of_kinds(b.hosts, true), "sni rules:")};
  if (a.config.missing_sni != b.config.missing_sni)
    parts.push_back(fmt::format("missing_sni {} -> {}", abi::action_name(a.config.missing_sni),
                                abi::action_name(b.config.missing_sni)));
  return join(parts);
}

std::string PathStage::diff(const Tables& a, const Tables& b) const {
  return diff_entries<RouteEntry, pd_route_key>(a.routes, b.routes, "route keys:");
}

Status RateLimitStage::compile(const config::Policy& policy, uint32_t, uint64_t, Tables& t) const {
  using config::RateLimit;
  for (const auto& [name, rl] : policy.ratelimits) {
    if (t.limits.size() >= PD_RL_LIMITS)
      return make_error(fmt::format("{}: more than {} rate limits", where(rl.loc), PD_RL_LIMITS));
    const uint64_t unit = rl.unit == RateLimit::PerSecond   ? 1'000'000'000ULL
                          : rl.unit == RateLimit::PerMinute ? 60'000'000'000ULL
                                                            : 3'600'000'000'000ULL;
    const uint64_t g = std::gcd(rl.rate, unit);
    pd_rl_limit l{};
    l.add = rl.rate / g;  // credit per ns
    l.cost = unit / g;    // credit per token: exactly `rate` tokens per unit
    if (rl.burst > (uint64_t{1} << 62) / l.cost)
      return make_error(fmt::format("{}: rate limit '{}': burst {} per {} is too large to count exactly",
                                    where(rl.loc), name, rl.burst, config::to_string(rl.unit)));
    l.cap = rl.burst * l.cost;
    l.fill_ns = (l.cap + l.add - 1) / l.add;
    l.id = hash_forward(0, fmt::format("{}/{}", name, config::to_string(rl.key))) | 1;
    switch (rl.key) {
      case RateLimit::ClientIp: l.key = PD_RLK_CLIENT_IP; break;
      case RateLimit::JwtSub: l.key = PD_RLK_JWT_SUB; break;
      case RateLimit::Host: l.key = PD_RLK_HOST; break;
      case RateLimit::Route: l.key = PD_RLK_ROUTE; break;
      case RateLimit::Global: l.key = PD_RLK_GLOBAL; break;
    }
    l.action = rl.action == config::LimitAction::Drop ? PD_ACT_DROP : PD_ACT_REJECT;
    t.limits.push_back(l);
  }
  return Ok{};  // max_buckets: the dataplane's, from the size of its bucket table
}

std::string RateLimitStage::diff(const Tables& a, const Tables& b) const {
  if (a.limits.size() == b.limits.size() &&
      std::equal(a.limits.begin(), a.limits.end(), b.limits.begin(),
                 [](const pd_rl_limit& x, const pd_rl_limit& y) { return std::memcmp(&x, &y, sizeof(x)) == 0; }))
    return {};
  return fmt::format("rate limits: {} -> {}", a.limits.size(), b.limits.size());
}

Status JwtStage::compile(const config::Policy&, uint32_t, uint64_t, Tables&) const {
  return Ok{};  // needs the key material: compile_jwt, called by compile() after every stage
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

std::string VerdictStage::diff(const Tables& a, const Tables& b) const {
  std::vector<std::string> parts;
  if (a.config.default_action != b.config.default_action)
    parts.push_back(fmt::format("default_action {} -> {}", abi::action_name(a.config.default_action),
                                abi::action_name(b.config.default_action)));
  if (a.config.fail_open != b.config.fail_open)
    parts.push_back(fmt::format("fail_mode {} -> {}", a.config.fail_open ? "open" : "closed",
                                b.config.fail_open ? "open" : "closed"));
  return join(parts);
}

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

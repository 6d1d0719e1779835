#include "chain/compile.hpp"

#include <cstring>
#include <map>
#include <tuple>

#include <fmt/format.h>

#include "chain/hash.hpp"

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

bool stage_implemented(StageKind kind) {
  return kind == StageKind::Host || kind == StageKind::Path;
}

namespace {

std::string where(const config::SourceLoc& loc) {
  return fmt::format("{}:{}:{}", loc.file, loc.line, loc.column);
}

void set_prefix_bit(pd_host_val& v, size_t len) {
  v.prefix_lens[(len >> 3) & (PD_PATTERN_MAX / 8 - 1)] |= static_cast<uint8_t>(1u << (len & 7));
}

}  // namespace

Result<Tables> compile(const config::Policy& policy, uint32_t gen, uint64_t seed) {
  Tables t;
  t.config.gen_tag = 0;
  t.config.default_action = action_of(policy.default_action);
  t.config.fail_open = policy.fail_mode == config::FailMode::Open ? 1 : 0;
  t.config.max_head_bytes = policy.limits.max_head_bytes;
  t.config.hash_seed = seed;

  // ---- listeners
  for (size_t i = 0; i < policy.listeners.size(); ++i) {
    const auto& l = policy.listeners[i];
    if (l.protocol == config::Protocol::Tls)
      return make_error(fmt::format("{}: listener '{}': tls listeners need the sni stage, which this "
                                    "build does not implement yet",
                                    where(l.loc), l.name));
    for (const auto& other : t.listeners)
      if (other.key.port == l.port)
        return make_error(fmt::format("{}: listener '{}': port {} is already used by listener {}; "
                                      "one listener per port is supported",
                                      where(l.loc), l.name, l.port, other.val.id));
    ListenerEntry e{};
    e.key.gen = gen;
    e.key.port = l.port;
    e.val.id = static_cast<uint16_t>(i);
    e.val.proto = PD_PROTO_HTTP;
    if (l.address) {
      e.val.addr_family = static_cast<uint8_t>(l.address->family);
      e.val.prefix_len = static_cast<uint8_t>(l.address->prefix_len);
      std::memcpy(e.val.addr, l.address->addr.data(), 16);
    }
    t.listeners.push_back(e);
  }

  // ---- chain order
  for (auto& n : t.next) n = PD_STAGE_NONE;
  for (auto kind : policy.chain) {
    if (!stage_implemented(kind)) {
      bool used = false;
      for (const auto& h : policy.hosts)
        for (const auto& r : h.routes)
          if ((kind == StageKind::Jwt && r.jwt) || (kind == StageKind::Ratelimit && r.ratelimit))
            return make_error(fmt::format("{}: route uses '{}', but the {} stage is not implemented "
                                          "in this build yet",
                                          where(r.loc), kind == StageKind::Jwt ? "jwt" : "ratelimit",
                                          config::to_string(kind)));
      if (kind == StageKind::Sni && !policy.sni.empty()) used = true;
      if (used)
        t.warnings.push_back(fmt::format("the {} stage is not implemented in this build yet; its "
                                         "rules have no listener to act on",
                                         config::to_string(kind)));
      continue;
    }
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

  // ---- hosts and routes
  std::map<std::tuple<uint32_t, uint64_t>, size_t> host_index;  // (kind, hash) -> hosts[]
  std::map<std::tuple<uint32_t, uint32_t, uint32_t, uint64_t>, size_t> route_index;
  uint32_t rule = 0;
  for (size_t hi = 0; hi < policy.hosts.size(); ++hi) {
    const auto& h = policy.hosts[hi];
    pd_host_val base{};
    base.host_id = static_cast<uint32_t>(hi);
    // routes first: the host value carries the bitmap of its prefix lengths
    for (size_t ri = 0; ri < h.routes.size(); ++ri, ++rule) {
      const auto& r = h.routes[ri];
      if (rule >= PD_MAX_RULES)
        return make_error(fmt::format("{}: more than {} routes", where(r.loc), PD_MAX_RULES));
      const std::string& pat = r.path.value;
      if (pat.empty() || pat.size() >= PD_PATTERN_MAX)
        return make_error(fmt::format("{}: path pattern must be 1..{} bytes", where(r.loc),
                                      PD_PATTERN_MAX - 1));
      uint32_t kind = r.path.kind == config::PathMatch::Exact ? PD_ROUTE_EXACT : PD_ROUTE_PREFIX;
      if (kind == PD_ROUTE_PREFIX) set_prefix_bit(base, pat.size());
      uint64_t hash = hash_forward(seed, pat);
      auto rk = std::make_tuple(static_cast<uint32_t>(hi), kind, static_cast<uint32_t>(pat.size()), hash);
      auto it = route_index.find(rk);
      if (it == route_index.end()) {
        RouteEntry e{};
        e.key = pd_route_key{gen, static_cast<uint32_t>(hi), kind, static_cast<uint32_t>(pat.size()), hash};
        e.val.pattern_len = static_cast<uint32_t>(pat.size());
        std::memcpy(e.val.pattern, pat.data(), pat.size());
        it = route_index.emplace(rk, t.routes.size()).first;
        t.routes.push_back(e);
      }
      auto& val = t.routes[it->second].val;
      if (std::memcmp(val.pattern, pat.data(), pat.size()) != 0)
        return make_error(fmt::format("{}: path '{}' collides with another pattern's hash; "
                                      "apply again (a new seed is chosen)",
                                      where(r.loc), pat));
      bool shadowed = false;
      for (uint32_t s = 0; s < val.nslots; ++s)
        if (val.slots[s].methods == 0 || (val.slots[s].methods & r.methods) == r.methods) shadowed = r.methods != 0 || val.slots[s].methods == 0;
      RuleInfo info;
      info.rule = rule;
      info.host_index = static_cast<uint32_t>(hi);
      info.route_index = static_cast<uint32_t>(ri);
      info.host_pattern = h.matches.empty() ? "" : h.matches.front();
      info.path = fmt::format("{} {}", config::to_string(r.path.kind), pat);
      info.action = std::string(config::to_string(r.action));
      t.rules.push_back(info);
      if (shadowed) {
        t.warnings.push_back(fmt::format("{}: route never matches: an earlier route of this host has "
                                         "the same path and covers its methods",
                                         where(r.loc)));
        continue;
      }
      if (val.nslots >= PD_ROUTE_SLOTS)
        return make_error(fmt::format("{}: more than {} routes of one host share the path '{}'",
                                      where(r.loc), PD_ROUTE_SLOTS, pat));
      auto& slot = val.slots[val.nslots++];
      slot.rule = rule;
      slot.methods = r.methods;
      slot.action = action_of(r.action);
    }
    for (const auto& m : h.matches) {
      HostEntry e{};
      e.val = base;
      std::string name;
      if (m == "*") {
        e.key.kind = PD_HOST_ANY;
        e.key.hash = 0;
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
      auto hk = std::make_tuple(e.key.kind, e.key.hash);
      auto found = host_index.find(hk);
      if (found != host_index.end()) {
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
      host_index.emplace(hk, t.hosts.size());
      t.hosts.push_back(e);
    }
  }
  return t;
}

}  // namespace policyd::chain

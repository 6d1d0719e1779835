#include "chain/stages/path.hpp"

#include <cstring>
#include <iterator>
#include <map>
#include <tuple>

#include "chain/hash.hpp"
#include "chain/stages/common.hpp"

namespace policyd::chain::builtin {

using config::Action;

Status PathStage::compile(const CompileInput& in, Tables& t) const {
  const auto& policy = in.policy;
  const uint32_t gen = in.gen;
  const uint64_t seed = in.seed;
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

std::string PathStage::diff(const Tables& a, const Tables& b) const {
  return diff_entries<RouteEntry, pd_route_key>(a.routes, b.routes, "route keys:");
}

Status PathStage::write(const Tables& t, uint32_t gen, TableWriter& w) const {
  if (auto st = w.erase_if<pd_route_key>(abi::Map::routes, [gen](const pd_route_key& k) { return k.gen == gen; }); !st)
    return st;
  // The half's hit counters start at zero: they count this generation's hits, and the half
  // last held the generation before the running one (whose counts would otherwise show again
  // under the same rule ids). Only the slots this generation reads are written.
  for (const auto& r : t.rules)
    if (auto st = w.zero_counter(abi::Map::rule_hits, gen * PD_MAX_RULES + (r.rule & (PD_MAX_RULES - 1))); !st)
      return st;
  for (const auto& e : t.routes) {
    pd_route_key k = e.key;
    k.gen = gen;
    if (auto st = w.put(abi::Map::routes, k, e.val); !st) return st;
  }
  return Ok{};
}

void PathStage::probes(const config::Policy& policy, size_t limit, std::vector<Probe>& out) const {
  auto add = [&](uint32_t method, std::string host, std::string path, std::string why) {
    if (out.size() >= limit) return;
    out.push_back(Probe{Probe::Http, std::string(config::to_string(static_cast<config::Method>(method))),
                        std::move(host), std::move(path), method, std::move(why)});
  };
  auto first_bit = [](uint32_t mask) {
    for (uint32_t b = 1; b; b <<= 1)
      if (mask & b) return b;
    return uint32_t{config::GET};
  };
  auto other_method = [](uint32_t mask) {  // a method outside `mask` (0 if every method is in it)
    for (uint32_t b : {config::DELETE, config::PATCH, config::PUT, config::POST, config::GET})
      if (!(mask & b)) return b;
    return 0u;
  };
  for (size_t hi = 0; hi < policy.hosts.size(); ++hi) {
    const auto& h = policy.hosts[hi];
    for (const auto& pattern : h.matches) {
      std::string host = example_host(pattern);
      for (size_t ri = 0; ri < h.routes.size(); ++ri) {
        const auto& r = h.routes[ri];
        std::string why = fmt::format("host {} ('{}') route {} at {}", hi + 1, pattern, ri + 1, where(r.loc));
        std::string path = r.path.kind == config::PathMatch::Exact ? r.path.value : r.path.value + "pf";
        add(first_bit(r.methods), host, path, why);  // what the route takes
        if (uint32_t other = other_method(r.methods); r.methods && other)
          add(other, host, path, why + ", another method");  // its methods limit it
        if (r.path.kind == config::PathMatch::Exact)
          add(first_bit(r.methods), host, r.path.value + "-pf", why + ", a longer path");
      }
      add(config::GET, host, "/preflight-no-route", fmt::format("host {} ('{}'), no route", hi + 1, pattern));
    }
  }
  add(config::GET, "preflight-no-host.invalid", "/", "no host");
}

void PathStage::read_counters(const CounterReader& r, const CounterQuery& q, Counters& out) const {
  for (uint32_t rule : q.rules)
    out.rule_hits[rule] = r.sum(abi::Map::rule_hits, (q.gen & 1) * PD_MAX_RULES + (rule & (PD_MAX_RULES - 1)));
}

}  // namespace policyd::chain::builtin

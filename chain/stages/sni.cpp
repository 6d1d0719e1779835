#include "chain/stages/sni.hpp"

#include <algorithm>
#include <cctype>
#include <cstring>

#include "chain/hash.hpp"
#include "chain/stages/common.hpp"

namespace policyd::chain::builtin {

using config::Action;

namespace {

std::pair<uint32_t, std::string> pattern_kind(const std::string& m) {
  if (m == "*") return {PD_HOST_ANY, ""};
  if (m.rfind("*.", 0) == 0) return {PD_HOST_WILD, m.substr(2)};
  return {PD_HOST_EXACT, m};
}

}  // namespace

Status SniStage::compile(const CompileInput& in, Tables& t) const {
  const auto& policy = in.policy;
  const uint32_t gen = in.gen;
  const uint64_t seed = in.seed;
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

std::string SniStage::diff(const Tables& a, const Tables& b) const {
  std::vector<std::string> parts{
      diff_entries<HostEntry, pd_host_key>(of_kinds(a.hosts, true), of_kinds(b.hosts, true), "sni rules:")};
  if (a.config.missing_sni != b.config.missing_sni)
    parts.push_back(fmt::format("missing_sni {} -> {}", abi::action_name(a.config.missing_sni),
                                abi::action_name(b.config.missing_sni)));
  return join(parts);
}

Status SniStage::write(const Tables& t, uint32_t gen, TableWriter& w) const { return write_names(t.hosts, true, gen, w); }

void SniStage::probes(const config::Policy& policy, size_t limit, std::vector<Probe>& out) const {
  bool tls = std::any_of(policy.listeners.begin(), policy.listeners.end(),
                         [](const config::Listener& l) { return l.protocol == config::Protocol::Tls; });
  if (!tls) return;
  auto add = [&](std::string name, std::string why) {
    if (out.size() >= limit) return;
    Probe p;
    p.kind = Probe::Tls;
    p.host = std::move(name);
    p.why = std::move(why);
    out.push_back(std::move(p));
  };
  auto upper = [](std::string s) {
    for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return s;
  };
  for (size_t i = 0; i < policy.sni.size(); ++i) {
    const auto& r = policy.sni[i];
    std::string why = fmt::format("sni rule {} ('{}') at {}", i + 1, r.match, where(r.loc));
    std::string name = example_host(r.match);
    add(name, why);
    add(upper(name) + ".", why + ", upper case with a trailing dot");
  }
  add("preflight-no-sni-rule.invalid", "no sni rule");
  add("", "no server_name (missing_sni)");
}

}  // namespace policyd::chain::builtin

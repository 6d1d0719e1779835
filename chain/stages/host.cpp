#include "chain/stages/host.hpp"

#include <cstring>
#include <map>
#include <tuple>

#include "chain/hash.hpp"
#include "chain/stages/common.hpp"

namespace policyd::chain::builtin {

using config::Action;

namespace {

void set_prefix_bit(pd_host_val& v, size_t len) {
  v.prefix_lens[(len >> 3) & (PD_PATTERN_MAX / 8 - 1)] |= static_cast<uint8_t>(1u << (len & 7));
}

}  // namespace

Status HostStage::compile(const CompileInput& in, Tables& t) const {
  const auto& policy = in.policy;
  const uint32_t gen = in.gen;
  const uint64_t seed = in.seed;
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

std::string HostStage::diff(const Tables& a, const Tables& b) const {
  return diff_entries<HostEntry, pd_host_key>(of_kinds(a.hosts, false), of_kinds(b.hosts, false), "host patterns:");
}

Status HostStage::write(const Tables& t, uint32_t gen, TableWriter& w) const { return write_names(t.hosts, false, gen, w); }

}  // namespace policyd::chain::builtin

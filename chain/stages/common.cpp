#include "chain/stages/common.hpp"

namespace policyd::chain::builtin {

std::string where(const config::SourceLoc& loc) { return fmt::format("{}:{}:{}", loc.file, loc.line, loc.column); }

std::string join(const std::vector<std::string>& parts) {
  std::string out;
  for (const auto& p : parts) {
    if (p.empty()) continue;
    if (!out.empty()) out += "; ";
    out += p;
  }
  return out;
}

std::string example_host(const std::string& pattern) {
  if (pattern == "*") return "preflight.invalid";
  if (pattern.rfind("*.", 0) == 0) return "preflight." + pattern.substr(2);
  return pattern;
}

std::vector<HostEntry> of_kinds(const std::vector<HostEntry>& all, bool sni) {
  std::vector<HostEntry> out;
  for (const auto& e : all)
    if ((e.key.kind > PD_HOST_ANY) == sni) out.push_back(e);
  return out;
}

Status write_names(const std::vector<HostEntry>& all, bool sni, uint32_t gen, TableWriter& w) {
  if (auto st = w.erase_if<pd_host_key>(abi::Map::hosts,
                                        [&](const pd_host_key& k) { return k.gen == gen && (k.kind > PD_HOST_ANY) == sni; });
      !st)
    return st;
  for (const auto& e : of_kinds(all, sni)) {
    pd_host_key k = e.key;
    k.gen = gen;
    if (auto st = w.put(abi::Map::hosts, k, e.val); !st) return st;
  }
  return Ok{};
}

}  // namespace policyd::chain::builtin

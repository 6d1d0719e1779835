// What the stages' sources share (chain/stages/): not part of the Stage interface.
#pragma once

#include <string>
#include <vector>

#include <fmt/format.h>

#include "chain/compile.hpp"
#include "chain/stage.hpp"

namespace policyd::chain::builtin {

// "file:line:col" of a policy item, as every error and warning names it.
std::string where(const config::SourceLoc& loc);
// The parts that are not empty, joined with "; ".
std::string join(const std::vector<std::string>& parts);
// A name a host or sni pattern takes ("*" and "*.suffix" get a made-up one).
std::string example_host(const std::string& pattern);

// "<noun> N added, M removed" between two generations' entries (compared without their
// generation), empty if they hold the same entries.
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

// The name table holds host patterns and sni rules side by side (sni kinds are offset).
std::vector<HostEntry> of_kinds(const std::vector<HostEntry>& all, bool sni);

// Writes a generation's host-table entries of one side (hosts or sni rules), after deleting
// that side's entries of the generation.
Status write_names(const std::vector<HostEntry>& all, bool sni, uint32_t gen, TableWriter& w);

}  // namespace policyd::chain::builtin

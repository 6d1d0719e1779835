// The keyed FNV-1a-64 of host and path tables, computed exactly as bpf/include/pd_common.h
// does: hosts are hashed right to left (so every "*.suffix" is a prefix of the walk), paths
// left to right. Hits are verified against the stored pattern in the dataplane.
#pragma once

#include <cstdint>
#include <string_view>

namespace policyd::chain {

inline constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
inline constexpr uint64_t kFnvPrime = 0x100000001b3ULL;

inline uint64_t hash_forward(uint64_t seed, std::string_view s) {
  uint64_t h = kFnvOffset ^ seed;
  for (unsigned char c : s) h = (h ^ c) * kFnvPrime;
  return h;
}

inline uint64_t hash_reverse(uint64_t seed, std::string_view s) {
  uint64_t h = kFnvOffset ^ seed;
  for (auto it = s.rbegin(); it != s.rend(); ++it) h = (h ^ static_cast<unsigned char>(*it)) * kFnvPrime;
  return h;
}

}  // namespace policyd::chain

// HMAC midstates for the dataplane's HS256/HS384/HS512 check (bpf/include/pd_sha2.h): the
// SHA-2 chaining state after compressing K' ^ ipad (inner) and K' ^ opad (outer), where K'
// is the key, hashed first if longer than the block (RFC 2104), then zero-padded to the
// block. The BPF side continues both hashes from there, so the key itself never leaves
// user space.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

namespace policyd::chain {

struct HmacMidstates {
  std::array<uint64_t, 8> inner{}, outer{};  // SHA-256: each word < 2^32
};

// alg: 256, 384 or 512 (anything else is a caller's bug: std::invalid_argument).
HmacMidstates hmac_midstates(int alg, std::string_view key);

}  // namespace policyd::chain

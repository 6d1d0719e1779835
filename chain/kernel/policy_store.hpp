// The policy a pinned chain enforces, pinned beside it: its text and where it came from, in
// a frozen BPF array map (`policy_source` in the pin directory). It lives exactly as long as
// the chain's pins do (a detach or a reboot removes both), so a daemon that starts with an
// invalid policy file can still take over the chain an earlier run left enforcing, with the
// policy that chain was built from, instead of leaving it unmanaged.
#pragma once

#include <string>
#include <string_view>

#include "chain/base/result.hpp"

namespace policyd::chain {

inline constexpr const char* kPolicySourcePin = "policy_source";

struct SavedPolicy {
  std::string source;  // the file or client path it was applied from
  std::string text;    // the YAML as applied
};

// Replaces the saved policy in pin_dir (a new map, pinned under a temporary name and renamed
// over the old pin: a reader sees the old one or the new one, never a mix).
Status save_policy(const std::string& pin_dir, std::string_view source, std::string_view text);

// The policy saved in pin_dir; an error if there is none or it cannot be read.
Result<SavedPolicy> read_saved_policy(const std::string& pin_dir);

}  // namespace policyd::chain

// Faults the tests put into a real chain (chain::Faults and helpers): production code has
// none of these. Used by the BPF tests and by policyd-faults, the daemon the end-to-end tests
// start when they need a fault (policyd_faults.cpp).
#pragma once

#include <cstdint>
#include <optional>

#include "chain/kernel/chain.hpp"

namespace policyd::testing {

// Flips the action of one route (or, with no route, one sni rule) in prepared generation
// `gen`, so preflight has a real disagreement to find.
Status corrupt_prepared(chain::Dataplane& dp, uint32_t gen);

// The JWT stage's clock reads `unix_seconds` now (and runs on from there).
Status set_wall_clock(chain::Dataplane& dp, int64_t unix_seconds);

// Loads a program the kernel's verifier refuses (a read far outside the skb context) and
// returns the refusal as a load error would carry it: the message and the verifier's log.
Status verifier_rejection();

class ChainFaults final : public chain::Faults {
 public:
  std::optional<uint32_t> corrupt_generation;  // corrupt the prepared generation numbered so
  bool reject_load = false;                    // the verifier refuses a program at load
  Status before_load() override;
  Status prepared(chain::Dataplane& dp, uint32_t gen, uint32_t tag) override;
};

}  // namespace policyd::testing

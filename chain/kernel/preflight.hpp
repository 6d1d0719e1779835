// Preflight: before a prepared generation goes live, requests synthesized from the policy
// (for every route: one it matches and ones it must not) run through the real programs of
// that generation with BPF_PROG_TEST_RUN, and each verdict is compared with what the policy
// means — evaluated independently by the reference implementation of POLICY.md (chain/reference.hpp).
#pragma once

#include <string>
#include <vector>

#include "chain/kernel/dataplane.hpp"
#include "chain/reference.hpp"
#include "config/policy.hpp"

namespace policyd::chain {

struct PreflightReport {
  size_t probes = 0;
  size_t rules = 0;   // routes and sni rules in the policy
  std::vector<std::string> failures;  // "GET http://h/p: policy says deny, dataplane says allow (why)"
};

// Runs every probe against generation `gen` (prepared, not active). Error only if the
// probes could not run at all.
Result<PreflightReport> preflight(Dataplane& dp, const config::Policy& policy, uint32_t gen, size_t limit = 4096);

}  // namespace policyd::chain

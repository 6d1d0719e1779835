// Chain: the controller's one object. It owns the dataplane, the generations and the
// transaction that changes them:
//
//   apply(policy) = compile (every stage its slice) -> plan (which stages changed)
//                   -> prepare (each stage writes the inactive generation; nothing live
//                      changes) -> preflight (probes from the policy through the prepared
//                      generation's real programs) -> flip (one store)
//
// Anything refused before the flip leaves the running generation enforcing, untouched.
// The daemon is a shell of event sources (control socket, signals, inotify, rtnetlink,
// timers) around one Chain.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "chain/compile.hpp"
#include "chain/kernel/dataplane.hpp"
#include "chain/stage.hpp"
#include "config/policy.hpp"

namespace policyd::chain {

// Where tests put a fault that production never has: an interface the tests implement and
// hand to Chain::open (production passes none).
class Faults {
 public:
  virtual ~Faults() = default;
  // Before the chain's objects load; an error here is the load's error (a test loads a
  // program the verifier refuses, to see a rejection reach the operator).
  virtual Status before_load() { return Ok{}; }
  // Generation `tag` was prepared in half `gen`, before preflight looks at it (a test
  // corrupts it, to see preflight refuse it).
  virtual Status prepared(Dataplane&, uint32_t /*gen*/, uint32_t /*tag*/) { return Ok{}; }
};

// What an apply did (or, dry run, would do).
struct ApplyReport {
  uint32_t generation = 0;
  bool dry_run = false;
  bool unchanged = false;  // the tables were the active ones: nothing was written
  Plan plan;
  size_t preflight_probes = 0;
  int64_t duration_us = 0;
  std::vector<std::string> warnings;
};

// Where a refused apply stopped: the policy did not compile (or its key files did not
// read), or the kernel or preflight refused the prepared generation.
enum class ApplyStop { None, Invalid, Refused };

class Chain {
 public:
  struct Options {
    Dataplane::Options dataplane;
    Faults* faults = nullptr;
  };
  // Adopts the chain pinned at the pin dir when it is this build's (its generation goes on
  // counting), else loads fresh (keeping a pinned flow table of the same ABI).
  static Result<std::unique_ptr<Chain>> open(const Options& opts);

  Result<ApplyReport> apply(const config::Policy& policy, bool dry_run = false, ApplyStop* stopped = nullptr);

  Dataplane& dataplane() { return *dp_; }
  const Dataplane& dataplane() const { return *dp_; }
  uint32_t generation() const { return generation_; }
  // What the active generation was applied from (empty before the first apply).
  const config::Policy& policy() const { return policy_; }
  const Tables& tables() const { return tables_; }
  // The JWT providers' keys the last apply read (for the daemon's verifier), handed over:
  // a second call before the next apply returns none.
  std::map<std::string, jwt::Keys> take_keys() { return std::move(keys_); }

  // Removes every attachment of the chain pinned at pin_dir, and the pins themselves.
  static Status detach(const std::string& pin_dir) { return Dataplane::teardown(pin_dir); }

 private:
  explicit Chain(std::unique_ptr<Dataplane> dp, Faults* faults);

  std::unique_ptr<Dataplane> dp_;
  Faults* faults_ = nullptr;
  uint32_t generation_ = 0;
  uint32_t flows_sized_ = 0;  // limits.max_flows the flow table was created with
  config::Policy policy_;
  Tables tables_;
  std::map<std::string, jwt::Keys> keys_;
};

}  // namespace policyd::chain

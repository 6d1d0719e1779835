// Stage: the unit of change and of hot swap. A stage owns its slice of the chain end to end:
// its BPF program (bpf/<object>.bpf.c), how its slice of the Policy compiles into tables,
// what differs between two compiled generations of that slice, how the slice is written into
// a generation, the preflight probes that exercise it, and its counters. The registry
// (chain/stages/registry.cpp) lists the stages of this build in dataplane order; nothing else
// in the controller names a stage.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "chain/compile.hpp"
#include "chain/reference.hpp"
#include "chain/table_writer.hpp"

namespace policyd::chain {

// What a stage's compile reads.
struct CompileInput {
  const config::Policy& policy;
  uint32_t gen;                  // 0 or 1: the half being filled
  uint64_t seed;                 // the generation's hash seed
  const JwtKeyMaterial* keys;    // the JWT providers' key bytes (may be null: no HS* secrets)
};

// The program a stage runs: bpf/<object>.bpf.c and the program's (section function's) name.
struct Program {
  std::string_view object;
  std::string_view name;
};

// Counters, summed over CPUs.
struct Counters {
  std::vector<uint64_t> values;            // pd_counter indices
  std::map<uint32_t, uint64_t> rule_hits;  // rule -> hits in the generation asked for
  // per rate limit (index in the generation): requests that drew a token, and that were over
  std::vector<std::pair<uint64_t, uint64_t>> limit_hits;
};

// Which per-rule and per-limit counters to read.
struct CounterQuery {
  uint32_t gen = 0;
  std::vector<uint32_t> rules;
  size_t limits = 0;
};

class Stage {
 public:
  virtual ~Stage() = default;
  virtual uint32_t id() const = 0;  // pd_stage: its slot in a generation's PROG_ARRAY
  std::string_view name() const { return abi::stage_name(id()); }
  virtual Program program() const = 0;
  // Adds this stage's slice of the policy to `out`.
  virtual Status compile(const CompileInput&, Tables&) const { return Ok{}; }
  // What differs in this stage's slice between two compiled generations; empty if nothing.
  virtual std::string diff(const Tables&, const Tables&) const { return {}; }
  // Empties generation `gen`'s half of this stage's tables and fills it from `t`. Nothing
  // live reads that half until the flip.
  virtual Status write(const Tables&, uint32_t /*gen*/, TableWriter&) const { return Ok{}; }
  // Requests that exercise this stage's slice (added to `out` up to `limit` in all).
  virtual void probes(const config::Policy&, size_t /*limit*/, std::vector<Probe>& /*out*/) const {}
  // Adds this stage's own counters (per rule, per limit) to `out`.
  virtual void read_counters(const CounterReader&, const CounterQuery&, Counters&) const {}
};

struct Change {
  std::string stage;  // stage name, or "chain" for the stage order
  std::string what;
};

struct Plan {
  std::vector<Change> changes;
  std::vector<std::string> unchanged;  // stages whose slice is the same
  bool empty() const { return changes.empty(); }
};

// The stages of this build in dataplane order (the registry).
const std::vector<std::unique_ptr<Stage>>& stages();
// A stage of this build by pd_stage id, nullptr if there is none.
const Stage* stage(uint32_t id);

// The minimal set of stage changes from `current` to `desired` (both compiled).
Plan plan(const Tables& current, const Tables& desired);

}  // namespace policyd::chain

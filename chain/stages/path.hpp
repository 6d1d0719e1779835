// path: routes (exact and prefix patterns, methods, actions) and their hit counters.
#pragma once

#include "chain/stage.hpp"

namespace policyd::chain::builtin {

class PathStage final : public Stage {
 public:
  uint32_t id() const override { return PD_STAGE_PATH; }
  Program program() const override { return {"path", "pd_path"}; }
  Status compile(const CompileInput& in, Tables& t) const override;
  std::string diff(const Tables& from, const Tables& to) const override;
  Status write(const Tables& t, uint32_t gen, TableWriter& w) const override;
  void probes(const config::Policy& policy, size_t limit, std::vector<Probe>& out) const override;
  void read_counters(const CounterReader& r, const CounterQuery& q, Counters& out) const override;
};

}  // namespace policyd::chain::builtin

// sni: TLS server_name rules (exact, *.suffix, *) with their actions, and missing_sni.
#pragma once

#include "chain/stage.hpp"

namespace policyd::chain::builtin {

class SniStage final : public Stage {
 public:
  uint32_t id() const override { return PD_STAGE_SNI; }
  Program program() const override { return {"sni", "pd_sni"}; }
  Status compile(const CompileInput& in, Tables& t) const override;
  std::string diff(const Tables& from, const Tables& to) const override;
  Status write(const Tables& t, uint32_t gen, TableWriter& w) const override;
  void probes(const config::Policy& policy, size_t limit, std::vector<Probe>& out) const override;
};

}  // namespace policyd::chain::builtin

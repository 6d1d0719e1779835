// verdict: the default action and the fail mode; answers and resets.
#pragma once

#include "chain/stage.hpp"

namespace policyd::chain::builtin {

class VerdictStage final : public Stage {
 public:
  uint32_t id() const override { return PD_STAGE_VERDICT; }
  Program program() const override { return {"verdict", "pd_verdict"}; }
  Status compile(const CompileInput& in, Tables& t) const override;
  std::string diff(const Tables& from, const Tables& to) const override;
};

}  // namespace policyd::chain::builtin

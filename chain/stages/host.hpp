// host: host patterns (exact, *.suffix, *), each with the prefix lengths its routes use.
#pragma once

#include "chain/stage.hpp"

namespace policyd::chain::builtin {

class HostStage final : public Stage {
 public:
  uint32_t id() const override { return PD_STAGE_HOST; }
  Program program() const override { return {"host", "pd_host"}; }
  Status compile(const CompileInput& in, Tables& t) const override;
  std::string diff(const Tables& from, const Tables& to) const override;
  Status write(const Tables& t, uint32_t gen, TableWriter& w) const override;
};

}  // namespace policyd::chain::builtin

// jwt: providers (algorithms, skew, HMAC key midstates) and the claims table.
#pragma once

#include "chain/stage.hpp"

namespace policyd::chain::builtin {

class JwtStage final : public Stage {
 public:
  uint32_t id() const override { return PD_STAGE_JWT; }
  Program program() const override { return {"jwt", "pd_jwt"}; }
  Status compile(const CompileInput& in, Tables& t) const override;
  std::string diff(const Tables& from, const Tables& to) const override;
  Status write(const Tables& t, uint32_t gen, TableWriter& w) const override;
};

}  // namespace policyd::chain::builtin

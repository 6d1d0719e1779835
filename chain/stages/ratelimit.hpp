// ratelimit: the token-bucket limits (rate, burst, key, action), their buckets and hit counters.
#pragma once

#include "chain/stage.hpp"

namespace policyd::chain::builtin {

class RateLimitStage final : public Stage {
 public:
  uint32_t id() const override { return PD_STAGE_RATELIMIT; }
  Program program() const override { return {"ratelimit", "pd_ratelimit"}; }
  Status compile(const CompileInput& in, Tables& t) const override;
  std::string diff(const Tables& from, const Tables& to) const override;
  Status write(const Tables& t, uint32_t gen, TableWriter& w) const override;
  void read_counters(const CounterReader& r, const CounterQuery& q, Counters& out) const override;
};

}  // namespace policyd::chain::builtin

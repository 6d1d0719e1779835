// entry: the attached program; listeners and the head limit.
#pragma once

#include "chain/stage.hpp"

namespace policyd::chain::builtin {

class EntryStage final : public Stage {
 public:
  uint32_t id() const override { return PD_STAGE_ENTRY; }
  Program program() const override { return {"entry", "pd_entry"}; }
  Status compile(const CompileInput& in, Tables& t) const override;
  std::string diff(const Tables& from, const Tables& to) const override;
  Status write(const Tables& t, uint32_t gen, TableWriter& w) const override;
};

}  // namespace policyd::chain::builtin

#include "chain/stages/verdict.hpp"

#include "chain/stages/common.hpp"

namespace policyd::chain::builtin {

using config::Action;

Status VerdictStage::compile(const CompileInput& in, Tables& t) const {
  const auto& policy = in.policy;
  t.config.default_action = action_of(policy.default_action);
  t.config.fail_open = policy.fail_mode == config::FailMode::Open ? 1 : 0;
  return Ok{};
}

std::string VerdictStage::diff(const Tables& a, const Tables& b) const {
  std::vector<std::string> parts;
  if (a.config.default_action != b.config.default_action)
    parts.push_back(fmt::format("default_action {} -> {}", abi::action_name(a.config.default_action),
                                abi::action_name(b.config.default_action)));
  if (a.config.fail_open != b.config.fail_open)
    parts.push_back(fmt::format("fail_mode {} -> {}", a.config.fail_open ? "open" : "closed",
                                b.config.fail_open ? "open" : "closed"));
  return join(parts);
}

}  // namespace policyd::chain::builtin

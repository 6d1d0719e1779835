// The stages of this build, in dataplane order: the one list that names them.
#include "chain/stage.hpp"
#include "chain/stages/entry.hpp"
#include "chain/stages/http.hpp"
#include "chain/stages/host.hpp"
#include "chain/stages/jwt.hpp"
#include "chain/stages/path.hpp"
#include "chain/stages/ratelimit.hpp"
#include "chain/stages/sni.hpp"
#include "chain/stages/verdict.hpp"

namespace policyd::chain {

const std::vector<std::unique_ptr<Stage>>& stages() {
  static const std::vector<std::unique_ptr<Stage>> all = [] {
    std::vector<std::unique_ptr<Stage>> v;
    v.push_back(std::make_unique<builtin::EntryStage>());
    v.push_back(std::make_unique<builtin::HttpStage>());
    v.push_back(std::make_unique<builtin::SniStage>());
    v.push_back(std::make_unique<builtin::HostStage>());
    v.push_back(std::make_unique<builtin::PathStage>());
    v.push_back(std::make_unique<builtin::JwtStage>());
    v.push_back(std::make_unique<builtin::RateLimitStage>());
    v.push_back(std::make_unique<builtin::VerdictStage>());
    return v;
  }();
  return all;
}

const Stage* stage(uint32_t id) {
  for (const auto& s : stages())
    if (s->id() == id) return s.get();
  return nullptr;
}

}  // namespace policyd::chain

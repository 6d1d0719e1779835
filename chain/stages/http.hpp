// http: the request-head parser (method, target, Host, Authorization, framing); no tables.
#pragma once

#include "chain/stage.hpp"

namespace policyd::chain::builtin {

class HttpStage final : public Stage {
 public:
  uint32_t id() const override { return PD_STAGE_HTTP; }
  Program program() const override { return {"http", "pd_http"}; }
};

}  // namespace policyd::chain::builtin

// The C++ view of bpf/include/pd_abi.h: the shared layouts, checked for size, and names.
#pragma once

#include <cstddef>
#include <string_view>

extern "C" {
#include "pd_abi.h"
}

namespace policyd::abi {

static_assert(sizeof(pd_listener_key) == 8);
static_assert(sizeof(pd_listener) == 24);
static_assert(sizeof(pd_config) == 32);
static_assert(sizeof(pd_flow_key) == 40);
static_assert(sizeof(pd_flow) == 160);
static_assert(sizeof(pd_syn) == 28);
static_assert(static_cast<int>(PD_C_EGRESS_CLIENT_SIDE) < static_cast<int>(PD_C_MAX));
static_assert(static_cast<int>(PD_C_IGNORED_BASE) + static_cast<int>(PD_IG_MAX) <= static_cast<int>(PD_C_MAX));
static_assert(PD_R_URGENT < PD_R_MAX);
static_assert(sizeof(pd_host_key) == 16);
static_assert(sizeof(pd_host_val) == 16 + PD_PATTERN_MAX / 8 + PD_PATTERN_MAX);
static_assert(sizeof(pd_route_key) == 24);
static_assert(sizeof(pd_route_slot) == 24);
static_assert(sizeof(pd_route_val) == 8 + 24 * PD_ROUTE_SLOTS + PD_PATTERN_MAX);
static_assert(sizeof(pd_jwt_provider) == 24 + 48 * 8);
static_assert(sizeof(pd_jwt_claim_key) == 24);
static_assert(sizeof(pd_jwt_cache_key) == 16);
static_assert(sizeof(pd_jwt_cache_val) == 64);
static_assert(sizeof(pd_runtime) == 40);
static_assert(sizeof(pd_event_jwt) == 64 + PD_JWT_MAX);
static_assert(sizeof(pd_event_decision) == 80 + PD_LOG_HOST + PD_LOG_PATH);
static_assert(sizeof(pd_log_budget) == 16);
static_assert(sizeof(pd_rl_limit) == 48);
static_assert(sizeof(pd_rl_bucket_key) == 32);
static_assert(sizeof(pd_rl_bucket) == 24);

std::string_view reason_name(unsigned reason);
std::string_view action_name(unsigned action);
// pd_ignored: why a segment the server would discard was dropped unjudged
std::string_view ignored_name(unsigned ignored);
std::string_view stage_name(unsigned stage);

}  // namespace policyd::abi

// Compiling a Policy into the dataplane's table entries for one generation: a pure
// function (no kernel), so what a policy means in the tables is testable on its own.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "chain/abi.hpp"
#include "chain/jwt_tables.hpp"
#include "chain/result.hpp"
#include "config/policy.hpp"

namespace policyd::chain {

struct HostEntry {
  pd_host_key key;
  pd_host_val val;
};

struct RouteEntry {
  pd_route_key key;
  pd_route_val val;
};

struct ListenerEntry {
  pd_listener_key key;
  pd_listener val;
};

// Description of one rule (route) for counters, events and preflight.
struct RuleInfo {
  uint32_t rule = 0;
  uint32_t host_index = 0;
  uint32_t route_index = 0;
  std::string host_pattern;  // the host entry's first pattern
  std::string path;          // "prefix /api/" / "exact /healthz"
  std::string action;
};

struct Tables {
  pd_config config{};
  // next stage after each stage (PD_STAGE_NONE if none), index = pd_stage
  uint32_t next[PD_STAGE_MAX];
  std::vector<uint32_t> stages;  // the user stages in chain order (pd_stage values)
  std::vector<ListenerEntry> listeners;
  std::vector<HostEntry> hosts;
  std::vector<RouteEntry> routes;
  std::vector<RuleInfo> rules;
  JwtLayout jwt;                                                  // provider indices and claim bits
  std::vector<std::pair<uint32_t, pd_jwt_provider>> jwt_providers;  // array index -> provider
  std::vector<JwtClaimEntry> jwt_claims;
  std::vector<pd_rl_limit> limits;  // index (slot ratelimit - 1) -> limit, in name order
  std::vector<std::string> warnings;  // things that are legal but probably not meant
};

uint32_t stage_of(config::StageKind kind);
uint8_t action_of(config::Action action);


// gen: 0 or 1. seed: the generation's hash seed. keys: the JWT providers' key material
// (needed when a provider lists an HS* algorithm).
Result<Tables> compile(const config::Policy& policy, uint32_t gen, uint64_t seed,
                       const JwtKeyMaterial* keys = nullptr);

}  // namespace policyd::chain

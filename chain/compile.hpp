// Compiling a Policy into the dataplane's table entries for one generation: a pure
// function (no kernel), so what a policy means in the tables is testable on its own.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "chain/abi.hpp"
#include "chain/jwt_tables.hpp"
#include "chain/base/result.hpp"
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

// A stage program from an object file (`stages:` in the policy): a built-in stage's new build,
// or an operator's own stage. The bytes travel beside the tables (Compiled::objects); the
// tables carry what identifies them, so a new file is a change of that stage.
struct ProgramSource {
  uint32_t stage = 0;     // pd_stage: its slot
  std::string name;       // the stage's name
  std::string path;       // the object file
  uint64_t digest = 0;    // of the file's bytes (0: not read, e.g. by policyctl as another user)
  bool own = false;       // an operator's own stage (else a built-in's new build)
  bool operator==(const ProgramSource&) const = default;
};

// A stage object file larger than this is refused (this build's largest is under 1 MiB).
inline constexpr size_t kMaxStageObject = 16u << 20;

// Own stages take the slots after the built-in ones.
inline constexpr uint32_t kOwnStageBase = PD_STAGE_OWN;

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
  std::vector<ProgramSource> programs;  // stages whose program comes from a file
  std::vector<std::string> warnings;  // things that are legal but probably not meant

  // The program source of a stage, nullptr if it runs the program built into policyd.
  const ProgramSource* program(uint32_t stage) const;
  // A stage's name: a built-in's, or an own stage's from the policy.
  std::string stage_name(uint32_t stage) const;
};

uint32_t stage_of(config::StageKind kind);
uint8_t action_of(config::Action action);


// gen: 0 or 1. seed: the generation's hash seed. keys: the JWT providers' key material
// (needed when a provider lists an HS* algorithm).
// digests: of the stage object files (`stages:`) by stage name; a stage missing from it gets 0.
using ObjectDigests = std::map<std::string, uint64_t>;
Result<Tables> compile(const config::Policy& policy, uint32_t gen, uint64_t seed,
                       const JwtKeyMaterial* keys = nullptr, const ObjectDigests* digests = nullptr);

// What a policy becomes: the tables of one generation and the JWT providers' keys for the
// daemon's verifier. The daemon's apply and `policyctl validate` both come here, so what
// validate accepts is what the daemon would apply.
struct Compiled {
  Tables tables;
  std::map<std::string, jwt::Keys> keys;  // provider name -> keys (from the bytes the tables used)
  // the stage object files' bytes, by pd_stage (what the tables' digests were taken of, so
  // the program loaded is the one compiled, however the file changes meanwhile)
  std::map<uint32_t, std::vector<unsigned char>> objects;
};

// How to treat files this process cannot read (providers' key files, stage objects): the
// daemon must read them (Required); `policyctl validate` may run as another user or on
// another host, and checks everything else with a warning that names the file (WhereReadable).
enum class KeyFiles { Required, WhereReadable };

// Reads the providers' key files (every call: a rotated file takes effect at the next apply)
// and compiles. Keys a JWK Set holds but policyd cannot use are warnings.
Result<Compiled> compile_policy(const config::Policy& policy, uint32_t gen, uint64_t seed, KeyFiles key_files);

// A digest of compiled tables (generation-independent): equal digests, equal tables.
uint64_t tables_digest(const Tables& t);

}  // namespace policyd::chain

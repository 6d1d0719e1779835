// Stage: the unit of change. Each dataplane stage compiles its own slice of the Policy into
// its own tables, and says what differs between two compiled generations of that slice.
// The Chain is the ordered set of stages; plan() is the set of stages whose slice changed.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "chain/compile.hpp"

namespace policyd::chain {

class Stage {
 public:
  virtual ~Stage() = default;
  virtual uint32_t id() const = 0;  // pd_stage
  std::string_view name() const { return abi::stage_name(id()); }
  // Adds this stage's slice of `policy` to `out`.
  virtual Status compile(const config::Policy& policy, uint32_t gen, uint64_t seed, Tables& out) const = 0;
  // What differs in this stage's slice between two compiled generations; empty if nothing.
  virtual std::string diff(const Tables& from, const Tables& to) const = 0;
};

// entry: listeners and the head limit.
class EntryStage final : public Stage {
 public:
  uint32_t id() const override { return PD_STAGE_ENTRY; }
  Status compile(const config::Policy&, uint32_t gen, uint64_t seed, Tables& out) const override;
  std::string diff(const Tables& from, const Tables& to) const override;
};

// sni: TLS server_name rules (exact, *.suffix, *) with their actions, and missing_sni.
class SniStage final : public Stage {
 public:
  uint32_t id() const override { return PD_STAGE_SNI; }
  Status compile(const config::Policy&, uint32_t gen, uint64_t seed, Tables& out) const override;
  std::string diff(const Tables& from, const Tables& to) const override;
};

// host: host patterns (exact, *.suffix, *), each with the prefix lengths its routes use.
class HostStage final : public Stage {
 public:
  uint32_t id() const override { return PD_STAGE_HOST; }
  Status compile(const config::Policy&, uint32_t gen, uint64_t seed, Tables& out) const override;
  std::string diff(const Tables& from, const Tables& to) const override;
};

// path: routes (exact and prefix patterns, methods, actions).
class PathStage final : public Stage {
 public:
  uint32_t id() const override { return PD_STAGE_PATH; }
  Status compile(const config::Policy&, uint32_t gen, uint64_t seed, Tables& out) const override;
  std::string diff(const Tables& from, const Tables& to) const override;
};

// jwt: providers (algorithms, skew, HMAC key midstates) and the claims table.
class JwtStage final : public Stage {
 public:
  uint32_t id() const override { return PD_STAGE_JWT; }
  Status compile(const config::Policy&, uint32_t gen, uint64_t seed, Tables& out) const override;
  std::string diff(const Tables& from, const Tables& to) const override;
};

// ratelimit: the token-bucket limits (rate, burst, key, action).
class RateLimitStage final : public Stage {
 public:
  uint32_t id() const override { return PD_STAGE_RATELIMIT; }
  Status compile(const config::Policy&, uint32_t gen, uint64_t seed, Tables& out) const override;
  std::string diff(const Tables& from, const Tables& to) const override;
};

// verdict: default action and fail mode.
class VerdictStage final : public Stage {
 public:
  uint32_t id() const override { return PD_STAGE_VERDICT; }
  Status compile(const config::Policy&, uint32_t gen, uint64_t seed, Tables& out) const override;
  std::string diff(const Tables& from, const Tables& to) const override;
};

struct Change {
  std::string stage;  // stage name, or "chain" for the stage order
  std::string what;
};

struct Plan {
  std::vector<Change> changes;
  std::vector<std::string> unchanged;  // stages whose slice is the same
  bool empty() const { return changes.empty(); }
};

// The stages of this build in dataplane order, and the chain order they run in.
const std::vector<std::unique_ptr<Stage>>& stages();

// The minimal set of stage changes from `current` to `desired` (both compiled).
Plan plan(const Tables& current, const Tables& desired);

}  // namespace policyd::chain

#include "chain/stages/ratelimit.hpp"

#include <time.h>

#include <algorithm>
#include <cstring>
#include <numeric>

#include "chain/hash.hpp"
#include "chain/stages/common.hpp"

namespace policyd::chain::builtin {

using config::Action;

Status RateLimitStage::compile(const CompileInput& in, Tables& t) const {
  const auto& policy = in.policy;
  using config::RateLimit;
  for (const auto& [name, rl] : policy.ratelimits) {
    if (t.limits.size() >= PD_RL_LIMITS)
      return make_error(fmt::format("{}: more than {} rate limits", where(rl.loc), PD_RL_LIMITS));
    const uint64_t unit = rl.unit == RateLimit::PerSecond   ? 1'000'000'000ULL
                          : rl.unit == RateLimit::PerMinute ? 60'000'000'000ULL
                                                            : 3'600'000'000'000ULL;
    const uint64_t g = std::gcd(rl.rate, unit);
    pd_rl_limit l{};
    l.add = rl.rate / g;  // credit per ns
    l.cost = unit / g;    // credit per token: exactly `rate` tokens per unit
    if (rl.burst > (uint64_t{1} << 62) / l.cost)
      return make_error(fmt::format("{}: rate limit '{}': burst {} per {} is too large to count exactly",
                                    where(rl.loc), name, rl.burst, config::to_string(rl.unit)));
    l.cap = rl.burst * l.cost;
    l.fill_ns = (l.cap + l.add - 1) / l.add;
    l.id = hash_forward(0, fmt::format("{}/{}", name, config::to_string(rl.key))) | 1;
    switch (rl.key) {
      case RateLimit::ClientIp: l.key = PD_RLK_CLIENT_IP; break;
      case RateLimit::JwtSub: l.key = PD_RLK_JWT_SUB; break;
      case RateLimit::Host: l.key = PD_RLK_HOST; break;
      case RateLimit::Route: l.key = PD_RLK_ROUTE; break;
      case RateLimit::Global: l.key = PD_RLK_GLOBAL; break;
    }
    l.action = rl.action == config::LimitAction::Drop ? PD_ACT_DROP : PD_ACT_REJECT;
    t.limits.push_back(l);
  }
  return Ok{};  // max_buckets: the dataplane's, from the size of its bucket table
}

std::string RateLimitStage::diff(const Tables& a, const Tables& b) const {
  if (a.limits.size() == b.limits.size() &&
      std::equal(a.limits.begin(), a.limits.end(), b.limits.begin(),
                 [](const pd_rl_limit& x, const pd_rl_limit& y) { return std::memcmp(&x, &y, sizeof(x)) == 0; }))
    return {};
  return fmt::format("rate limits: {} -> {}", a.limits.size(), b.limits.size());
}

namespace {

// CLOCK_MONOTONIC in ns: the clock of bpf_ktime_get_ns
uint64_t monotonic_ns() {
  timespec m{};
  clock_gettime(CLOCK_MONOTONIC, &m);
  return static_cast<uint64_t>(m.tv_sec) * 1000000000ULL + static_cast<uint64_t>(m.tv_nsec);
}

}  // namespace

Status RateLimitStage::write(const Tables& t, uint32_t gen, TableWriter& w) const {
  for (uint32_t i = 0; i < PD_RL_LIMITS * 2; ++i)  // this half's hit counters start at zero
    if (auto st = w.zero_counter(abi::Map::rl_hits, gen * PD_RL_LIMITS * 2 + i); !st) return st;
  // each limit's share of the bucket table: its size (limits.max_flows when it was made),
  // less the shared buckets, in equal parts
  auto size = w.max_entries(abi::Map::rl_buckets);
  if (!size) return size.error();
  const uint64_t shared = t.limits.size() * uint64_t{PD_RL_SPREAD};
  const uint64_t share =
      t.limits.empty() || *size <= shared ? 1 : std::max<uint64_t>((*size - shared) / t.limits.size(), 1);
  for (uint32_t i = 0; i < PD_RL_LIMITS; ++i) {
    pd_rl_limit l = i < t.limits.size() ? t.limits[i] : pd_rl_limit{};
    if (l.cost) l.max_buckets = static_cast<uint32_t>(std::min<uint64_t>(share, UINT32_MAX));
    if (auto st = w.put(abi::Map::rl_limits, gen * PD_RL_LIMITS + i, l); !st) return st;
    if (!l.cost) continue;
    // the shared buckets for keys past the limit's share or the table's size: made now,
    // while there is room
    for (uint64_t slot = 0; slot < PD_RL_SPREAD; ++slot) {
      pd_rl_bucket_key bk{};
      bk.id = l.id;
      bk.kind = PD_RLK_SHARED;
      bk.k[0] = slot;
      pd_rl_bucket b{};
      b.credit = l.cap;
      b.last_ns = monotonic_ns();
      if (auto st = w.put(abi::Map::rl_buckets, bk, b, Put::IfAbsent); !st) return st;
    }
    const uint64_t none = 0;  // its count of buckets (kept if the limit carries over)
    if (auto st = w.put(abi::Map::rl_counts, l.id, none, Put::IfAbsent); !st) return st;
  }
  return Ok{};
}

void RateLimitStage::read_counters(const CounterReader& r, const CounterQuery& q, Counters& out) const {
  for (uint32_t i = 0; i < q.limits && i < PD_RL_LIMITS; ++i) {
    uint32_t base = ((q.gen & 1) * PD_RL_LIMITS + i) * 2;
    out.limit_hits.emplace_back(r.sum(abi::Map::rl_hits, base), r.sum(abi::Map::rl_hits, base + 1));
  }
}

}  // namespace policyd::chain::builtin

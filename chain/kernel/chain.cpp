#include "chain/kernel/chain.hpp"

#include <chrono>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "chain/kernel/preflight.hpp"

namespace policyd::chain {

Chain::Chain(std::unique_ptr<Dataplane> dp, Faults* faults) : dp_(std::move(dp)), faults_(faults) {
  flows_sized_ = dp_->flow_table_size();
  if (dp_->origin() == Dataplane::Origin::Adopted) generation_ = dp_->active_tag();
}

Result<std::unique_ptr<Chain>> Chain::open(const Options& opts) {
  if (opts.faults)
    if (auto st = opts.faults->before_load(); !st) return st.error();
  auto dp = Dataplane::load(opts.dataplane);
  if (!dp) return dp.error();
  return std::unique_ptr<Chain>(new Chain(std::move(*dp), opts.faults));
}

Result<ApplyReport> Chain::apply(const config::Policy& policy, bool dry_run, ApplyStop* stopped) {
  const auto started = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - started).count();
  };
  ApplyStop stop_at = ApplyStop::Invalid;
  struct Report {
    ApplyStop* out;
    ApplyStop& at;
    ~Report() {
      if (out) *out = at;
    }
  } report_stop{stopped, stop_at};

  ApplyReport report;
  report.dry_run = dry_run;
  const uint32_t gen = dp_->inactive_gen();
  // compile: every stage's slice; the JWT providers' key files are read on every apply, so
  // a rotated secret_file or jwks_file takes effect with `policyctl apply` or SIGHUP
  auto compiled = compile_policy(policy, gen, dp_->hash_seed(), KeyFiles::Required);
  if (!compiled) return compiled.error();
  stop_at = ApplyStop::Refused;  // from here only the kernel or preflight can say no
  Tables& tables = compiled->tables;
  report.warnings = tables.warnings;
  // the flow and bucket tables are sized when they are created: a new size waits for a fresh chain
  if (flows_sized_ != 0 && policy.limits.max_flows != flows_sized_)
    report.warnings.push_back(fmt::format("limits.max_flows {} is not applied: the flow table keeps its {} entries "
                                          "(it is sized when created; to resize it, detach and start policyd again)",
                                          policy.limits.max_flows, flows_sized_));
  report.plan = plan(tables_, tables);
  report.generation = generation_;
  if (dry_run) {
    stop_at = ApplyStop::None;
    report.duration_us = elapsed();
    return report;
  }
  if (generation_ != 0 && tables_digest(tables) == dp_->active_digest()) {
    // the same tables: nothing to write, the policy and keys are taken as they are now
    stop_at = ApplyStop::None;
    policy_ = policy;
    tables_ = std::move(tables);
    keys_ = std::move(compiled->keys);
    report.unchanged = true;
    report.plan.changes.clear();
    report.duration_us = elapsed();
    return report;
  }
  // prepare: each stage fills its half of its tables; nothing live changes
  if (auto st = dp_->prepare(tables, gen, generation_ + 1, &compiled->objects); !st) return st.error();
  if (faults_)
    if (auto st = faults_->prepared(*dp_, gen, generation_ + 1); !st) return st.error();
  // preflight: the prepared generation must agree with the policy on requests made from it
  auto pf = preflight(*dp_, policy, gen);
  if (!pf) return pf.error();
  if (!pf->failures.empty()) {
    std::string detail;
    for (const auto& f : pf->failures) detail += f + "\n";
    return make_error(fmt::format("preflight: {} of {} probes disagree with the policy; nothing was changed, "
                                  "generation {} stays",
                                  pf->failures.size(), pf->probes, generation_),
                      detail);
  }
  // flip: one store
  dp_->flip(gen);
  stop_at = ApplyStop::None;
  ++generation_;
  report.generation = generation_;
  report.preflight_probes = pf->probes;
  policy_ = policy;
  tables_ = std::move(tables);
  keys_ = std::move(compiled->keys);
  report.duration_us = elapsed();
  return report;
}

}  // namespace policyd::chain

// Metrics: one snapshot of every number the daemon reports (`policyctl stats` and the
// Prometheus endpoint read the same one), and its rendering in the Prometheus text exposition
// format 0.0.4. Pure: nothing here touches the kernel, so it is tested without one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace policyd::metrics {

// Counts under names, in a fixed order (an action, a stage, a reason -> count).
using Counts = std::vector<std::pair<std::string, uint64_t>>;

// A histogram with fixed upper bounds; counts[i] holds the observations in (bounds[i-1],
// bounds[i]], counts.back() those above every bound (rendered cumulatively, as `le`).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  const std::vector<double>& bounds() const { return bounds_; }
  const std::vector<uint64_t>& counts() const { return counts_; }
  double sum() const { return sum_; }
  uint64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;
  double sum_ = 0;
  uint64_t count_ = 0;
};

// How an apply (`policyctl apply`, reload, SIGHUP, inotify, the first one at start) ended:
// ok (active, or nothing to change), invalid (the policy did not load, validate or compile),
// refused (the kernel or preflight refused the prepared generation). Dry runs are not applies.
enum class ApplyResult { ok, invalid, refused };
std::string_view apply_result_name(ApplyResult r);

class Applies {
 public:
  Applies();
  void record(ApplyResult result, double seconds);
  uint64_t count(ApplyResult result) const { return counts_[static_cast<size_t>(result)]; }
  const Histogram& durations() const { return durations_; }

 private:
  uint64_t counts_[3] = {0, 0, 0};
  Histogram durations_;  // of every apply, whatever its result
};

struct Snapshot {
  std::string version;
  // The dataplane's counters, summed over CPUs (pd_abi.h pd_counter).
  struct Dataplane {
    uint64_t packets = 0, fast_path = 0, head_partial = 0, requests = 0, flows_new = 0, fail_open = 0,
             truncated = 0, generation_mismatch = 0, quic_denied = 0, upgraded = 0,
             syn_new = 0, syn_refused = 0, egress_client_side = 0;
  } counters;
  Counts ignored;    // pd_ignored reason -> segments the server would discard, dropped unjudged
  Counts verdicts;   // action -> decisions
  Counts stages;     // stage -> runs (the entry program's are `packets`)
  Counts fail_mode;  // reason -> events
  struct Rule {
    uint32_t rule = 0;
    std::string host, path, action;
    uint64_t hits = 0;
  };
  std::vector<Rule> rules;  // the active generation's, in policy order
  struct RateLimit {
    uint64_t allowed = 0, limited = 0, shared_bucket = 0;
    struct Limit {
      std::string name;
      uint64_t allowed = 0, limited = 0;
    };
    std::vector<Limit> limits;  // the active generation's
  } ratelimit;
  struct Jwt {
    Counts tokens;  // "valid" or the refusal reason -> tokens judged
    uint64_t cache_hits = 0, hmac_verified = 0, sent_to_daemon = 0, send_failed = 0;
    uint64_t daemon_received = 0, daemon_valid = 0, daemon_invalid = 0, daemon_stale = 0;
    uint64_t daemon_dropped = 0;  // over the verify queue's bounds (the dataplane asks again)
    uint64_t daemon_queued = 0;   // waiting for a worker now
  } jwt;
  struct Events {
    uint64_t sent = 0, suppressed = 0, lost = 0;  // decision events, the dataplane's side (ring buffer pd_log)
    uint64_t received = 0;        // read by the daemon
    uint64_t follower_drops = 0;  // not written to a `policyctl events --follow` that was not reading
    uint64_t followers = 0;
  } events;
  struct Flows {
    std::optional<uint64_t> entries;  // in the flow table now; none if they could not be counted
    uint64_t max = 0;
  } flows;
  // The control plane.
  uint32_t generation = 0;
  int64_t applied_at = 0;  // unix seconds of the last change
  Applies applies;
  struct Interface {
    std::string name;
    int ifindex = 0;
    bool attached = false;  // policyd's filter is on its TC ingress now
  };
  std::vector<Interface> interfaces;
  // The kernel's own accounting of the chain (--bpf-stats): runs of the entry program and
  // the ns spent in it with every stage it tail-called (the kernel times only the program
  // attached, tail calls included), counted only while run-time statistics are enabled.
  bool bpf_stats = false;
  uint64_t chain_runs = 0, chain_ns = 0;
  struct Links {  // rtnetlink: what the daemon did about interfaces after the start
    uint64_t attached = 0, reattached = 0, forgotten = 0;
  } links;
};

// --- the exposition format ------------------------------------------------------------

using Labels = std::vector<std::pair<std::string, std::string>>;

struct Sample {
  std::string name;  // the family's name, or for a histogram's series the name + _bucket/_sum/_count
  Labels labels;
  std::variant<uint64_t, int64_t, double> value;
};

enum class Type { counter, gauge, histogram };

struct Family {
  std::string name;
  std::string help;
  Type type = Type::counter;
  std::vector<Sample> samples;
};

// Every metric of a snapshot, named policyd_* (README "Metrics" lists them).
std::vector<Family> families(const Snapshot& s);
// HELP and TYPE lines, then the samples of each family; label values escaped (\\, \", \n).
std::string render(const std::vector<Family>& families);
inline std::string exposition(const Snapshot& s) { return render(families(s)); }

// [a-zA-Z_:][a-zA-Z0-9_:]* and [a-zA-Z_][a-zA-Z0-9_]* (labels beginning with __ are reserved).
bool valid_metric_name(std::string_view name);
bool valid_label_name(std::string_view name);

inline constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace policyd::metrics

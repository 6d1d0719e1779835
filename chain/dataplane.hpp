// Dataplane: the loaded BPF programs (one per stage), the maps they share, the pins under
// the pin dir, and the TC attachments. Writes a compiled generation into the inactive half
// of every table and flips the active generation with one store.
//
// A Dataplane is either loaded fresh (skeletons) or adopted from a pinned chain that a
// previous daemon left enforcing: the same build is adopted whole (same programs, so the
// same prog ids, and the same maps, so flows and their verdicts survive); a different build
// with the same map ABI keeps the flow table and loads new programs.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "chain/compile.hpp"
#include "chain/result.hpp"

struct entry_bpf;
struct http_bpf;
struct sni_bpf;
struct host_bpf;
struct path_bpf;
struct jwt_bpf;
struct ratelimit_bpf;
struct verdict_bpf;
struct egress_bpf;

namespace policyd::chain {

struct Counters {
  std::vector<uint64_t> values;            // pd_counter indices, summed over CPUs
  std::map<uint32_t, uint64_t> rule_hits;  // rule -> hits in the generation asked for
  // per rate limit (index in the generation): requests that drew a token, and that were over
  std::vector<std::pair<uint64_t, uint64_t>> limit_hits;
};

struct Attachment {
  std::string ifname;
  int ifindex = 0;
  bool created_qdisc = false;
};

// The stages this build loads, in PROG_ARRAY slot order within a generation.
inline constexpr uint32_t kLoadedStages[] = {PD_STAGE_ENTRY, PD_STAGE_HTTP,      PD_STAGE_SNI,    PD_STAGE_HOST,
                                             PD_STAGE_PATH,  PD_STAGE_JWT,       PD_STAGE_RATELIMIT,
                                             PD_STAGE_VERDICT};

class Dataplane {
 public:
  struct Options {
    std::string pin_dir;            // empty: nothing is pinned or adopted (tests)
    uint32_t max_flows = 262144;
    uint32_t accum_entries = 4096;  // concurrent partial heads
    // Test-only: load fresh (no adoption) and have the kernel verifier reject a program,
    // to prove a rejection reaches the operator and leaves a pinned chain enforcing.
    bool test_verifier_reject = false;
  };
  enum class Origin { Fresh, Adopted, FlowsKept };

  // Adopts the chain pinned at opts.pin_dir when possible, else loads fresh. Nothing that
  // is pinned is changed by this call.
  static Result<std::unique_ptr<Dataplane>> load(const Options& opts);
  ~Dataplane();
  Dataplane(const Dataplane&) = delete;
  Dataplane& operator=(const Dataplane&) = delete;

  Origin origin() const { return origin_; }
  // Generation number (as the controller counts) of the active half; 0 if none yet.
  uint32_t active_tag() const;
  uint64_t active_digest() const;

  // Fill generation `gen` (must be the inactive one) with `tables`; nothing live changes.
  Status prepare(const Tables& tables, uint32_t gen, uint32_t gen_tag);
  // Make a prepared generation the active one: one store.
  void flip(uint32_t gen);
  // prepare + flip
  Status commit(const Tables& tables, uint32_t gen, uint32_t gen_tag);
  // Test-only: flip the action of one route in prepared generation `gen` (so preflight
  // has a real disagreement to find).
  Status corrupt_for_test(uint32_t gen);
  // The program that probes a prepared generation (BPF_PROG_TEST_RUN only).
  int preflight_prog_fd() const { return preflight_fd_; }
  void set_preflight_gen(uint32_t gen);
  uint32_t active_gen() const;
  uint32_t inactive_gen() const { return active_gen() ^ 1; }
  uint64_t hash_seed() const { return seed_; }

  // TC attachment (clsact + cls_bpf, libbpf bpf_tc_*): the entry program at ingress, and
  // at egress the program that records what the server's packets say (pd_egress).
  Status attach(const std::string& ifname);
  Status detach(const std::string& ifname);
  const std::vector<Attachment>& attachments() const { return attached_; }
  // Are this chain's filters on the interface (both, not removed, not replaced)?
  bool filter_present(int ifindex) const;
  // The link went away (its qdisc and filter with it): drop it from the attachments.
  void forget(int ifindex);
  void renamed(int ifindex, const std::string& ifname);

  // Pin maps and programs under opts.pin_dir, replacing whatever an earlier run pinned
  // there. Done after a successful load and commit, so a failed start loses nothing.
  Status pin();
  // Keep the chain enforcing after this process exits (pins stay, filters stay).
  void release_on_exit() { keep_ = true; }

  Counters read_counters(uint32_t gen, const std::vector<uint32_t>& rules, size_t limits = 0) const;
  Counters read_counters() const { return read_counters(active_gen(), {}); }
  // The flow table's entries now (live connections and those the LRU has not evicted yet)
  // and its size. Counting walks the whole table with BPF_MAP_LOOKUP_BATCH (4096 entries a
  // call; kernels without it: one bpf_map_get_next_key per entry), so its cost grows with
  // the entries, not with the size: ~N/4096 syscalls copying 80 bytes an entry (README
  // "Metrics" has the measured cost). Read per scrape or `policyctl stats`, never per packet.
  struct FlowUse {
    uint64_t entries = 0;
    uint32_t max = 0;
  };
  Result<FlowUse> flow_use() const;
  // entries the flow table was created with (an adopted table keeps its own size); 0 if unknown
  uint32_t flow_table_size() const;
  int entry_prog_fd() const { return prog_fd(PD_STAGE_ENTRY); }
  int egress_prog_fd() const { return egress_fd_; }
  uint32_t egress_prog_id() const;
  int prog_fd(uint32_t stage) const;
  uint32_t prog_id(uint32_t stage) const;
  int map_fd(const std::string& name) const;
  // The kernel's per-program statistics (bpf_prog_info run_cnt, run_time_ns): they count
  // only while run-time statistics are enabled (enable_run_stats, or the sysctl
  // kernel.bpf_stats_enabled), and then for every BPF program on the host, each run paying
  // for two clock reads. The returned fd keeps them enabled until it is closed. Only the
  // program a hook runs is timed, its tail calls included: the entry program's figures are
  // the whole chain's; a tail-called stage's stay 0.
  struct RunStats {
    uint64_t runs = 0, ns = 0;
  };
  RunStats run_stats(uint32_t stage) const;
  static Result<int> enable_run_stats();

  // The runtime map: the wall clock offset the JWT stage reads (refresh it every second)
  // and, with new_token_key, a fresh random key for the token cache's hash.
  Status refresh_runtime(bool new_token_key = false);
  // Forgets rate-limit buckets idle long enough to be full again (and those of limits that
  // are gone); returns how many. `limits`: the active generation's.
  size_t sweep_buckets(const std::vector<pd_rl_limit>& limits);
  // Partial heads each client holds, counted again from the tables (the dataplane's own
  // counts drift when flows go away mid-head); returns how many there are.
  size_t recount_partial_heads();
  // Decision events (ring buffer pd_log): at most `per_second` per CPU, `burst` at once;
  // 0 sends none. Over the budget they are counted, not sent (PD_C_EV_SUPPRESSED).
  Status set_event_budget(uint32_t per_second, uint32_t burst);
  // Test-only: the JWT stage's clock reads `unix_seconds` now (and runs on from there).
  Status set_wall_clock_for_test(int64_t unix_seconds);
  // The daemon's answer for a token the JWT stage sent it (the ring buffer pd_events).
  Status put_jwt_answer(const pd_jwt_cache_key& key, const pd_jwt_cache_val& val);

  // Remove every attachment of the chain pinned at pin_dir, and the pins themselves.
  static Status teardown(const std::string& pin_dir);
  // Identity of the BPF objects compiled into this binary.
  static uint64_t build_id();

 private:
  uint32_t partial_per_client() const;  // a client's share of the partial-head table
  struct Bss;
  Dataplane() = default;
  Status load_fresh(const Options& opts, const std::map<std::string, int>& keep_maps);
  Status adopt(const std::string& pin_dir);
  void unpin_all();

  Options opts_;
  Origin origin_ = Origin::Fresh;
  entry_bpf* entry_ = nullptr;
  http_bpf* http_ = nullptr;
  sni_bpf* sni_ = nullptr;
  host_bpf* host_ = nullptr;
  path_bpf* path_ = nullptr;
  jwt_bpf* jwt_ = nullptr;
  ratelimit_bpf* ratelimit_ = nullptr;
  verdict_bpf* verdict_ = nullptr;
  egress_bpf* egress_ = nullptr;
  std::map<std::string, int> maps_;  // shared maps by name (fds owned when adopted)
  int progs_[PD_STAGE_MAX] = {-1, -1, -1, -1, -1, -1, -1, -1};
  int preflight_fd_ = -1;
  int egress_fd_ = -1;
  bool own_fds_ = false;             // adopted: the fds above are ours to close
  Bss* bss_ = nullptr;               // entry's .bss (skeleton mapping, or our mmap when adopted)
  size_t bss_len_ = 0;
  bool own_bss_map_ = false;
  int bss_fd_ = -1;
  uint64_t seed_ = 0;
  bool keep_ = false;
  bool pinned_ = false;
  std::chrono::steady_clock::time_point last_flip_{};
  std::vector<Attachment> attached_;
};

// How long a half that just became inactive is left alone before it is refilled.
inline constexpr std::chrono::milliseconds kRefillGrace{20};

// TC handle/priority of policyd's filter: constant, so a restart replaces it in place.
inline constexpr uint32_t kTcHandle = 0x5044;  // "PD"
inline constexpr uint32_t kTcPriority = 1;

// A digest of compiled tables (generation-independent): equal digests, equal tables.
uint64_t tables_digest(const Tables& t);

}  // namespace policyd::chain

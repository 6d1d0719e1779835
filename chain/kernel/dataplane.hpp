// Dataplane: the loaded chain in the kernel — its programs (one per stage), the maps they
// share, entry's .bss with the two generations' configs, the pins under the pin dir, and
// the TC attachments. Writes a compiled generation into the inactive half of every table
// (each stage writes its own: Stage::write) and flips the active generation with one store.
//
// A Dataplane is either loaded fresh or adopted from a pinned chain that a previous daemon
// left enforcing: the same build is adopted whole (same programs, so the same prog ids, and
// the same maps, so flows and their verdicts survive); a different build with the same map
// ABI keeps the flow table and loads new programs.
//
// Every kernel object is held by an owned fd (chain/kernel/fd.hpp) or a pin; nothing is
// closed by hand.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "chain/base/result.hpp"
#include "chain/compile.hpp"
#include "chain/kernel/fd.hpp"
#include "chain/kernel/loader.hpp"
#include "chain/kernel/tc.hpp"
#include "chain/kernel/tables.hpp"
#include "chain/stage.hpp"

namespace policyd::chain {

class Dataplane {
 public:
  struct Options {
    std::string pin_dir;            // empty: nothing is pinned or adopted (tests)
    uint32_t max_flows = 262144;
    uint32_t accum_entries = 4096;  // concurrent partial heads
  };
  // Fresh: nothing pinned (or nothing usable). Adopted: this build's pinned chain, whole.
  // FlowsKept: another build, same ABI: its flow table, counters and buckets reused.
  // Migrated: another ABI: a fresh chain, with the pinned flow table's connections copied in
  // entry by entry (migrated_flows() of them), so established connections carry on.
  enum class Origin { Fresh, Adopted, FlowsKept, Migrated };

  // Adopts the chain pinned at opts.pin_dir when possible, else loads fresh. Nothing that
  // is pinned is changed by this call.
  static Result<std::unique_ptr<Dataplane>> load(const Options& opts);
  ~Dataplane();
  Dataplane(const Dataplane&) = delete;
  Dataplane& operator=(const Dataplane&) = delete;

  Origin origin() const { return origin_; }
  // Migrated: the connections (and handshakes) copied from the pinned chain of another ABI.
  uint64_t migrated_flows() const { return migrated_; }
  // Migrated: why some state could not be carried over (empty if all of it was).
  const std::string& migration_note() const { return migration_note_; }
  // Generation number (as the controller counts) of the active half; 0 if none yet.
  uint32_t active_tag() const;
  uint64_t active_digest() const;

  // Fill generation `gen` (must be the inactive one) with `tables`; nothing live changes.
  // Stages whose program comes from a file (tables.programs) run the program loaded from
  // `objects` (by pd_stage; Compiled::objects) in this half: a new build of a stage is
  // swapped in with the flip, and the other half keeps the program it had.
  using Objects = std::map<uint32_t, std::vector<unsigned char>>;
  Status prepare(const Tables& tables, uint32_t gen, uint32_t gen_tag, const Objects* objects = nullptr);
  // Make a prepared generation the active one: one store.
  void flip(uint32_t gen);
  // prepare + flip
  Status commit(const Tables& tables, uint32_t gen, uint32_t gen_tag);
  // The program that probes a prepared generation (BPF_PROG_TEST_RUN only).
  int preflight_prog_fd() const { return loaded_.preflight.get(); }
  void set_preflight_gen(uint32_t gen);
  uint32_t active_gen() const;
  uint32_t inactive_gen() const { return active_gen() ^ 1; }
  uint64_t hash_seed() const { return seed_; }

  // TC attachment: the entry program at ingress, and at egress the program that records what
  // the server's packets say (pd_egress).
  Status attach(const std::string& ifname);
  Status detach(const std::string& ifname) { return tc_.detach(ifname); }
  const std::vector<Attachment>& attachments() const { return tc_.list(); }
  // Are this chain's filters on the interface (both, not removed, not replaced)?
  bool filter_present(int ifindex) const;
  void forget(int ifindex) { tc_.forget(ifindex); }
  void renamed(int ifindex, const std::string& ifname) { tc_.renamed(ifindex, ifname); }

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
  int egress_prog_fd() const { return loaded_.egress.get(); }
  uint32_t egress_prog_id() const { return prog_id_of(egress_prog_fd()); }
  int prog_fd(uint32_t stage) const { return stage < PD_STAGE_MAX ? loaded_.progs[stage].get() : -1; }
  uint32_t prog_id(uint32_t stage) const { return prog_id_of(prog_fd(stage)); }
  // The program a stage runs in the active generation (its PROG_ARRAY slot), 0 if none.
  uint32_t active_prog_id(uint32_t stage) const;
  int map_fd(abi::Map map) const { return loaded_.maps[static_cast<unsigned>(map)].get(); }
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
  // The daemon's answer for a token the JWT stage sent it (the ring buffer pd_events).
  Status put_jwt_answer(const pd_jwt_cache_key& key, const pd_jwt_cache_val& val);

  // Remove every attachment of the chain pinned at pin_dir, and the pins themselves.
  static Status teardown(const std::string& pin_dir);
  // Identity of the BPF objects compiled into this binary.
  static uint64_t build_id();

 private:
  struct Bss;
  // entry's .bss, mapped into this process
  struct MappedBss {
    Bss* bss = nullptr;
    size_t len = 0;
    MappedBss() = default;
    MappedBss(MappedBss&& o) noexcept;
    MappedBss& operator=(MappedBss&& o) noexcept;
    ~MappedBss();
  };
  static Result<MappedBss> map_bss(int fd);
  uint32_t partial_per_client() const;  // a client's share of the partial-head table
  MapFds map_fds() const;
  Dataplane() = default;
  Status adopt(const std::string& pin_dir, std::map<abi::Map, Fd>& kept, std::map<abi::Map, Fd>& migrate);
  // Copies every entry of the pinned maps of another ABI whose layout this build shares.
  void migrate_from(const std::map<abi::Map, Fd>& old);
  Status load_fresh(const std::map<abi::Map, Fd>& reuse);
  void unpin_all();

  // Programs loaded from stage object files, by (pd_stage, digest), and which of them each
  // half's slots hold: a program goes when neither half runs it any more.
  std::map<std::pair<uint32_t, uint64_t>, Fd> file_progs_;
  std::array<std::vector<std::pair<uint32_t, uint64_t>>, 2> half_files_;
  Result<int> file_program(const ProgramSource& src, const Objects* objects);

  Options opts_;
  Origin origin_ = Origin::Fresh;
  LoadedChain loaded_;
  MappedBss bss_;
  uint64_t seed_ = 0;
  uint64_t migrated_ = 0;
  std::string migration_note_;
  bool keep_ = false;
  bool pinned_ = false;
  std::chrono::steady_clock::time_point last_flip_{};
  TcAttachments tc_;
};

// How long a half that just became inactive is left alone before it is refilled.
inline constexpr std::chrono::milliseconds kRefillGrace{20};

}  // namespace policyd::chain

// Dataplane: owns the loaded BPF objects (one skeleton per stage), the maps they share,
// the pins under the pin dir, and the TC attachments. Writes a compiled generation into the
// inactive half of every table and flips the active generation with one store.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "chain/compile.hpp"
#include "chain/result.hpp"

struct entry_bpf;
struct http_bpf;
struct host_bpf;
struct path_bpf;
struct verdict_bpf;

namespace policyd::chain {

struct Counters {
  std::vector<uint64_t> values;     // pd_counter indices, summed over CPUs
  std::map<uint32_t, uint64_t> rule_hits;  // rule -> hits (active generation), summed over CPUs
};

struct Attachment {
  std::string ifname;
  int ifindex = 0;
  bool created_qdisc = false;
};

class Dataplane {
 public:
  struct Options {
    std::string pin_dir;            // empty: nothing is pinned (tests)
    uint32_t max_flows = 262144;
    uint32_t accum_entries = 4096;  // concurrent partial heads
  };

  static Result<std::unique_ptr<Dataplane>> load(const Options& opts);
  ~Dataplane();
  Dataplane(const Dataplane&) = delete;
  Dataplane& operator=(const Dataplane&) = delete;

  // Fill generation `gen` (must be the inactive one) with `tables` and flip to it.
  Status commit(const Tables& tables, uint32_t gen, uint32_t gen_tag);
  uint32_t active_gen() const;
  uint32_t inactive_gen() const { return active_gen() ^ 1; }
  uint64_t hash_seed() const { return seed_; }

  // TC ingress attachment of the entry program (clsact + cls_bpf, libbpf bpf_tc_*).
  Status attach(const std::string& ifname);
  Status detach(const std::string& ifname);
  const std::vector<Attachment>& attachments() const { return attached_; }

  // Pin maps and programs under opts.pin_dir, replacing whatever an earlier run pinned
  // there. Done after a successful load and commit, so a failed start loses nothing.
  Status pin();

  // Keep the chain enforcing after this process exits (pins stay, filters stay).
  void release_on_exit() { keep_ = true; }

  Counters read_counters() const;
  int entry_prog_fd() const;
  int prog_fd(uint32_t stage) const;
  int map_fd(const std::string& name) const;

  // Remove every attachment recorded under pin_dir and the pins themselves.
  static Status teardown(const std::string& pin_dir);

 private:
  Dataplane() = default;
  Status open_and_load(const Options& opts);
  void unpin_all();

  Options opts_;
  entry_bpf* entry_ = nullptr;
  http_bpf* http_ = nullptr;
  host_bpf* host_ = nullptr;
  path_bpf* path_ = nullptr;
  verdict_bpf* verdict_ = nullptr;
  uint64_t seed_ = 0;
  bool keep_ = false;
  bool pinned_ = false;
  std::vector<Attachment> attached_;
};

// TC handle/priority of policyd's filter: constant, so a restart replaces it in place.
inline constexpr uint32_t kTcHandle = 0x5044;  // "PD"
inline constexpr uint32_t kTcPriority = 1;

}  // namespace policyd::chain

// The kernel checked at start: what policyd's BPF programs need from the running kernel,
// asked before anything is loaded, attached or pinned. One table (kKernelFeatures) says,
// for each feature, how it is probed, the Linux release that introduced it and why policyd
// needs it; the oldest kernel policyd can run on is the latest of those releases
// (minimum_kernel()). tests/chain/kernel_probe_tests.cpp holds the table to what the
// compiled BPF objects actually call and declare, so neither can drift from the other.
#pragma once

#include <linux/bpf.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "chain/base/result.hpp"

namespace policyd::chain {

struct KernelVersion {
  int major = 0;
  int minor = 0;
  friend constexpr auto operator<=>(const KernelVersion&, const KernelVersion&) = default;
};
std::string to_string(KernelVersion v);  // "6.2"

struct KernelFeature {
  enum class Kind {
    VmlinuxBtf,    // the kernel's own BTF, as libbpf's CO-RE looks for it
    ProgType,      // libbpf_probe_bpf_prog_type(id)
    MapType,       // libbpf_probe_bpf_map_type(id)
    Helper,        // libbpf_probe_bpf_helper(SCHED_CLS, id)
    Kfunc,         // `symbol` in the kernel's BTF, and a SCHED_CLS program calling it loads
    MmapArray,     // an array map with BPF_F_MMAPABLE can be created and mapped
    TestRun,       // BPF_PROG_TEST_RUN runs a SCHED_CLS program
    KernelConfig,  // `symbol` (CONFIG_...) is y or m in the kernel's published config
  };
  Kind kind;
  std::string_view name;  // as an operator reads it: "helper bpf_loop"
  int id;                 // the bpf_prog_type, bpf_map_type or bpf_func_id; 0 otherwise
  std::string_view symbol;
  KernelVersion since;    // the Linux release that introduced it (mainline)
  std::string_view why;
};

namespace feature {
using enum KernelFeature::Kind;
}

// Everything policyd's programs need, in the order `policyd --check-kernel` lists it. The
// helpers, map types and kfuncs are exactly those the objects in bpf/ call and declare.
inline constexpr KernelFeature kKernelFeatures[] = {
    {feature::VmlinuxBtf, "kernel BTF", 0, "", {5, 4},
     "CO-RE: the entry program reads sk_buff.ip_summed where this kernel keeps it"},
    {feature::ProgType, "program type SCHED_CLS", BPF_PROG_TYPE_SCHED_CLS, "", {4, 1},
     "every stage is a TC classifier program"},
    {feature::KernelConfig, "clsact qdisc", 0, "CONFIG_NET_SCH_INGRESS", {4, 5},
     "the ingress and egress hooks the chain is attached to"},
    {feature::KernelConfig, "cls_bpf classifier", 0, "CONFIG_NET_CLS_BPF", {4, 4},
     "the TC filter that runs the entry and egress programs"},
    {feature::TestRun, "BPF_PROG_TEST_RUN for SCHED_CLS", 0, "", {4, 12},
     "preflight: a new generation answers synthesized requests before it goes live"},
    {feature::MmapArray, "memory-mapped array maps (global data)", 0, "", {5, 5},
     "the daemon switches generations with one store into the entry program's .bss"},
    {feature::MapType, "map type hash", BPF_MAP_TYPE_HASH, "", {3, 19},
     "listeners, hosts, routes, JWT claims, rate-limit buckets"},
    {feature::MapType, "map type array", BPF_MAP_TYPE_ARRAY, "", {3, 19},
     "stage chain, generation tags, JWT providers, rate limits, runtime, global data"},
    {feature::MapType, "map type prog_array", BPF_MAP_TYPE_PROG_ARRAY, "", {4, 2},
     "the tail calls that join the stages"},
    {feature::MapType, "map type percpu_array", BPF_MAP_TYPE_PERCPU_ARRAY, "", {4, 6},
     "the per-packet context, counters, rule and rate-limit hits"},
    {feature::MapType, "map type lru_hash", BPF_MAP_TYPE_LRU_HASH, "", {4, 10},
     "the flow table, partial request heads, the token cache"},
    {feature::MapType, "map type ringbuf", BPF_MAP_TYPE_RINGBUF, "", {5, 8},
     "tokens sent to the daemon for verification, decision events"},
    {feature::Helper, "helper bpf_map_lookup_elem", BPF_FUNC_map_lookup_elem, "", {3, 19}, "every table lookup"},
    {feature::Helper, "helper bpf_map_update_elem", BPF_FUNC_map_update_elem, "", {3, 19},
     "flows, partial heads, buckets"},
    {feature::Helper, "helper bpf_map_delete_elem", BPF_FUNC_map_delete_elem, "", {3, 19},
     "finished partial heads and flows"},
    {feature::Helper, "helper bpf_ktime_get_ns", BPF_FUNC_ktime_get_ns, "", {4, 1},
     "token expiry, token-bucket refill"},
    {feature::Helper, "helper bpf_get_prandom_u32", BPF_FUNC_get_prandom_u32, "", {4, 1},
     "the per-flow key of the judged-bytes digest"},
    {feature::Helper, "helper bpf_skb_store_bytes", BPF_FUNC_skb_store_bytes, "", {4, 1},
     "writing the reset and 403 replies"},
    {feature::Helper, "helper bpf_l4_csum_replace", BPF_FUNC_l4_csum_replace, "", {4, 1},
     "the replies' TCP checksum"},
    {feature::Helper, "helper bpf_tail_call", BPF_FUNC_tail_call, "", {4, 2}, "passing a packet to the next stage"},
    {feature::Helper, "helper bpf_clone_redirect", BPF_FUNC_clone_redirect, "", {4, 2},
     "sending a reply while the request is dropped"},
    {feature::Helper, "helper bpf_redirect", BPF_FUNC_redirect, "", {4, 4}, "sending a reply back out"},
    {feature::Helper, "helper bpf_skb_load_bytes", BPF_FUNC_skb_load_bytes, "", {4, 5},
     "copying packet bytes (headers, TCP options, payload) into map values"},
    {feature::Helper, "helper bpf_csum_diff", BPF_FUNC_csum_diff, "", {4, 6}, "checksums of replies and segments"},
    {feature::Helper, "helper bpf_skb_change_tail", BPF_FUNC_skb_change_tail, "", {4, 9},
     "sizing a packet into a reply"},
    {feature::Helper, "helper bpf_skb_adjust_room", BPF_FUNC_skb_adjust_room, "", {5, 2},
     "removing a client's IPv6 extension headers from a reply (BPF_ADJ_ROOM_NET)"},
    {feature::Helper, "helper bpf_skb_pull_data", BPF_FUNC_skb_pull_data, "", {4, 9},
     "making a request's head directly readable"},
    {feature::Helper, "helper bpf_spin_lock", BPF_FUNC_spin_lock, "", {5, 1}, "rate-limit buckets shared by CPUs"},
    {feature::Helper, "helper bpf_spin_unlock", BPF_FUNC_spin_unlock, "", {5, 1}, "rate-limit buckets shared by CPUs"},
    {feature::Helper, "helper bpf_probe_read_kernel", BPF_FUNC_probe_read_kernel, "", {5, 5},
     "copying a request head or a token whose length is known only at run time"},
    {feature::Helper, "helper bpf_ringbuf_reserve", BPF_FUNC_ringbuf_reserve, "", {5, 8},
     "tokens and decision events"},
    {feature::Helper, "helper bpf_ringbuf_submit", BPF_FUNC_ringbuf_submit, "", {5, 8}, "tokens and decision events"},
    {feature::Helper, "helper bpf_loop", BPF_FUNC_loop, "", {5, 17},
     "walking headers, TCP options, JWT and SHA-2 blocks within the verifier's limits"},
    {feature::Kfunc, "kfunc bpf_cast_to_kern_ctx", 0, "bpf_cast_to_kern_ctx", {6, 2},
     "reading whether the kernel already verified a segment's TCP checksum (sk_buff.ip_summed)"},
};

// The oldest kernel every feature above is in: the latest "since" of the table.
constexpr KernelVersion minimum_kernel() {
  KernelVersion v;
  for (const auto& f : kKernelFeatures) v = f.since > v ? f.since : v;
  return v;
}

struct Probed {
  enum class State { Present, Missing, Undetermined };
  State state = State::Undetermined;
  std::string how;  // what answered, or why nothing could
};

// The kernel as the start check sees it. LiveKernel asks the running kernel; a test
// implements it to stand for a kernel that lacks something.
class KernelProbe {
 public:
  virtual ~KernelProbe() = default;
  virtual std::string release() const = 0;               // `uname -r`
  virtual std::string missing_capabilities() const = 0;  // "" or "CAP_BPF, CAP_NET_ADMIN"
  virtual Probed probe(const KernelFeature& feature) const = 0;
};

// The running kernel, through libbpf's probe API (libbpf_probe_bpf_prog_type, _map_type,
// _helper) and, for what that API does not cover, the same kind of throwaway program or
// map. Nothing it creates outlives the call; no interface, qdisc or pin is touched.
class LiveKernel final : public KernelProbe {
 public:
  LiveKernel();
  ~LiveKernel() override;
  LiveKernel(const LiveKernel&) = delete;
  LiveKernel& operator=(const LiveKernel&) = delete;

  std::string release() const override;
  std::string missing_capabilities() const override;
  Probed probe(const KernelFeature& feature) const override;

 private:
  struct Cache;
  std::unique_ptr<Cache> cache_;  // the kernel's BTF, parsed once
};

struct KernelReport {
  struct Row {
    const KernelFeature* feature;
    Probed result;
  };
  std::string release;
  std::vector<Row> rows;

  std::vector<const KernelFeature*> missing() const;
  std::vector<const Row*> undetermined() const;
};

// Every feature of kKernelFeatures, probed. An error if this process lacks the
// capabilities to ask (the kernel refuses the probes themselves then).
Result<KernelReport> probe_kernel(const KernelProbe& kernel);

// The start check: Ok, or the one message an operator reads when the kernel lacks something
// (each missing feature with the release that introduced it, and the minimum overall).
// Undetermined features do not refuse: the load or the first attach that needs them will.
Status check_kernel(const KernelReport& report);

// `policyd --check-kernel`: one line per feature (since, present or MISSING, why) and the verdict.
std::string format_report(const KernelReport& report);

// The capabilities loading policyd's programs needs that this process lacks ("" if none):
// CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN, which implies both) and CAP_NET_ADMIN.
std::string missing_capabilities();

}  // namespace policyd::chain

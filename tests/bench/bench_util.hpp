// Shared by bench_scale and bench_hotswap: summaries over rounds, reading a process's memory
// and its BPF objects from /proc, and the cleanup of an interrupted run (the e2e harness's
// sweep: namespaces with what runs in them, bpffs mounts, temp dirs).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "harness.hpp"

namespace policyd::bench {

// Median (upper median for an even count), nearest-rank percentile, min, max.
double median(std::vector<double> v);
double percentile(std::vector<double> v, double p);  // p in (0, 100]
// {"median", "min", "max", "n", "values"} (and "p99" when with_p99)
nlohmann::json summary(const std::vector<double>& v, bool with_p99 = false);

// /proc/PID/status: VmRSS and VmHWM in KiB (0 if absent).
struct ProcMemory {
  uint64_t rss_kib = 0, hwm_kib = 0;
};
ProcMemory proc_memory(pid_t pid);

// The BPF maps and programs process `pid` holds fds for (/proc/PID/fdinfo), each counted
// once (by id): the kernel's memlock figure for each, summed.
struct BpfMemory {
  uint64_t map_bytes = 0, prog_bytes = 0;
  int maps = 0, progs = 0;
  std::vector<std::pair<uint32_t, uint64_t>> map_ids;  // id -> memlock bytes
};
BpfMemory bpf_memory(pid_t pid);

// The pid of the process whose command line holds `arg` (exactly, as one argument), or -1.
pid_t find_process_with_arg(const std::string& arg);

// Cleanup of an interrupted run: e2e::install_cleanup_handlers / e2e::handle_sweep_flag.
using e2e::handle_sweep_flag;
using e2e::install_cleanup_handlers;

// Writes `j` to `path` (pretty); false on error.
bool write_json(const std::string& path, const nlohmann::json& j);

}  // namespace policyd::bench

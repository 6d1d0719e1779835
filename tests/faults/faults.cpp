#include "faults.hpp"

#include <errno.h>
#include <time.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include <bpf/bpf.h>
#include <fmt/format.h>

namespace policyd::testing {

Status corrupt_prepared(chain::Dataplane& dp, uint32_t gen) {
  int fd = dp.map_fd(abi::Map::routes);
  pd_route_key key{}, next{};
  pd_route_key* cur = nullptr;
  while (bpf_map_get_next_key(fd, cur, &next) == 0) {
    key = next;
    cur = &key;
    if (key.gen != (gen & 1)) continue;
    pd_route_val val{};
    if (bpf_map_lookup_elem(fd, &key, &val) != 0 || val.nslots == 0) continue;
    val.slots[0].action = val.slots[0].action == PD_ACT_ALLOW ? PD_ACT_DENY : PD_ACT_ALLOW;
    if (bpf_map_update_elem(fd, &key, &val, BPF_EXIST) != 0)
      return make_error(fmt::format("corrupting a route: {}", std::strerror(errno)));
    return Ok{};
  }
  // no route: an sni rule's action instead
  fd = dp.map_fd(abi::Map::hosts);
  pd_host_key hkey{}, hnext{};
  pd_host_key* hcur = nullptr;
  while (bpf_map_get_next_key(fd, hcur, &hnext) == 0) {
    hkey = hnext;
    hcur = &hkey;
    if (hkey.gen != (gen & 1) || hkey.kind <= PD_SNI_KIND_OFFSET) continue;
    pd_host_val val{};
    if (bpf_map_lookup_elem(fd, &hkey, &val) != 0) continue;
    val.action = val.action == PD_ACT_ALLOW ? PD_ACT_DENY : PD_ACT_ALLOW;
    if (bpf_map_update_elem(fd, &hkey, &val, BPF_EXIST) != 0)
      return make_error(fmt::format("corrupting an sni rule: {}", std::strerror(errno)));
    return Ok{};
  }
  return make_error("no route or sni rule to corrupt in the prepared generation");
}

Status set_wall_clock(chain::Dataplane& dp, int64_t unix_seconds) {
  int fd = dp.map_fd(abi::Map::runtime);
  uint32_t zero = 0;
  pd_runtime rt{};
  if (bpf_map_lookup_elem(fd, &zero, &rt) != 0)
    return make_error(fmt::format("reading the runtime map: {}", std::strerror(errno)));
  timespec m{};
  clock_gettime(CLOCK_MONOTONIC, &m);
  rt.wall_offset_ns = unix_seconds * 1000000000LL - (static_cast<int64_t>(m.tv_sec) * 1000000000LL + m.tv_nsec);
  if (bpf_map_update_elem(fd, &zero, &rt, BPF_ANY) != 0)
    return make_error(fmt::format("writing the runtime map: {}", std::strerror(errno)));
  return Ok{};
}

Status verifier_rejection() {
  // r0 = *(u64 *)(r1 + 4096); exit
  const bpf_insn insns[] = {
      {BPF_LDX | BPF_MEM | BPF_DW, BPF_REG_0, BPF_REG_1, 4096, 0},
      {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
  };
  std::string log(64 * 1024, '\0');
  LIBBPF_OPTS(bpf_prog_load_opts, lo, .log_level = 1, .log_size = static_cast<uint32_t>(log.size()),
              .log_buf = log.data());
  int fd = bpf_prog_load(BPF_PROG_TYPE_SCHED_CLS, "pd_reject_test", "GPL", insns, 2, &lo);
  if (fd >= 0) {
    close(fd);
    return make_error("test fault: the verifier accepted a program it must reject");
  }
  const int err = errno;
  log.resize(std::strlen(log.c_str()));
  return make_error(fmt::format("the kernel refused the test stage: {}", std::strerror(err)),
                    chain::verifier_excerpt(log));
}

Status ChainFaults::before_load() { return reject_load ? verifier_rejection() : Status(Ok{}); }

Status ChainFaults::prepared(chain::Dataplane& dp, uint32_t gen, uint32_t tag) {
  if (corrupt_generation && *corrupt_generation == tag) return corrupt_prepared(dp, gen);
  return Ok{};
}

}  // namespace policyd::testing

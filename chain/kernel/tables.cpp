#include "chain/kernel/tables.hpp"

#include <errno.h>

#include <cstring>
#include <vector>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>

namespace policyd::chain {

namespace {

std::string errstr(int err) { return std::strerror(err < 0 ? -err : err); }

size_t ncpus() {
  static const int n = libbpf_num_possible_cpus();
  return n > 0 ? static_cast<size_t>(n) : 0;
}

}  // namespace

Status MapTables::put_bytes(abi::Map map, const void* key, const void* value, Put how) {
  const uint64_t flags = how == Put::IfAbsent ? BPF_NOEXIST : BPF_ANY;
  if (bpf_map_update_elem(fd(map), key, value, flags) == 0) return Ok{};
  if (how == Put::IfAbsent && errno == EEXIST) return Ok{};
  return make_error(fmt::format("writing {}: {}", abi::map_name(map), errstr(errno)));
}

Status MapTables::erase_bytes_if(abi::Map map, const std::function<bool(const void* key)>& doomed) {
  const int f = fd(map);
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(f, &info, &len) != 0)
    return make_error(fmt::format("reading {}: {}", abi::map_name(map), errstr(errno)));
  // keys collected first: deleting under bpf_map_get_next_key restarts the walk
  std::vector<unsigned char> keys, cur(info.key_size), next(info.key_size);
  const void* at = nullptr;
  while (bpf_map_get_next_key(f, at, next.data()) == 0) {
    if (doomed(next.data())) keys.insert(keys.end(), next.begin(), next.end());
    cur.swap(next);
    at = cur.data();
  }
  for (size_t off = 0; off < keys.size(); off += info.key_size)
    if (bpf_map_delete_elem(f, keys.data() + off) != 0 && errno != ENOENT)
      return make_error(fmt::format("clearing {}: {}", abi::map_name(map), errstr(errno)));
  return Ok{};
}

Status MapTables::zero_counter(abi::Map map, uint32_t index) {
  if (ncpus() == 0) return make_error("counting CPUs failed");
  const std::vector<uint64_t> zeros(ncpus(), 0);
  if (bpf_map_update_elem(fd(map), &index, zeros.data(), BPF_ANY) != 0)
    return make_error(fmt::format("clearing {}[{}]: {}", abi::map_name(map), index, errstr(errno)));
  return Ok{};
}

Result<uint32_t> MapTables::max_entries(abi::Map map) const {
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd(map), &info, &len) != 0)
    return make_error(fmt::format("reading {}: {}", abi::map_name(map), errstr(errno)));
  return info.max_entries;
}

uint64_t MapTables::sum(abi::Map map, uint32_t index) const {
  std::vector<uint64_t> vals(ncpus());
  if (vals.empty() || bpf_map_lookup_elem(fd(map), &index, vals.data()) != 0) return 0;
  uint64_t total = 0;
  for (auto v : vals) total += v;
  return total;
}

}  // namespace policyd::chain

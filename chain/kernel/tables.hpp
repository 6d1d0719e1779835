// The stages' tables in the kernel: TableWriter and CounterReader (chain/table_writer.hpp)
// over the shared maps' fds.
#pragma once

#include <array>

#include "chain/table_writer.hpp"

namespace policyd::chain {

// The shared maps' fds, by abi::Map (-1: not open).
using MapFds = std::array<int, abi::kMapCount>;

class MapTables final : public TableWriter, public CounterReader {
 public:
  explicit MapTables(const MapFds& fds) : fds_(fds) {}
  Status put_bytes(abi::Map map, const void* key, const void* value, Put how) override;
  Status erase_bytes_if(abi::Map map, const std::function<bool(const void* key)>& doomed) override;
  Status zero_counter(abi::Map map, uint32_t index) override;
  Result<uint32_t> max_entries(abi::Map map) const override;
  uint64_t sum(abi::Map map, uint32_t index) const override;

 private:
  int fd(abi::Map map) const { return fds_[static_cast<unsigned>(map)]; }
  const MapFds& fds_;
};

}  // namespace policyd::chain

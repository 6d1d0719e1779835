// How a stage writes its tables into a generation and reads its counters, without knowing the
// kernel: the kernel layer implements these over the maps (chain/kernel/tables.hpp), and a
// test can implement them over memory. Maps are named by abi::Map (generated from pd_maps.h).
#pragma once

#include <cstdint>
#include <functional>

#include "abi/pd_maps.hpp"
#include "chain/base/result.hpp"

namespace policyd::chain {

// How an entry is written: whatever is there (Any), or only if there is none yet (IfAbsent:
// an entry already there is kept, which is not an error).
enum class Put { Any, IfAbsent };

class TableWriter {
 public:
  virtual ~TableWriter() = default;
  virtual Status put_bytes(abi::Map map, const void* key, const void* value, Put how) = 0;
  // Deletes every entry whose key `doomed` picks.
  virtual Status erase_bytes_if(abi::Map map, const std::function<bool(const void* key)>& doomed) = 0;
  // A per-CPU counter set to 0 on every CPU.
  virtual Status zero_counter(abi::Map map, uint32_t index) = 0;
  // The number of entries the map was created with.
  virtual Result<uint32_t> max_entries(abi::Map map) const = 0;

  template <typename K, typename V>
  Status put(abi::Map map, const K& key, const V& value, Put how = Put::Any) {
    return put_bytes(map, &key, &value, how);
  }
  template <typename K, typename Pred>
  Status erase_if(abi::Map map, Pred doomed) {
    return erase_bytes_if(map, [&doomed](const void* k) { return doomed(*static_cast<const K*>(k)); });
  }
};

class CounterReader {
 public:
  virtual ~CounterReader() = default;
  // A per-CPU counter summed over the CPUs (0 if it cannot be read).
  virtual uint64_t sum(abi::Map map, uint32_t index) const = 0;
};

}  // namespace policyd::chain

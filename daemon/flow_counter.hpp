// The flow table's use, counted off the io loop. Counting walks the whole table (batch
// lookups, ~0.5 us an entry: 100 ms for 262144, seconds for millions), so neither a scrape
// nor `policyctl stats` may do it on the io loop, which also serves the control socket,
// the JWT queue and the watchdog. A thread of its own counts every `every` and keeps the
// last result; readers take that, as old as `every` at most.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "chain/kernel/dataplane.hpp"

namespace policyd {

class FlowCounter {
 public:
  struct Count {
    chain::Dataplane::FlowUse use;
    std::chrono::steady_clock::time_point at;
  };
  // Counts once at once, then every `every`, until destroyed. `dp` must outlive it.
  FlowCounter(const chain::Dataplane& dp, std::chrono::milliseconds every);
  ~FlowCounter();
  FlowCounter(const FlowCounter&) = delete;
  FlowCounter& operator=(const FlowCounter&) = delete;

  // The last count; nullopt before the first one or when the last one failed (error() says).
  std::optional<Count> latest() const;
  std::string error() const;

 private:
  void run(std::stop_token stop);

  const chain::Dataplane& dp_;
  const std::chrono::milliseconds every_;
  mutable std::mutex mutex_;
  std::condition_variable_any wake_;
  std::optional<Count> latest_;
  std::string error_;
  std::jthread thread_;  // last: started once everything above exists, joined first
};

}  // namespace policyd

#include "daemon/flow_counter.hpp"

namespace policyd {

FlowCounter::FlowCounter(const chain::Dataplane& dp, std::chrono::milliseconds every)
    : dp_(dp), every_(every), thread_([this](std::stop_token stop) { run(stop); }) {}

FlowCounter::~FlowCounter() {
  thread_.request_stop();  // wakes the wait below; the jthread joins
}

std::optional<FlowCounter::Count> FlowCounter::latest() const {
  std::lock_guard lock(mutex_);
  return latest_;
}

std::string FlowCounter::error() const {
  std::lock_guard lock(mutex_);
  return error_;
}

void FlowCounter::run(std::stop_token stop) {
  while (!stop.stop_requested()) {
    auto use = dp_.flow_use();  // the walk: no lock held
    {
      std::lock_guard lock(mutex_);
      if (use) {
        latest_ = Count{*use, std::chrono::steady_clock::now()};
        error_.clear();
      } else {
        latest_.reset();
        error_ = use.error().message;
      }
    }
    std::unique_lock lock(mutex_);
    wake_.wait_for(lock, stop, every_, [] { return false; });
  }
}

}  // namespace policyd

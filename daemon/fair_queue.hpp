// FairQueue: work waiting for a pool of threads, bounded and shared fairly between sources.
//
// The JWT service queues the tokens the dataplane sends (RS*/ES* signatures cost tens to
// hundreds of microseconds each), and a client that sends forged tokens faster than they
// can be verified must not take the service away from everyone else. So:
//  - each source (a client address) has its own FIFO, and takers serve the sources round
//    robin: a flooding source gets one turn in N, not the whole pool;
//  - a source holds at most `per_source` jobs, the queue at most `total`: when it is full, a
//    job from a source with fewer queued than the largest source gets in by dropping the
//    largest source's newest job; otherwise the new job is dropped. Either way it is counted;
//  - a job whose key is already queued is not queued twice (the dataplane resends a token
//    while its answer is pending).
// offer() never waits for a worker: the io loop calls it.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <stop_token>

namespace policyd {

template <class Source, class Key, class Job>
class FairQueue {
 public:
  struct Limits {
    size_t total = 1024;
    size_t per_source = 64;
  };
  enum class Offer { queued, duplicate, dropped };
  struct Stats {
    uint64_t queued = 0;      // jobs taken in
    uint64_t duplicates = 0;  // offered while the same key was queued
    uint64_t dropped = 0;     // refused or pushed out: over a bound
    size_t depth = 0;         // jobs waiting now
    size_t sources = 0;       // sources with jobs waiting now
  };

  explicit FairQueue(Limits limits) : limits_(limits) {
    if (limits_.total == 0) limits_.total = 1;
    if (limits_.per_source == 0) limits_.per_source = 1;
  }

  Offer offer(const Source& source, const Key& key, Job job) {
    std::unique_lock lock(mutex_);
    if (keys_.count(key)) {
      ++stats_.duplicates;
      return Offer::duplicate;
    }
    auto& mine = queues_[source];
    if (mine.size() >= limits_.per_source) {
      ++stats_.dropped;
      return Offer::dropped;
    }
    if (depth_ >= limits_.total && !push_out_for(mine.size())) {
      if (mine.empty()) queues_.erase(source);
      ++stats_.dropped;
      return Offer::dropped;
    }
    if (mine.empty()) ring_.push_back(source);
    mine.push_back(Entry{key, std::move(job)});
    keys_.insert(key);
    ++depth_;
    ++stats_.queued;
    lock.unlock();
    ready_.notify_one();
    return Offer::queued;
  }

  // The next job, round robin over the sources; nullopt once `stop` is requested.
  std::optional<Job> take(std::stop_token stop) {
    std::unique_lock lock(mutex_);
    if (!ready_.wait(lock, stop, [this] { return depth_ > 0; })) return std::nullopt;
    Source source = ring_.front();
    ring_.pop_front();
    auto it = queues_.find(source);
    Entry e = std::move(it->second.front());
    it->second.pop_front();
    if (it->second.empty())
      queues_.erase(it);
    else
      ring_.push_back(source);  // its next job waits for every other source's turn
    keys_.erase(e.key);
    --depth_;
    return std::move(e.job);
  }

  Stats stats() const {
    std::lock_guard lock(mutex_);
    Stats s = stats_;
    s.depth = depth_;
    s.sources = ring_.size();
    return s;
  }

 private:
  struct Entry {
    Key key;
    Job job;
  };

  // Room for a job from a source with `have` queued: the newest job of the source with the
  // most queued goes, if that is more than have + 1. Called with the lock held.
  bool push_out_for(size_t have) {
    auto largest = queues_.end();
    for (auto it = queues_.begin(); it != queues_.end(); ++it)
      if (largest == queues_.end() || it->second.size() > largest->second.size()) largest = it;
    if (largest == queues_.end() || largest->second.size() <= have + 1) return false;
    keys_.erase(largest->second.back().key);
    largest->second.pop_back();
    --depth_;
    ++stats_.dropped;
    // it keeps at least have + 1 > 0 jobs: its place in the ring stays
    return true;
  }

  Limits limits_;
  mutable std::mutex mutex_;
  std::condition_variable_any ready_;
  std::map<Source, std::deque<Entry>> queues_;
  std::deque<Source> ring_;  // sources with jobs, in turn order
  std::set<Key> keys_;
  size_t depth_ = 0;
  Stats stats_;
};

}  // namespace policyd

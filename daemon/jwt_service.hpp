// JwtService: the daemon's half of the JWT stage. It reads the tokens the dataplane sends
// through the ring buffer (RS*/ES* signatures, and the rare token whose JSON the dataplane
// leaves alone), verifies them with jwt/ (OpenSSL) against the active policy's providers
// and writes each answer into the verified-token cache, where the segment TCP resends
// finds it. It also keeps the dataplane's wall clock current (a 1 s timer).
//
// Verifying is off the io loop, which also serves the control socket, metrics and the
// watchdog: the loop only drains the ring buffer into a FairQueue (fair_queue.hpp) keyed by
// the client's address (an IPv6 client by its /64), and a pool of worker threads verifies.
// A client sending forged tokens faster than they verify fills its own share of the queue;
// what does not fit is dropped and counted (the dataplane asks again when the client
// resends), and every other client's tokens keep their turn.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include "chain/compile.hpp"
#include "chain/kernel/dataplane.hpp"
#include "config/policy.hpp"
#include "daemon/fair_queue.hpp"
#include "chain/jwt/jwt.hpp"

struct ring_buffer;

namespace policyd {

class JwtService {
 public:
  struct Options {
    unsigned workers = 0;      // threads verifying; 0: one per CPU but one, 1..4
    size_t queue = 1024;       // tokens waiting at most
    size_t per_client = 64;    // of which from one client (address; IPv6: /64) at most
  };
  JwtService(boost::asio::io_context& io, chain::Dataplane& dp, Options options);
  JwtService(boost::asio::io_context& io, chain::Dataplane& dp) : JwtService(io, dp, Options{}) {}
  ~JwtService();
  JwtService(const JwtService&) = delete;
  JwtService& operator=(const JwtService&) = delete;

  Status start();
  void stop();
  // The active generation's providers: called after every successful apply.
  void set_active(const config::Policy& policy, const chain::Tables& tables,
                  std::map<std::string, jwt::Keys> keys);

  struct Stats {
    uint64_t received = 0;    // tokens the dataplane sent
    uint64_t valid = 0;       // answered: signature verified (claims are judged per request)
    uint64_t invalid = 0;     // answered: refused (reason in the cache)
    uint64_t stale = 0;       // for a provider that changed since: ignored (the resend asks again)
    uint64_t dropped = 0;     // not queued, or pushed out: over the queue's bounds
    uint64_t duplicates = 0;  // sent again while still queued
    size_t queued = 0;        // waiting now
    unsigned workers = 0;
  };
  Stats stats() const;

 private:
  using Source = std::array<uint32_t, 4>;
  using Key = std::pair<uint64_t, uint64_t>;  // the token's cache key: hash, epoch
  struct Job {
    uint32_t provider = 0;
    pd_jwt_cache_key key{};
    uint64_t tail = 0;
    std::string token;
  };
  // What workers verify against: swapped whole by set_active.
  struct Active {
    config::Policy policy;
    chain::Tables tables;
    std::map<std::string, jwt::Keys> keys;
  };

  static int on_event(void* self, void* data, size_t size);
  void enqueue(const pd_event_jwt& ev);
  void work(std::stop_token stop);
  void verify(const Job& job, const Active& active);
  void wait_events();
  void tick();

  chain::Dataplane& dp_;
  Options options_;
  ring_buffer* rb_ = nullptr;
  int cache_fd_ = -1;
  boost::asio::posix::stream_descriptor events_;
  boost::asio::steady_timer clock_;
  bool stopped_ = false;
  mutable std::mutex active_mutex_;
  std::shared_ptr<const Active> active_;
  FairQueue<Source, Key, Job> queue_;
  std::atomic<uint64_t> received_{0}, valid_{0}, invalid_{0}, stale_{0};
  std::vector<std::jthread> workers_;  // last: joined first
};

}  // namespace policyd

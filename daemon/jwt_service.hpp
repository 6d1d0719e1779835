// JwtService: the daemon's half of the JWT stage. It reads the tokens the dataplane sends
// through the ring buffer (RS*/ES* signatures, and the rare token whose JSON the dataplane
// leaves alone), verifies them with jwt/ (OpenSSL) against the active policy's providers
// and writes each answer into the verified-token cache, where the segment TCP resends
// finds it. It also keeps the dataplane's wall clock current (a 1 s timer).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include "chain/compile.hpp"
#include "chain/dataplane.hpp"
#include "config/policy.hpp"
#include "jwt/jwt.hpp"

struct ring_buffer;

namespace policyd {

class JwtService {
 public:
  JwtService(boost::asio::io_context& io, chain::Dataplane& dp);
  ~JwtService();
  JwtService(const JwtService&) = delete;
  JwtService& operator=(const JwtService&) = delete;

  Status start();
  void stop();
  // The active generation's providers: called after every successful apply.
  void set_active(const config::Policy& policy, const chain::Tables& tables,
                  std::map<std::string, jwt::Keys> keys);

  struct Stats {
    uint64_t received = 0;  // tokens the dataplane sent
    uint64_t valid = 0;     // answered: signature verified (claims are judged per request)
    uint64_t invalid = 0;   // answered: refused (reason in the cache)
    uint64_t stale = 0;     // for a provider that changed since: ignored (the resend asks again)
  };
  const Stats& stats() const { return stats_; }

 private:
  static int on_event(void* self, void* data, size_t size);
  void handle(const pd_event_jwt& ev);
  void wait_events();
  void tick();

  chain::Dataplane& dp_;
  ring_buffer* rb_ = nullptr;
  boost::asio::posix::stream_descriptor events_;
  boost::asio::steady_timer clock_;
  bool stopped_ = false;
  config::Policy policy_;
  chain::Tables tables_;
  std::map<std::string, jwt::Keys> keys_;
  Stats stats_;
};

}  // namespace policyd

// EventService: the decisions the dataplane reports through the ring buffer pd_log (refused
// requests and handshakes, fail-mode decisions), made readable: the rule, listener and rate
// limit named from the generation that decided, the flow as addresses. Each event is logged
// (logger `events`, at a configurable level), kept in a bounded history for `policyctl
// events`, and written to every `policyctl events --follow` session; a follower that does
// not read loses events (counted), and never holds up the daemon.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/common.h>

#include "chain/compile.hpp"
#include "chain/kernel/dataplane.hpp"
#include "config/policy.hpp"
#include "daemon/control_server.hpp"

struct ring_buffer;

namespace policyd {

// What an event's numbers mean in one generation: its rules, listeners and rate limits.
struct EventNames {
  uint32_t generation = 0;
  std::map<uint32_t, chain::RuleInfo> rules;  // by RuleInfo::rule
  std::vector<config::Listener> listeners;    // by pd_listener.id (policy order)
  std::vector<std::string> limits;            // by limit index (name order, as compiled)
  std::map<uint32_t, std::string> own_stages; // operators' own stages by pd_stage
};
EventNames event_names(const config::Policy& policy, const chain::Tables& tables, uint32_t generation);

// One event as policyctl shows it (`policyctl events -o json`: one such object per line).
// `names` may be null (a generation the daemon no longer knows): numbers stay unnamed.
nlohmann::json event_json(const pd_event_decision& ev, const EventNames* names, int64_t unix_ms);
// The same as one log line.
std::string event_line(const nlohmann::json& event);

class EventService {
 public:
  struct Options {
    spdlog::level::level_enum log_level = spdlog::level::info;  // off: not logged
    size_t history = 1024;                                       // events kept for `policyctl events`
  };

  EventService(boost::asio::io_context& io, chain::Dataplane& dp, Options opts);
  ~EventService();
  EventService(const EventService&) = delete;
  EventService& operator=(const EventService&) = delete;

  Status start();
  // Stops reading and ends every follower's stream.
  void stop();
  // The generation now active (called after every successful apply). The one before it
  // stays known too: events it decided may still be in the ring buffer.
  void set_active(const config::Policy& policy, const chain::Tables& tables, uint32_t generation);

  // The `events` control command: recent events, or (follow) a stream of new ones.
  control::Response command(const nlohmann::json& arguments,
                            const std::shared_ptr<control::ControlServer::Session>& session);
  // Reads what the ring buffer holds now (the io loop does this whenever it is readable).
  void poll();

  struct Stats {
    uint64_t received = 0;        // events read from the ring buffer
    uint64_t follower_drops = 0;  // events a follower did not get (it was not reading)
    uint64_t malformed = 0;       // records of an unknown type or size (none expected)
  };
  const Stats& stats() const { return stats_; }
  size_t followers() const { return followers_.size(); }

 private:
  static int on_event(void* self, void* data, size_t size);
  void handle(const pd_event_decision& ev);
  void wait_events();

  chain::Dataplane& dp_;
  Options opts_;
  ring_buffer* rb_ = nullptr;
  boost::asio::posix::stream_descriptor events_;
  bool stopped_ = false;
  std::deque<std::shared_ptr<const EventNames>> names_;  // the active generation last
  std::deque<nlohmann::json> history_;
  std::set<std::shared_ptr<control::ControlServer::Session>> followers_;
  std::shared_ptr<char> alive_ = std::make_shared<char>();  // session callbacks check it
  Stats stats_;
};

}  // namespace policyd

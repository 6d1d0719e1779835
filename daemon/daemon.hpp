// Daemon: owns the io loop and every source of work (signals now; the control socket,
// rtnetlink, inotify, ring buffer, timers and metrics join it), the policy and the dataplane.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>

#include "chain/kernel/chain.hpp"
#include "config/policy.hpp"
#include "daemon/control.hpp"
#include "daemon/config_watch.hpp"
#include "daemon/control_server.hpp"
#include "daemon/event_service.hpp"
#include "daemon/flow_counter.hpp"
#include "daemon/jwt_service.hpp"
#include "daemon/link_watch.hpp"
#include "daemon/metrics.hpp"
#include "daemon/metrics_server.hpp"

namespace policyd {

struct DaemonOptions {
  std::string config_path;
  std::string pin_dir;
  std::string socket_path;
  std::string metrics;
  // Decision events: the level they are logged at (trace|debug|info|warn|off), and how many
  // a CPU may send per second (and at once); 0 sends none.
  std::string event_log_level = "info";
  uint32_t event_rate = 200;
  // The kernel's run-time statistics (run count and ns per stage program, in stats and
  // metrics). Host-wide while on, and each program run pays two clock reads.
  bool bpf_stats = false;
  // Tests only (tests/e2e/policyd_faults.cpp): faults put into the chain; production: none.
  chain::Faults* faults = nullptr;
};

using chain::ApplyReport;

class Daemon {
 public:
  explicit Daemon(DaemonOptions opts);
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Loads the policy and the dataplane, applies, attaches. Returns the process exit code
  // to use if startup failed (0 when serving can begin).
  int start();
  // Serves until SIGTERM/SIGINT. The chain stays attached and pinned afterwards.
  void run();

 private:
  Result<ApplyReport> apply(const config::Policy& policy, bool dry_run = false);
  control::Response reload();
  void wait_signal();
  void watchdog();
  void maintain();  // WATCHDOG=1 at half of WATCHDOG_USEC, from the io loop (so a stuck loop stops it)
  void stop();
  Status attach_matching(const config::Policy& policy);
  // pins the applied policy beside the chain (chain/policy_store.hpp); a failure is logged
  void save_applied(const std::string& source, const std::string& text);
  bool wanted(const std::string& ifname) const;  // matches the active policy's interfaces globs
  void on_link_event(const LinkEvent& ev);
  void register_commands();
  control::Response cmd_status(const nlohmann::json& args);
  control::Response cmd_stats(const nlohmann::json& args);
  // Every number `policyctl stats` and the metrics endpoint report, read once.
  metrics::Snapshot snapshot() const;
  // One apply ended (not a dry run): its result and how long it took since `started`.
  void count_apply(metrics::ApplyResult result, std::chrono::steady_clock::time_point started);
  control::Response cmd_apply(const nlohmann::json& args);
  control::Response cmd_detach(const nlohmann::json& args);

  DaemonOptions opts_;
  boost::asio::io_context io_;
  boost::asio::signal_set signals_;
  boost::asio::steady_timer watchdog_;
  boost::asio::steady_timer maintenance_;  // every 5 s: forget rate-limit buckets idle until full
  uint64_t watchdog_usec_ = 0;
  control::Registry commands_;
  control::ControlServer ctl_;  // after io_ and commands_: destroyed before them
  std::unique_ptr<chain::Chain> chain_;
  chain::Dataplane* dp_ = nullptr;  // chain_'s
  std::unique_ptr<JwtService> jwt_;  // after dp_: stopped before it
  std::unique_ptr<EventService> events_;  // after dp_: stopped before it
  std::unique_ptr<FlowCounter> flow_counter_;  // after dp_: its thread stops before dp_ goes
  std::unique_ptr<ConfigWatch> watch_;
  // the stage object files of the active policy: a new file is applied (the stage swapped live)
  std::map<std::string, std::unique_ptr<ConfigWatch>> object_watches_;
  void watch_objects();
  std::unique_ptr<MetricsServer> metrics_;  // after dp_ and jwt_: stopped before they go
  metrics::Applies applies_;
  std::unique_ptr<LinkWatch> link_watch_;
  int run_stats_fd_ = -1;  // --bpf-stats: the kernel keeps run-time statistics while it is open
  struct LinkStats {
    uint64_t attached = 0;    // links that appeared (or were renamed into a glob) and got the chain
    uint64_t reattached = 0;  // our qdisc or filter removed by someone else, put back
    uint64_t forgotten = 0;   // attached links that went away
    int64_t last_reaction_us = 0, max_reaction_us = 0;  // notification read -> filter attached
  } links_;
  std::string policy_source_;
  std::string start_error_;  // the policy file's error when start kept the pinned chain's policy
  int64_t applied_at_ = 0;  // unix seconds of the last change
};

// Makes sure `pin_dir` can be created on a bpf filesystem: if its parent is /sys/fs/bpf
// and nothing is mounted there (as after `ip netns exec`), mounts bpffs on it.
Status ensure_bpffs(const std::string& pin_dir);

}  // namespace policyd

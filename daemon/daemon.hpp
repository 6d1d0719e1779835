// Daemon: owns the io loop and every source of work (signals now; the control socket,
// rtnetlink, inotify, ring buffer, timers and metrics join it), the policy and the dataplane.
#pragma once

#include <memory>
#include <string>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include "chain/dataplane.hpp"
#include "config/policy.hpp"

namespace policyd {

struct DaemonOptions {
  std::string config_path;
  std::string pin_dir;
  std::string socket_path;
  std::string metrics;
};

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
  Status apply(const config::Policy& policy);
  void reload();
  void wait_signal();
  Status attach_matching(const config::Policy& policy);

  DaemonOptions opts_;
  boost::asio::io_context io_;
  boost::asio::signal_set signals_;
  std::unique_ptr<chain::Dataplane> dp_;
  config::Policy policy_;
  uint32_t generation_ = 0;
  size_t last_preflight_ = 0;
};

// Makes sure `pin_dir` can be created on a bpf filesystem: if its parent is /sys/fs/bpf
// and nothing is mounted there (as after `ip netns exec`), mounts bpffs on it.
Status ensure_bpffs(const std::string& pin_dir);

}  // namespace policyd

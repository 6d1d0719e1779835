// policyd's command line (CLI.md), shared by the policyd binary and the tests' faulty one.
#include "daemon/main.hpp"

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include "chain/kernel/chain.hpp"
#include "chain/kernel/kernel_probe.hpp"
#include "daemon/daemon.hpp"
#include "daemon/log.hpp"

#ifndef POLICYD_VERSION
#define POLICYD_VERSION "0.0.0"
#endif

namespace policyd {

int policyd_main(int argc, char** argv, chain::Faults* faults) {
  DaemonOptions opts{"/etc/policyd/policy.yaml", "/sys/fs/bpf/policyd", "/run/policyd/policyd.sock",
                     "127.0.0.1:9464"};
  std::string level = "info", format = "text";
  bool detach = false, version = false, check_kernel = false;
  CLI::App app{"policyd: L7 policy enforcement in eBPF on a gateway host"};
  app.add_option("--config", opts.config_path, "policy file")->capture_default_str();
  app.add_option("--pin-dir", opts.pin_dir, "where maps and programs are pinned (bpffs)")->capture_default_str();
  app.add_option("--socket", opts.socket_path, "control socket")->capture_default_str();
  app.add_option("--metrics", opts.metrics, "Prometheus endpoint: HOST:PORT, [IPV6]:PORT, or off")
      ->capture_default_str();
  app.add_option("--log-level", level, "trace|debug|info|warn|error")->capture_default_str();
  app.add_option("--log-format", format, "text|json")->capture_default_str();
  app.add_option("--event-log-level", opts.event_log_level,
                 "level decision events are logged at (logger `events`): trace|debug|info|warn|off")
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "off"}))
      ->capture_default_str();
  app.add_option("--event-rate", opts.event_rate,
                 "decision events each CPU may send per second (and at once); more are counted, not sent; 0: none")
      ->check(CLI::Range(0u, 1000000u))
      ->capture_default_str();
  app.add_flag("--bpf-stats", opts.bpf_stats,
               "have the kernel time the chain at TC ingress (its runs and ns, all stages together, in stats and "
               "metrics; host-wide while on, and every BPF program run then pays two clock reads)");
  app.add_flag("--detach", detach, "remove the chain from every interface, unpin it, and exit");
  app.add_flag("--version", version, "print the version and exit");
  app.add_flag("--check-kernel", check_kernel,
               "probe the running kernel for every BPF feature policyd needs, print what was found and exit "
               "(0: all present, 1: something is missing, 2: this process may not probe; changes nothing)");
  CLI11_PARSE(app, argc, argv);
  if (version) {
    std::printf("policyd %s\n", POLICYD_VERSION);
    return 0;
  }
  if (check_kernel) {
    chain::LiveKernel kernel;
    auto report = chain::probe_kernel(kernel);
    if (!report) {
      std::fprintf(stderr, "policyd: %s\n", report.error().message.c_str());
      return 2;
    }
    std::fputs(chain::format_report(*report).c_str(), stdout);
    return report->missing().empty() ? 0 : 1;
  }
  std::string err;
  if (!setup_logging(level, format, &err)) {
    std::fprintf(stderr, "policyd: %s\n", err.c_str());
    return 1;
  }
  if (detach) {
    auto st = chain::Chain::detach(opts.pin_dir);
    if (!st) {
      spdlog::get("main")->error("{}", st.error().message);
      return 2;
    }
    return 0;
  }
  opts.faults = faults;
  Daemon daemon(opts);
  if (int rc = daemon.start(); rc != 0) return rc;
  daemon.run();
  return 0;
}

}  // namespace policyd

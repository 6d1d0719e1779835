#include "daemon/daemon.hpp"

#include <fnmatch.h>
#include <net/if.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <systemd/sd-daemon.h>

#include <cerrno>
#include <cstdlib>
#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "chain/compile.hpp"
#include "chain/preflight.hpp"
#include "config/loader.hpp"

namespace policyd {

namespace {

std::shared_ptr<spdlog::logger> log_main() { return spdlog::get("main"); }

bool on_bpffs(const std::string& dir) {
  struct statfs st {};
  return statfs(dir.c_str(), &st) == 0 && st.f_type == 0xcafe4a11;
}

}  // namespace

Status ensure_bpffs(const std::string& pin_dir) {
  auto parent = std::filesystem::path(pin_dir).parent_path().string();
  if (on_bpffs(parent) || on_bpffs(pin_dir)) return Ok{};
  if (parent == "/sys/fs/bpf") {
    if (mount("bpf", "/sys/fs/bpf", "bpf", 0, "mode=0700") != 0)
      return make_error(fmt::format("mounting bpffs on /sys/fs/bpf: {}", std::strerror(errno)));
    log_main()->info("mounted a bpf filesystem on /sys/fs/bpf");
    return Ok{};
  }
  return make_error(fmt::format("{} is not on a bpf filesystem (mount -t bpf bpf {})", parent, parent));
}

Daemon::Daemon(DaemonOptions opts) : opts_(std::move(opts)), signals_(io_, SIGINT, SIGTERM, SIGHUP) {}

Status Daemon::attach_matching(const config::Policy& policy) {
  std::vector<std::string> names;
  if (struct if_nameindex* ifs = ::if_nameindex()) {
    for (auto* i = ifs; i->if_index; ++i) names.emplace_back(i->if_name);
    if_freenameindex(ifs);
  }
  size_t attached = 0;
  for (const auto& name : names) {
    bool match = false;
    for (const auto& glob : policy.interfaces)
      if (fnmatch(glob.c_str(), name.c_str(), 0) == 0) match = true;
    if (!match) continue;
    if (auto st = dp_->attach(name); !st) return st;
    log_main()->info("attached to {} (ingress)", name);
    ++attached;
  }
  if (attached == 0)
    log_main()->warn("no interface matches {}; nothing is enforced until one appears",
                     fmt::join(policy.interfaces, ", "));
  return Ok{};
}

Status Daemon::apply(const config::Policy& policy) {
  auto started = std::chrono::steady_clock::now();
  uint32_t gen = dp_->inactive_gen();
  auto tables = chain::compile(policy, gen, dp_->hash_seed());
  if (!tables) return tables.error();
  for (const auto& w : tables->warnings) spdlog::get("config")->warn("{}", w);
  if (generation_ != 0 && chain::tables_digest(*tables) == dp_->active_digest()) {
    policy_ = policy;
    spdlog::get("chain")->info("policy unchanged: generation {} stays", generation_);
    return Ok{};
  }
  // prepare: fill the inactive generation; nothing live changes
  if (auto st = dp_->prepare(*tables, gen, generation_ + 1); !st) return st;
  // test-only: POLICYD_TEST_CORRUPT_PREPARED=N corrupts the generation numbered N
  if (const char* n = std::getenv("POLICYD_TEST_CORRUPT_PREPARED"); n && std::to_string(generation_ + 1) == n)
    if (auto st = dp_->corrupt_for_test(gen); !st) return st;
  // preflight: the prepared generation must agree with the policy on requests made from it
  auto report = chain::preflight(*dp_, policy, gen);
  if (!report) return report.error();
  if (!report->failures.empty()) {
    std::string detail;
    for (const auto& f : report->failures) detail += f + "\n";
    return make_error(fmt::format("preflight: {} of {} probes disagree with the policy; nothing was changed, "
                                  "generation {} stays",
                                  report->failures.size(), report->probes, generation_),
                      detail);
  }
  // commit: one store
  dp_->flip(gen);
  ++generation_;
  last_preflight_ = report->probes;
  policy_ = policy;
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - started);
  spdlog::get("chain")->info("generation {} active ({} listeners, {} host patterns, {} routes; preflight {} probes; "
                             "{} us)",
                             generation_, tables->listeners.size(), tables->hosts.size(), tables->rules.size(),
                             last_preflight_, us.count());
  return Ok{};
}

int Daemon::start() {
  config::Policy policy;
  try {
    policy = config::load_policy_file(opts_.config_path);
  } catch (const config::PolicyError& e) {
    spdlog::get("config")->error("{}", e.what());
    return 1;
  }
  if (auto st = ensure_bpffs(opts_.pin_dir); !st) {
    log_main()->error("{}", st.error().message);
    return 2;
  }
  chain::Dataplane::Options o;
  o.pin_dir = opts_.pin_dir;
  o.max_flows = policy.limits.max_flows;
  o.test_verifier_reject = std::getenv("POLICYD_TEST_VERIFIER_REJECT") != nullptr;
  auto dp = chain::Dataplane::load(o);
  if (!dp) {
    log_main()->error("{}", dp.error().message);
    if (!dp.error().detail.empty()) spdlog::get("bpf")->error("verifier log (end):\n{}", dp.error().detail);
    return 2;
  }
  dp_ = std::move(dp.value());
  switch (dp_->origin()) {
    case chain::Dataplane::Origin::Adopted:
      generation_ = dp_->active_tag();
      log_main()->info("adopted the chain pinned at {} (generation {}; programs, flows and verdicts kept)",
                       opts_.pin_dir, generation_);
      break;
    case chain::Dataplane::Origin::FlowsKept:
      log_main()->info("the chain pinned at {} is from another build: new programs, its flow table kept",
                       opts_.pin_dir);
      break;
    case chain::Dataplane::Origin::Fresh:
      break;
  }
  if (auto st = apply(policy); !st) {
    spdlog::get("chain")->error("{}", st.error().message);
    if (!st.error().detail.empty()) spdlog::get("chain")->error("{}", st.error().detail);
    return 2;
  }
  // Only now is a chain an earlier run pinned replaced: until here it keeps enforcing,
  // untouched. Our filters replace its filters in place first, then our pins replace its
  // pins, so no interface ever runs a chain whose pins are gone.
  Status attached = attach_matching(policy);
  if (auto st = dp_->pin(); !st) {
    log_main()->error("{}", st.error().message);
    return 2;
  }
  if (!attached) {
    log_main()->error("{}", attached.error().message);
    return 2;
  }
  dp_->release_on_exit();
  log_main()->info("ready: generation {} from {}", generation_, opts_.config_path);
  sd_notifyf(0, "READY=1\nSTATUS=enforcing generation %u", generation_);
  return 0;
}

void Daemon::reload() {
  sd_notify(0, "RELOADING=1");
  log_main()->info("reloading {}", opts_.config_path);
  try {
    auto policy = config::load_policy_file(opts_.config_path);
    if (auto st = apply(policy); !st)
      spdlog::get("chain")->error("reload refused, generation {} stays: {}\n{}", generation_, st.error().message,
                                  st.error().detail);
    else if (auto at = attach_matching(policy); !at)
      log_main()->error("{}", at.error().message);
    else
      log_main()->info("ready: generation {} from {}", generation_, opts_.config_path);
  } catch (const config::PolicyError& e) {
    spdlog::get("config")->error("reload refused, generation {} stays: {}", generation_, e.what());
  }
  sd_notifyf(0, "READY=1\nSTATUS=enforcing generation %u", generation_);
}

void Daemon::wait_signal() {
  signals_.async_wait([this](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    if (sig == SIGHUP) {
      reload();
      wait_signal();
      return;
    }
    log_main()->info("signal {}: stopping; the chain stays attached and pinned at {} "
                     "(policyd --detach removes it)",
                     sig, opts_.pin_dir);
    sd_notify(0, "STOPPING=1");
    io_.stop();
  });
}

void Daemon::run() {
  wait_signal();
  io_.run();
}

}  // namespace policyd

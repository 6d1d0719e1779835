#include "daemon/daemon.hpp"

#include <fnmatch.h>
#include <net/if.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>
#include <systemd/sd-daemon.h>

#include <cerrno>
#include <cstdlib>
#include <chrono>
#include <csignal>
#include <cstring>
#include <algorithm>
#include <ctime>
#include <filesystem>
#include <utility>
#include <map>

#include <boost/asio/post.hpp>


#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "chain/abi.hpp"
#include "chain/compile.hpp"
#include "chain/kernel/kernel_probe.hpp"
#include "chain/kernel/policy_store.hpp"
#include "chain/kernel/preflight.hpp"
#include "config/loader.hpp"

#ifndef POLICYD_VERSION_STRING
#define POLICYD_VERSION_STRING "0.0.0"
#endif

namespace policyd {

namespace {

std::shared_ptr<spdlog::logger> log_main() { return spdlog::get("main"); }


bool on_bpffs(const std::string& dir) {
  struct statfs st {};
  return statfs(dir.c_str(), &st) == 0 && st.f_type == 0xcafe4a11;
}

// The kernel has every BPF feature the programs need (kernel_probe.hpp): 0, or the exit
// code of a refusal, logged as one message that names what is missing.
int check_kernel() {
  chain::LiveKernel kernel;
  auto report = chain::probe_kernel(kernel);
  if (!report) {
    log_main()->error("{}", report.error().message);
    return 2;
  }
  for (const auto* row : report->undetermined())
    log_main()->warn("could not tell whether the kernel has {} (Linux {}): {}", row->feature->name,
                     chain::to_string(row->feature->since), row->result.how);
  if (auto st = chain::check_kernel(*report); !st) {
    log_main()->error("{}", st.error().message);
    return 2;
  }
  log_main()->info("Linux {}: the {} BPF features policyd needs are present", report->release, report->rows.size());
  return 0;
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

Daemon::Daemon(DaemonOptions opts)
    : opts_(std::move(opts)),
      signals_(io_, SIGINT, SIGTERM, SIGHUP),
      watchdog_(io_),
      maintenance_(io_),
      ctl_(io_, opts_.socket_path, commands_) {}

bool Daemon::wanted(const std::string& ifname) const {
  for (const auto& glob : chain_->policy().interfaces)
    if (fnmatch(glob.c_str(), ifname.c_str(), 0) == 0) return true;
  return false;
}

// Every interface against the policy's globs: matching ones get the chain (again: a filter
// already there is replaced in place, so programs a new build loaded take over), ones that
// no longer match (the policy changed) lose it, and ones that are gone are forgotten.
Status Daemon::attach_matching(const config::Policy& policy) {
  std::vector<std::pair<std::string, int>> links;
  if (struct if_nameindex* ifs = ::if_nameindex()) {
    for (auto* i = ifs; i->if_index; ++i) links.emplace_back(i->if_name, static_cast<int>(i->if_index));
    if_freenameindex(ifs);
  }
  auto matches = [&](const std::string& name) {
    for (const auto& glob : policy.interfaces)
      if (fnmatch(glob.c_str(), name.c_str(), 0) == 0) return true;
    return false;
  };
  std::vector<chain::Attachment> had = dp_->attachments();
  for (const auto& a : had) {
    bool exists = std::any_of(links.begin(), links.end(), [&](const auto& l) { return l.second == a.ifindex; });
    if (!exists) {
      dp_->forget(a.ifindex);
      log_main()->info("{} (ifindex {}) is gone; forgotten", a.ifname, a.ifindex);
    } else if (!matches(a.ifname)) {
      if (auto st = dp_->detach(a.ifname); !st) return st;
      log_main()->info("detached from {}: it matches no interfaces glob now", a.ifname);
    }
  }
  size_t attached = 0;
  for (const auto& [name, ifindex] : links) {
    if (!matches(name)) continue;
    if (auto st = dp_->attach(name); !st) return st;
    // (a copy: clang 14 cannot capture a structured binding)
    bool was = std::any_of(had.begin(), had.end(), [index = ifindex](const auto& a) { return a.ifindex == index; });
    if (!was) log_main()->info("attached to {} (ingress and egress)", name);
    ++attached;
  }
  if (attached == 0)
    log_main()->warn("no interface matches {}; nothing is enforced until one appears",
                     fmt::join(policy.interfaces, ", "));
  return Ok{};
}

// One notification: re-read the interface (its name now, our filter on it) and make it
// right. Never trusts the message beyond the index, so our own changes echoed back,
// duplicates and reordering are no-ops.
void Daemon::on_link_event(const LinkEvent& ev) {
  if (ev.kind == LinkEvent::Kind::Overrun) {
    log_main()->warn("rtnetlink: notifications were lost (socket buffer full); checking every interface");
    if (auto st = attach_matching(chain_->policy()); !st) log_main()->error("{}", st.error().message);
    return;
  }
  char buf[IF_NAMESIZE] = {};
  bool exists = if_indextoname(static_cast<unsigned>(ev.ifindex), buf) != nullptr;
  std::string name = buf;
  const auto& att = dp_->attachments();
  auto tracked = std::find_if(att.begin(), att.end(), [&](const auto& a) { return a.ifindex == ev.ifindex; });
  bool was_tracked = tracked != att.end();
  if (!exists) {
    if (was_tracked) {
      log_main()->info("{} (ifindex {}) is gone; forgotten", tracked->ifname, ev.ifindex);
      dp_->forget(ev.ifindex);
      ++links_.forgotten;
    }
    return;
  }
  if (was_tracked && tracked->ifname != name) {
    log_main()->info("{} was renamed {}", tracked->ifname, name);
    dp_->renamed(ev.ifindex, name);
  }
  if (!wanted(name)) {
    if (was_tracked) {
      if (auto st = dp_->detach(name); !st) log_main()->error("{}", st.error().message);
      log_main()->info("detached from {}: it matches no interfaces glob ({})", name, fmt::join(chain_->policy().interfaces, ", "));
    }
    return;
  }
  if (dp_->filter_present(ev.ifindex)) return;
  if (auto st = dp_->attach(name); !st) {
    log_main()->error("{} ({}): {}", name, link_event_name(ev.kind), st.error().message);
    return;
  }
  auto us = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - ev.received).count();
  links_.last_reaction_us = us;
  links_.max_reaction_us = std::max(links_.max_reaction_us, us);
  if (was_tracked) {
    ++links_.reattached;
    log_main()->warn("policyd's filter on {} was removed ({}, not by policyd); re-attached in {} us", name,
                     link_event_name(ev.kind), us);
  } else {
    ++links_.attached;
    log_main()->info("{} appeared and matches {}; attached in {} us", name, fmt::join(chain_->policy().interfaces, ", "), us);
  }
}

Result<ApplyReport> Daemon::apply(const config::Policy& policy, bool dry_run) {
  const auto started = std::chrono::steady_clock::now();
  chain::ApplyStop stopped = chain::ApplyStop::None;
  auto report = chain_->apply(policy, dry_run, &stopped);
  if (dry_run) return report;
  // counted however it ended: invalid until the policy compiled, refused from there until the flip
  count_apply(stopped == chain::ApplyStop::Invalid   ? metrics::ApplyResult::invalid
              : stopped == chain::ApplyStop::Refused ? metrics::ApplyResult::refused
                                                     : metrics::ApplyResult::ok,
              started);
  if (!report) return report;
  for (const auto& w : report->warnings) spdlog::get("config")->warn("{}", w);
  // the services follow the active generation (a new key set counts even when the tables do not change)
  if (jwt_) jwt_->set_active(chain_->policy(), chain_->tables(), chain_->take_keys());
  if (events_) events_->set_active(chain_->policy(), chain_->tables(), chain_->generation());
  watch_objects();
  if (report->unchanged) {
    spdlog::get("chain")->info("policy unchanged: generation {} stays", chain_->generation());
    return report;
  }
  applied_at_ = static_cast<int64_t>(std::time(nullptr));
  const auto& t = chain_->tables();
  spdlog::get("chain")->info("generation {} active ({} listeners, {} host patterns, {} routes; preflight {} probes; "
                             "{} us)",
                             chain_->generation(), t.listeners.size(), t.hosts.size(), t.rules.size(),
                             report->preflight_probes, report->duration_us);
  for (const auto& c : report->plan.changes) spdlog::get("chain")->info("  {}: {}", c.stage, c.what);
  return report;
}

void Daemon::watch_objects() {
  if (!watch_) return;  // not serving yet: start() watches once the first apply is done
  std::map<std::string, std::unique_ptr<ConfigWatch>> next;
  for (const auto& spec : chain_->policy().stages) {
    if (next.count(spec.object)) continue;
    if (auto it = object_watches_.find(spec.object); it != object_watches_.end()) {
      next.emplace(spec.object, std::move(it->second));
      continue;
    }
    auto w = std::make_unique<ConfigWatch>(
        io_, spec.object,
        [this, path = spec.object] {
          log_main()->info("{} changed: applying the running policy with it", path);
          const auto policy = chain_->policy();
          if (auto r = apply(policy); !r) {
            spdlog::get("chain")->error("stage object {} refused, generation {} stays: {}", path, chain_->generation(),
                                        r.error().message);
            if (!r.error().detail.empty()) spdlog::get("chain")->error("{}", r.error().detail);
          }
        },
        [path = spec.object] { log_main()->warn("{} was deleted or moved away; the stage keeps its program", path); });
    if (auto st = w->start(); !st) {
      log_main()->warn("not watching {}: {}", spec.object, st.error().message);
      continue;
    }
    next.emplace(spec.object, std::move(w));
  }
  object_watches_ = std::move(next);
}

int Daemon::start() {
  // The kernel first: before anything is loaded, attached, pinned or mounted.
  if (int rc = check_kernel(); rc != 0) return rc;
  // a malformed address is a mistake on the command line: refused before anything is loaded
  auto metrics_at = MetricsServer::parse_address(opts_.metrics);
  if (!metrics_at) {
    log_main()->error("{}", metrics_at.error().message);
    return 1;
  }
  // The policy file; if it is invalid and an earlier run left a chain pinned, that chain keeps
  // enforcing the policy saved with it, and this daemon takes it over: the file is watched,
  // and `policyctl apply` or a fixed file replaces it.
  config::Policy policy;
  std::string policy_text;
  std::string source = opts_.config_path;
  try {
    policy_text = config::read_policy_text(opts_.config_path);
    policy = config::load_policy_string(policy_text, opts_.config_path);
  } catch (const config::PolicyError& e) {
    spdlog::get("config")->error("{}", e.what());
    if (!ensure_bpffs(opts_.pin_dir)) return 1;
    auto saved = chain::read_saved_policy(opts_.pin_dir);
    if (!saved) return 1;  // nothing pinned to keep: the invalid file is the whole story
    try {
      policy = config::load_policy_string(saved->text, saved->source);
    } catch (const config::PolicyError& e2) {
      log_main()->error("the policy saved with the chain pinned at {} does not load either: {}", opts_.pin_dir,
                        e2.what());
      return 1;
    }
    policy_text = std::move(saved->text);
    source = std::move(saved->source);
    log_main()->warn("the chain pinned at {} keeps enforcing the policy it was applied from ({}); fix {} "
                     "(it is watched) or apply a policy with policyctl",
                     opts_.pin_dir, source, opts_.config_path);
    start_error_ = e.what();
  }
  if (auto st = ensure_bpffs(opts_.pin_dir); !st) {
    log_main()->error("{}", st.error().message);
    return 2;
  }
  chain::Chain::Options o;
  o.dataplane.pin_dir = opts_.pin_dir;
  o.dataplane.max_flows = policy.limits.max_flows;
  o.faults = opts_.faults;
  auto opened = chain::Chain::open(o);
  if (!opened) {
    log_main()->error("{}", opened.error().message);
    if (!opened.error().detail.empty()) spdlog::get("bpf")->error("verifier log (end):\n{}", opened.error().detail);
    return 2;
  }
  chain_ = std::move(*opened);
  dp_ = &chain_->dataplane();
  flow_counter_ = std::make_unique<FlowCounter>(*dp_, std::chrono::seconds(2));
  if (opts_.bpf_stats) {
    if (auto fd = chain::Dataplane::enable_run_stats()) {
      run_stats_fd_ = *fd;
      log_main()->info("BPF run-time statistics on (--bpf-stats): every BPF program on this host is timed");
    } else {
      log_main()->warn("{}; stats and metrics go without them", fd.error().message);
    }
  }
  jwt_ = std::make_unique<JwtService>(io_, *dp_);
  {
    EventService::Options eo;
    eo.log_level = spdlog::level::from_str(opts_.event_log_level);
    events_ = std::make_unique<EventService>(io_, *dp_, eo);
    // one second's worth at once: a burst of refusals is seen whole up to the rate
    if (auto st = dp_->set_event_budget(opts_.event_rate, opts_.event_rate); !st) {
      log_main()->error("{}", st.error().message);
      return 2;
    }
  }
  switch (dp_->origin()) {
    case chain::Dataplane::Origin::Adopted:
      log_main()->info("adopted the chain pinned at {} (generation {}; programs, flows and verdicts kept)",
                       opts_.pin_dir, chain_->generation());
      break;
    case chain::Dataplane::Origin::FlowsKept:
      log_main()->info("the chain pinned at {} is from another build: new programs, its flow table kept",
                       opts_.pin_dir);
      break;
    case chain::Dataplane::Origin::Migrated:
      log_main()->info("the chain pinned at {} has another map layout: new programs and tables, {} connections "
                       "carried over from its flow table{}{}",
                       opts_.pin_dir, dp_->migrated_flows(), dp_->migration_note().empty() ? "" : "; ",
                       dp_->migration_note());
      break;
    case chain::Dataplane::Origin::Fresh:
      break;
  }
  if (auto st = apply(policy); !st) {
    spdlog::get("chain")->error("{}", st.error().message);
    if (!st.error().detail.empty()) spdlog::get("chain")->error("{}", st.error().detail);
    return 2;
  }
  policy_source_ = source;
  // Links that appear from here on are seen: the socket queues notifications until the io
  // loop runs, so nothing falls between the walk over interfaces below and the first read.
  link_watch_ = std::make_unique<LinkWatch>(io_, [this](const LinkEvent& ev) { on_link_event(ev); });
  if (auto st = link_watch_->start(); !st) {
    log_main()->error("{}", st.error().message);
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
  save_applied(source, policy_text);
  dp_->release_on_exit();
  if (auto st = jwt_->start(); !st) {
    log_main()->error("{}", st.error().message);
    return 2;
  }
  if (auto st = events_->start(); !st) {
    log_main()->error("{}", st.error().message);
    return 2;
  }
  // reload when the policy file changes (written, replaced by rename, deleted and re-created)
  watch_ = std::make_unique<ConfigWatch>(
      io_, opts_.config_path,
      [this] {
        log_main()->info("{} changed", opts_.config_path);
        (void)reload();
      },
      [this] {
        log_main()->warn("{} was deleted or moved away; generation {} keeps enforcing", opts_.config_path,
                         chain_->generation());
      });
  if (auto st = watch_->start(); !st) log_main()->warn("not reloading on file changes: {}", st.error().message);
  watch_objects();
  register_commands();
  if (auto st = ctl_.start(); !st) {
    log_main()->error("control socket: {}", st.error().message);
    return 2;
  }
  // Metrics are for watching the dataplane, not a reason to stop enforcing: an address that
  // cannot be bound (in use, not configured yet) is logged and tried again until it works.
  if (*metrics_at) {
    metrics_ = std::make_unique<MetricsServer>(io_, **metrics_at, [this] { return metrics::exposition(snapshot()); });
    if (auto st = metrics_->start_or_retry(); !st)
      log_main()->error("{}; enforcing without metrics, trying again every {} s", st.error().message,
                        std::chrono::duration_cast<std::chrono::seconds>(metrics_->limits().retry_bind).count());
  } else {
    log_main()->info("metrics off (--metrics {})", opts_.metrics.empty() ? "''" : opts_.metrics);
  }
  log_main()->info("ready: generation {} from {}", chain_->generation(), policy_source_);
  if (start_error_.empty())
    sd_notifyf(0, "READY=1\nSTATUS=enforcing generation %u", chain_->generation());
  else
    sd_notifyf(0, "READY=1\nSTATUS=enforcing generation %u from the pinned chain; %s is invalid", chain_->generation(),
               opts_.config_path.c_str());
  return 0;
}

void Daemon::save_applied(const std::string& source, const std::string& text) {
  if (opts_.pin_dir.empty()) return;
  if (auto st = chain::save_policy(opts_.pin_dir, source, text); !st)
    log_main()->warn("{}; a restart with an invalid policy file will not be able to keep this chain", st.error().message);
}

control::Response Daemon::reload() {
  const auto started = std::chrono::steady_clock::now();
  sd_notify(0, "RELOADING=1");
  log_main()->info("reloading {}", opts_.config_path);
  control::Response r;
  try {
    auto text = config::read_policy_text(opts_.config_path);
    auto policy = config::load_policy_string(text, opts_.config_path);
    auto report = apply(policy);
    if (!report) {
      spdlog::get("chain")->error("reload refused, generation {} stays: {}\n{}", chain_->generation(), report.error().message,
                                  report.error().detail);
      r = control::error_response(report.error());
    } else if (auto at = attach_matching(policy); !at) {
      log_main()->error("{}", at.error().message);
      r = control::error_response(at.error());
    } else {
      policy_source_ = opts_.config_path;
      start_error_.clear();
      save_applied(opts_.config_path, text);
      log_main()->info("ready: generation {} from {}", chain_->generation(), opts_.config_path);
      r.text = fmt::format("generation {}", chain_->generation());
      nlohmann::json changed = nlohmann::json::array();
      for (const auto& c : report->plan.changes) changed.push_back({{"stage", c.stage}, {"what", c.what}});
      r.arguments = {{"generation", report->generation},
                     {"changed", changed},
                     {"unchanged", report->plan.unchanged},
                     {"duration_us", report->duration_us},
                     {"dry_run", false}};
    }
  } catch (const config::PolicyError& e) {
    count_apply(metrics::ApplyResult::invalid, started);
    spdlog::get("config")->error("reload refused, generation {} stays: {}", chain_->generation(), e.what());
    r = control::Response{1, e.what(), nlohmann::json::object()};
  }
  sd_notifyf(0, "READY=1\nSTATUS=enforcing generation %u", chain_->generation());
  return r;
}

void Daemon::wait_signal() {
  signals_.async_wait([this](const boost::system::error_code& ec, int sig) {
    if (ec) return;
    if (sig == SIGHUP) {
      (void)reload();
      wait_signal();
      return;
    }
    log_main()->info("signal {}: stopping; the chain stays attached and pinned at {} "
                     "(policyd --detach removes it)",
                     sig, opts_.pin_dir);
    stop();
  });
}

// Shutdown by cancellation: with every source closed, io_.run() returns by itself.
void Daemon::stop() {
  sd_notify(0, "STOPPING=1");
  ctl_.stop();
  watchdog_.cancel();
  maintenance_.cancel();
  if (watch_) watch_->stop();
  if (link_watch_) link_watch_->stop();
  if (metrics_) metrics_->stop();
  if (jwt_) jwt_->stop();
  if (events_) events_->stop();
  boost::system::error_code ec;
  signals_.cancel(ec);
  if (run_stats_fd_ >= 0) ::close(std::exchange(run_stats_fd_, -1));
}

void Daemon::register_commands() {
  commands_["status"] = [this](const nlohmann::json& a) { return cmd_status(a); };
  commands_["stats"] = [this](const nlohmann::json& a) { return cmd_stats(a); };
  commands_["apply"] = [this](const nlohmann::json& a) { return cmd_apply(a); };
  commands_["reload"] = [this](const nlohmann::json&) { return reload(); };
  commands_["detach"] = [this](const nlohmann::json& a) { return cmd_detach(a); };
  ctl_.add_stream("events", [this](const nlohmann::json& a, const std::shared_ptr<control::ControlServer::Session>& s) {
    return events_->command(a, s);
  });
}

control::Response Daemon::cmd_status(const nlohmann::json&) {
  control::Response r;
  nlohmann::json ifs = nlohmann::json::array();
  for (const auto& a : dp_->attachments()) ifs.push_back({{"name", a.ifname}, {"ifindex", a.ifindex}});
  nlohmann::json stages = nlohmann::json::array();
  // each stage's program as the active generation runs it (a stage swapped in from an object
  // file shows that program), then the operator's own stages
  const auto& t = chain_->tables();
  auto running = [&](uint32_t s) {
    const uint32_t id = dp_->active_prog_id(s);
    return id ? id : dp_->prog_id(s);
  };
  for (const auto& stage : chain::stages()) {
    const uint32_t s = stage->id();
    bool in_chain = s == PD_STAGE_ENTRY || s == PD_STAGE_HTTP || s == PD_STAGE_VERDICT ||
                    std::find(t.stages.begin(), t.stages.end(), s) != t.stages.end();
    nlohmann::json row = {{"name", stage->name()}, {"prog_id", running(s)}, {"in_chain", in_chain}};
    if (const auto* src = t.program(s)) row["object"] = src->path;
    stages.push_back(std::move(row));
  }
  for (const auto& src : t.programs)
    if (src.own)
      stages.push_back({{"name", src.name}, {"prog_id", running(src.stage)}, {"in_chain", true}, {"object", src.path}});
  r.arguments = {{"version", POLICYD_VERSION_STRING},
                 {"generation", chain_->generation()},
                 {"policy_source", policy_source_},
                 {"pin_dir", opts_.pin_dir},
                 {"since", applied_at_},
                 {"interfaces", ifs},
                 {"links", {{"interfaces", chain_->policy().interfaces},
                            {"attached_later", links_.attached},
                            {"reattached", links_.reattached},
                            {"forgotten", links_.forgotten},
                            {"last_reaction_us", links_.last_reaction_us},
                            {"max_reaction_us", links_.max_reaction_us}}},
                 {"stages", stages},
                 // at TC egress: records the server's ACK, window and sent sequence per flow
                 {"egress", {{"prog_id", dp_->egress_prog_id()}}}};
  // started with an invalid policy file, enforcing the policy saved with the pinned chain
  if (!start_error_.empty()) r.arguments["policy_file_error"] = start_error_;
  r.text = fmt::format("generation {}", chain_->generation());
  return r;
}

metrics::Snapshot Daemon::snapshot() const {
  metrics::Snapshot s;
  s.version = POLICYD_VERSION_STRING;
  std::vector<uint32_t> rules;
  for (const auto& ri : chain_->tables().rules) rules.push_back(ri.rule);
  const auto c = dp_->read_counters(dp_->active_gen(), rules, chain_->tables().limits.size());
  auto at = [&](unsigned i) -> uint64_t { return i < c.values.size() ? c.values[i] : 0; };
  s.counters = {.packets = at(PD_C_PACKETS),
                .fast_path = at(PD_C_FAST_PATH),
                .head_partial = at(PD_C_HEAD_PARTIAL),
                .requests = at(PD_C_REQUESTS),
                .flows_new = at(PD_C_FLOWS_NEW),
                .fail_open = at(PD_C_FAIL_OPEN),
                .truncated = at(PD_C_TRUNCATED),
                .generation_mismatch = at(PD_C_GEN_MISMATCH),
                .quic_denied = at(PD_C_QUIC_DENIED),
                .upgraded = at(PD_C_UPGRADED),
                .syn_new = at(PD_C_SYN_NEW),
                .syn_refused = at(PD_C_SYN_REFUSED),
                .egress_client_side = at(PD_C_EGRESS_CLIENT_SIDE)};
  for (unsigned g = 0; g < PD_IG_MAX; ++g)
    if (abi::ignored_name(g) != "unknown") s.ignored.emplace_back(abi::ignored_name(g), at(PD_C_IGNORED_BASE + g));
  for (unsigned a = PD_ACT_ALLOW; a <= PD_ACT_HOLD; ++a)
    s.verdicts.emplace_back(abi::action_name(a), at(PD_C_VERDICT_BASE + a));
  for (const auto& stage : chain::stages())  // the entry program's runs are `packets`
    if (stage->id() != PD_STAGE_ENTRY) s.stages.emplace_back(stage->name(), at(PD_C_STAGE_BASE + stage->id()));
  for (const auto& src : chain_->tables().programs)  // operators' own stages
    if (src.own) s.stages.emplace_back(src.name, at(PD_C_STAGE_BASE + src.stage));
  for (unsigned r = 1; r < PD_R_MAX; ++r)
    if (abi::reason_name(r) != "unknown") s.fail_mode.emplace_back(abi::reason_name(r), at(PD_C_REASON_BASE + r));
  for (const auto& ri : chain_->tables().rules) {
    auto hit = c.rule_hits.find(ri.rule);
    s.rules.push_back({ri.rule, ri.host_pattern, ri.path, ri.action, hit == c.rule_hits.end() ? 0 : hit->second});
  }
  s.ratelimit.allowed = at(PD_C_RL_ALLOWED);
  s.ratelimit.limited = at(PD_C_RL_LIMITED);
  s.ratelimit.shared_bucket = at(PD_C_RL_SHARED);
  size_t i = 0;  // limits are compiled in the policy's (map) order
  for (const auto& [name, rl] : chain_->policy().ratelimits) {
    auto [allowed, limited] = i < c.limit_hits.size() ? c.limit_hits[i] : std::pair<uint64_t, uint64_t>{};
    s.ratelimit.limits.push_back({name, allowed, limited});
    ++i;
  }
  for (unsigned j = PD_J_OK; j <= PD_J_UNVERIFIED; ++j)
    s.jwt.tokens.emplace_back(j == PD_J_OK ? "valid" : jwt::reason_name(static_cast<pd_jwt_reason>(j)),
                              at(PD_C_JWT_BASE + j));
  s.jwt.cache_hits = at(PD_C_JWT_CACHE_HIT);
  s.jwt.hmac_verified = at(PD_C_JWT_VERIFIED);
  s.jwt.sent_to_daemon = at(PD_C_JWT_PUNTED);
  s.jwt.send_failed = at(PD_C_JWT_PUNT_LOST);
  if (jwt_) {
    const auto js = jwt_->stats();
    s.jwt.daemon_received = js.received;
    s.jwt.daemon_dropped = js.dropped;
    s.jwt.daemon_queued = js.queued;
    s.jwt.daemon_valid = js.valid;
    s.jwt.daemon_invalid = js.invalid;
    s.jwt.daemon_stale = js.stale;
  }
  s.events = {.sent = at(PD_C_EV_SENT), .suppressed = at(PD_C_EV_SUPPRESSED), .lost = at(PD_C_EV_LOST)};
  if (events_) {
    s.events.received = events_->stats().received;
    s.events.follower_drops = events_->stats().follower_drops;
    s.events.followers = events_->followers();
  }
  // counted off the io loop, every few seconds (daemon/flow_counter.hpp)
  s.flows.max = dp_->flow_table_size();  // what the table was created with
  if (flow_counter_) {
    if (auto c = flow_counter_->latest()) {
      s.flows.entries = c->use.entries;
      s.flows.max = c->use.max;
    }
  }
  s.generation = chain_->generation();
  s.applied_at = applied_at_;
  s.applies = applies_;
  // what the chain is attached to, and what the policy names (attached or not)
  std::map<int, std::string> ifs;
  for (const auto& a : dp_->attachments()) ifs[a.ifindex] = a.ifname;
  if (struct if_nameindex* all = ::if_nameindex()) {
    for (auto* n = all; n->if_index; ++n)
      if (wanted(n->if_name)) ifs[static_cast<int>(n->if_index)] = n->if_name;
    if_freenameindex(all);
  }
  for (const auto& [ifindex, name] : ifs) s.interfaces.push_back({name, ifindex, dp_->filter_present(ifindex)});
  s.links = {links_.attached, links_.reattached, links_.forgotten};
  s.bpf_stats = run_stats_fd_ >= 0;
  if (s.bpf_stats) {
    auto r = dp_->run_stats(PD_STAGE_ENTRY);
    s.chain_runs = r.runs;
    s.chain_ns = r.ns;
  }
  return s;
}

void Daemon::count_apply(metrics::ApplyResult result, std::chrono::steady_clock::time_point started) {
  applies_.record(result, std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
}

control::Response Daemon::cmd_stats(const nlohmann::json&) {
  const auto s = snapshot();
  auto object = [](const metrics::Counts& counts) {
    nlohmann::json j = nlohmann::json::object();
    for (const auto& [name, n] : counts) j[name] = n;
    return j;
  };
  const auto& c = s.counters;
  nlohmann::json counters = {{"packets", c.packets},     {"fast_path", c.fast_path}, {"head_partial", c.head_partial},
                             {"requests", c.requests},   {"flows_new", c.flows_new}, {"fail_open", c.fail_open},
                             {"truncated", c.truncated}, {"generation_mismatch", c.generation_mismatch},
                             {"quic_denied", c.quic_denied}, {"upgraded", c.upgraded},
                             {"handshakes", c.syn_new}, {"handshakes_refused", c.syn_refused},
                             {"egress_client_side", c.egress_client_side}};
  nlohmann::json limits = nlohmann::json::object();
  for (const auto& l : s.ratelimit.limits) limits[l.name] = {{"allowed", l.allowed}, {"limited", l.limited}};
  nlohmann::json ratelimit = {{"allowed", s.ratelimit.allowed},
                              {"limited", s.ratelimit.limited},
                              {"shared_bucket", s.ratelimit.shared_bucket},
                              {"limits", limits}};
  const auto& j = s.jwt;
  nlohmann::json jwt = {{"tokens", object(j.tokens)},
                        {"cache_hits", j.cache_hits},
                        {"hmac_verified", j.hmac_verified},
                        {"sent_to_daemon", j.sent_to_daemon},
                        {"send_failed", j.send_failed},
                        {"daemon", {{"received", j.daemon_received}, {"valid", j.daemon_valid},
                                    {"invalid", j.daemon_invalid}, {"stale", j.daemon_stale},
                                    {"dropped", j.daemon_dropped}, {"queued", j.daemon_queued}}}};
  nlohmann::json rl = nlohmann::json::array();
  for (const auto& rule : s.rules)
    rl.push_back({{"rule", rule.rule}, {"host", rule.host}, {"path", rule.path}, {"action", rule.action},
                  {"hits", rule.hits}});
  nlohmann::json flows = {{"max", s.flows.max}};
  if (s.flows.entries) flows["entries"] = *s.flows.entries;
  nlohmann::json applies = {{"ok", s.applies.count(metrics::ApplyResult::ok)},
                            {"invalid", s.applies.count(metrics::ApplyResult::invalid)},
                            {"refused", s.applies.count(metrics::ApplyResult::refused)}};
  control::Response r;
  r.arguments = {{"counters", counters},
                 {"verdicts", object(s.verdicts)},
                 {"fail_mode", object(s.fail_mode)},
                 {"ignored", object(s.ignored)},
                 {"stages", object(s.stages)},
                 {"rules", rl},
                 {"flows", flows},
                 {"jwt", jwt},
                 {"ratelimit", ratelimit},
                 {"events", {{"sent", s.events.sent}, {"suppressed", s.events.suppressed}, {"lost", s.events.lost},
                             // the daemon's side: read from the ring buffer; not written to a
                             // `policyctl events --follow` that was not reading
                             {"received", s.events.received},
                             {"follower_drops", s.events.follower_drops},
                             {"followers", s.events.followers},
                             {"rate", opts_.event_rate}}},
                 {"applies", applies}};
  if (s.bpf_stats)  // --bpf-stats: the chain as the kernel timed it, all stages included
    r.arguments["chain_time"] = {{"runs", s.chain_runs},
                                 {"ns", s.chain_ns},
                                 {"ns_per_run", s.chain_runs ? s.chain_ns / s.chain_runs : 0}};
  return r;
}

control::Response Daemon::cmd_apply(const nlohmann::json& args) {
  const auto started = std::chrono::steady_clock::now();
  std::string text = args.value("policy", "");
  std::string source = args.value("source", "policy");
  bool dry_run = args.value("dry_run", false);
  config::Policy policy;
  try {
    policy = config::load_policy_string(text, source);
  } catch (const config::PolicyError& e) {
    if (!dry_run) count_apply(metrics::ApplyResult::invalid, started);
    return control::Response{1, e.what(), nlohmann::json::object()};
  }
  auto report = apply(policy, dry_run);
  if (!report) {
    spdlog::get("chain")->error("apply refused, generation {} stays: {}", chain_->generation(), report.error().message);
    return control::error_response(report.error());
  }
  if (!dry_run) {
    if (auto at = attach_matching(policy); !at) return control::error_response(at.error());
    policy_source_ = source;
    save_applied(source, text);
  }
  nlohmann::json changed = nlohmann::json::array();
  for (const auto& c : report->plan.changes) changed.push_back({{"stage", c.stage}, {"what", c.what}});
  control::Response r;
  r.arguments = {{"generation", report->generation},   {"dry_run", dry_run},
                 {"changed", changed},                 {"unchanged", report->plan.unchanged},
                 {"duration_us", report->duration_us}, {"warnings", report->warnings},
                 {"preflight_probes", report->preflight_probes}};
  r.text = dry_run ? "dry run" : fmt::format("generation {}", report->generation);
  return r;
}

control::Response Daemon::cmd_detach(const nlohmann::json&) {
  std::vector<std::string> names;
  for (const auto& a : dp_->attachments()) names.push_back(a.ifname);
  // first: the filters teardown deletes must not be taken for someone else's and re-attached
  if (link_watch_) link_watch_->stop();
  auto st = chain::Dataplane::teardown(opts_.pin_dir);
  if (!st) return control::error_response(st.error());
  log_main()->info("detached on request; stopping");
  control::Response r;
  r.arguments = {{"detached", names}, {"pin_dir", opts_.pin_dir}};
  // nothing left to serve: stop once this answer is written
  boost::asio::post(io_, [this] { stop(); });
  return r;
}

void Daemon::watchdog() {
  sd_notify(0, "WATCHDOG=1");
  watchdog_.expires_after(std::chrono::microseconds(watchdog_usec_ / 2));
  watchdog_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) watchdog();
  });
}

void Daemon::maintain() {
  // rate-limit buckets idle long enough to be full again are forgotten (changes nothing)
  maintenance_.expires_after(std::chrono::seconds(5));
  maintenance_.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    dp_->sweep_buckets(chain_->tables().limits);
    dp_->recount_partial_heads();
    maintain();
  });
}

void Daemon::run() {
  wait_signal();
  maintain();
  // systemd's WatchdogSec= (WATCHDOG_USEC): keep-alives from the io loop itself
  if (sd_watchdog_enabled(0, &watchdog_usec_) > 0 && watchdog_usec_ > 0) watchdog();
  io_.run();
}

}  // namespace policyd

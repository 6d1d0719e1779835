#include "chain/dataplane.hpp"

#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <net/if.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <atomic>
#include <cstdarg>
#include <cstring>
#include <random>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "entry.skel.h"
#include "host.skel.h"
#include "http.skel.h"
#include "path.skel.h"
#include "verdict.skel.h"

namespace policyd::chain {

namespace {

// libbpf's messages go to the "bpf" logger; while a load runs they are also collected so a
// verifier rejection can be handed back to the operator.
thread_local std::string* g_capture = nullptr;
thread_local bool g_quiet = false;  // probing interfaces: "no qdisc here" is the expected answer

int libbpf_print(enum libbpf_print_level level, const char* fmt, va_list args) {
  // a verifier log arrives as one message of up to megabytes: size it first
  va_list copy;
  va_copy(copy, args);
  int n = vsnprintf(nullptr, 0, fmt, copy);
  va_end(copy);
  if (n < 0) return 0;
  std::string buf(static_cast<size_t>(n) + 1, '\0');
  vsnprintf(buf.data(), buf.size(), fmt, args);
  buf.resize(static_cast<size_t>(n));
  std::string_view line(buf);
  if (g_capture) g_capture->append(line);
  if (g_quiet) return 0;
  auto logger = spdlog::get("bpf");
  if (!logger) return 0;
  while (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  switch (level) {
    case LIBBPF_WARN: logger->warn("{}", line); break;
    case LIBBPF_INFO: logger->debug("{}", line); break;
    default: logger->trace("{}", line); break;
  }
  return 0;
}

struct CaptureScope {
  explicit CaptureScope(std::string* s) { g_capture = s; }
  ~CaptureScope() { g_capture = nullptr; }
};

// The part of a verifier log an operator needs: the last lines before the rejection.
std::string verifier_excerpt(const std::string& log) {
  std::vector<std::string_view> lines;
  size_t start = 0;
  while (start < log.size()) {
    size_t end = log.find('\n', start);
    if (end == std::string::npos) end = log.size();
    std::string_view l(log.data() + start, end - start);
    if (!l.empty() && l.front() != ';') lines.push_back(l);
    start = end + 1;
  }
  size_t from = lines.size() > 25 ? lines.size() - 25 : 0;
  std::string out;
  for (size_t i = from; i < lines.size(); ++i) {
    out.append(lines[i]);
    out.push_back('\n');
  }
  return out;
}

std::string errstr(int err) { return std::strerror(err < 0 ? -err : err); }

Status reuse_shared_maps(bpf_object* stage, bpf_object* owner) {
  bpf_map* map;
  bpf_object__for_each_map(map, stage) {
    const char* name = bpf_map__name(map);
    if (std::strncmp(name, "pd_", 3) != 0) continue;  // the stage's own .rodata/.bss
    bpf_map* src = bpf_object__find_map_by_name(owner, name);
    if (!src) return make_error(fmt::format("shared map {} is missing from the entry object", name));
    int err = bpf_map__reuse_fd(map, bpf_map__fd(src));
    if (err) return make_error(fmt::format("reusing map {}: {}", name, errstr(err)));
  }
  return Ok{};
}

template <typename Skel>
Status load_stage(Skel*& skel, Skel* (*open)(), int (*load)(Skel*), bpf_object* (*obj)(Skel*),
                  bpf_object* owner, const char* name) {
  skel = open();
  if (!skel) return make_error(fmt::format("opening the {} stage: {}", name, errstr(errno)));
  if (auto st = reuse_shared_maps(obj(skel), owner); !st) return st;
  std::string log;
  CaptureScope cap(&log);
  int err = load(skel);
  if (err)
    return make_error(fmt::format("the kernel refused the {} stage: {}", name, errstr(err)),
                      verifier_excerpt(log));
  return Ok{};
}

bpf_object* http_obj(http_bpf* s) { return s->obj; }
bpf_object* host_obj(host_bpf* s) { return s->obj; }
bpf_object* path_obj(path_bpf* s) { return s->obj; }
bpf_object* verdict_obj(verdict_bpf* s) { return s->obj; }

bool is_bpffs(const std::string& dir) {
  struct statfs st {};
  return statfs(dir.c_str(), &st) == 0 && st.f_type == 0xcafe4a11;  // BPF_FS_MAGIC
}

template <typename Key, typename Pred>
Status delete_where(int fd, Pred pred) {
  std::vector<Key> doomed;
  Key key{}, next{};
  Key* cur = nullptr;
  while (bpf_map_get_next_key(fd, cur, &next) == 0) {
    if (pred(next)) doomed.push_back(next);
    key = next;
    cur = &key;
  }
  for (auto& k : doomed)
    if (bpf_map_delete_elem(fd, &k) != 0 && errno != ENOENT)
      return make_error(fmt::format("clearing a table: {}", errstr(errno)));
  return Ok{};
}

}  // namespace

void install_libbpf_logger() { libbpf_set_print(libbpf_print); }

Result<std::unique_ptr<Dataplane>> Dataplane::load(const Options& opts) {
  install_libbpf_logger();
  std::unique_ptr<Dataplane> dp(new Dataplane());
  dp->opts_ = opts;
  if (auto st = dp->open_and_load(opts); !st) return st.error();
  return dp;
}

Status Dataplane::open_and_load(const Options& opts) {
  entry_ = entry_bpf__open();
  if (!entry_) return make_error(fmt::format("opening the entry program: {}", errstr(errno)));
  bpf_map__set_max_entries(entry_->maps.pd_flows, opts.max_flows);
  bpf_map__set_max_entries(entry_->maps.pd_accum, opts.accum_entries);
  {
    std::string log;
    CaptureScope cap(&log);
    int err = entry_bpf__load(entry_);
    if (err)
      return make_error(fmt::format("the kernel refused the entry program: {}", errstr(err)),
                        verifier_excerpt(log));
  }
  bpf_object* owner = entry_->obj;
  if (auto st = load_stage(http_, http_bpf__open, http_bpf__load, http_obj, owner, "http"); !st) return st;
  if (auto st = load_stage(host_, host_bpf__open, host_bpf__load, host_obj, owner, "host"); !st) return st;
  if (auto st = load_stage(path_, path_bpf__open, path_bpf__load, path_obj, owner, "path"); !st) return st;
  if (auto st = load_stage(verdict_, verdict_bpf__open, verdict_bpf__load, verdict_obj, owner, "verdict"); !st)
    return st;
  std::random_device rd;
  seed_ = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  return Ok{};
}

Dataplane::~Dataplane() {
  if (!keep_) {
    for (auto it = attached_.rbegin(); it != attached_.rend(); ++it) {
      auto name = it->ifname;
      if (auto st = detach(name); !st) spdlog::get("chain") ? spdlog::get("chain")->warn("{}", st.error().message) : void();
    }
    if (pinned_) unpin_all();
  }
  if (verdict_) verdict_bpf__destroy(verdict_);
  if (path_) path_bpf__destroy(path_);
  if (host_) host_bpf__destroy(host_);
  if (http_) http_bpf__destroy(http_);
  if (entry_) entry_bpf__destroy(entry_);
}

Status Dataplane::pin() {
  const auto& dir = opts_.pin_dir;
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    return make_error(fmt::format("creating pin dir {}: {}", dir, errstr(errno)));
  if (!is_bpffs(dir))
    return make_error(fmt::format("pin dir {} is not on a bpf filesystem (mount one there: mount -t bpf bpf {})",
                                  dir, dir));
  bpf_map* map;
  bpf_object__for_each_map(map, entry_->obj) {
    std::string name = bpf_map__name(map);
    for (auto& c : name)
      if (c == '.') c = '_';
    std::string path = dir + "/" + name;
    unlink(path.c_str());
    if (bpf_obj_pin(bpf_map__fd(map), path.c_str()) != 0)
      return make_error(fmt::format("pinning {}: {}", path, errstr(errno)));
  }
  struct P {
    const char* name;
    int fd;
  } progs[] = {{"prog_entry", bpf_program__fd(entry_->progs.pd_entry)},
               {"prog_http", bpf_program__fd(http_->progs.pd_http)},
               {"prog_host", bpf_program__fd(host_->progs.pd_host)},
               {"prog_path", bpf_program__fd(path_->progs.pd_path)},
               {"prog_verdict", bpf_program__fd(verdict_->progs.pd_verdict)}};
  for (const auto& p : progs) {
    std::string path = dir + "/" + p.name;
    unlink(path.c_str());
    if (bpf_obj_pin(p.fd, path.c_str()) != 0)
      return make_error(fmt::format("pinning {}: {}", path, errstr(errno)));
  }
  pinned_ = true;
  return Ok{};
}

void Dataplane::unpin_all() {
  const auto& dir = opts_.pin_dir;
  DIR* d = opendir(dir.c_str());
  if (!d) return;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    unlink((dir + "/" + e->d_name).c_str());
  }
  closedir(d);
  rmdir(dir.c_str());
}

uint32_t Dataplane::active_gen() const { return entry_->bss->pd_active_gen & 1; }

int Dataplane::entry_prog_fd() const { return bpf_program__fd(entry_->progs.pd_entry); }

int Dataplane::prog_fd(uint32_t stage) const {
  switch (stage) {
    case PD_STAGE_ENTRY: return bpf_program__fd(entry_->progs.pd_entry);
    case PD_STAGE_HTTP: return bpf_program__fd(http_->progs.pd_http);
    case PD_STAGE_HOST: return bpf_program__fd(host_->progs.pd_host);
    case PD_STAGE_PATH: return bpf_program__fd(path_->progs.pd_path);
    case PD_STAGE_VERDICT: return bpf_program__fd(verdict_->progs.pd_verdict);
  }
  return -1;
}

int Dataplane::map_fd(const std::string& name) const {
  bpf_map* m = bpf_object__find_map_by_name(entry_->obj, name.c_str());
  return m ? bpf_map__fd(m) : -1;
}

Status Dataplane::commit(const Tables& t, uint32_t gen, uint32_t gen_tag) {
  gen &= 1;
  if (gen == active_gen() && entry_->bss->pd_cfg[gen].gen_tag != 0)
    return make_error("refusing to overwrite the active generation");
  int listeners = bpf_map__fd(entry_->maps.pd_listeners);
  int hosts = bpf_map__fd(entry_->maps.pd_hosts);
  int routes = bpf_map__fd(entry_->maps.pd_routes);
  int chain = bpf_map__fd(entry_->maps.pd_chain);
  int progs = bpf_map__fd(entry_->maps.pd_progs);

  // 1. empty the inactive half of every table
  if (auto st = delete_where<pd_listener_key>(listeners, [gen](const pd_listener_key& k) { return k.gen == gen; }); !st)
    return st;
  if (auto st = delete_where<pd_host_key>(hosts, [gen](const pd_host_key& k) { return k.gen == gen; }); !st)
    return st;
  if (auto st = delete_where<pd_route_key>(routes, [gen](const pd_route_key& k) { return k.gen == gen; }); !st)
    return st;

  // 2. fill it
  for (const auto& e : t.listeners) {
    pd_listener_key k = e.key;
    k.gen = gen;
    if (bpf_map_update_elem(listeners, &k, &e.val, BPF_ANY) != 0)
      return make_error(fmt::format("writing listener table: {}", errstr(errno)));
  }
  for (const auto& e : t.hosts) {
    pd_host_key k = e.key;
    k.gen = gen;
    if (bpf_map_update_elem(hosts, &k, &e.val, BPF_ANY) != 0)
      return make_error(fmt::format("writing host table: {}", errstr(errno)));
  }
  for (const auto& e : t.routes) {
    pd_route_key k = e.key;
    k.gen = gen;
    if (bpf_map_update_elem(routes, &k, &e.val, BPF_ANY) != 0)
      return make_error(fmt::format("writing route table: {}", errstr(errno)));
  }
  for (uint32_t s = 0; s < PD_STAGE_MAX; ++s) {
    uint32_t key = gen * PD_STAGE_MAX + s;
    uint32_t next = t.next[s];
    if (bpf_map_update_elem(chain, &key, &next, BPF_ANY) != 0)
      return make_error(fmt::format("writing chain map: {}", errstr(errno)));
    int fd = prog_fd(s);
    if (fd < 0) {
      bpf_map_delete_elem(progs, &key);
      continue;
    }
    if (bpf_map_update_elem(progs, &key, &fd, BPF_ANY) != 0)
      return make_error(fmt::format("writing program array slot {}: {}", key, errstr(errno)));
  }
  auto& cfg = entry_->bss->pd_cfg[gen];
  cfg.gen_tag = gen_tag;
  cfg.default_action = t.config.default_action;
  cfg.fail_open = t.config.fail_open;
  cfg.first_stage = t.config.first_stage;
  cfg.max_pipeline = t.config.max_pipeline;
  cfg.max_head_bytes = t.config.max_head_bytes;
  cfg.hash_seed = t.config.hash_seed;

  // 3. flip: one word, after everything above is visible
  std::atomic_thread_fence(std::memory_order_seq_cst);
  entry_->bss->pd_active_gen = gen;
  std::atomic_thread_fence(std::memory_order_seq_cst);
  return Ok{};
}

Status Dataplane::attach(const std::string& ifname) {
  int ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
  if (ifindex == 0) return make_error(fmt::format("interface {}: {}", ifname, errstr(errno)));
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
  int err = bpf_tc_hook_create(&hook);
  bool created = err == 0;
  if (err && err != -EEXIST)
    return make_error(fmt::format("creating clsact qdisc on {}: {}", ifname, errstr(err)));
  LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = entry_prog_fd(), .flags = BPF_TC_F_REPLACE,
              .handle = kTcHandle, .priority = kTcPriority);
  err = bpf_tc_attach(&hook, &opts);
  if (err) return make_error(fmt::format("attaching to {} ingress: {}", ifname, errstr(err)));
  for (auto& a : attached_)
    if (a.ifname == ifname) {
      a.ifindex = ifindex;
      return Ok{};
    }
  attached_.push_back(Attachment{ifname, ifindex, created});
  return Ok{};
}

Status Dataplane::detach(const std::string& ifname) {
  for (auto it = attached_.begin(); it != attached_.end(); ++it) {
    if (it->ifname != ifname) continue;
    LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = it->ifindex, .attach_point = BPF_TC_INGRESS);
    LIBBPF_OPTS(bpf_tc_opts, opts, .handle = kTcHandle, .priority = kTcPriority);
    int err = bpf_tc_detach(&hook, &opts);
    if (it->created_qdisc) {
      hook.attach_point = static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS);
      bpf_tc_hook_destroy(&hook);
    }
    attached_.erase(it);
    if (err && err != -ENOENT && err != -ENODEV)
      return make_error(fmt::format("detaching from {}: {}", ifname, errstr(err)));
    return Ok{};
  }
  return Ok{};
}

Status Dataplane::teardown(const std::string& pin_dir) {
  std::string prog_pin = pin_dir + "/prog_entry";
  int fd = bpf_obj_get(prog_pin.c_str());
  uint32_t prog_id = 0;
  if (fd >= 0) {
    bpf_prog_info info{};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0) prog_id = info.id;
    close(fd);
  }
  install_libbpf_logger();
  std::vector<std::string> detached;
  if (prog_id) {
    g_quiet = true;
    struct if_nameindex* ifs = ::if_nameindex();
    for (auto* i = ifs; i && i->if_index; ++i) {
      LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = static_cast<int>(i->if_index), .attach_point = BPF_TC_INGRESS);
      LIBBPF_OPTS(bpf_tc_opts, opts, .handle = kTcHandle, .priority = kTcPriority);
      if (bpf_tc_query(&hook, &opts) == 0 && opts.prog_id == prog_id) {
        LIBBPF_OPTS(bpf_tc_opts, del, .handle = kTcHandle, .priority = kTcPriority);
        if (bpf_tc_detach(&hook, &del) == 0) detached.push_back(i->if_name);
      }
    }
    if (ifs) if_freenameindex(ifs);
    g_quiet = false;
  }
  DIR* d = opendir(pin_dir.c_str());
  if (!d) {
    if (errno == ENOENT) return Ok{};
    return make_error(fmt::format("opening {}: {}", pin_dir, errstr(errno)));
  }
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    unlink((pin_dir + "/" + e->d_name).c_str());
  }
  closedir(d);
  rmdir(pin_dir.c_str());
  if (auto log = spdlog::get("chain"))
    log->info("detached from {} interface(s){}{}; unpinned {}", detached.size(), detached.empty() ? "" : ": ",
              fmt::join(detached, ", "), pin_dir);
  return Ok{};
}

Counters Dataplane::read_counters() const {
  Counters c;
  int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) return c;
  std::vector<uint64_t> vals(static_cast<size_t>(ncpu));
  int stats = bpf_map__fd(entry_->maps.pd_stats);
  c.values.assign(PD_C_MAX, 0);
  for (uint32_t i = 0; i < PD_C_MAX; ++i) {
    if (bpf_map_lookup_elem(stats, &i, vals.data()) != 0) continue;
    for (auto v : vals) c.values[i] += v;
  }
  return c;
}

}  // namespace policyd::chain

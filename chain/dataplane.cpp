#include "chain/dataplane.hpp"

#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <net/if.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/random.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <tuple>
#include <atomic>
#include <cstdarg>
#include <cstring>
#include <random>
#include <thread>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "chain/kernel_probe.hpp"
#include "egress.skel.h"
#include "entry.skel.h"
#include "host.skel.h"
#include "jwt.skel.h"
#include "ratelimit.skel.h"
#include "http.skel.h"
#include "path.skel.h"
#include "sni.skel.h"
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

// A load refused for want of privilege says which privilege (the verifier log does not:
// without CAP_PERFMON the verifier itself answers EACCES).
std::string refused_why(int err) {
  int e = err < 0 ? -err : err;
  if (e != EPERM && e != EACCES) return errstr(err);
  auto missing = missing_capabilities();
  if (missing.empty()) return errstr(err);
  return errstr(err) + " (this process lacks " + missing + "; policyd needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN)";
}

template <typename Skel>
uint64_t elf_hash(uint64_t h, const void* (*bytes)(size_t*)) {
  size_t n = 0;
  auto* p = static_cast<const unsigned char*>(bytes(&n));
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}

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
    return make_error(fmt::format("the kernel refused the {} stage: {}", name, refused_why(err)),
                      verifier_excerpt(log));
  return Ok{};
}

bpf_object* http_obj(http_bpf* s) { return s->obj; }
bpf_object* host_obj(host_bpf* s) { return s->obj; }
bpf_object* sni_obj(sni_bpf* s) { return s->obj; }
bpf_object* path_obj(path_bpf* s) { return s->obj; }
bpf_object* jwt_obj(jwt_bpf* s) { return s->obj; }
bpf_object* ratelimit_obj(ratelimit_bpf* s) { return s->obj; }
bpf_object* verdict_obj(verdict_bpf* s) { return s->obj; }
bpf_object* egress_obj(egress_bpf* s) { return s->obj; }

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

struct Dataplane::Bss : entry_bpf::entry_bpf__bss {};

uint64_t Dataplane::build_id() {
  static const uint64_t id = [] {
    uint64_t h = 0xcbf29ce484222325ULL;
    h = elf_hash<entry_bpf>(h, entry_bpf__elf_bytes);
    h = elf_hash<http_bpf>(h, http_bpf__elf_bytes);
    h = elf_hash<sni_bpf>(h, sni_bpf__elf_bytes);
    h = elf_hash<host_bpf>(h, host_bpf__elf_bytes);
    h = elf_hash<path_bpf>(h, path_bpf__elf_bytes);
    h = elf_hash<jwt_bpf>(h, jwt_bpf__elf_bytes);
    h = elf_hash<ratelimit_bpf>(h, ratelimit_bpf__elf_bytes);
    h = elf_hash<verdict_bpf>(h, verdict_bpf__elf_bytes);
    h = elf_hash<egress_bpf>(h, egress_bpf__elf_bytes);
    return h;
  }();
  return id;
}

uint64_t tables_digest(const Tables& t) {
  uint64_t h = 0xcbf29ce484222325ULL;
  auto mix = [&h](const void* p, size_t n) {
    auto* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 0x100000001b3ULL;
  };
  pd_config c = t.config;
  c.gen_tag = 0;
  mix(&c, sizeof(c));
  mix(t.next, sizeof(t.next));
  for (auto e : t.listeners) {
    e.key.gen = 0;
    mix(&e, sizeof(e));
  }
  for (auto e : t.hosts) {
    e.key.gen = 0;
    mix(&e, sizeof(e));
  }
  for (auto e : t.routes) {
    e.key.gen = 0;
    mix(&e, sizeof(e));
  }
  for (auto [idx, p] : t.jwt_providers) {
    idx %= PD_JWT_PROVIDERS;
    mix(&idx, sizeof(idx));
    mix(&p, sizeof(p));
  }
  for (auto e : t.jwt_claims) {
    e.key.gen = 0;
    mix(&e, sizeof(e));
  }
  for (const auto& l : t.limits) mix(&l, sizeof(l));
  return h;
}

namespace {

const char* stage_pin_name(uint32_t stage) {
  switch (stage) {
    case PD_STAGE_ENTRY: return "prog_entry";
    case PD_STAGE_HTTP: return "prog_http";
    case PD_STAGE_SNI: return "prog_sni";
    case PD_STAGE_HOST: return "prog_host";
    case PD_STAGE_PATH: return "prog_path";
    case PD_STAGE_JWT: return "prog_jwt";
    case PD_STAGE_RATELIMIT: return "prog_ratelimit";
    case PD_STAGE_VERDICT: return "prog_verdict";
  }
  return nullptr;
}

constexpr const char* kBssPin = "entry_bss";
constexpr const char* kSharedMaps[] = {"pd_progs",   "pd_chain",         "pd_gen_tags",   "pd_listeners", "pd_flows",
                                       "pd_syn",
                                       "pd_accum",   "pd_accum_src", "pd_hosts",         "pd_routes",     "pd_scratch",   "pd_stats",
                                       "pd_rule_hits", "pd_jwt_providers", "pd_jwt_claims", "pd_jwt_cache", "pd_runtime",
                                       "pd_events", "pd_rl_limits", "pd_rl_buckets", "pd_rl_counts", "pd_rl_hits",
                                       "pd_log",    "pd_log_budget"};
// What survives a change of build with the same ABI: connections and their counters.
constexpr const char* kKeptAcrossBuilds[] = {"pd_flows",      "pd_syn",       "pd_accum",    "pd_accum_src",
                                             "pd_stats",      "pd_rl_buckets", "pd_rl_counts"};

std::shared_ptr<spdlog::logger> chain_log() { return spdlog::get("chain"); }

int64_t ns_of(const timespec& t) { return static_cast<int64_t>(t.tv_sec) * 1000000000LL + t.tv_nsec; }

// CLOCK_MONOTONIC in ns: the clock of bpf_ktime_get_ns
uint64_t monotonic_ns() {
  timespec m{};
  clock_gettime(CLOCK_MONOTONIC, &m);
  return static_cast<uint64_t>(ns_of(m));
}

}  // namespace

Result<std::unique_ptr<Dataplane>> Dataplane::load(const Options& opts) {
  install_libbpf_logger();
  std::unique_ptr<Dataplane> dp(new Dataplane());
  dp->opts_ = opts;
  std::map<std::string, int> keep;
  if (opts.test_verifier_reject) {
    // r0 = *(u64 *)(r1 + 4096); exit: a read far outside the skb context, which the
    // verifier refuses whatever the caller's privileges
    const bpf_insn insns[] = {
        {BPF_LDX | BPF_MEM | BPF_DW, BPF_REG_0, BPF_REG_1, 4096, 0},
        {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
    };
    std::string log(64 * 1024, '\0');
    LIBBPF_OPTS(bpf_prog_load_opts, lo, .log_level = 1, .log_size = static_cast<uint32_t>(log.size()),
                .log_buf = log.data());
    int fd = bpf_prog_load(BPF_PROG_TYPE_SCHED_CLS, "pd_reject_test", "GPL", insns, 2, &lo);
    if (fd >= 0) {
      close(fd);
      return make_error("test switch: the verifier accepted a program it must reject");
    }
    log.resize(std::strlen(log.c_str()));
    return make_error(fmt::format("the kernel refused the test stage: {}", errstr(errno)), verifier_excerpt(log));
  }
  if (!opts.pin_dir.empty() && access((opts.pin_dir + "/prog_entry").c_str(), F_OK) == 0) {
    auto st = dp->adopt(opts.pin_dir);
    if (st && dp->origin_ == Origin::Adopted) {
      if (auto rt = dp->refresh_runtime(true); !rt) return rt.error();
      return dp;
    }
    if (!st && chain_log()) chain_log()->warn("cannot adopt the chain pinned at {}: {}", opts.pin_dir, st.error().message);
    if (st) keep = dp->maps_;  // FlowsKept: the maps adopt() opened for us to reuse
    dp->maps_.clear();
  }
  auto st = dp->load_fresh(opts, keep);
  for (auto& [name, fd] : keep) close(fd);
  if (!st) return st.error();
  if (!keep.empty()) dp->origin_ = Origin::FlowsKept;
  if (auto rt = dp->refresh_runtime(true); !rt) return rt.error();
  return dp;
}

Status Dataplane::refresh_runtime(bool new_token_key) {
  int fd = map_fd("pd_runtime");
  uint32_t zero = 0;
  pd_runtime rt{};
  if (bpf_map_lookup_elem(fd, &zero, &rt) != 0)
    return make_error(fmt::format("reading the runtime map: {}", errstr(errno)));
  if (new_token_key) {
    // the token cache's SipHash key: fresh per daemon start, so nothing cached by an
    // earlier process (or guessed from outside) can be matched
    if (getrandom(rt.token_key, sizeof(rt.token_key), 0) != sizeof(rt.token_key))
      return make_error(fmt::format("getrandom: {}", errstr(errno)));
  }
  // CLOCK_REALTIME - CLOCK_MONOTONIC (bpf_ktime_get_ns), from the tightest of three reads
  int64_t best_gap = INT64_MAX;
  for (int i = 0; i < 3; ++i) {
    timespec m1{}, r{}, m2{};
    clock_gettime(CLOCK_MONOTONIC, &m1);
    clock_gettime(CLOCK_REALTIME, &r);
    clock_gettime(CLOCK_MONOTONIC, &m2);
    int64_t gap = ns_of(m2) - ns_of(m1);
    if (gap < best_gap) {
      best_gap = gap;
      rt.wall_offset_ns = ns_of(r) - (ns_of(m1) + gap / 2);
      rt.updated_ns = static_cast<uint64_t>(ns_of(m2));
    }
  }
  if (bpf_map_update_elem(fd, &zero, &rt, BPF_ANY) != 0)
    return make_error(fmt::format("writing the runtime map: {}", errstr(errno)));
  return Ok{};
}

size_t Dataplane::sweep_buckets(const std::vector<pd_rl_limit>& limits) {
  int fd = map_fd("pd_rl_buckets");
  std::map<uint64_t, uint64_t> fill;  // limit id -> fill_ns
  for (const auto& l : limits)
    if (l.cost) fill[l.id] = l.fill_ns;
  const uint64_t now = monotonic_ns();
  std::vector<pd_rl_bucket_key> doomed;
  std::map<uint64_t, uint64_t> held;  // limit id -> its buckets that stay
  for (const auto& [id, f] : fill) held[id] = 0;
  pd_rl_bucket_key key{}, next{};
  pd_rl_bucket_key* cur = nullptr;
  while (bpf_map_get_next_key(fd, cur, &next) == 0) {
    key = next;
    cur = &key;
    pd_rl_bucket b{};
    if (bpf_map_lookup_elem(fd, &key, &b) != 0) continue;
    auto it = fill.find(key.id);
    if (it == fill.end()) {
      doomed.push_back(key);  // its limit is gone
      continue;
    }
    // idle long enough to be full again: forgetting it changes nothing (a new one starts full)
    if (key.kind == PD_RLK_SHARED) continue;
    if (now > b.last_ns && now - b.last_ns >= it->second)
      doomed.push_back(key);
    else
      ++held[key.id];
  }
  for (const auto& k : doomed) bpf_map_delete_elem(fd, &k);
  // each limit's count of buckets, as it is now (the stage only ever adds to it)
  int counts = map_fd("pd_rl_counts");
  std::vector<uint64_t> gone;
  uint64_t id = 0, next_id = 0;
  const uint64_t* at = nullptr;
  while (bpf_map_get_next_key(counts, at, &next_id) == 0) {
    id = next_id;
    at = &id;
    if (!held.count(id)) gone.push_back(id);
  }
  for (auto g : gone) bpf_map_delete_elem(counts, &g);
  for (const auto& [lid, n] : held) bpf_map_update_elem(counts, &lid, &n, BPF_EXIST);
  return doomed.size();
}

uint32_t Dataplane::partial_per_client() const {
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(map_fd("pd_accum"), &info, &len) != 0) return 0;
  return std::max<uint32_t>(info.max_entries / 16, 16);
}

size_t Dataplane::recount_partial_heads() {
  int accum = map_fd("pd_accum"), flows = map_fd("pd_flows"), src = map_fd("pd_accum_src");
  // every entry of pd_accum whose flow is still accumulating is a partial head; the rest hold
  // judged heads (or belong to flows gone since)
  std::map<std::tuple<uint32_t, uint32_t, uint32_t>, uint64_t> held;
  pd_flow_key key{}, next{};
  pd_flow_key* cur = nullptr;
  size_t partial = 0;
  while (bpf_map_get_next_key(accum, cur, &next) == 0) {
    key = next;
    cur = &key;
    pd_flow f{};
    if (bpf_map_lookup_elem(flows, &key, &f) != 0 || !f.accumulating) continue;
    ++held[{key.saddr[0], key.family == 6 ? key.saddr[1] : 0u, key.family}];
    ++partial;
  }
  // clients' counts as they are now: those holding none are forgotten
  std::vector<pd_src_key> gone;
  pd_src_key s{}, snext{};
  pd_src_key* scur = nullptr;
  while (bpf_map_get_next_key(src, scur, &snext) == 0) {
    s = snext;
    scur = &s;
    if (!held.count({s.addr[0], s.addr[1], s.family})) gone.push_back(s);
  }
  for (const auto& g : gone) bpf_map_delete_elem(src, &g);
  for (const auto& [k, n] : held) {
    pd_src_key sk{};
    sk.addr[0] = std::get<0>(k);
    sk.addr[1] = std::get<1>(k);
    sk.family = std::get<2>(k);
    bpf_map_update_elem(src, &sk, &n, BPF_ANY);
  }
  return partial;
}

Status Dataplane::set_event_budget(uint32_t per_second, uint32_t burst) {
  int fd = map_fd("pd_runtime");
  uint32_t zero = 0;
  pd_runtime rt{};
  if (bpf_map_lookup_elem(fd, &zero, &rt) != 0) return make_error(fmt::format("reading the runtime map: {}", errstr(errno)));
  rt.log_rate = per_second;
  rt.log_burst = burst;
  if (bpf_map_update_elem(fd, &zero, &rt, BPF_ANY) != 0)
    return make_error(fmt::format("writing the event budget into the runtime map: {}", errstr(errno)));
  return Ok{};
}

Status Dataplane::set_wall_clock_for_test(int64_t unix_seconds) {
  int fd = map_fd("pd_runtime");
  uint32_t zero = 0;
  pd_runtime rt{};
  if (bpf_map_lookup_elem(fd, &zero, &rt) != 0) return make_error(fmt::format("reading the runtime map: {}", errstr(errno)));
  rt.wall_offset_ns = unix_seconds * 1000000000LL - static_cast<int64_t>(monotonic_ns());
  if (bpf_map_update_elem(fd, &zero, &rt, BPF_ANY) != 0)
    return make_error(fmt::format("writing the runtime map: {}", errstr(errno)));
  return Ok{};
}

Status Dataplane::put_jwt_answer(const pd_jwt_cache_key& key, const pd_jwt_cache_val& val) {
  if (bpf_map_update_elem(map_fd("pd_jwt_cache"), &key, &val, BPF_ANY) != 0)
    return make_error(fmt::format("writing the token cache: {}", errstr(errno)));
  return Ok{};
}

Status Dataplane::adopt(const std::string& dir) {
  int bfd = bpf_obj_get((dir + "/" + kBssPin).c_str());
  if (bfd < 0) return make_error(fmt::format("{}/{}: {}", dir, kBssPin, errstr(errno)));
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(bfd, &info, &len) != 0 || info.value_size < sizeof(Bss)) {
    close(bfd);
    return make_error("the pinned chain's state map has another layout");
  }
  void* mem = mmap(nullptr, info.value_size, PROT_READ | PROT_WRITE, MAP_SHARED, bfd, 0);
  if (mem == MAP_FAILED) {
    int e = errno;
    close(bfd);
    return make_error(fmt::format("mapping the pinned chain's state: {}", errstr(e)));
  }
  auto* bss = static_cast<Bss*>(mem);
  bool same_build = bss->pd_build_id == build_id();
  bool same_abi = bss->pd_abi_version == PD_ABI_VERSION;
  std::map<std::string, int> maps;
  auto close_all = [&] {
    for (auto& [n, fd] : maps) close(fd);
    maps.clear();
  };
  for (const char* name : kSharedMaps) {
    if (!same_build && std::find_if(std::begin(kKeptAcrossBuilds), std::end(kKeptAcrossBuilds),
                                    [&](const char* k) { return std::strcmp(k, name) == 0; }) ==
                           std::end(kKeptAcrossBuilds))
      continue;
    int fd = bpf_obj_get((dir + "/" + name).c_str());
    if (fd < 0) {
      close_all();
      munmap(mem, info.value_size);
      close(bfd);
      return make_error(fmt::format("{}/{}: {}", dir, name, errstr(errno)));
    }
    maps[name] = fd;
  }
  if (!same_build) {
    munmap(mem, info.value_size);
    close(bfd);
    if (!same_abi) {
      close_all();
      return make_error("the pinned chain is from a build with another map layout; it is replaced and its "
                        "connections meet the fail mode on their next request");
    }
    if (chain_log()) chain_log()->info("the pinned chain is from another build: loading ours, keeping its flow table");
    maps_ = std::move(maps);  // handed to load_fresh by load()
    origin_ = Origin::FlowsKept;
    return Ok{};
  }
  auto give_up = [&](const std::string& what) -> Status {
    int e = errno;
    for (uint32_t s : kLoadedStages)
      if (progs_[s] >= 0) close(progs_[s]), progs_[s] = -1;
    close_all();
    munmap(mem, info.value_size);
    close(bfd);
    return make_error(fmt::format("{}/{}: {}", dir, what, errstr(e)));
  };
  for (uint32_t stage : kLoadedStages) {
    int fd = bpf_obj_get((dir + "/" + stage_pin_name(stage)).c_str());
    if (fd < 0) return give_up(stage_pin_name(stage));
    progs_[stage] = fd;
  }
  preflight_fd_ = bpf_obj_get((dir + "/prog_preflight").c_str());
  if (preflight_fd_ < 0) return give_up("prog_preflight");
  egress_fd_ = bpf_obj_get((dir + "/prog_egress").c_str());
  if (egress_fd_ < 0) {
    close(preflight_fd_);
    preflight_fd_ = -1;
    return give_up("prog_egress");
  }
  maps_ = std::move(maps);
  own_fds_ = true;
  bss_ = bss;
  bss_len_ = info.value_size;
  own_bss_map_ = true;
  bss_fd_ = bfd;
  uint32_t active = bss->pd_active_gen & 1;
  seed_ = bss->pd_cfg[active].hash_seed;
  if (seed_ == 0) {
    std::random_device rd;
    seed_ = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  }
  origin_ = Origin::Adopted;
  pinned_ = true;
  return Ok{};
}

Status Dataplane::load_fresh(const Options& opts, const std::map<std::string, int>& keep_maps) {
  entry_ = entry_bpf__open();
  if (!entry_) return make_error(fmt::format("opening the entry program: {}", errstr(errno)));
  bpf_map__set_max_entries(entry_->maps.pd_flows, opts.max_flows);
  bpf_map__set_max_entries(entry_->maps.pd_accum, opts.accum_entries);
  bpf_map__set_max_entries(entry_->maps.pd_accum_src, opts.accum_entries);
  bpf_map__set_max_entries(entry_->maps.pd_syn, opts.max_flows);  // handshakes in progress
  bpf_map__set_max_entries(entry_->maps.pd_rl_buckets, opts.max_flows);
  for (const auto& [name, fd] : keep_maps) {
    bpf_map* m = bpf_object__find_map_by_name(entry_->obj, name.c_str());
    if (!m) continue;
    if (int err = bpf_map__reuse_fd(m, fd); err)
      return make_error(fmt::format("reusing the pinned {}: {}", name, errstr(err)));
  }
  {
    std::string log;
    CaptureScope cap(&log);
    int err = entry_bpf__load(entry_);
    if (err)
      return make_error(fmt::format("the kernel refused the entry program: {}", refused_why(err)),
                        verifier_excerpt(log));
  }
  bpf_object* owner = entry_->obj;
  if (auto st = load_stage(http_, http_bpf__open, http_bpf__load, http_obj, owner, "http"); !st) return st;
  if (auto st = load_stage(sni_, sni_bpf__open, sni_bpf__load, sni_obj, owner, "sni"); !st) return st;
  if (auto st = load_stage(host_, host_bpf__open, host_bpf__load, host_obj, owner, "host"); !st) return st;
  if (auto st = load_stage(path_, path_bpf__open, path_bpf__load, path_obj, owner, "path"); !st) return st;
  if (auto st = load_stage(jwt_, jwt_bpf__open, jwt_bpf__load, jwt_obj, owner, "jwt"); !st) return st;
  if (auto st = load_stage(ratelimit_, ratelimit_bpf__open, ratelimit_bpf__load, ratelimit_obj, owner, "ratelimit");
      !st)
    return st;
  if (auto st = load_stage(verdict_, verdict_bpf__open, verdict_bpf__load, verdict_obj, owner, "verdict"); !st)
    return st;
  // not a stage (it is attached at egress, not tail-called), but it shares entry's maps as they do
  if (auto st = load_stage(egress_, egress_bpf__open, egress_bpf__load, egress_obj, owner, "egress"); !st) return st;
  for (const char* name : kSharedMaps) {
    bpf_map* m = bpf_object__find_map_by_name(owner, name);
    if (!m) return make_error(fmt::format("map {} is missing from the entry object", name));
    maps_[name] = bpf_map__fd(m);
  }
  progs_[PD_STAGE_ENTRY] = bpf_program__fd(entry_->progs.pd_entry);
  preflight_fd_ = bpf_program__fd(entry_->progs.pd_preflight);
  egress_fd_ = bpf_program__fd(egress_->progs.pd_egress);
  progs_[PD_STAGE_HTTP] = bpf_program__fd(http_->progs.pd_http);
  progs_[PD_STAGE_SNI] = bpf_program__fd(sni_->progs.pd_sni);
  progs_[PD_STAGE_HOST] = bpf_program__fd(host_->progs.pd_host);
  progs_[PD_STAGE_PATH] = bpf_program__fd(path_->progs.pd_path);
  progs_[PD_STAGE_JWT] = bpf_program__fd(jwt_->progs.pd_jwt);
  progs_[PD_STAGE_RATELIMIT] = bpf_program__fd(ratelimit_->progs.pd_ratelimit);
  progs_[PD_STAGE_VERDICT] = bpf_program__fd(verdict_->progs.pd_verdict);
  bss_ = static_cast<Bss*>(entry_->bss);
  bss_->pd_build_id = build_id();
  bss_->pd_abi_version = PD_ABI_VERSION;
  std::random_device rd;
  seed_ = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  origin_ = Origin::Fresh;
  return Ok{};
}

Dataplane::~Dataplane() {
  if (!keep_) {
    while (!attached_.empty()) {
      auto name = attached_.back().ifname;
      if (auto st = detach(name); !st && chain_log()) chain_log()->warn("{}", st.error().message);
      if (!attached_.empty() && attached_.back().ifname == name) attached_.pop_back();
    }
    if (pinned_) unpin_all();
  }
  if (own_fds_) {
    for (auto& [n, fd] : maps_) close(fd);
    for (int& fd : progs_)
      if (fd >= 0) close(fd);
    if (preflight_fd_ >= 0) close(preflight_fd_);
    if (egress_fd_ >= 0) close(egress_fd_);
  }
  if (own_bss_map_) {
    munmap(bss_, bss_len_);
    close(bss_fd_);
  }
  if (egress_) egress_bpf__destroy(egress_);
  if (verdict_) verdict_bpf__destroy(verdict_);
  if (ratelimit_) ratelimit_bpf__destroy(ratelimit_);
  if (jwt_) jwt_bpf__destroy(jwt_);
  if (path_) path_bpf__destroy(path_);
  if (host_) host_bpf__destroy(host_);
  if (sni_) sni_bpf__destroy(sni_);
  if (http_) http_bpf__destroy(http_);
  if (entry_) entry_bpf__destroy(entry_);
}

Status Dataplane::pin() {
  const auto& dir = opts_.pin_dir;
  if (dir.empty()) return Ok{};
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    return make_error(fmt::format("creating pin dir {}: {}", dir, errstr(errno)));
  if (!is_bpffs(dir))
    return make_error(fmt::format("pin dir {} is not on a bpf filesystem (mount one there: mount -t bpf bpf {})",
                                  dir, dir));
  if (origin_ == Origin::Adopted) {
    pinned_ = true;
    return Ok{};  // these are the pinned objects
  }
  auto pin_fd = [&](int fd, const std::string& name) -> Status {
    std::string path = dir + "/" + name;
    unlink(path.c_str());
    if (bpf_obj_pin(fd, path.c_str()) != 0) return make_error(fmt::format("pinning {}: {}", path, errstr(errno)));
    return Ok{};
  };
  for (const auto& [name, fd] : maps_)
    if (auto st = pin_fd(fd, name); !st) return st;
  if (auto st = pin_fd(bpf_map__fd(entry_->maps.bss), kBssPin); !st) return st;
  for (uint32_t stage : kLoadedStages)
    if (auto st = pin_fd(progs_[stage], stage_pin_name(stage)); !st) return st;
  if (auto st = pin_fd(preflight_fd_, "prog_preflight"); !st) return st;
  if (auto st = pin_fd(egress_fd_, "prog_egress"); !st) return st;
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

uint32_t Dataplane::active_gen() const { return bss_->pd_active_gen & 1; }
uint32_t Dataplane::active_tag() const { return bss_->pd_cfg[active_gen()].gen_tag; }
uint64_t Dataplane::active_digest() const { return bss_->pd_tables_digest[active_gen()]; }

int Dataplane::prog_fd(uint32_t stage) const { return stage < PD_STAGE_MAX ? progs_[stage] : -1; }

uint32_t Dataplane::prog_id(uint32_t stage) const {
  int fd = prog_fd(stage);
  if (fd < 0) return 0;
  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  return bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.id : 0;
}

Dataplane::RunStats Dataplane::run_stats(uint32_t stage) const {
  int fd = prog_fd(stage);
  if (fd < 0) return {};
  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) return {};
  return {info.run_cnt, info.run_time_ns};
}

Result<int> Dataplane::enable_run_stats() {
  int fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
  if (fd < 0) return make_error(fmt::format("enabling BPF run-time statistics: {}", errstr(errno)));
  return fd;
}

int Dataplane::map_fd(const std::string& name) const {
  auto it = maps_.find(name);
  return it == maps_.end() ? -1 : it->second;
}

Status Dataplane::commit(const Tables& t, uint32_t gen, uint32_t gen_tag) {
  if (auto st = prepare(t, gen, gen_tag); !st) return st;
  flip(gen);
  return Ok{};
}

Status Dataplane::corrupt_for_test(uint32_t gen) {
  int fd = map_fd("pd_routes");
  pd_route_key key{}, next{};
  pd_route_key* cur = nullptr;
  while (bpf_map_get_next_key(fd, cur, &next) == 0) {
    key = next;
    cur = &key;
    if (key.gen != (gen & 1)) continue;
    pd_route_val val{};
    if (bpf_map_lookup_elem(fd, &key, &val) != 0 || val.nslots == 0) continue;
    val.slots[0].action = val.slots[0].action == PD_ACT_ALLOW ? PD_ACT_DENY : PD_ACT_ALLOW;
    if (bpf_map_update_elem(fd, &key, &val, BPF_EXIST) != 0)
      return make_error(fmt::format("corrupting a route: {}", errstr(errno)));
    return Ok{};
  }
  // no route: an sni rule's action instead
  fd = map_fd("pd_hosts");
  pd_host_key hkey{}, hnext{};
  pd_host_key* hcur = nullptr;
  while (bpf_map_get_next_key(fd, hcur, &hnext) == 0) {
    hkey = hnext;
    hcur = &hkey;
    if (hkey.gen != (gen & 1) || hkey.kind <= PD_SNI_KIND_OFFSET) continue;
    pd_host_val val{};
    if (bpf_map_lookup_elem(fd, &hkey, &val) != 0) continue;
    val.action = val.action == PD_ACT_ALLOW ? PD_ACT_DENY : PD_ACT_ALLOW;
    if (bpf_map_update_elem(fd, &hkey, &val, BPF_EXIST) != 0)
      return make_error(fmt::format("corrupting an sni rule: {}", errstr(errno)));
    return Ok{};
  }
  return make_error("no route or sni rule to corrupt in the prepared generation");
}

void Dataplane::set_preflight_gen(uint32_t gen) { bss_->pd_preflight_gen = gen & 1; }

void Dataplane::flip(uint32_t gen) {
  // one word, after everything prepared is visible
  std::atomic_thread_fence(std::memory_order_seq_cst);
  bss_->pd_active_gen = gen & 1;
  std::atomic_thread_fence(std::memory_order_seq_cst);
  last_flip_ = std::chrono::steady_clock::now();
}

Status Dataplane::prepare(const Tables& t, uint32_t gen, uint32_t gen_tag) {
  gen &= 1;
  if (gen == active_gen() && bss_->pd_cfg[gen].gen_tag != 0)
    return make_error("refusing to overwrite the active generation");
  // The half became inactive at the last flip; packets that entered it before that flip
  // finish within microseconds. Wait out a grace period far longer than that before
  // touching it, then mark it as being refilled (a straggler would see the new tag).
  auto ready = last_flip_ + kRefillGrace;
  if (auto now = std::chrono::steady_clock::now(); now < ready) std::this_thread::sleep_until(ready);
  {
    int tags = map_fd("pd_gen_tags");
    uint32_t key = gen;
    if (bpf_map_update_elem(tags, &key, &gen_tag, BPF_ANY) != 0)
      return make_error(fmt::format("writing generation tag: {}", errstr(errno)));
  }
  int listeners = map_fd("pd_listeners");
  int hosts = map_fd("pd_hosts");
  int routes = map_fd("pd_routes");
  int chain = map_fd("pd_chain");
  int progs = map_fd("pd_progs");

  // 1. empty the inactive half of every table
  if (auto st = delete_where<pd_listener_key>(listeners, [gen](const pd_listener_key& k) { return k.gen == gen; }); !st)
    return st;
  if (auto st = delete_where<pd_host_key>(hosts, [gen](const pd_host_key& k) { return k.gen == gen; }); !st)
    return st;
  if (auto st = delete_where<pd_route_key>(routes, [gen](const pd_route_key& k) { return k.gen == gen; }); !st)
    return st;

  // 1b. the half's hit counters start at zero: they count this generation's hits, and the
  // half last held the generation before the running one (whose counts would otherwise show
  // again under the same rule ids). Only the slots this generation reads are written.
  {
    const int ncpu = libbpf_num_possible_cpus();
    if (ncpu <= 0) return make_error(fmt::format("counting CPUs: {}", errstr(ncpu)));
    const std::vector<uint64_t> zeros(static_cast<size_t>(ncpu), 0);
    int hits = map_fd("pd_rule_hits");
    for (const auto& r : t.rules) {
      uint32_t idx = gen * PD_MAX_RULES + (r.rule & (PD_MAX_RULES - 1));
      if (bpf_map_update_elem(hits, &idx, zeros.data(), BPF_ANY) != 0)
        return make_error(fmt::format("clearing rule hit counters: {}", errstr(errno)));
    }
    int rl = map_fd("pd_rl_hits");
    for (uint32_t i = 0; i < PD_RL_LIMITS * 2; ++i) {
      uint32_t idx = gen * PD_RL_LIMITS * 2 + i;
      if (bpf_map_update_elem(rl, &idx, zeros.data(), BPF_ANY) != 0)
        return make_error(fmt::format("clearing rate-limit hit counters: {}", errstr(errno)));
    }
  }

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
  {
    int providers = map_fd("pd_jwt_providers");
    int claims = map_fd("pd_jwt_claims");
    if (auto st = delete_where<pd_jwt_claim_key>(claims, [gen](const pd_jwt_claim_key& k) { return k.gen == gen; });
        !st)
      return st;
    for (uint32_t i = 0; i < PD_JWT_PROVIDERS; ++i) {  // unused slots are zero: no algorithm
      uint32_t key = gen * PD_JWT_PROVIDERS + i;
      pd_jwt_provider p{};
      for (const auto& [idx, val] : t.jwt_providers)
        if (idx % PD_JWT_PROVIDERS == i) p = val;
      if (bpf_map_update_elem(providers, &key, &p, BPF_ANY) != 0)
        return make_error(fmt::format("writing jwt provider table: {}", errstr(errno)));
    }
    for (const auto& e : t.jwt_claims) {
      pd_jwt_claim_key k = e.key;
      k.gen = gen;
      if (bpf_map_update_elem(claims, &k, &e.bits, BPF_ANY) != 0)
        return make_error(fmt::format("writing jwt claims table: {}", errstr(errno)));
    }
  }
  {
    int limits = map_fd("pd_rl_limits");
    int buckets = map_fd("pd_rl_buckets");
    int counts = map_fd("pd_rl_counts");
    // each limit's share of the bucket table: its size (limits.max_flows when it was made),
    // less the shared buckets, in equal parts
    bpf_map_info info{};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(buckets, &info, &len) != 0)
      return make_error(fmt::format("reading the bucket table: {}", errstr(errno)));
    const uint64_t shared = t.limits.size() * uint64_t{PD_RL_SPREAD};
    const uint64_t share = t.limits.empty() || info.max_entries <= shared
                               ? 1
                               : std::max<uint64_t>((info.max_entries - shared) / t.limits.size(), 1);
    for (uint32_t i = 0; i < PD_RL_LIMITS; ++i) {
      uint32_t key = gen * PD_RL_LIMITS + i;
      pd_rl_limit l = i < t.limits.size() ? t.limits[i] : pd_rl_limit{};
      if (l.cost) l.max_buckets = static_cast<uint32_t>(std::min<uint64_t>(share, UINT32_MAX));
      if (bpf_map_update_elem(limits, &key, &l, BPF_ANY) != 0)
        return make_error(fmt::format("writing rate limit table: {}", errstr(errno)));
      if (!l.cost) continue;
      // the shared buckets for keys past the limit's share or the table's size: made now,
      // while there is room
      for (uint64_t slot = 0; slot < PD_RL_SPREAD; ++slot) {
        pd_rl_bucket_key bk{};
        bk.id = l.id;
        bk.kind = PD_RLK_SHARED;
        bk.k[0] = slot;
        pd_rl_bucket b{};
        b.credit = l.cap;
        b.last_ns = monotonic_ns();
        if (bpf_map_update_elem(buckets, &bk, &b, BPF_NOEXIST) != 0 && errno != EEXIST)
          return make_error(fmt::format("creating the shared buckets of a rate limit: {}", errstr(errno)));
      }
      uint64_t none = 0;  // its count of buckets (kept if the limit carries over)
      if (bpf_map_update_elem(counts, &l.id, &none, BPF_NOEXIST) != 0 && errno != EEXIST)
        return make_error(fmt::format("creating the bucket count of a rate limit: {}", errstr(errno)));
    }
  }
  for (uint32_t s = 0; s < PD_STAGE_MAX; ++s) {
    uint32_t key = pd_slot(gen, s);
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
  auto& cfg = bss_->pd_cfg[gen];
  cfg.gen_tag = gen_tag;
  cfg.default_action = t.config.default_action;
  cfg.fail_open = t.config.fail_open;
  cfg.first_stage = t.config.first_stage;
  cfg.max_pipeline = t.config.max_pipeline;
  cfg.max_head_bytes = t.config.max_head_bytes;
  cfg.missing_sni = t.config.missing_sni;
  cfg.quic_deny = t.config.quic_deny;
  cfg.partial_per_client = partial_per_client();
  cfg.hash_seed = t.config.hash_seed;
  bss_->pd_tables_digest[gen] = tables_digest(t);
  return Ok{};
}

namespace {

// Attach fd at one hook of ifindex, replacing policyd's filter there.
int tc_attach(int ifindex, bpf_tc_attach_point where, int fd) {
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = where);
  LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = fd, .flags = BPF_TC_F_REPLACE, .handle = kTcHandle,
              .priority = kTcPriority);
  return bpf_tc_attach(&hook, &opts);
}

// The id of the program policyd's filter runs at one hook, 0 if there is none.
uint32_t tc_prog_id(int ifindex, bpf_tc_attach_point where) {
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = where);
  LIBBPF_OPTS(bpf_tc_opts, opts, .handle = kTcHandle, .priority = kTcPriority);
  return bpf_tc_query(&hook, &opts) == 0 ? opts.prog_id : 0;
}

int tc_detach(int ifindex, bpf_tc_attach_point where) {
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = where);
  LIBBPF_OPTS(bpf_tc_opts, opts, .handle = kTcHandle, .priority = kTcPriority);
  return bpf_tc_detach(&hook, &opts);
}

uint32_t prog_id_of(int fd) {
  bpf_prog_info info{};
  uint32_t len = sizeof(info);
  return fd >= 0 && bpf_obj_get_info_by_fd(fd, &info, &len) == 0 ? info.id : 0;
}

}  // namespace

Status Dataplane::attach(const std::string& ifname) {
  int ifindex = static_cast<int>(if_nametoindex(ifname.c_str()));
  if (ifindex == 0) return make_error(fmt::format("interface {}: {}", ifname, errstr(errno)));
  LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
  int err = bpf_tc_hook_create(&hook);
  bool created = err == 0;
  if (err && err != -EEXIST)
    return make_error(fmt::format("creating clsact qdisc on {}: {}", ifname, errstr(err)));
  // egress first: from the moment the entry program judges, the server's side is recorded
  err = tc_attach(ifindex, BPF_TC_EGRESS, egress_fd_);
  if (err) return make_error(fmt::format("attaching to {} egress: {}", ifname, errstr(err)));
  err = tc_attach(ifindex, BPF_TC_INGRESS, entry_prog_fd());
  if (err) return make_error(fmt::format("attaching to {} ingress: {}", ifname, errstr(err)));
  // known by index: a renamed link is the same attachment
  for (auto& a : attached_)
    if (a.ifindex == ifindex) {
      a.ifname = ifname;
      a.created_qdisc = a.created_qdisc || created;
      return Ok{};
    }
  attached_.push_back(Attachment{ifname, ifindex, created});
  return Ok{};
}

uint32_t Dataplane::egress_prog_id() const { return prog_id_of(egress_fd_); }

bool Dataplane::filter_present(int ifindex) const {
  g_quiet = true;  // no qdisc or no filter is an answer here, not an error worth a log line
  bool ok = tc_prog_id(ifindex, BPF_TC_INGRESS) == prog_id(PD_STAGE_ENTRY) &&
            tc_prog_id(ifindex, BPF_TC_EGRESS) == prog_id_of(egress_fd_);
  g_quiet = false;
  return ok;
}

void Dataplane::forget(int ifindex) {
  std::erase_if(attached_, [&](const Attachment& a) { return a.ifindex == ifindex; });
}

void Dataplane::renamed(int ifindex, const std::string& ifname) {
  for (auto& a : attached_)
    if (a.ifindex == ifindex) a.ifname = ifname;
}

Status Dataplane::detach(const std::string& ifname) {
  for (auto it = attached_.begin(); it != attached_.end(); ++it) {
    if (it->ifname != ifname) continue;
    int err = tc_detach(it->ifindex, BPF_TC_INGRESS);
    int eerr = tc_detach(it->ifindex, BPF_TC_EGRESS);
    if (!err) err = eerr;
    LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = it->ifindex, .attach_point = BPF_TC_INGRESS);
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
  auto pinned_id = [&](const char* name) {
    int fd = bpf_obj_get((pin_dir + "/" + name).c_str());
    uint32_t id = prog_id_of(fd);
    if (fd >= 0) close(fd);
    return id;
  };
  uint32_t prog_id = pinned_id("prog_entry");
  uint32_t egress_id = pinned_id("prog_egress");
  install_libbpf_logger();
  std::vector<std::string> detached;
  if (prog_id || egress_id) {
    g_quiet = true;
    struct if_nameindex* ifs = ::if_nameindex();
    for (auto* i = ifs; i && i->if_index; ++i) {
      int ifindex = static_cast<int>(i->if_index);
      bool any = false;
      if (prog_id && tc_prog_id(ifindex, BPF_TC_INGRESS) == prog_id && tc_detach(ifindex, BPF_TC_INGRESS) == 0)
        any = true;
      if (egress_id && tc_prog_id(ifindex, BPF_TC_EGRESS) == egress_id && tc_detach(ifindex, BPF_TC_EGRESS) == 0)
        any = true;
      if (any) detached.push_back(i->if_name);
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

Counters Dataplane::read_counters(uint32_t gen, const std::vector<uint32_t>& rules, size_t limits) const {
  Counters c;
  int ncpu = libbpf_num_possible_cpus();
  if (ncpu <= 0) return c;
  std::vector<uint64_t> vals(static_cast<size_t>(ncpu));
  int stats = map_fd("pd_stats");
  c.values.assign(PD_C_MAX, 0);
  for (uint32_t i = 0; i < PD_C_MAX; ++i) {
    if (bpf_map_lookup_elem(stats, &i, vals.data()) != 0) continue;
    for (auto v : vals) c.values[i] += v;
  }
  int hits = map_fd("pd_rule_hits");
  for (uint32_t rule : rules) {
    uint32_t idx = (gen & 1) * PD_MAX_RULES + (rule & (PD_MAX_RULES - 1));
    if (bpf_map_lookup_elem(hits, &idx, vals.data()) != 0) continue;
    uint64_t sum = 0;
    for (auto v : vals) sum += v;
    c.rule_hits[rule] = sum;
  }
  int rl = map_fd("pd_rl_hits");
  for (uint32_t i = 0; i < limits && i < PD_RL_LIMITS; ++i) {
    uint64_t sum[2] = {0, 0};
    for (uint32_t limited = 0; limited < 2; ++limited) {
      uint32_t idx = ((gen & 1) * PD_RL_LIMITS + i) * 2 + limited;
      if (bpf_map_lookup_elem(rl, &idx, vals.data()) != 0) continue;
      for (auto v : vals) sum[limited] += v;
    }
    c.limit_hits.emplace_back(sum[0], sum[1]);
  }
  return c;
}

uint32_t Dataplane::flow_table_size() const {
  int fd = map_fd("pd_flows");
  bpf_map_info info{};
  uint32_t info_len = sizeof(info);
  if (fd < 0 || bpf_obj_get_info_by_fd(fd, &info, &info_len) != 0) return 0;
  return info.max_entries;
}

Result<Dataplane::FlowUse> Dataplane::flow_use() const {
  int fd = map_fd("pd_flows");
  if (fd < 0) return make_error("counting flows: no flow table");
  bpf_map_info info{};
  uint32_t info_len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &info_len) != 0)
    return make_error(fmt::format("reading the flow table's size: {}", errstr(errno)));
  uint32_t batch = 4096;
  std::vector<pd_flow_key> keys(batch);
  std::vector<pd_flow> vals(batch);  // the kernel copies values too; they are not looked at
  // the kernel's position in the table between calls (for a hash map, a bucket index)
  pd_flow_key in{}, out{};
  bool first = true;
  uint64_t total = 0;
  for (;;) {
    uint32_t n = batch;
    int err = bpf_map_lookup_batch(fd, first ? nullptr : &in, &out, keys.data(), vals.data(), &n, nullptr);
    if (err == 0 || err == -ENOENT) total += n;
    if (err == -ENOENT) return FlowUse{total, info.max_entries};  // the end (n: the last batch's entries)
    if (err == 0) {
      in = out;
      first = false;
      continue;
    }
    if (err == -ENOSPC && batch < (1u << 20)) {  // one hash bucket holds more than a batch
      batch *= 2;
      keys.resize(batch);
      vals.resize(batch);
      continue;
    }
    if (err == -EINVAL || err == -EOPNOTSUPP || err == -524 /* ENOTSUPP */) break;  // no batch ops
    return make_error(fmt::format("counting flows: {}", errstr(err)));
  }
  // Kernels without batch lookups for LRU hash maps (before 5.6): key by key. A key deleted
  // under the walk restarts it from the first key, so this count may run over under churn.
  total = 0;
  pd_flow_key cur{}, next{};
  const pd_flow_key* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    ++total;
    cur = next;
    prev = &cur;
  }
  return FlowUse{total, info.max_entries};
}

}  // namespace policyd::chain

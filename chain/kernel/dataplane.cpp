#include "chain/kernel/dataplane.hpp"

#include <dirent.h>
#include <errno.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <random>
#include <thread>
#include <tuple>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "entry.skel.h"  // the layout of entry's .bss

namespace policyd::chain {

struct Dataplane::Bss : entry_bpf::entry_bpf__bss {};

namespace {

constexpr const char* kBssPin = "entry_bss";

// What survives a change of build with the same ABI: connections and their counters.
constexpr abi::Map kKeptAcrossBuilds[] = {abi::Map::flows,     abi::Map::syn,   abi::Map::accum,
                                          abi::Map::accum_src, abi::Map::stats, abi::Map::rl_buckets,
                                          abi::Map::rl_counts};

// A stage program's pin: prog_<stage>
std::string stage_pin_name(const Stage& s) { return fmt::format("prog_{}", s.name()); }

bool is_bpffs(const std::string& dir) {
  struct statfs st {};
  return statfs(dir.c_str(), &st) == 0 && st.f_type == 0xcafe4a11;  // BPF_FS_MAGIC
}

std::shared_ptr<spdlog::logger> chain_log() { return spdlog::get("chain"); }

int64_t ns_of(const timespec& t) { return static_cast<int64_t>(t.tv_sec) * 1000000000LL + t.tv_nsec; }

// CLOCK_MONOTONIC in ns: the clock of bpf_ktime_get_ns
uint64_t monotonic_ns() {
  timespec m{};
  clock_gettime(CLOCK_MONOTONIC, &m);
  return static_cast<uint64_t>(ns_of(m));
}

uint64_t random_seed() {
  std::random_device rd;
  return (static_cast<uint64_t>(rd()) << 32) ^ rd();
}

}  // namespace

uint64_t Dataplane::build_id() {
  static const uint64_t id = [] {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const auto& o : embedded_objects())
      for (unsigned char c : o.elf) h = (h ^ c) * 0x100000001b3ULL;
    return h;
  }();
  return id;
}

Dataplane::MappedBss::MappedBss(MappedBss&& o) noexcept
    : bss(std::exchange(o.bss, nullptr)), len(std::exchange(o.len, 0)) {}

Dataplane::MappedBss& Dataplane::MappedBss::operator=(MappedBss&& o) noexcept {
  if (this != &o) {
    if (bss) munmap(bss, len);
    bss = std::exchange(o.bss, nullptr);
    len = std::exchange(o.len, 0);
  }
  return *this;
}

Dataplane::MappedBss::~MappedBss() {
  if (bss) munmap(bss, len);
}

Result<Dataplane::MappedBss> Dataplane::map_bss(int fd) {
  bpf_map_info info{};
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0 || info.value_size < sizeof(Bss))
    return make_error("the chain's state map has another layout");
  void* mem = mmap(nullptr, info.value_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (mem == MAP_FAILED) return make_error(fmt::format("mapping the chain's state: {}", errstr(errno)));
  MappedBss m;
  m.bss = static_cast<Bss*>(mem);
  m.len = info.value_size;
  return m;
}

MapFds Dataplane::map_fds() const {
  MapFds fds;
  for (unsigned i = 0; i < abi::kMapCount; ++i) fds[i] = loaded_.maps[i].get();
  return fds;
}

Result<std::unique_ptr<Dataplane>> Dataplane::load(const Options& opts) {
  install_libbpf_logger();
  std::unique_ptr<Dataplane> dp(new Dataplane());
  dp->opts_ = opts;
  std::map<abi::Map, Fd> kept, migrate;
  if (!opts.pin_dir.empty() && access((opts.pin_dir + "/prog_entry").c_str(), F_OK) == 0) {
    auto st = dp->adopt(opts.pin_dir, kept, migrate);
    if (st && dp->origin_ == Origin::Adopted) {
      if (auto rt = dp->refresh_runtime(true); !rt) return rt.error();
      return dp;
    }
    if (!st && chain_log()) chain_log()->warn("cannot adopt the chain pinned at {}: {}", opts.pin_dir, st.error().message);
  }
  if (auto st = dp->load_fresh(kept); !st) return st.error();
  if (!kept.empty()) dp->origin_ = Origin::FlowsKept;
  if (!migrate.empty()) {
    dp->migrate_from(migrate);
    dp->origin_ = Origin::Migrated;
  }
  if (auto rt = dp->refresh_runtime(true); !rt) return rt.error();
  return dp;
}

Status Dataplane::refresh_runtime(bool new_token_key) {
  int fd = map_fd(abi::Map::runtime);
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
  int fd = map_fd(abi::Map::rl_buckets);
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
  int counts = map_fd(abi::Map::rl_counts);
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
  if (bpf_obj_get_info_by_fd(map_fd(abi::Map::accum), &info, &len) != 0) return 0;
  return std::max<uint32_t>(info.max_entries / 16, 16);
}

size_t Dataplane::recount_partial_heads() {
  int accum = map_fd(abi::Map::accum), flows = map_fd(abi::Map::flows), src = map_fd(abi::Map::accum_src);
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
  int fd = map_fd(abi::Map::runtime);
  uint32_t zero = 0;
  pd_runtime rt{};
  if (bpf_map_lookup_elem(fd, &zero, &rt) != 0) return make_error(fmt::format("reading the runtime map: {}", errstr(errno)));
  rt.log_rate = per_second;
  rt.log_burst = burst;
  if (bpf_map_update_elem(fd, &zero, &rt, BPF_ANY) != 0)
    return make_error(fmt::format("writing the event budget into the runtime map: {}", errstr(errno)));
  return Ok{};
}

Status Dataplane::put_jwt_answer(const pd_jwt_cache_key& key, const pd_jwt_cache_val& val) {
  if (bpf_map_update_elem(map_fd(abi::Map::jwt_cache), &key, &val, BPF_ANY) != 0)
    return make_error(fmt::format("writing the token cache: {}", errstr(errno)));
  return Ok{};
}

void Dataplane::migrate_from(const std::map<abi::Map, Fd>& old) {
  std::vector<std::string> skipped;
  for (const auto& [m, from] : old) {
    const int to = map_fd(m);
    bpf_map_info a{}, b{};
    uint32_t la = sizeof(a), lb = sizeof(b);
    if (bpf_obj_get_info_by_fd(from.get(), &a, &la) != 0 || bpf_obj_get_info_by_fd(to, &b, &lb) != 0) continue;
    if (a.key_size != b.key_size || a.value_size != b.value_size) {
      skipped.push_back(fmt::format("{} (entries of {}+{} bytes there, {}+{} here)", abi::map_name(m), a.key_size,
                                    a.value_size, b.key_size, b.value_size));
      continue;
    }
    // entry by entry: the new table may be of another size, and a key deleted under the walk
    // (an LRU eviction) only ends it early
    std::vector<unsigned char> key(a.key_size), next(a.key_size), value(a.value_size);
    const void* at = nullptr;
    uint64_t n = 0;
    while (bpf_map_get_next_key(from.get(), at, next.data()) == 0 && n < b.max_entries) {
      key.swap(next);
      at = key.data();
      if (bpf_map_lookup_elem(from.get(), key.data(), value.data()) != 0) continue;
      if (bpf_map_update_elem(to, key.data(), value.data(), BPF_NOEXIST) == 0) ++n;
    }
    if (m == abi::Map::flows) migrated_ = n;
  }
  if (!skipped.empty()) migration_note_ = fmt::format("not carried over: {}", fmt::join(skipped, ", "));
}

Status Dataplane::adopt(const std::string& dir, std::map<abi::Map, Fd>& kept, std::map<abi::Map, Fd>& migrate) {
  Fd bss_fd(bpf_obj_get((dir + "/" + kBssPin).c_str()));
  if (!bss_fd) return make_error(fmt::format("{}/{}: {}", dir, kBssPin, errstr(errno)));
  auto mapped = map_bss(bss_fd.get());
  if (!mapped) return make_error(fmt::format("the pinned chain: {}", mapped.error().message));
  const Bss* bss = mapped->bss;
  const bool same_build = bss->pd_build_id == build_id();
  const bool same_abi = bss->pd_abi_version == PD_ABI_VERSION;
  if (!same_build) {
    if (!same_abi) {
      // Another layout of the shared maps: a fresh chain, into which the connections (and
      // handshakes in progress) are copied entry by entry where their layout is unchanged.
      for (abi::Map m : {abi::Map::flows, abi::Map::syn}) {
        Fd fd(bpf_obj_get((dir + "/" + abi::map_name(m)).c_str()));
        if (fd) migrate.emplace(m, std::move(fd));
      }
      if (chain_log())
        chain_log()->info("the pinned chain has another map layout (ABI {}, this build {}): loading a fresh chain "
                          "and carrying its connections over",
                          bss->pd_abi_version, PD_ABI_VERSION);
      return Ok{};
    }
    for (abi::Map m : kKeptAcrossBuilds) {
      Fd fd(bpf_obj_get((dir + "/" + abi::map_name(m)).c_str()));
      if (!fd) {
        kept.clear();
        return make_error(fmt::format("{}/{}: {}", dir, abi::map_name(m), errstr(errno)));
      }
      kept.emplace(m, std::move(fd));
    }
    if (chain_log()) chain_log()->info("the pinned chain is from another build: loading ours, keeping its flow table");
    origin_ = Origin::FlowsKept;
    return Ok{};
  }
  LoadedChain l;
  auto open_pin = [&](const std::string& name, Fd& into) -> Status {
    into.reset(bpf_obj_get((dir + "/" + name).c_str()));
    if (!into) return make_error(fmt::format("{}/{}: {}", dir, name, errstr(errno)));
    return Ok{};
  };
  for (unsigned i = 0; i < abi::kMapCount; ++i)
    if (auto st = open_pin(abi::map_name(static_cast<abi::Map>(i)), l.maps[i]); !st) return st;
  for (const auto& stage : stages())
    if (auto st = open_pin(stage_pin_name(*stage), l.progs[stage->id()]); !st) return st;
  if (auto st = open_pin(std::string(kPreflightProgram.pin), l.preflight); !st) return st;
  if (auto st = open_pin(std::string(kEgressProgram.pin), l.egress); !st) return st;
  l.bss = std::move(bss_fd);
  loaded_ = std::move(l);
  bss_ = std::move(*mapped);
  seed_ = bss_.bss->pd_cfg[bss_.bss->pd_active_gen & 1].hash_seed;
  if (seed_ == 0) seed_ = random_seed();
  origin_ = Origin::Adopted;
  pinned_ = true;
  return Ok{};
}

Status Dataplane::load_fresh(const std::map<abi::Map, Fd>& reuse) {
  LoadOptions lo;
  lo.max_flows = opts_.max_flows;
  lo.accum_entries = opts_.accum_entries;
  lo.reuse = &reuse;
  auto l = load_chain(lo);
  if (!l) return l.error();
  auto mapped = map_bss(l->bss.get());
  if (!mapped) return mapped.error();
  loaded_ = std::move(*l);
  bss_ = std::move(*mapped);
  bss_.bss->pd_build_id = build_id();
  bss_.bss->pd_abi_version = PD_ABI_VERSION;
  seed_ = random_seed();
  origin_ = Origin::Fresh;
  return Ok{};
}

Dataplane::~Dataplane() {
  if (keep_) return;  // pins and filters stay: the chain keeps enforcing
  tc_.detach_all();
  if (pinned_) unpin_all();
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
  for (unsigned i = 0; i < abi::kMapCount; ++i)
    if (auto st = pin_fd(loaded_.maps[i].get(), abi::map_name(static_cast<abi::Map>(i))); !st) return st;
  if (auto st = pin_fd(loaded_.bss.get(), kBssPin); !st) return st;
  for (const auto& stage : stages())
    if (auto st = pin_fd(prog_fd(stage->id()), stage_pin_name(*stage)); !st) return st;
  if (auto st = pin_fd(loaded_.preflight.get(), std::string(kPreflightProgram.pin)); !st) return st;
  if (auto st = pin_fd(loaded_.egress.get(), std::string(kEgressProgram.pin)); !st) return st;
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

uint32_t Dataplane::active_gen() const { return bss_.bss->pd_active_gen & 1; }
uint32_t Dataplane::active_tag() const { return bss_.bss->pd_cfg[active_gen()].gen_tag; }
uint64_t Dataplane::active_digest() const { return bss_.bss->pd_tables_digest[active_gen()]; }

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

Status Dataplane::commit(const Tables& t, uint32_t gen, uint32_t gen_tag) {
  if (auto st = prepare(t, gen, gen_tag); !st) return st;
  flip(gen);
  return Ok{};
}

void Dataplane::set_preflight_gen(uint32_t gen) { bss_.bss->pd_preflight_gen = gen & 1; }

void Dataplane::flip(uint32_t gen) {
  // one word, after everything prepared is visible
  std::atomic_thread_fence(std::memory_order_seq_cst);
  bss_.bss->pd_active_gen = gen & 1;
  std::atomic_thread_fence(std::memory_order_seq_cst);
  last_flip_ = std::chrono::steady_clock::now();
}

uint32_t Dataplane::active_prog_id(uint32_t stage) const {
  const uint32_t key = pd_slot(active_gen(), stage);
  uint32_t id = 0;  // a PROG_ARRAY read from user space gives the program's id
  return bpf_map_lookup_elem(map_fd(abi::Map::progs), &key, &id) == 0 ? id : 0;
}

Result<int> Dataplane::file_program(const ProgramSource& src, const Objects* objects) {
  const auto key = std::make_pair(src.stage, src.digest);
  if (auto it = file_progs_.find(key); it != file_progs_.end()) return it->second.get();
  const auto bytes = objects ? objects->find(src.stage) : Objects::const_iterator{};
  if (!objects || bytes == objects->end())
    return make_error(fmt::format("stage {}: {} was not read", src.name, src.path));
  // a built-in's new build: its program by name; an own stage: the object's one program
  const std::string program = src.own ? "" : fmt::format("pd_{}", src.name);
  auto fd = load_stage_program(bytes->second, src.name, program, loaded_.maps);
  if (!fd) {
    auto e = fd.error();
    e.message = fmt::format("{} ({})", e.message, src.path);
    return e;
  }
  const int raw = fd->get();
  file_progs_.emplace(key, std::move(*fd));
  return raw;
}

Status Dataplane::prepare(const Tables& t, uint32_t gen, uint32_t gen_tag, const Objects* objects) {
  gen &= 1;
  Bss& bss = *bss_.bss;
  if (gen == active_gen() && bss.pd_cfg[gen].gen_tag != 0) return make_error("refusing to overwrite the active generation");
  // The half became inactive at the last flip; packets that entered it before that flip
  // finish within microseconds. Wait out a grace period far longer than that before
  // touching it, then mark it as being refilled (a straggler would see the new tag).
  auto ready = last_flip_ + kRefillGrace;
  if (auto now = std::chrono::steady_clock::now(); now < ready) std::this_thread::sleep_until(ready);
  // the programs this half runs from files: loaded (and verified) before anything is written
  std::vector<std::pair<uint32_t, uint64_t>> files;
  std::map<uint32_t, int> from_file;
  for (const auto& src : t.programs) {
    auto fd = file_program(src, objects);
    if (!fd) return fd.error();
    from_file[src.stage] = *fd;
    files.emplace_back(src.stage, src.digest);
  }
  const MapFds fds = map_fds();
  MapTables tables(fds);
  if (auto st = tables.put(abi::Map::gen_tags, gen, gen_tag); !st) return st;
  // each stage empties its half of its tables and fills it
  for (const auto& stage : stages())
    if (auto st = stage->write(t, gen, tables); !st) return st;
  // the chain: which stage follows which, and the programs in this half's slots
  for (uint32_t s = 0; s < PD_STAGE_MAX; ++s) {
    const uint32_t key = pd_slot(gen, s);
    if (auto st = tables.put(abi::Map::chain, key, t.next[s]); !st) return st;
    auto file = from_file.find(s);
    int fd = file != from_file.end() ? file->second : prog_fd(s);
    if (fd < 0) {
      bpf_map_delete_elem(map_fd(abi::Map::progs), &key);
      continue;
    }
    if (auto st = tables.put(abi::Map::progs, key, fd); !st) return st;
  }
  auto& cfg = bss.pd_cfg[gen];
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
  bss.pd_tables_digest[gen] = tables_digest(t);
  // programs neither half runs any more go (a PROG_ARRAY slot holds its own reference)
  half_files_[gen] = std::move(files);
  std::erase_if(file_progs_, [&](const auto& entry) {
    for (const auto& half : half_files_)
      if (std::find(half.begin(), half.end(), entry.first) != half.end()) return false;
    return true;
  });
  return Ok{};
}

Status Dataplane::attach(const std::string& ifname) { return tc_.attach(ifname, entry_prog_fd(), egress_prog_fd()); }

bool Dataplane::filter_present(int ifindex) const {
  return tc_ingress_prog(ifindex) == prog_id(PD_STAGE_ENTRY) && tc_egress_prog(ifindex) == egress_prog_id();
}

Status Dataplane::teardown(const std::string& pin_dir) {
  auto pinned_id = [&](std::string_view name) {
    Fd fd(bpf_obj_get((pin_dir + "/" + std::string(name)).c_str()));
    return prog_id_of(fd.get());
  };
  install_libbpf_logger();
  auto detached = tc_detach_everywhere(pinned_id("prog_entry"), pinned_id(kEgressProgram.pin));
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
  const MapFds fds = map_fds();
  MapTables tables(fds);
  c.values.assign(PD_C_MAX, 0);
  for (uint32_t i = 0; i < PD_C_MAX; ++i) c.values[i] = tables.sum(abi::Map::stats, i);
  const CounterQuery q{gen, rules, limits};
  for (const auto& stage : stages()) stage->read_counters(tables, q, c);
  return c;
}

uint32_t Dataplane::flow_table_size() const {
  int fd = map_fd(abi::Map::flows);
  bpf_map_info info{};
  uint32_t info_len = sizeof(info);
  if (fd < 0 || bpf_obj_get_info_by_fd(fd, &info, &info_len) != 0) return 0;
  return info.max_entries;
}

Result<Dataplane::FlowUse> Dataplane::flow_use() const {
  int fd = map_fd(abi::Map::flows);
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

#include "chain/kernel/loader.hpp"

#include <errno.h>

#include <cstdarg>
#include <cstring>
#include <memory>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "chain/kernel/kernel_probe.hpp"
#include "chain/stage.hpp"

namespace policyd::chain {

namespace {

// libbpf's messages go to the "bpf" logger; while a load runs they are also collected so a
// verifier rejection can be handed back to the operator.
thread_local std::string* g_capture = nullptr;
thread_local int g_quiet = 0;

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

struct ObjectCloser {
  void operator()(bpf_object* o) const { bpf_object__close(o); }
};
using Object = std::unique_ptr<bpf_object, ObjectCloser>;

Result<Object> open_elf(std::span<const unsigned char> elf, std::string_view name) {
  const std::string obj_name(name);
  LIBBPF_OPTS(bpf_object_open_opts, oo, .object_name = obj_name.c_str());
  Object obj(bpf_object__open_mem(elf.data(), elf.size(), &oo));
  if (!obj) return make_error(fmt::format("opening the {} object: {}", name, errstr(errno)));
  return obj;
}

Result<Object> open_embedded(std::string_view name) {
  auto elf = embedded_object(name);
  if (elf.empty()) return make_error(fmt::format("no BPF object named {} in this build", name));
  return open_elf(elf, name);
}

Status load_object(bpf_object* obj, std::string_view what) {
  std::string log;
  LogCapture cap(&log);
  if (int err = bpf_object__load(obj); err)
    return make_error(fmt::format("the kernel refused the {}: {}", what, refused_why(err)), verifier_excerpt(log));
  return Ok{};
}

Result<Fd> program_fd(bpf_object* obj, std::string_view object, std::string_view name) {
  const std::string n(name);
  bpf_program* p = bpf_object__find_program_by_name(obj, n.c_str());
  if (!p) return make_error(fmt::format("the {} object has no program {}", object, name));
  Fd fd = Fd::dup_of(bpf_program__fd(p));
  if (!fd) return make_error(fmt::format("program {}: {}", name, errstr(errno)));
  return fd;
}

// The shared map of this name, if it is one (pd_maps.h).
std::optional<abi::Map> shared_map(std::string_view name) {
  for (unsigned i = 0; i < abi::kMapCount; ++i)
    if (name == abi::map_name(static_cast<abi::Map>(i))) return static_cast<abi::Map>(i);
  return std::nullopt;
}

// Gives an opened object the chain's shared maps (by name) and loads it.
Status load_with_shared_maps(bpf_object* obj, const std::array<Fd, abi::kMapCount>& maps, std::string_view what) {
  bpf_map* map;
  bpf_object__for_each_map(map, obj) {
    auto shared = shared_map(bpf_map__name(map));
    if (!shared) continue;  // the object's own (.rodata, .bss, its scratch)
    if (int err = bpf_map__reuse_fd(map, maps[static_cast<unsigned>(*shared)].get()); err)
      return make_error(fmt::format("reusing map {}: {}", bpf_map__name(map), errstr(err)));
  }
  return load_object(obj, what);
}

// The size of struct pd_ctx in an object's BTF (0 if it has none): an own stage built against
// another layout of the context than this build's would read the wrong bytes.
uint32_t context_size(bpf_object* obj) {
  const btf* b = bpf_object__btf(obj);
  if (!b) return 0;
  const int id = btf__find_by_name_kind(b, "pd_ctx", BTF_KIND_STRUCT);
  if (id < 0) return 0;
  const auto size = btf__resolve_size(b, static_cast<uint32_t>(id));
  return size > 0 ? static_cast<uint32_t>(size) : 0;
}

uint32_t this_builds_context_size() {
  static const uint32_t size = [] {
    auto entry = open_embedded("entry");
    return entry ? context_size(entry->get()) : 0;
  }();
  return size;
}

}  // namespace

Result<Fd> load_stage_program(std::span<const unsigned char> elf, std::string_view stage, std::string_view program,
                              const std::array<Fd, abi::kMapCount>& maps) {
  install_libbpf_logger();
  auto obj = open_elf(elf, stage);
  if (!obj) return obj.error();
  if (const uint32_t theirs = context_size(obj->get()), ours = this_builds_context_size();
      theirs != 0 && theirs != ours)
    return make_error(fmt::format("stage {} was built against another policyd: its context (struct pd_ctx) is {} "
                                  "bytes, this policyd's {}; rebuild it against this version's policyd/stage.h",
                                  stage, theirs, ours));
  const std::string what = fmt::format("{} stage", stage);
  if (program.empty()) {  // an own stage: its one SEC("tc") program
    bpf_program* only = nullptr;
    bpf_program* p;
    int n = 0;
    bpf_object__for_each_program(p, obj->get()) {
      const std::string_view sec = bpf_program__section_name(p);
      if (sec == "tc" || sec == "classifier") {
        only = p;
        ++n;
      }
    }
    if (n != 1)
      return make_error(fmt::format("the object of stage {} must hold exactly one SEC(\"tc\") program; it holds {}",
                                    stage, n));
    program = bpf_program__name(only);
    std::string name(program);
    if (auto st = load_with_shared_maps(obj->get(), maps, what); !st) return st.error();
    return program_fd(obj->get(), stage, name);
  }
  if (auto st = load_with_shared_maps(obj->get(), maps, what); !st) return st.error();
  return program_fd(obj->get(), stage, program);
}

std::span<const unsigned char> embedded_object(std::string_view name) {
  for (const auto& o : embedded_objects())
    if (o.name == name) return o.elf;
  return {};
}

void install_libbpf_logger() { libbpf_set_print(libbpf_print); }

LogCapture::LogCapture(std::string* into) { g_capture = into; }
LogCapture::~LogCapture() { g_capture = nullptr; }
QuietLibbpf::QuietLibbpf() { ++g_quiet; }
QuietLibbpf::~QuietLibbpf() { --g_quiet; }

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

std::string refused_why(int err) {
  int e = err < 0 ? -err : err;
  if (e != EPERM && e != EACCES) return errstr(err);
  auto missing = missing_capabilities();
  if (missing.empty()) return errstr(err);
  return errstr(err) + " (this process lacks " + missing + "; policyd needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN)";
}

Result<LoadedChain> load_chain(const LoadOptions& opts) {
  install_libbpf_logger();
  LoadedChain out;
  std::map<std::string_view, Object> loaded;  // object name -> loaded object

  // entry first: it creates the shared maps every other object reuses
  {
    auto entry = open_embedded("entry");
    if (!entry) return entry.error();
    bpf_object* obj = entry->get();
    auto size = [&](abi::Map m, uint32_t n) {
      if (bpf_map* map = bpf_object__find_map_by_name(obj, abi::map_name(m))) bpf_map__set_max_entries(map, n);
    };
    size(abi::Map::flows, opts.max_flows);
    size(abi::Map::accum, opts.accum_entries);
    size(abi::Map::accum_src, opts.accum_entries);
    size(abi::Map::syn, opts.max_flows);  // handshakes in progress
    size(abi::Map::rl_buckets, opts.max_flows);
    if (opts.reuse)
      for (const auto& [m, fd] : *opts.reuse) {
        bpf_map* map = bpf_object__find_map_by_name(obj, abi::map_name(m));
        if (!map) continue;
        if (int err = bpf_map__reuse_fd(map, fd.get()); err)
          return make_error(fmt::format("reusing the pinned {}: {}", abi::map_name(m), errstr(err)));
      }
    if (auto st = load_object(obj, "entry program"); !st) return st.error();
    for (unsigned i = 0; i < abi::kMapCount; ++i) {
      const char* name = abi::map_name(static_cast<abi::Map>(i));
      bpf_map* map = bpf_object__find_map_by_name(obj, name);
      if (!map) return make_error(fmt::format("map {} is missing from the entry object", name));
      out.maps[i] = Fd::dup_of(bpf_map__fd(map));
    }
    bpf_map* map;
    bpf_object__for_each_map(map, obj) {
      if (std::string_view(bpf_map__name(map)).ends_with(".bss")) out.bss = Fd::dup_of(bpf_map__fd(map));
    }
    if (!out.bss) return make_error("the entry object has no .bss");
    loaded.emplace("entry", std::move(*entry));
  }

  // every other object once, its shared maps replaced by entry's
  auto load = [&](std::string_view object, std::string_view what) -> Result<bpf_object*> {
    if (auto it = loaded.find(object); it != loaded.end()) return it->second.get();
    auto o = open_embedded(object);
    if (!o) return o.error();
    if (auto st = load_with_shared_maps(o->get(), out.maps, what); !st) return st.error();
    return loaded.emplace(object, std::move(*o)).first->second.get();
  };
  for (const auto& stage : stages()) {
    const auto prog = stage->program();
    auto obj = load(prog.object, fmt::format("{} stage", stage->name()));
    if (!obj) return obj.error();
    auto fd = program_fd(*obj, prog.object, prog.name);
    if (!fd) return fd.error();
    out.progs[stage->id()] = std::move(*fd);
  }
  for (auto [extra, slot] : {std::pair{&kPreflightProgram, &out.preflight}, std::pair{&kEgressProgram, &out.egress}}) {
    auto obj = load(extra->object, fmt::format("{} program", extra->object));
    if (!obj) return obj.error();
    auto fd = program_fd(*obj, extra->object, extra->name);
    if (!fd) return fd.error();
    *slot = std::move(*fd);
  }
  return out;
}

}  // namespace policyd::chain

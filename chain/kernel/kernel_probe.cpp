#include "chain/kernel/kernel_probe.hpp"

#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>

namespace policyd::chain {

namespace {

std::string errstr(int err) { return std::strerror(err < 0 ? -err : err); }

bool refused(int err) {
  int e = err < 0 ? -err : err;
  return e == EPERM || e == EACCES;
}

Probed present(std::string how) { return {Probed::State::Present, std::move(how)}; }
Probed missing(std::string how) { return {Probed::State::Missing, std::move(how)}; }
Probed undetermined(std::string how) { return {Probed::State::Undetermined, std::move(how)}; }

// libbpf's own warnings about what a probe lacks are the answer here, not news for the log.
struct QuietLibbpf {
  libbpf_print_fn_t previous = libbpf_set_print(nullptr);
  ~QuietLibbpf() { libbpf_set_print(previous); }
};

// A file descriptor closed when the scope ends.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

// "6.18.44-fc-v1098" -> 6.18 (0.0 if it does not read as a release).
KernelVersion version_of(const std::string& release) {
  KernelVersion v;
  if (std::sscanf(release.c_str(), "%d.%d", &v.major, &v.minor) != 2) return {};
  return v;
}

// Loads a SCHED_CLS program of raw instructions (handed back in fd_out, else closed).
// Returns 0 or -errno; on failure `why` gets the error and the verifier's last line, which
// is where it says what it refused.
int load_sched_cls(const std::vector<bpf_insn>& insns, std::string* why, int* fd_out = nullptr) {
  std::array<char, 4096> log{};
  LIBBPF_OPTS(bpf_prog_load_opts, opts, .log_level = 1, .log_size = static_cast<__u32>(log.size()),
              .log_buf = log.data());
  int fd = bpf_prog_load(BPF_PROG_TYPE_SCHED_CLS, "pd_probe", "GPL", insns.data(), insns.size(), &opts);
  if (fd < 0) {
    int err = -errno;
    if (why) {
      // the verifier's reason is its last non-empty line
      std::string_view text(log.data());
      while (!text.empty() && text.back() == '\n') text.remove_suffix(1);
      auto nl = text.rfind('\n');
      std::string_view last = nl == std::string_view::npos ? text : text.substr(nl + 1);
      *why = last.empty() ? errstr(err) : fmt::format("{} ({})", errstr(err), last);
    }
    return err;
  }
  if (fd_out)
    *fd_out = fd;
  else
    close(fd);
  return 0;
}

// Does struct or union `id` have a member `name`, directly or in an anonymous struct or
// union within it (where sk_buff keeps ip_summed)?
bool has_member(const btf* b, __u32 id, const char* name, int depth = 0) {
  const btf_type* t = btf__type_by_id(b, id);
  while (t && (btf_is_mod(t) || btf_is_typedef(t))) t = btf__type_by_id(b, t->type);
  if (!t || !btf_is_composite(t) || depth > 8) return false;
  const btf_member* m = btf_members(t);
  for (int i = 0; i < btf_vlen(t); ++i, ++m) {
    const char* n = btf__name_by_offset(b, m->name_off);
    if (n && std::strcmp(n, name) == 0) return true;
    if ((!n || !*n) && has_member(b, m->type, name, depth + 1)) return true;
  }
  return false;
}

bpf_insn insn(__u8 code, __u8 dst, __u8 src, __s16 off, __s32 imm) {
  bpf_insn i{};
  i.code = code;
  i.dst_reg = dst & 0xf;
  i.src_reg = src & 0xf;
  i.off = off;
  i.imm = imm;
  return i;
}

// r0 = 0; exit
const bpf_insn kReturnZero[] = {insn(BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 0),
                                insn(BPF_JMP | BPF_EXIT, 0, 0, 0, 0)};

// libbpf's probe API answers 1 (supported), 0 (not) or a negative error; on 0, errno is
// still what the kernel said, so a refusal for want of privilege is told from an absence.
Probed libbpf_answer(int ret, int err, const char* api) {
  if (ret == 1) return present(api);
  if (ret < 0) return undetermined(fmt::format("the probe failed ({}: {})", api, errstr(ret)));
  if (refused(err)) return undetermined(fmt::format("the kernel refused to be asked ({}: {})", api, errstr(err)));
  if (err) return missing(fmt::format("the kernel does not support it ({}: {})", api, errstr(err)));
  return missing(fmt::format("the kernel does not support it ({})", api));
}

}  // namespace

std::string to_string(KernelVersion v) { return fmt::format("{}.{}", v.major, v.minor); }

std::string missing_capabilities() {
  std::ifstream in("/proc/self/status");
  std::string line;
  uint64_t eff = ~uint64_t{0};
  while (std::getline(in, line))
    if (line.rfind("CapEff:", 0) == 0) eff = std::stoull(line.substr(7), nullptr, 16);
  auto has = [&](int cap) { return (eff >> cap) & 1; };
  constexpr int kNetAdmin = 12, kSysAdmin = 21, kPerfmon = 38, kBpf = 39;
  std::vector<std::string> missing;
  if (!has(kBpf) && !has(kSysAdmin)) missing.push_back("CAP_BPF");
  if (!has(kPerfmon) && !has(kSysAdmin)) missing.push_back("CAP_PERFMON");
  if (!has(kNetAdmin)) missing.push_back("CAP_NET_ADMIN");
  return fmt::format("{}", fmt::join(missing, ", "));
}

// ---- LiveKernel -------------------------------------------------------------------------

struct LiveKernel::Cache {
  bool btf_loaded = false;
  btf* vmlinux = nullptr;
  int btf_err = 0;
  bool config_read = false;
  std::string config_source;                  // where the config came from ("" if nowhere)
  std::map<std::string, std::string> config;  // CONFIG_X -> "y", "m", "n" (not set)
  std::optional<Probed> sched_cls;

  ~Cache() { btf__free(vmlinux); }
};

LiveKernel::LiveKernel() : cache_(std::make_unique<Cache>()) {}
LiveKernel::~LiveKernel() = default;

std::string LiveKernel::release() const {
  struct utsname u {};
  if (uname(&u) != 0) return "unknown";
  return u.release;
}

std::string LiveKernel::missing_capabilities() const { return chain::missing_capabilities(); }

Probed LiveKernel::probe(const KernelFeature& f) const {
  QuietLibbpf quiet;
  Cache& c = *cache_;
  auto vmlinux = [&]() -> btf* {
    if (!c.btf_loaded) {
      c.btf_loaded = true;
      c.vmlinux = btf__load_vmlinux_btf();
      c.btf_err = c.vmlinux ? 0 : -errno;
      if (!c.vmlinux && c.btf_err == 0) c.btf_err = -ENOENT;
    }
    return c.vmlinux;
  };
  auto sched_cls = [&]() -> const Probed& {
    if (!c.sched_cls) {
      errno = 0;
      int ret = libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_SCHED_CLS, nullptr);
      c.sched_cls = libbpf_answer(ret, errno, "libbpf_probe_bpf_prog_type");
    }
    return *c.sched_cls;
  };

  switch (f.kind) {
    case KernelFeature::Kind::VmlinuxBtf: {
      btf* b = vmlinux();
      if (!b && c.btf_err == -ESRCH)  // libbpf's answer when no location holds it
        return missing(fmt::format("no /sys/kernel/btf/vmlinux and no vmlinux image for {}: the kernel was built "
                                   "without CONFIG_DEBUG_INFO_BTF (btf__load_vmlinux_btf)",
                                   release()));
      if (!b)
        return missing(fmt::format("the kernel's BTF does not load (btf__load_vmlinux_btf: {})", errstr(c.btf_err)));
      const char* where = access("/sys/kernel/btf/vmlinux", R_OK) == 0 ? "/sys/kernel/btf/vmlinux" : "a vmlinux image";
      int id = btf__find_by_name_kind(b, "sk_buff", BTF_KIND_STRUCT);
      if (id < 0) return missing(fmt::format("{} has no struct sk_buff", where));
      if (has_member(b, static_cast<__u32>(id), "ip_summed"))
        return present(fmt::format("sk_buff.ip_summed found in {} (btf__load_vmlinux_btf)", where));
      return missing(fmt::format("{}: struct sk_buff has no ip_summed", where));
    }
    case KernelFeature::Kind::ProgType: {
      if (f.id == BPF_PROG_TYPE_SCHED_CLS) return sched_cls();
      errno = 0;
      int ret = libbpf_probe_bpf_prog_type(static_cast<bpf_prog_type>(f.id), nullptr);
      return libbpf_answer(ret, errno, "libbpf_probe_bpf_prog_type");
    }
    case KernelFeature::Kind::MapType: {
      errno = 0;
      int ret = libbpf_probe_bpf_map_type(static_cast<bpf_map_type>(f.id), nullptr);
      return libbpf_answer(ret, errno, "libbpf_probe_bpf_map_type");
    }
    case KernelFeature::Kind::Helper: {
      // libbpf reads a helper's absence from the verifier's log; a program the kernel refuses
      // to load at all leaves no log, which it takes for "supported": ask only once a
      // SCHED_CLS program is known to load.
      if (sched_cls().state != Probed::State::Present)
        return undetermined("not asked: no SCHED_CLS program can be loaded to ask with");
      int ret = libbpf_probe_bpf_helper(BPF_PROG_TYPE_SCHED_CLS, static_cast<bpf_func_id>(f.id), nullptr);
      if (ret == 0) return missing("the verifier does not offer it to SCHED_CLS programs (libbpf_probe_bpf_helper)");
      return libbpf_answer(ret, 0, "libbpf_probe_bpf_helper");
    }
    case KernelFeature::Kind::Kfunc: {
      btf* b = vmlinux();
      if (!b) return missing("no kernel BTF to find it in");
      std::string name(f.symbol);
      int id = btf__find_by_name_kind(b, name.c_str(), BTF_KIND_FUNC);
      if (id < 0) return missing("the kernel's BTF has no such function");
      // r0 = kfunc(r1 = the context); r0 = 0; exit
      std::vector<bpf_insn> prog = {insn(BPF_JMP | BPF_CALL, 0, BPF_PSEUDO_KFUNC_CALL, 0, id), kReturnZero[0],
                                    kReturnZero[1]};
      std::string why;
      int err = load_sched_cls(prog, &why);
      if (err == 0) return present(fmt::format("a SCHED_CLS program calling it (BTF id {}) loads", id));
      if (refused(err)) return undetermined("the kernel refused to load the probe: " + why);
      return missing("a SCHED_CLS program calling it does not load: " + why);
    }
    case KernelFeature::Kind::MmapArray: {
      LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = BPF_F_MMAPABLE);
      Fd map{bpf_map_create(BPF_MAP_TYPE_ARRAY, "pd_probe", 4, 8, 1, &opts)};
      if (map.fd < 0) {
        int err = -errno;
        if (refused(err)) return undetermined("the kernel refused to create the probe map: " + errstr(err));
        return missing("an array map with BPF_F_MMAPABLE is refused: " + errstr(err));
      }
      long page = sysconf(_SC_PAGESIZE);
      void* mem = mmap(nullptr, static_cast<size_t>(page), PROT_READ | PROT_WRITE, MAP_SHARED, map.fd, 0);
      if (mem == MAP_FAILED) return missing("an array map cannot be mapped: " + errstr(errno));
      munmap(mem, static_cast<size_t>(page));
      return present("an array map with BPF_F_MMAPABLE was created and mapped");
    }
    case KernelFeature::Kind::TestRun: {
      if (sched_cls().state != Probed::State::Present)
        return undetermined("not asked: no SCHED_CLS program can be loaded to run");
      int fd = -1;
      std::string why;
      int err = load_sched_cls({kReturnZero[0], kReturnZero[1]}, &why, &fd);
      if (err) return undetermined("the probe program did not load: " + why);
      Fd prog{fd};
      std::array<uint8_t, 64> pkt{};  // an Ethernet frame of zeros
      LIBBPF_OPTS(bpf_test_run_opts, run, .data_in = pkt.data(), .data_size_in = pkt.size(), .repeat = 1);
      if (bpf_prog_test_run_opts(prog.fd, &run) != 0) {
        err = -errno;
        if (refused(err)) return undetermined("the kernel refused to run the probe: " + errstr(err));
        return missing("BPF_PROG_TEST_RUN: " + errstr(err));
      }
      return present("BPF_PROG_TEST_RUN ran a SCHED_CLS program");
    }
    case KernelFeature::Kind::KernelConfig: {
      if (!c.config_read) {
        c.config_read = true;
        // the kernel's own copy first (CONFIG_IKCONFIG_PROC), then the distribution's;
        // gzread reads a file that is not compressed as it is
        for (const std::string& path : {std::string("/proc/config.gz"), "/boot/config-" + release()}) {
          gzFile in = gzopen(path.c_str(), "rb");
          if (!in) continue;
          char buf[512];
          while (gzgets(in, buf, sizeof(buf))) {
            std::string_view line(buf);
            while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
            if (line.rfind("CONFIG_", 0) == 0) {
              auto eq = line.find('=');
              if (eq != std::string_view::npos) c.config[std::string(line.substr(0, eq))] = line.substr(eq + 1);
            } else if (line.rfind("# CONFIG_", 0) == 0 && line.ends_with(" is not set")) {
              c.config[std::string(line.substr(2, line.size() - 2 - 11))] = "n";
            }
          }
          gzclose(in);
          if (!c.config.empty()) {
            c.config_source = path;
            break;
          }
        }
      }
      if (c.config_source.empty())
        return undetermined(fmt::format("this kernel publishes no config (/proc/config.gz, /boot/config-{}); "
                                        "attaching to the first interface will tell",
                                        release()));
      std::string key(f.symbol);
      auto it = c.config.find(key);
      if (it == c.config.end() || it->second == "n")
        return missing(fmt::format("this kernel was built without {} ({})", key, c.config_source));
      if (it->second != "y" && it->second != "m")
        return missing(fmt::format("{}={} in {}", key, it->second, c.config_source));
      return present(fmt::format("{}={} in {}", key, it->second, c.config_source));
    }
  }
  return undetermined("no probe for this kind of feature");
}

// ---- the check ---------------------------------------------------------------------------

std::vector<const KernelFeature*> KernelReport::missing() const {
  std::vector<const KernelFeature*> out;
  for (const auto& r : rows)
    if (r.result.state == Probed::State::Missing) out.push_back(r.feature);
  return out;
}

std::vector<const KernelReport::Row*> KernelReport::undetermined() const {
  std::vector<const Row*> out;
  for (const auto& r : rows)
    if (r.result.state == Probed::State::Undetermined) out.push_back(&r);
  return out;
}

Result<KernelReport> probe_kernel(const KernelProbe& kernel) {
  KernelReport report;
  report.release = kernel.release();
  if (auto caps = kernel.missing_capabilities(); !caps.empty())
    return make_error(fmt::format("cannot ask the kernel (Linux {}) which BPF features it has: this process lacks {} "
                                  "(policyd needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN)",
                                  report.release, caps));
  for (const auto& f : kKernelFeatures) report.rows.push_back({&f, kernel.probe(f)});
  return report;
}

Status check_kernel(const KernelReport& report) {
  auto lacking = report.missing();
  if (lacking.empty()) return Ok{};
  const KernelVersion running = version_of(report.release);
  std::vector<std::string> items;
  for (const auto* f : lacking) {
    const auto& how = std::find_if(report.rows.begin(), report.rows.end(),
                                   [&](const auto& r) { return r.feature == f; })->result.how;
    // A kernel at least as new as the feature has it switched off or patched out: say how.
    if (running.major && running >= f->since)
      items.push_back(fmt::format("{} (Linux {}; not in this build: {})", f->name, to_string(f->since), how));
    else
      items.push_back(fmt::format("{} (Linux {})", f->name, to_string(f->since)));
  }
  return make_error(fmt::format("this kernel (Linux {}) lacks {} BPF feature{} policyd needs: {}. policyd needs Linux "
                                "{} or later; nothing was loaded, attached or pinned. `policyd --check-kernel` lists "
                                "every feature and how it was probed.",
                                report.release, items.size(), items.size() == 1 ? "" : "s", fmt::join(items, ", "),
                                to_string(minimum_kernel())));
}

std::string format_report(const KernelReport& report) {
  auto lacking = report.missing();
  auto unknown = report.undetermined();
  std::string out;
  if (lacking.empty())
    out += fmt::format("Linux {}: every BPF feature policyd needs is present.\n", report.release);
  else
    out += fmt::format("Linux {}: {} of the BPF features policyd needs {} MISSING; policyd will not start.\n",
                       report.release, lacking.size(), lacking.size() == 1 ? "is" : "are");
  if (!unknown.empty())
    out += fmt::format("{} could not be determined (unknown below): policyd starts, and whatever needs {} fails "
                       "with the kernel's own error.\n",
                       unknown.size(), unknown.size() == 1 ? "it" : "them");
  size_t width = 7;
  for (const auto& r : report.rows) width = std::max(width, r.feature->name.size());
  out += fmt::format("\n{:<{}}  {:<5}  {:<7}  {}\n", "FEATURE", width, "SINCE", "HERE", "NEEDED FOR");
  for (const auto& r : report.rows) {
    const char* here = r.result.state == Probed::State::Present   ? "yes"
                       : r.result.state == Probed::State::Missing ? "MISSING"
                                                                  : "unknown";
    out += fmt::format("{:<{}}  {:<5}  {:<7}  {}\n", r.feature->name, width, to_string(r.feature->since), here,
                       r.feature->why);
    if (r.result.state != Probed::State::Present) out += fmt::format("{:<{}}  {}\n", "", width, r.result.how);
  }
  out += fmt::format("\npolicyd needs Linux {} or later (the latest SINCE above); a kernel with these features "
                     "backported works too.\n",
                     to_string(minimum_kernel()));
  return out;
}

}  // namespace policyd::chain

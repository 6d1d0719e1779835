// The kernel checked at start (chain/kernel_probe.hpp):
//  - the feature table is exactly what the compiled BPF objects call and declare;
//  - on this kernel every probe passes (root; a kernel test, never skipped);
//  - a kernel that lacks something (a KernelProbe standing for it) is refused with one
//    message naming each missing feature, its release and the minimum overall;
//  - the real policyd binary, with libbpf answering as such a kernel would (fake_kernel.c,
//    preloaded), refuses to start before it pins, mounts or attaches anything, and
//    `policyd --check-kernel` reports the same.
#include <catch2/catch.hpp>

#include <elf.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>

#include <bpf/libbpf.h>
#include <fmt/format.h>

#include "chain/abi.hpp"  // the shared layouts the skeletons name
#include "chain/kernel/kernel_probe.hpp"
#include "egress.skel.h"
#include "entry.skel.h"
#include "host.skel.h"
#include "http.skel.h"
#include "jwt.skel.h"
#include "path.skel.h"
#include "ratelimit.skel.h"
#include "sni.skel.h"
#include "verdict.skel.h"

using namespace policyd::chain;
namespace fs = std::filesystem;

namespace {

// ---- what the compiled objects use ------------------------------------------------------

struct ObjectUse {
  std::set<int> helpers;        // bpf_func_id of every helper call
  std::set<std::string> kfuncs;  // extern (__ksym) functions
  std::set<int> map_types;
  std::set<int> prog_types;
  bool global_data = false;  // .bss / .data / .rodata maps
};

// From the ELF itself: the helper calls of every executable section (programs and the
// static functions bpf_loop calls back, which libbpf does not list as programs), i.e.
// BPF_JMP|BPF_CALL with src_reg 0 (a call to a BPF function or a kfunc has src_reg set or
// imm -1 until relocated), and the kfuncs, the undefined global symbols (extern __ksym).
void scan_elf(const void* elf, size_t size, ObjectUse& use) {
  auto* base = static_cast<const uint8_t*>(elf);
  REQUIRE(size > sizeof(Elf64_Ehdr));
  auto* eh = reinterpret_cast<const Elf64_Ehdr*>(base);
  REQUIRE(std::memcmp(eh->e_ident, ELFMAG, SELFMAG) == 0);
  REQUIRE(eh->e_shoff + static_cast<size_t>(eh->e_shnum) * sizeof(Elf64_Shdr) <= size);
  auto* sh = reinterpret_cast<const Elf64_Shdr*>(base + eh->e_shoff);
  for (int i = 0; i < eh->e_shnum; ++i) {
    REQUIRE((sh[i].sh_type == SHT_NOBITS || sh[i].sh_offset + sh[i].sh_size <= size));
    if (sh[i].sh_type == SHT_PROGBITS && (sh[i].sh_flags & SHF_EXECINSTR)) {
      auto* insn = reinterpret_cast<const bpf_insn*>(base + sh[i].sh_offset);
      for (size_t k = 0; k < sh[i].sh_size / sizeof(bpf_insn); ++k)
        if (insn[k].code == (BPF_JMP | BPF_CALL) && insn[k].src_reg == 0 && insn[k].imm > 0)
          use.helpers.insert(insn[k].imm);
    } else if (sh[i].sh_type == SHT_SYMTAB) {
      REQUIRE(sh[i].sh_link < eh->e_shnum);
      auto* names = reinterpret_cast<const char*>(base + sh[sh[i].sh_link].sh_offset);
      auto* sym = reinterpret_cast<const Elf64_Sym*>(base + sh[i].sh_offset);
      for (size_t k = 0; k < sh[i].sh_size / sizeof(Elf64_Sym); ++k)
        if (sym[k].st_shndx == SHN_UNDEF && ELF64_ST_BIND(sym[k].st_info) == STB_GLOBAL)
          use.kfuncs.insert(names + sym[k].st_name);
    }
  }
}

template <typename Bytes>
void scan_object(const char* name, Bytes elf_bytes, ObjectUse& use) {
  size_t size = 0;
  const void* elf = elf_bytes(&size);
  scan_elf(elf, size, use);
  LIBBPF_OPTS(bpf_object_open_opts, opts, .object_name = name);
  bpf_object* obj = bpf_object__open_mem(elf, size, &opts);
  REQUIRE(obj);
  bpf_program* prog;
  bpf_object__for_each_program(prog, obj) use.prog_types.insert(bpf_program__type(prog));
  bpf_map* map;
  bpf_object__for_each_map(map, obj) {
    use.map_types.insert(bpf_map__type(map));
    use.global_data = use.global_data || bpf_map__is_internal(map);
  }
  bpf_object__close(obj);
}

ObjectUse objects_use() {
  ObjectUse use;
  scan_object("entry", entry_bpf__elf_bytes, use);
  scan_object("http", http_bpf__elf_bytes, use);
  scan_object("sni", sni_bpf__elf_bytes, use);
  scan_object("host", host_bpf__elf_bytes, use);
  scan_object("path", path_bpf__elf_bytes, use);
  scan_object("jwt", jwt_bpf__elf_bytes, use);
  scan_object("ratelimit", ratelimit_bpf__elf_bytes, use);
  scan_object("verdict", verdict_bpf__elf_bytes, use);
  scan_object("egress", egress_bpf__elf_bytes, use);
  return use;
}

template <typename Pred>
std::set<int> table_ids(Pred kind) {
  std::set<int> out;
  for (const auto& f : kKernelFeatures)
    if (kind(f)) out.insert(f.id);
  return out;
}

bool has_kind(KernelFeature::Kind k) {
  for (const auto& f : kKernelFeatures)
    if (f.kind == k) return true;
  return false;
}

const KernelFeature& row_named(std::string_view name) {
  for (const auto& f : kKernelFeatures)
    if (f.name == name) return f;
  FAIL("no feature " << name);
  return kKernelFeatures[0];
}

// ---- a kernel that lacks something --------------------------------------------------------

// This kernel, but with another release and with the named features missing (or, for
// `unknown`, not determinable): what a KernelProbe answers for an older or slimmer kernel.
class FakeKernel final : public KernelProbe {
 public:
  FakeKernel(std::string release, std::set<std::string_view> lacks, std::set<std::string_view> unknown = {})
      : release_(std::move(release)), lacks_(std::move(lacks)), unknown_(std::move(unknown)) {}
  std::string release() const override { return release_; }
  std::string missing_capabilities() const override { return caps_; }
  Probed probe(const KernelFeature& f) const override {
    if (lacks_.count(f.name)) return {Probed::State::Missing, "(fake) not in this kernel"};
    if (unknown_.count(f.name)) return {Probed::State::Undetermined, "(fake) this kernel publishes no config"};
    return live_.probe(f);
  }
  std::string caps_;

 private:
  std::string release_;
  std::set<std::string_view> lacks_, unknown_;
  LiveKernel live_;
};

std::string refusal(const KernelProbe& kernel) {
  auto report = probe_kernel(kernel);
  REQUIRE(report);
  auto st = check_kernel(*report);
  REQUIRE_FALSE(st);
  return st.error().message;
}

// ---- the real binary ----------------------------------------------------------------------

struct TempDir {
  std::string path;
  TempDir() {
    std::string t = (fs::temp_directory_path() / "pd-kprobe-XXXXXX").string();
    REQUIRE(mkdtemp(t.data()));
    path = t;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return path + "/" + name; }
};

struct Run {
  int code = -1;
  std::string out, err;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs argv (bounded by timeout(1): 30 s) with `lacks` as the fake kernel's missing
// features ("" runs it unaltered), stdout and stderr captured.
Run run(const TempDir& dir, std::vector<std::string> argv, const std::string& lacks = "") {
  argv.insert(argv.begin(), {"timeout", "--kill-after=5", "30"});
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (!lacks.empty()) {
      setenv("LD_PRELOAD", FAKE_KERNEL_LIB, 1);
      setenv("PD_FAKE_KERNEL_LACKS", lacks.c_str(), 1);
    }
    if (!freopen(dir.file("out").c_str(), "w", stdout) || !freopen(dir.file("err").c_str(), "w", stderr)) _exit(126);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    execvp(args[0], args.data());
    _exit(127);
  }
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  Run r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = slurp(dir.file("out"));
  r.err = slurp(dir.file("err"));
  return r;
}

// policyd started as an operator would, but in network and mount namespaces of its own (so
// even a broken check could not attach to this host's interfaces or leave a bpffs mounted
// here) and with its own pin dir and socket; whatever it leaves is removed.
struct DaemonStart {
  TempDir dir;
  std::string pin_dir = "/sys/fs/bpf/pd-kprobe-test-" + std::to_string(getpid());
  Run r;
  explicit DaemonStart(const std::string& lacks) {
    r = run(dir,
            {"unshare", "--net", "--mount", POLICYD_BIN, "--config",
             POLICYD_TEST_SOURCE_DIR "/config/examples/http-basic.yaml", "--pin-dir", pin_dir, "--socket",
             dir.file("policyd.sock"), "--metrics", "off"},
            lacks);
  }
  ~DaemonStart() {
    std::error_code ec;
    fs::remove_all(pin_dir, ec);
  }
};

}  // namespace

TEST_CASE("the feature table is what the BPF objects use", "[kernel]") {
  const ObjectUse use = objects_use();
  using Kind = KernelFeature::Kind;
  auto helpers = table_ids([](const auto& f) { return f.kind == Kind::Helper; });
  auto maps = table_ids([](const auto& f) { return f.kind == Kind::MapType; });
  auto progs = table_ids([](const auto& f) { return f.kind == Kind::ProgType; });
  std::set<std::string> kfuncs;
  for (const auto& f : kKernelFeatures)
    if (f.kind == Kind::Kfunc) kfuncs.insert(std::string(f.symbol));

  // both ways: a helper the programs call is probed, and a probed helper is one they call
  // (a stale row would raise the minimum kernel for nothing)
  CHECK(use.helpers == helpers);
  CHECK(use.map_types == maps);
  CHECK(use.prog_types == progs);
  CHECK(use.kfuncs == kfuncs);
  CHECK(use.global_data == has_kind(Kind::MmapArray));
  // what the helper ids mean, spot-checked against the objects (the list is non-trivial)
  CHECK(use.helpers.count(BPF_FUNC_loop));
  CHECK(use.helpers.count(BPF_FUNC_tail_call));
  CHECK(use.map_types.count(BPF_MAP_TYPE_RINGBUF));
  CHECK(use.kfuncs.count("bpf_cast_to_kern_ctx"));
}

TEST_CASE("the minimum kernel is the latest release in the table", "[kernel]") {
  KernelVersion latest;
  for (const auto& f : kKernelFeatures) latest = std::max(latest, f.since);
  STATIC_REQUIRE(minimum_kernel() == KernelVersion{6, 2});
  CHECK(minimum_kernel() == latest);
  CHECK(row_named("kfunc bpf_cast_to_kern_ctx").since == minimum_kernel());
  CHECK(to_string(minimum_kernel()) == "6.2");
  std::set<std::string_view> names;
  for (const auto& f : kKernelFeatures) CHECK(names.insert(f.name).second);  // names are unique
}

TEST_CASE("this kernel has every feature policyd needs", "[kernel]") {
  LiveKernel kernel;
  REQUIRE(kernel.missing_capabilities().empty());  // the tests run as root
  auto report = probe_kernel(kernel);
  REQUIRE(report);
  REQUIRE(report->rows.size() == std::size(kKernelFeatures));
  for (const auto& row : report->rows) {
    INFO(row.feature->name << ": " << row.result.how);
    CHECK(row.result.state == Probed::State::Present);
  }
  CHECK(check_kernel(*report).ok());
  auto table = format_report(*report);
  CHECK(table.find("every BPF feature policyd needs is present") != std::string::npos);
  CHECK(table.find("MISSING") == std::string::npos);
}

TEST_CASE("a kernel without bpf_loop or kernel BTF is refused, naming each and the minimum", "[kernel]") {
  SECTION("an older kernel: each missing feature with the release that brought it") {
    FakeKernel old("5.15.0-91-generic", {"helper bpf_loop", "kfunc bpf_cast_to_kern_ctx"});
    CHECK(refusal(old) ==
          "this kernel (Linux 5.15.0-91-generic) lacks 2 BPF features policyd needs: helper bpf_loop (Linux 5.17), "
          "kfunc bpf_cast_to_kern_ctx (Linux 6.2). policyd needs Linux 6.2 or later; nothing was loaded, attached "
          "or pinned. `policyd --check-kernel` lists every feature and how it was probed.");
  }
  SECTION("a new kernel built without BTF: the feature, and how it was found missing") {
    FakeKernel slim("6.18.44-custom", {"kernel BTF"});
    auto msg = refusal(slim);
    CHECK(msg.find("lacks 1 BPF feature policyd needs: kernel BTF (Linux 5.4; not in this build: (fake) not in "
                   "this kernel)") != std::string::npos);
    CHECK(msg.find("policyd needs Linux 6.2 or later") != std::string::npos);
  }
  SECTION("what cannot be determined does not refuse, and says so") {
    FakeKernel unpublished("6.18.44-custom", {}, {"clsact qdisc"});
    auto report = probe_kernel(unpublished);
    REQUIRE(report);
    CHECK(check_kernel(*report).ok());
    REQUIRE(report->undetermined().size() == 1);
    auto table = format_report(*report);
    CHECK(table.find("1 could not be determined") != std::string::npos);
    CHECK(table.find("clsact qdisc") != std::string::npos);
    CHECK(table.find("unknown") != std::string::npos);
  }
  SECTION("the table marks what is missing and how it was found") {
    FakeKernel old("5.15.0-91-generic", {"helper bpf_loop"});
    auto report = probe_kernel(old);
    REQUIRE(report);
    auto table = format_report(*report);
    INFO(table);
    CHECK(table.find("Linux 5.15.0-91-generic: 1 of the BPF features policyd needs is MISSING") != std::string::npos);
    auto row = table.find("helper bpf_loop");
    REQUIRE(row != std::string::npos);
    auto line = table.substr(row, table.find('\n', row) - row);
    CHECK(line.find("5.17") != std::string::npos);
    CHECK(line.find("MISSING") != std::string::npos);
    CHECK(table.find("(fake) not in this kernel") != std::string::npos);
    CHECK(table.find("policyd needs Linux 6.2 or later") != std::string::npos);
  }
  SECTION("without the capabilities to ask, nothing is probed and the message names them") {
    FakeKernel k("6.18.44-custom", {});
    k.caps_ = "CAP_BPF, CAP_NET_ADMIN";
    auto report = probe_kernel(k);
    REQUIRE_FALSE(report);
    CHECK(report.error().message.find("this process lacks CAP_BPF, CAP_NET_ADMIN") != std::string::npos);
  }
}

TEST_CASE("policyd --check-kernel prints the table; 0 on this kernel, 1 on one that lacks bpf_loop",
          "[kernel][binary]") {
  TempDir dir;
  auto ok = run(dir, {POLICYD_BIN, "--check-kernel"});
  INFO(ok.out << ok.err);
  CHECK(ok.code == 0);
  CHECK(ok.out.find("every BPF feature policyd needs is present") != std::string::npos);
  CHECK(ok.out.find("helper bpf_loop") != std::string::npos);

  auto lacking = run(dir, {POLICYD_BIN, "--check-kernel"}, "bpf_loop");
  INFO(lacking.out << lacking.err);
  CHECK(lacking.code == 1);
  CHECK(lacking.out.find("1 of the BPF features policyd needs is MISSING") != std::string::npos);
  auto row = lacking.out.find("helper bpf_loop");
  REQUIRE(row != std::string::npos);
  CHECK(lacking.out.substr(row, lacking.out.find('\n', row) - row).find("MISSING") != std::string::npos);

  // without CAP_BPF the kernel refuses the probes themselves: 2, naming the capability
  auto unprivileged = run(dir, {"setpriv", "--reuid=0", "--inh-caps=-all,+perfmon,+net_admin",
                                "--ambient-caps=-all,+perfmon,+net_admin", "--bounding-set=-all,+perfmon,+net_admin",
                                POLICYD_BIN, "--check-kernel"});
  INFO(unprivileged.out << unprivileged.err);
  CHECK(unprivileged.code == 2);
  CHECK(unprivileged.err.find("this process lacks CAP_BPF") != std::string::npos);
}

TEST_CASE("policyd refuses to start on a kernel that lacks a feature, before it touches anything", "[kernel][binary]") {
  SECTION("no bpf_loop") {
    DaemonStart start("bpf_loop");
    INFO(start.r.out << start.r.err);
    CHECK(start.r.code == 2);
    CHECK(start.r.err.find("lacks 1 BPF feature policyd needs: helper bpf_loop (Linux 5.17; not in this build: "
                           "the verifier does not offer it to SCHED_CLS programs (libbpf_probe_bpf_helper)). "
                           "policyd needs Linux 6.2 or later; nothing was loaded, attached or pinned.") !=
          std::string::npos);
    CHECK(std::count(start.r.err.begin(), start.r.err.end(), '\n') == 1);  // one message
    CHECK_FALSE(fs::exists(start.pin_dir));
    CHECK_FALSE(fs::exists(start.dir.file("policyd.sock")));
  }
  SECTION("no kernel BTF: BTF and the kfunc found through it") {
    DaemonStart start("vmlinux_btf");
    INFO(start.r.out << start.r.err);
    CHECK(start.r.code == 2);
    CHECK(start.r.err.find("lacks 2 BPF features policyd needs: kernel BTF (Linux 5.4; not in this build: no "
                           "/sys/kernel/btf/vmlinux and no vmlinux image for ") != std::string::npos);
    CHECK(start.r.err.find("the kernel was built without CONFIG_DEBUG_INFO_BTF") != std::string::npos);
    CHECK(start.r.err.find("kfunc bpf_cast_to_kern_ctx (Linux 6.2; not in this build: no kernel BTF to find it in)") !=
          std::string::npos);
    CHECK(start.r.err.find("policyd needs Linux 6.2 or later") != std::string::npos);
    CHECK_FALSE(fs::exists(start.pin_dir));
  }
}

TEST_CASE("docs/kernel.md states the minimum and lists every feature with its release", "[kernel][docs]") {
  std::ifstream in(POLICYD_TEST_SOURCE_DIR "/docs/kernel.md");
  REQUIRE(in);
  std::string doc((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  CHECK(doc.find("## Minimum kernel: Linux " + to_string(minimum_kernel()) + "\n") != std::string::npos);
  for (const auto& f : kKernelFeatures) {
    INFO(f.name);
    CHECK(doc.find(fmt::format("| {} | {} |", f.name, to_string(f.since))) != std::string::npos);
  }
}

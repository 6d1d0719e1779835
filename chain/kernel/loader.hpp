// Loading the chain's BPF objects: every object of this build is embedded (objects.cpp,
// generated) and read the same way — opened from its ELF bytes, given the shared maps the
// entry object created (pd_maps.h), verified by the kernel, and reduced to the fds the chain
// keeps (programs, maps, entry's .bss), owned by the caller. The objects themselves are closed
// once loaded: a program and its maps live as long as an fd, pin or attachment holds them.
#pragma once

#include <array>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "abi/pd_maps.hpp"
#include "chain/base/result.hpp"
#include "chain/kernel/fd.hpp"

extern "C" {
#include "pd_abi.h"
}

namespace policyd::chain {

struct EmbeddedObject {
  std::string_view name;  // bpf/<name>.bpf.c
  std::span<const unsigned char> elf;
};
// The objects of this build (generated from bpf/CMakeLists.txt's list).
const std::vector<EmbeddedObject>& embedded_objects();
// One of them; empty if there is none by that name.
std::span<const unsigned char> embedded_object(std::string_view name);

// Programs that are not chain stages, and the object each lives in.
struct ExtraProgram {
  std::string_view object, name, pin;
};
inline constexpr ExtraProgram kPreflightProgram{"entry", "pd_preflight", "prog_preflight"};
inline constexpr ExtraProgram kEgressProgram{"egress", "pd_egress", "prog_egress"};

// What a load gives: the fds the chain keeps, each owned.
struct LoadedChain {
  std::array<Fd, abi::kMapCount> maps;
  std::array<Fd, PD_STAGE_MAX> progs;  // by pd_stage
  Fd preflight, egress;
  Fd bss;  // the entry object's .bss: generations, their configs, build identity
};

struct LoadOptions {
  uint32_t max_flows = 262144;
  uint32_t accum_entries = 4096;
  // Maps to use instead of creating them (a pinned chain's flow table kept across builds).
  const std::map<abi::Map, Fd>* reuse = nullptr;
};

// Loads every object and stage program of this build. A verifier rejection comes back with
// the end of the verifier's log as the error's detail.
Result<LoadedChain> load_chain(const LoadOptions& opts);

// A stage program from an object file's bytes, given the chain's shared maps: a built-in
// stage's new build (`program`: its program's name) or an own stage (`program` empty: the
// object's one SEC("tc") program). A verifier rejection carries the log's end as detail.
Result<Fd> load_stage_program(std::span<const unsigned char> elf, std::string_view stage, std::string_view program,
                              const std::array<Fd, abi::kMapCount>& maps);

// libbpf's messages into the "bpf" logger (once per process is enough; idempotent).
void install_libbpf_logger();
// While one lives, libbpf's messages on this thread are also appended to `into`.
class LogCapture {
 public:
  explicit LogCapture(std::string* into);
  ~LogCapture();
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;
};
// While one lives, libbpf's messages on this thread are not logged ("no qdisc here" is an
// answer when probing interfaces, not an error).
class QuietLibbpf {
 public:
  QuietLibbpf();
  ~QuietLibbpf();
  QuietLibbpf(const QuietLibbpf&) = delete;
  QuietLibbpf& operator=(const QuietLibbpf&) = delete;
};
// The part of a verifier log an operator needs: the last lines before the rejection.
std::string verifier_excerpt(const std::string& log);
// errno (either sign) as text; a refusal for want of privilege says which is missing.
std::string errstr(int err);
std::string refused_why(int err);

}  // namespace policyd::chain

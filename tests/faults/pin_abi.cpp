// pd-pin-abi: makes a pinned chain look as if an older build of policyd (another map layout)
// had left it, by writing its ABI version and build identity into the pinned state. The
// upgrade test uses it to start a daemon of this build on "another ABI's" chain.
//
//   pd-pin-abi <pin dir> <abi version>
#include <bpf/bpf.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

extern "C" {
#include "pd_abi.h"
}
#include "entry.skel.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: pd-pin-abi <pin dir> <abi version>\n");
    return 64;
  }
  const std::string pin = std::string(argv[1]) + "/entry_bss";
  int fd = bpf_obj_get(pin.c_str());
  if (fd < 0) {
    std::fprintf(stderr, "pd-pin-abi: %s: %s\n", pin.c_str(), std::strerror(errno));
    return 1;
  }
  using Bss = entry_bpf::entry_bpf__bss;
  void* mem = mmap(nullptr, sizeof(Bss), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (mem == MAP_FAILED) {
    std::fprintf(stderr, "pd-pin-abi: mapping %s: %s\n", pin.c_str(), std::strerror(errno));
    return 1;
  }
  auto* bss = static_cast<Bss*>(mem);
  bss->pd_abi_version = static_cast<uint32_t>(std::strtoul(argv[2], nullptr, 10));
  bss->pd_build_id ^= 0x5a5a5a5a5a5a5a5aULL;  // another build, too
  munmap(mem, sizeof(Bss));
  close(fd);
  return 0;
}

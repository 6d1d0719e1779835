// Packet tests run in a network namespace of their own: replies the programs clone out of
// "the ingress interface" (loopback under BPF_PROG_TEST_RUN) never leave this process's net.
#include <sched.h>

#include <cstdio>
#include <cstdlib>


#include "run.hpp"

int main(int argc, char** argv) {
  if (unshare(CLONE_NEWNET) != 0) {
    std::perror("unshare(CLONE_NEWNET) (packet tests need root)");
    return 1;
  }
  if (std::system("ip link set lo up") != 0) {
    std::fprintf(stderr, "cannot bring lo up in the test namespace\n");
    return 1;
  }
  return policyd::test::run_catch(argc, argv);
}

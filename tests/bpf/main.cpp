// Packet tests run in a network namespace of their own: replies the programs clone out of
// "the ingress interface" (loopback under BPF_PROG_TEST_RUN) never leave this process's net.
#define CATCH_CONFIG_RUNNER
#include <sched.h>

#include <cstdio>
#include <cstdlib>

#include <catch2/catch.hpp>

int main(int argc, char** argv) {
  if (unshare(CLONE_NEWNET) != 0) {
    std::perror("unshare(CLONE_NEWNET) (packet tests need root)");
    return 1;
  }
  if (std::system("ip link set lo up") != 0) {
    std::fprintf(stderr, "cannot bring lo up in the test namespace\n");
    return 1;
  }
  return Catch::Session().run(argc, argv);
}

// Catch2 main for the end-to-end tests.
//
// Cleanup: every fixture is RAII, so a failing check or an exception cleans up.
// An interrupted run (SIGINT, SIGTERM, SIGHUP) execs this binary into
// "--sweep-after-signal PID SIG", which removes what the run created (namespaces
// with everything running in them, bpffs mounts, temp dirs) and then exits by the
// same signal. A run killed outright (SIGKILL) is swept at the start of the next run.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <climits>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include <unistd.h>

#include "harness.hpp"

namespace {

struct SweepStale : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  void testRunStarting(Catch::TestRunInfo const& info) override {
    TestEventListenerBase::testRunStarting(info);
    policyd::e2e::sweep_stale();
  }
};

}  // namespace

CATCH_REGISTER_LISTENER(SweepStale)

int main(int argc, char* argv[]) {
  policyd::e2e::handle_sweep_flag(argc, argv);
  policyd::e2e::install_cleanup_handlers();
  return Catch::Session().run(argc, argv);
}

// Entry point of the end-to-end tests.
//
// Cleanup: every fixture is RAII, so a failing check or an exception cleans up.
// An interrupted run (SIGINT, SIGTERM, SIGHUP) execs this binary into
// "--sweep-after-signal PID SIG", which removes what the run created (namespaces
// with everything running in them, bpffs mounts, temp dirs) and then exits by the
// same signal. A run killed outright (SIGKILL) is swept at the start of the next run:
// what belongs to a process that is gone, never to another run still going (CTest runs
// the e2e entries side by side).
#include "harness.hpp"
#include "run.hpp"

int main(int argc, char* argv[]) {
  policyd::e2e::handle_sweep_flag(argc, argv);
  policyd::e2e::install_cleanup_handlers();
  policyd::e2e::sweep_stale();
  return policyd::test::run_catch(argc, argv);
}

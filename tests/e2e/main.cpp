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

constexpr std::string_view kSweepFlag = "--sweep-after-signal";

char g_exe[PATH_MAX];
char g_pid[32];

// Async-signal-safe: builds the argument from preformatted strings, then execv.
void on_signal(int sig) {
  char sig_arg[8];
  int n = 0;
  char digits[8];
  for (int v = sig; v > 0 && n < 7; v /= 10) digits[n++] = static_cast<char>('0' + v % 10);
  for (int i = 0; i < n; ++i) sig_arg[i] = digits[n - 1 - i];
  sig_arg[n] = '\0';
  char flag[sizeof "--sweep-after-signal"];
  for (std::size_t i = 0; i < sizeof flag; ++i) flag[i] = "--sweep-after-signal"[i];
  char* const args[] = {g_exe, flag, g_pid, sig_arg, nullptr};
  execv(g_exe, args);
  _exit(128 + sig);
}

void install_cleanup_handlers() {
  const ssize_t len = readlink("/proc/self/exe", g_exe, sizeof g_exe - 1);
  if (len <= 0) return;
  g_exe[len] = '\0';
  std::snprintf(g_pid, sizeof g_pid, "%ld", static_cast<long>(getpid()));
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &sa, nullptr);
  // a closed stdout (e2e_tests | head) must not kill the run before its cleanup
  signal(SIGPIPE, SIG_IGN);
}

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
  if (argc == 4 && argv[1] == kSweepFlag) {
    std::fprintf(stderr, "e2e_tests: interrupted; removing what run %s created\n", argv[2]);
    policyd::e2e::sweep_pid(std::atol(argv[2]));
    const int sig = std::atoi(argv[3]);
    signal(sig, SIG_DFL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_UNBLOCK, &set, nullptr);
    raise(sig);
    return 128 + sig;
  }
  install_cleanup_handlers();
  return Catch::Session().run(argc, argv);
}

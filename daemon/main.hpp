// policyd's main: the command line (CLI.md), then the daemon until SIGTERM.
#pragma once

#include "chain/kernel/chain.hpp"

namespace policyd {

// `faults`: none in production; the tests' policyd-faults binary passes its own
// (tests/e2e/policyd_faults.cpp).
int policyd_main(int argc, char** argv, chain::Faults* faults);

}  // namespace policyd

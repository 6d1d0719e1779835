// Catch2's implementation, compiled once for every test program (it is the slowest
// translation unit of the tree: each test program compiling its own copy cost minutes).
// Catch2 2.x declares Catch::Session only where its implementation is compiled, so the
// programs' main() functions run it through run_catch() (run.hpp).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "run.hpp"

namespace policyd::test {

int run_catch(int argc, char* argv[]) { return Catch::Session().run(argc, argv); }

}  // namespace policyd::test

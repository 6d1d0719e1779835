// Runs Catch2 on the command line (tests/catch/impl.cpp): for test programs with a main() of
// their own. The others link policyd_catch_main.
#pragma once

namespace policyd::test {

int run_catch(int argc, char* argv[]);

}  // namespace policyd::test

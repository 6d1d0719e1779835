// The plain entry point, for test programs that need nothing before the run.
#include "run.hpp"

int main(int argc, char* argv[]) { return policyd::test::run_catch(argc, argv); }

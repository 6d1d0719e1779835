// policyd: the daemon (CLI.md).
#include "daemon/main.hpp"

int main(int argc, char** argv) { return policyd::policyd_main(argc, argv, nullptr); }

// policyd-faults: the policyd daemon with faults the tests choose, for the end-to-end tests
// that prove a fault is caught (a prepared generation that preflight must refuse, a program
// the verifier refuses at start). Production's policyd has no such switches.
//
//   policyd-faults [--corrupt-generation N] [--verifier-reject] -- <policyd arguments>
#include <cstring>
#include <string>
#include <vector>

#include "daemon/main.hpp"
#include "faults.hpp"

int main(int argc, char** argv) {
  policyd::testing::ChainFaults faults;
  int i = 1;
  for (; i < argc; ++i) {
    if (std::strcmp(argv[i], "--") == 0) {
      ++i;
      break;
    }
    if (std::strcmp(argv[i], "--corrupt-generation") == 0 && i + 1 < argc) {
      faults.corrupt_generation = static_cast<uint32_t>(std::stoul(argv[++i]));
    } else if (std::strcmp(argv[i], "--verifier-reject") == 0) {
      faults.reject_load = true;
    } else {
      std::fprintf(stderr, "policyd-faults: unknown fault %s\n", argv[i]);
      return 64;
    }
  }
  std::vector<char*> rest{argv[0]};
  for (; i < argc; ++i) rest.push_back(argv[i]);
  rest.push_back(nullptr);
  return policyd::policyd_main(static_cast<int>(rest.size()) - 1, rest.data(), &faults);
}

// Reload on change of the policy file (inotify on its directory): an edit in place, a
// replacement by rename (what editors do), an invalid file (logged with file:line:column; the
// running policy keeps enforcing), a delete (logged; still enforcing) and a re-create.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "common.hpp"

using namespace policyd::e2e;

namespace {

// Waits (bounded) until the daemon's log has `needle` more times than `before` had.
bool wait_log(const Daemon& d, const std::string& needle, const std::string& before, Millis timeout = 5s) {
  auto count = [&](const std::string& text) {
    size_t n = 0;
    for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
    return n;
  };
  const size_t had = count(before);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (count(d.log()) > had) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

int status_of_unmatched(const Env& env) { return curl(env.topo, "http://app.example.com/no-route-here").http_code; }

}  // namespace

TEST_CASE("the policy file is watched: edit, rename over, invalid, delete, re-create", "[inotify]") {
  Env env(http_policy("deny"));
  const std::string path = env.daemon.policy_path();
  CHECK(status_of_unmatched(env) == 403);

  std::string before = env.daemon.log();
  std::ofstream(path, std::ios::trunc) << http_policy("allow");  // in place
  REQUIRE(wait_log(env.daemon, "ready: generation", before));
  CHECK(status_of_unmatched(env) == 200);

  before = env.daemon.log();
  const std::string tmp = path + ".tmp";
  std::ofstream(tmp) << http_policy("deny");
  std::filesystem::rename(tmp, path);  // write to temp + rename, as editors do
  REQUIRE(wait_log(env.daemon, "ready: generation", before));
  CHECK(status_of_unmatched(env) == 403);

  before = env.daemon.log();
  std::ofstream(path, std::ios::trunc) << "version: 1\ninterfaces: [\"gw-c\"]\nlisteners:\n  - name: web\n    port: nope\n";
  REQUIRE(wait_log(env.daemon, "reload refused", before));
  const std::string refused = env.daemon.log().substr(before.size());
  INFO(refused);
  CHECK(refused.find(path + ":5:") != std::string::npos);  // file:line:column of the bad value
  CHECK(status_of_unmatched(env) == 403);                  // the running policy stays

  before = env.daemon.log();
  std::filesystem::remove(path);
  REQUIRE(wait_log(env.daemon, "was deleted or moved away", before));
  CHECK(status_of_unmatched(env) == 403);

  before = env.daemon.log();
  std::ofstream(path) << http_policy("allow");  // re-created
  REQUIRE(wait_log(env.daemon, "ready: generation", before));
  CHECK(status_of_unmatched(env) == 200);
}

// The systemd notify protocol, with a datagram socket of the test's standing in for
// systemd's (NOTIFY_SOCKET): READY=1 (with STATUS naming the generation) after the first
// apply, RELOADING=1 then READY=1 around a SIGHUP reload, and WATCHDOG=1 from the io loop at
// half of WATCHDOG_USEC.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include "common.hpp"

using namespace policyd::e2e;

namespace {

class NotifySocket {
 public:
  explicit NotifySocket(std::string path) : path_(std::move(path)) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strncpy(a.sun_path, path_.c_str(), sizeof(a.sun_path) - 1);
    if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0)
      throw std::runtime_error("notify socket " + path_ + ": " + std::strerror(errno));
    timeval tv{0, 100000};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  ~NotifySocket() {
    if (fd_ >= 0) close(fd_);
    unlink(path_.c_str());
  }
  const std::string& path() const { return path_; }

  // Reads messages (each may hold several VAR=value lines) until one contains `want` or
  // `timeout` passes; every message read is appended to seen.
  bool wait_for(const std::string& want, Millis timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      char buf[4096];
      ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) continue;
      seen.emplace_back(buf, static_cast<size_t>(n));
      if (seen.back().find(want) != std::string::npos) return true;
    }
    return false;
  }
  size_t count(const std::string& what) const {
    return static_cast<size_t>(
        std::count_if(seen.begin(), seen.end(), [&](const std::string& m) { return m.find(what) != std::string::npos; }));
  }

  std::vector<std::string> seen;

 private:
  std::string path_;
  int fd_ = -1;
};

std::string all(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& m : v) s += "[" + m + "] ";
  return s;
}

}  // namespace

TEST_CASE("sd_notify: READY after the apply, RELOADING then READY around SIGHUP, WATCHDOG from the loop",
          "[systemd]") {
  Env env(http_policy());
  TempDir dir("notify");
  NotifySocket ns(dir.file("notify.sock"));
  env.daemon.stop();
  env.daemon.restart(45s, {"NOTIFY_SOCKET=" + ns.path(), "WATCHDOG_USEC=400000"});

  REQUIRE(ns.wait_for("READY=1", 5s));
  INFO(all(ns.seen));
  CHECK(ns.seen.back().find("STATUS=enforcing generation") != std::string::npos);

  const size_t before = ns.seen.size();
  env.daemon.reload(http_policy("allow"));
  REQUIRE(ns.wait_for("READY=1", 5s));
  std::vector<std::string> around(ns.seen.begin() + static_cast<long>(before), ns.seen.end());
  INFO(all(around));
  auto reloading = std::find_if(around.begin(), around.end(),
                                [](const std::string& m) { return m.find("RELOADING=1") != std::string::npos; });
  REQUIRE(reloading != around.end());
  CHECK(std::find_if(reloading, around.end(), [](const std::string& m) {
          return m.find("READY=1") != std::string::npos;
        }) != around.end());  // READY after RELOADING

  // keep-alives every 200 ms: at least 3 in 1.2 s
  const size_t dogs = ns.count("WATCHDOG=1");
  ns.wait_for("no such message", 1200ms);
  CHECK(ns.count("WATCHDOG=1") >= dogs + 3);
}

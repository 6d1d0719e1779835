// WebSocket through the gateway, with real clients and a real upstream (python3-websockets)
// behind nginx's /ws/ proxy: the upgrade request is judged like any request; after the
// server's 101 the connection carries frames, which are not request heads and are not parsed.
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "common.hpp"

using namespace policyd::e2e;
using json = nlohmann::json;

namespace {

constexpr const char* kPython = "/usr/bin/python3";  // Debian's, with python3-websockets

std::string wsecho() { return source_dir() + "/tests/e2e/wsecho.py"; }

std::uint64_t fail_total(const json& stats) {
  std::uint64_t n = 0;
  for (const auto& [reason, count] : stats.at("fail_mode").items()) n += count.get<std::uint64_t>();
  return n;
}

// The echo upstream in the server namespace, on 127.0.0.1:8765 (nginx proxies /ws/ there).
class WsUpstream {
 public:
  explicit WsUpstream(const Topology& topo)
      : dir_("ws"), proc_(topo.in(Role::server, {kPython, wsecho(), "server", "--port", "8765"}), dir_.file("out")) {
    for (int i = 0; i < 100; ++i) {  // up to 10 s
      std::ifstream in(dir_.file("out"));
      std::string line;
      if (std::getline(in, line) && line == "listening") return;
      if (!proc_.running()) break;
      std::this_thread::sleep_for(100ms);
    }
    throw std::runtime_error("the WebSocket echo upstream did not start (wsecho.py server)");
  }

 private:
  TempDir dir_;
  Process proc_;
};

json ws_client(const Topology& topo, const std::string& host, int messages, int size, const std::string& text = {}) {
  std::vector<std::string> argv{kPython, wsecho(), "client", "--connect", std::string(kServerV4), "--host", host,
                                "--messages", std::to_string(messages), "--size", std::to_string(size)};
  if (!text.empty()) {
    argv.push_back("--text");
    argv.push_back(text);
  }
  auto r = topo.exec(Role::client, argv, 90s);
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  return json::parse(r.out);
}

}  // namespace

TEST_CASE("WebSocket: an allowed connection carries frames after the 101; a refused upgrade is refused",
          "[websocket]") {
  Env env(http_policy());
  WsUpstream upstream(env.topo);
  const auto before = ctl_json(env.daemon, "stats");

  SECTION("allowed: 100 messages of 1000 bytes and a text frame that looks like a request, all echoed") {
    // ws.example.com matches *.example.com (everything allowed); the frames (100 KB) are far
    // more than max_head_bytes, and one of them reads like a request the policy refuses
    auto r = ws_client(env.topo, "ws.example.com", 100, 1000,
                       "GET /admin HTTP/1.1\r\nHost: app.example.com\r\n\r\n");
    INFO(r.dump());
    CHECK(r["status"] == 101);
    CHECK(r["echoed"] == 101);
    CHECK(r["closed"] == true);
    CHECK(r["error"].is_null());
    const auto after = ctl_json(env.daemon, "stats");
    CHECK(after["counters"]["upgraded"].get<uint64_t>() >= before["counters"]["upgraded"].get<uint64_t>() + 1);
    CHECK(fail_total(after) == fail_total(before));  // no fail mode on the way
  }
  SECTION("refused: the upgrade request to a host whose routes refuse it gets the 403") {
    auto r = ws_client(env.topo, "app.example.com", 1, 10);  // /ws/echo: no route, default deny
    INFO(r.dump());
    CHECK(r["status"] == 403);
    CHECK(r["echoed"] == 0);
  }
}

// Stages from object files (`stages:` in the policy, docs/stages.md): a new build of a
// built-in stage swapped in live, with connections kept; anything the kernel refuses leaves
// the running chain enforcing.
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "common.hpp"

using namespace policyd::e2e;
using json = nlohmann::json;

namespace {

int code(const Topology& topo, const char* path) { return curl(topo, cat("http://app.example.com", path)).http_code; }

json status(const Daemon& d) {
  auto r = ctl(d, {"-o", "json", "status"});
  if (r.exit_code != 0) throw std::runtime_error("policyctl status: " + r.err);
  auto j = json::parse(r.out);
  return j.contains("arguments") ? j["arguments"] : j;
}

uint32_t stage_prog(const json& st, const std::string& name) {
  for (const auto& s : st["stages"])
    if (s["name"] == name) return s["prog_id"].get<uint32_t>();
  return 0;
}

// The first request of a keep-alive connection answered; the connection then waits for `go`.
struct HeldConnection {
  std::string go;
  RawClient conn;
  HeldConnection(const Env& env, const TempDir& dir, const char* path)
      : go(dir.file("go")),
        conn(env.topo, kServerV4,
             json::array({http_request("GET", path, "app.example.com"), json{{"await", 1}},
                          json{{"wait_file", dir.file("go")}, {"max_ms", 30000}}, http_request("GET", path, "app.example.com"),
                          json{{"await", 2}}}),
             {"--expect", "2", "--timeout", "45"}) {
    bool first = false;
    for (int i = 0; i < 200 && !first; ++i) {  // up to 20 s
      first = !env.nginx.served_with(path).empty();
      if (!first) std::this_thread::sleep_for(100ms);
    }
    if (!first) throw std::runtime_error("the held connection's first request was not served");
  }
  RawResult release() {
    std::ofstream(go) << "go\n";
    return conn.wait(45s);
  }
};

}  // namespace

TEST_CASE("a new build of a built-in stage is swapped in live, connections kept", "[stages]") {
  Env env(http_policy());
  TempDir dir("stages-builtin");
  const auto before = status(env.daemon);
  const uint32_t builtin_path = stage_prog(before, "path");
  REQUIRE(builtin_path != 0);
  HeldConnection held(env, dir, "/healthz");

  // path's program from a file: another copy of this build's path.bpf.o
  const std::string object = dir.file("path.bpf.o");
  std::filesystem::copy_file(cat(POLICYD_BPF_DIR, "/path.bpf.o"), object);
  auto out = env.daemon.reload(cat(http_policy(), "stages:\n  - { name: path, object: \"", object, "\" }\n"));
  INFO(out);
  CHECK(out.find("ready: generation 2") != std::string::npos);
  CHECK(out.find("path: program built in -> " + object) != std::string::npos);
  const auto after = status(env.daemon);
  const uint32_t swapped = stage_prog(after, "path");
  CHECK(swapped != 0);
  CHECK(swapped != builtin_path);  // a program of its own, loaded from the file
  // the connection opened before the swap carries on, and is judged by the new program
  auto r = held.release();
  INFO(r.json << r.err);
  CHECK(r.statuses == std::vector<int>{200, 200});
  CHECK(code(env.topo, "/admin") == 403);
  CHECK(code(env.topo, "/healthz") == 200);

  // back to the built-in program: the stage is changed again, nothing else
  out = env.daemon.reload(http_policy());
  INFO(out);
  CHECK(out.find("ready: generation 3") != std::string::npos);
  CHECK(stage_prog(status(env.daemon), "path") == builtin_path);
}

TEST_CASE("a stage object the kernel refuses leaves the running chain enforcing", "[stages]") {
  Env env(http_policy());
  TempDir dir("stages-refused");
  // an object whose program is not a stage the chain can run: entry.bpf.o holds no pd_path
  const std::string object = dir.file("path.bpf.o");
  std::filesystem::copy_file(cat(POLICYD_BPF_DIR, "/entry.bpf.o"), object);
  auto r = ctl(env.daemon, {"apply", [&] {
                              auto f = dir.file("p.yaml");
                              std::ofstream(f) << cat(http_policy(), "stages:\n  - { name: path, object: \"", object,
                                                      "\" }\n");
                              return f;
                            }()});
  INFO(r.out << r.err);
  CHECK(r.exit_code == 2);
  CHECK(r.err.find("has no program pd_path") != std::string::npos);
  CHECK(r.err.find(object) != std::string::npos);
  CHECK(status(env.daemon)["generation"] == 1);
  CHECK(code(env.topo, "/healthz") == 200);
  CHECK(code(env.topo, "/admin") == 403);
}

namespace {

std::string canary_policy(const std::string& object) {
  return cat(http_policy(), "stages:\n  - { name: canary, object: \"", object, "\", after: path }\n");
}

int canary_code(const Topology& topo, const char* path, const char* value) {
  return curl(topo, cat("http://app.example.com", path), {"-H", cat("X-Canary: ", value)}).http_code;
}

}  // namespace

// The example own stage (bpf/examples/canary): requests with "X-Canary: block" are refused,
// everything else goes on to the chain's next stage. Its object file replaced (inotify) swaps
// it live; an object the verifier refuses leaves the running chain enforcing, with the
// verifier's words.
TEST_CASE("an own stage runs in the chain, swaps live, and a rejected one changes nothing", "[stages]") {
  TempDir dir("stages-own");
  const std::string object = dir.file("canary.bpf.o");
  std::filesystem::copy_file(cat(POLICYD_BPF_DIR, "/../stages/canary.bpf.o"), object);
  Env env(canary_policy(object));
  CHECK(code(env.topo, "/healthz") == 200);
  CHECK(canary_code(env.topo, "/healthz", "block") == 403);
  CHECK(canary_code(env.topo, "/healthz", "BLOCK") == 200);  // the value is compared as it is
  CHECK(canary_code(env.topo, "/healthz", "stop") == 200);
  CHECK(code(env.topo, "/admin") == 403);  // the stages around it judge as before
  env.nginx.sync();
  CHECK(env.nginx.lines_with("canary").empty());
  auto st = status(env.daemon);
  INFO(st.dump(2));
  const uint32_t first = stage_prog(st, "canary");
  CHECK(first != 0);
  auto stats = json::parse(ctl(env.daemon, {"-o", "json", "stats"}).out);
  if (stats.contains("arguments")) stats = stats["arguments"];
  CHECK(stats["stages"]["canary"].get<int>() >= 4);  // the requests that reached it

  SECTION("a new object file is swapped in, connections kept") {
    HeldConnection held(env, dir, "/healthz");
    // the new build refuses "stop" instead; replaced the way a package manager does (rename)
    const std::string next = dir.file("canary.new");
    std::filesystem::copy_file(cat(POLICYD_BPF_DIR, "/../stages/canary-stop.bpf.o"), next);
    std::filesystem::rename(next, object);
    bool swapped = false;
    for (int i = 0; i < 100 && !swapped; ++i) {  // up to 10 s: the watch is debounced
      swapped = env.daemon.log().find("ready: generation 2") != std::string::npos ||
                env.daemon.log().find("generation 2 active") != std::string::npos;
      if (!swapped) std::this_thread::sleep_for(100ms);
    }
    INFO(env.daemon.log());
    REQUIRE(swapped);
    CHECK(stage_prog(status(env.daemon), "canary") != first);
    CHECK(canary_code(env.topo, "/healthz", "stop") == 403);
    CHECK(canary_code(env.topo, "/healthz", "block") == 200);
    auto r = held.release();
    INFO(r.json << r.err);
    CHECK(r.statuses == std::vector<int>{200, 200});
  }

  SECTION("an object the verifier refuses: exit 2 with the verifier's log, generation 1 stays") {
    const std::string broken = dir.file("broken.bpf.o");
    std::filesystem::copy_file(cat(POLICYD_BPF_DIR, "/../stages/canary-broken.bpf.o"), broken);
    const std::string file = dir.file("broken.yaml");
    std::ofstream(file) << canary_policy(broken);
    auto r = ctl(env.daemon, {"apply", file});
    INFO(r.out << r.err);
    CHECK(r.exit_code == 2);
    CHECK(r.err.find("the kernel refused the canary stage") != std::string::npos);
    CHECK(r.err.find(broken) != std::string::npos);
    CHECK(r.err.find("R") != std::string::npos);  // the verifier's register-level log
    CHECK(status(env.daemon)["generation"] == 1);
    CHECK(stage_prog(status(env.daemon), "canary") == first);
    CHECK(canary_code(env.topo, "/healthz", "block") == 403);
    CHECK(code(env.topo, "/healthz") == 200);
  }
}

// An upgrade to a build whose shared maps have another layout (ABI 7 -> 8 was this redesign's:
// 16 stage slots) starts a fresh chain, into which the pinned flow table's connections are
// copied entry by entry: an established keep-alive connection carries on across it.
TEST_CASE("an upgrade across a change of map layout carries established connections over", "[stages][upgrade]") {
  Env env(http_policy());
  TempDir dir("upgrade-abi");
  HeldConnection held(env, dir, "/healthz");
  env.daemon.stop();
  // the pinned chain now says an ABI 7 build left it
  auto mark = env.topo.exec(Role::gw, {PD_PIN_ABI_BIN, env.daemon.pin_dir(), "7"});
  INFO(mark.out << mark.err);
  REQUIRE(mark.exit_code == 0);
  env.daemon.restart();
  const auto log = env.daemon.log();
  INFO(log);
  CHECK(log.find("has another map layout (ABI 7, this build") != std::string::npos);
  CHECK(log.find("connections carried over from its flow table") != std::string::npos);
  CHECK(log.find(" 0 connections carried over") == std::string::npos);
  auto r = held.release();
  INFO(r.json << r.err);
  CHECK(r.statuses == std::vector<int>{200, 200});
  CHECK(code(env.topo, "/healthz") == 200);
  CHECK(code(env.topo, "/admin") == 403);
}

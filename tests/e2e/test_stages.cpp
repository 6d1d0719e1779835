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

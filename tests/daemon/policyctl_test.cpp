// policyctl end to end: the real binary against a ControlServer whose handlers return each
// documented argument shape; exit codes, text and JSON output, local validation.
#include <sys/wait.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <string>

#include "harness.hpp"

using nlohmann::json;
using policyd::control::ControlServer;
using namespace policyd::test;

namespace {

const std::string kSourceDir = POLICYD_SOURCE_DIR;
const std::string kExample = kSourceDir + "/config/examples/http-basic.yaml";
const std::string kBroken = kSourceDir + "/tests/config/invalid/host-empty-label.yaml";

struct Run {
  int code = -1;
  std::string out, err;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs `policyctl ARGS` through the shell (in `cwd` if given).
Run policyctl(const TempDir& dir, const std::string& args, const std::string& cwd = {}) {
  std::string cmd;
  if (!cwd.empty()) cmd = "cd " + cwd + " && ";
  cmd += std::string(POLICYCTL_PATH) + " " + args + " >" + dir.file("out") + " 2>" + dir.file("err") + " </dev/null";
  int status = std::system(cmd.c_str());
  Run r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  r.out = slurp(dir.file("out"));
  r.err = slurp(dir.file("err"));
  return r;
}

// "FILE:LINE:COL: MESSAGE" as the broken example announces it in its first line.
std::string expected_error(const std::string& file) {
  std::ifstream in(file);
  std::string first;
  std::getline(in, first);
  return file + ":" + first.substr(std::string("# expect: ").size());
}

json status_shape() {
  return {{"version", "0.1.0"},
          {"generation", 4},
          {"policy_source", "/etc/policyd/policy.yaml"},
          {"pin_dir", "/sys/fs/bpf/policyd"},
          {"since", 1700000000},
          {"interfaces", {{{"name", "eth0"}, {"ifindex", 2}}, {{"name", "eth1"}, {"ifindex", 3}}}},
          {"stages",
           {{{"name", "head"}, {"prog_id", 17}, {"in_chain", true}},
            {{"name", "host"}, {"prog_id", 18}, {"in_chain", true}},
            {{"name", "jwt"}, {"prog_id", 19}, {"in_chain", false}}}}};
}

json stats_shape() {
  return {{"counters", {{"packets", 1234}, {"requests", 56}}},
          {"verdicts", {{"allow", 50}, {"deny", 5}, {"reject", 1}}},
          {"fail_mode", {{"parse_error", 2}}},
          {"stages", {{"head", 1234}, {"host", 56}}},
          {"rules",
           {{{"rule", 0}, {"host", "app.example.com"}, {"path", "/api/"}, {"action", "allow"}, {"hits", 40}},
            {{"rule", 1}, {"host", "*.example.com"}, {"path", "/public/"}, {"action", "allow"}, {"hits", 10}}}},
          {"flows", {{"max", 65536}}}};
}

// What apply answers, by mode: 0 applied, 1 invalid, 2 refused (verifier log), 3 no change.
enum ApplyMode { kApplied = 0, kInvalidPolicy = 1, kKernelRefused = 2, kNoChange = 3 };

// A daemon with stub handlers on a socket in `dir`.
class StubDaemon {
 public:
  explicit StubDaemon(const TempDir& dir, bool with_events = false) : server_(dir.file("policyd.sock")) {
    auto& r = server_.registry();
    r["status"] = [](const json&) { return ok(status_shape()); };
    r["stats"] = [](const json&) { return ok(stats_shape()); };
    r["detach"] = [](const json&) {
      return ok({{"detached", json::array({"eth0", "eth1"})}, {"pin_dir", "/sys/fs/bpf/policyd"}});
    };
    r["reload"] = [](const json&) {
      return ok({{"source", "/etc/policyd/policy.yaml"}, {"nested", {{"a", 1}}}}, "reloaded");
    };
    r["apply"] = [this](const json& args) { return apply(args); };
    if (with_events)
      server_.server().add_stream("events", [](const json& args, const std::shared_ptr<ControlServer::Session>& s) {
        json recent = json::array({{{"time", 1700000000}, {"action", "deny"}, {"host", "a.example.com"}}});
        s->write({{"time", 1700000001}, {"action", "reject"}, {"reason", "parse_error"}});
        s->finish();
        return ok(args.value("follow", false) ? json{{"events", json::array()}} : json{{"events", recent}});
      });
    REQUIRE(server_.start());
  }

  std::atomic<int> mode{kApplied};
  std::atomic<int> apply_calls{0};

  json last_apply() {
    std::lock_guard lock(mu_);
    return last_apply_;
  }

 private:
  policyd::control::Response apply(const json& args) {
    ++apply_calls;
    {
      std::lock_guard lock(mu_);
      last_apply_ = args;
    }
    const bool dry = args.value("dry_run", false);
    switch (mode.load()) {
      case kInvalidPolicy:
        return fails(1, "policy rejected: listeners: port 80 used twice");
      case kKernelRefused:
        return fails(2, "stage path: the verifier rejected the program",
                     {{"detail", "0: (61) r1 = *(u32 *)(r1 +0)\ninvalid mem access 'scalar'"}});
      case kNoChange:
        return ok({{"generation", 4},
                   {"dry_run", dry},
                   {"changed", json::array()},
                   {"unchanged", json::array({"head", "host", "path"})},
                   {"duration_us", 300}});
      default:
        return ok({{"generation", dry ? 4 : 5},
                   {"dry_run", dry},
                   {"changed",
                    {{{"stage", "host"}, {"what", "3 host patterns changed"}},
                     {{"stage", "path"}, {"what", "5 routes changed"}}}},
                   {"unchanged", json::array({"head"})},
                   {"duration_us", 1234},
                   {"warnings", json::array({"route 2 is shadowed by route 1"})}});
    }
  }

  ServerThread server_;
  std::mutex mu_;
  json last_apply_;
};

std::string socket_arg(const TempDir& dir) { return "--socket " + dir.file("policyd.sock"); }

}  // namespace

TEST_CASE("policyctl validate needs no daemon", "[policyctl]") {
  TempDir dir;
  auto r = policyctl(dir, "--socket /nonexistent/policyd.sock validate " + kExample);
  CHECK(r.code == 0);
  CHECK(r.out == kExample + ": valid (1 listeners, 2 hosts, 5 routes, 0 sni rules)\n");

  r = policyctl(dir, "validate " + kBroken);
  CHECK(r.code == 1);
  CHECK(r.err == expected_error(kBroken) + "\n");

  r = policyctl(dir, "-o json validate " + kBroken);
  CHECK(r.code == 1);
  auto j = json::parse(r.out);
  CHECK(j["valid"] == false);
  CHECK(j["line"] == 9);
  CHECK(j["column"] == 12);
}

TEST_CASE("policyctl validate reads the JWT key files when it can, and warns when it cannot", "[policyctl]") {
  TempDir dir;
  const std::string full = kSourceDir + "/config/examples/full.yaml";
  const std::string text = slurp(full);
  // the example's secret_file (/etc/policyd/main.key) is not on this machine: everything else
  // is checked, and the warning says what was not
  if (!std::filesystem::exists("/etc/policyd/main.key")) {
    auto r = policyctl(dir, "validate " + full);
    INFO(r.err);
    CHECK(r.code == 0);
    CHECK(r.out.find(full + ": valid") == 0);
    CHECK(r.err.find("/etc/policyd/main.key") != std::string::npos);
    CHECK(r.err.find("the daemon reads it at apply") != std::string::npos);
  }
  // a readable secret: valid, no warning about it
  auto replaced = [](std::string t, const std::string& from, const std::string& to) {
    t.replace(t.find(from), from.size(), to);
    return t;
  };
  auto with = [&](const std::string& from, const std::string& to) { return replaced(text, from, to); };
  std::ofstream(dir.file("main.key")) << "a-secret-of-enough-length-for-hs256-0123456789";
  std::ofstream(dir.file("ok.yaml")) << with("/etc/policyd/main.key", dir.file("main.key"));
  auto r = policyctl(dir, "validate " + dir.file("ok.yaml"));
  INFO(r.err);
  CHECK(r.code == 0);
  CHECK(r.err.find("main.key") == std::string::npos);
  // a JWK Set that is not one: invalid, naming the provider
  std::ofstream(dir.file("jwks.json")) << "{\"keys\": 42}";
  std::ofstream(dir.file("bad.yaml")) << replaced(with("algorithms: [HS256]", "algorithms: [RS256]"),
                                                  "secret_file: /etc/policyd/main.key",
                                                  "jwks_file: " + dir.file("jwks.json"));
  r = policyctl(dir, "validate " + dir.file("bad.yaml"));
  INFO(r.out << r.err);
  CHECK(r.code == 1);
  CHECK(r.err.find("jwt provider 'main'") != std::string::npos);
}

TEST_CASE("policyctl without a daemon exits 3", "[policyctl]") {
  TempDir dir;
  const std::string sock = dir.file("policyd.sock");
  for (const char* cmd : {"status", "stats", "reload", "detach", "events",
                          "diff " POLICYD_SOURCE_DIR "/config/examples/http-basic.yaml"}) {
    INFO(cmd);
    auto r = policyctl(dir, socket_arg(dir) + " " + cmd);
    CHECK(r.code == 3);
    CHECK(r.err == "policyctl: cannot reach policyd at " + sock + ": No such file or directory\n");
  }
  auto r = policyctl(dir, socket_arg(dir) + " -o json status");
  CHECK(r.code == 3);
  CHECK(json::parse(r.out)["result"] == 3);

  // A socket file nobody listens on.
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, sock.c_str(), sizeof addr.sun_path - 1);
  REQUIRE(::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0);
  ::close(fd);
  r = policyctl(dir, socket_arg(dir) + " status");
  CHECK(r.code == 3);
  CHECK(r.err == "policyctl: cannot reach policyd at " + sock + ": Connection refused\n");
}

TEST_CASE("policyctl status", "[policyctl]") {
  TempDir dir;
  StubDaemon d(dir);
  auto r = policyctl(dir, socket_arg(dir) + " status");
  CHECK(r.code == 0);
  CHECK(r.err.empty());
  CHECK(r.out ==
        "policyd 0.1.0\n"
        "generation:  4 (from /etc/policyd/policy.yaml, since 2023-11-14 22:13:20 UTC)\n"
        "pin dir:     /sys/fs/bpf/policyd\n"
        "interfaces:  eth0 (ifindex 2), eth1 (ifindex 3)\n"
        "stages:\n"
        "  head  prog 17\n"
        "  host  prog 18\n"
        "  jwt   prog 19  (not in chain)\n");

  SECTION("-o json prints the arguments with result and text, before or after the command") {
    for (const std::string& args : {"-o json " + socket_arg(dir) + " status", socket_arg(dir) + " status -o json"}) {
      r = policyctl(dir, args);
      CHECK(r.code == 0);
      json expected = status_shape();
      expected["result"] = 0;
      expected["text"] = "";
      CHECK(json::parse(r.out) == expected);
    }
  }
}

TEST_CASE("policyctl stats", "[policyctl]") {
  TempDir dir;
  StubDaemon d(dir);
  auto r = policyctl(dir, socket_arg(dir) + " stats");
  CHECK(r.code == 0);
  CHECK(r.out ==
        "verdicts:   allow 50, deny 5, reject 1\n"
        "fail mode:  parse_error 2\n"
        "flows:      max 65536\n"
        "counters:\n"
        "  packets   1234\n"
        "  requests  56\n"
        "stages:\n"
        "  head  1234\n"
        "  host  56\n"
        "rules:\n"
        "  RULE  HOST             PATH      ACTION  HITS\n"
        "  0     app.example.com  /api/     allow   40\n"
        "  1     *.example.com    /public/  allow   10\n");
  r = policyctl(dir, socket_arg(dir) + " -o json stats");
  CHECK(r.code == 0);
  auto j = json::parse(r.out);
  CHECK(j["rules"][0]["hits"] == 40);
  CHECK(j["verdicts"]["deny"] == 5);
}

TEST_CASE("policyctl apply and diff", "[policyctl]") {
  TempDir dir;
  StubDaemon d(dir);
  const std::string policy = slurp(kExample);

  SECTION("apply sends the file's text, its absolute path, and prints what changed") {
    auto r = policyctl(dir, socket_arg(dir) + " apply config/examples/http-basic.yaml", kSourceDir);
    CHECK(r.code == 0);
    CHECK(r.out ==
          "applied generation 5 (1.2 ms): host: 3 host patterns changed; path: 5 routes changed\n"
          "unchanged: head\n");
    CHECK(r.err == "warning: route 2 is shadowed by route 1\n");
    CHECK(d.apply_calls == 1);
    auto args = d.last_apply();
    CHECK(args["policy"] == policy);
    CHECK(args["source"] == kExample);
    CHECK(args["dry_run"] == false);
  }
  SECTION("apply --dry-run and diff change nothing") {
    for (const char* cmd : {"apply --dry-run", "diff"}) {
      INFO(cmd);
      auto r = policyctl(dir, socket_arg(dir) + " " + cmd + " " + kExample);
      CHECK(r.code == 0);
      CHECK(r.out ==
            "dry run: would change host: 3 host patterns changed; path: 5 routes changed\n"
            "unchanged: head\n");
      CHECK(d.last_apply()["dry_run"] == true);
    }
    CHECK(d.apply_calls == 2);
  }
  SECTION("no change") {
    d.mode = kNoChange;
    auto r = policyctl(dir, socket_arg(dir) + " apply " + kExample);
    CHECK(r.code == 0);
    CHECK(r.out == "no change (generation 4)\n");
    r = policyctl(dir, socket_arg(dir) + " diff " + kExample);
    CHECK(r.out == "dry run: no change\n");
  }
  SECTION("the daemon finds the policy invalid: 1") {
    d.mode = kInvalidPolicy;
    auto r = policyctl(dir, socket_arg(dir) + " apply " + kExample);
    CHECK(r.code == 1);
    CHECK(r.out.empty());
    CHECK(r.err == "policy rejected: listeners: port 80 used twice\n");
  }
  SECTION("the kernel refuses: 2, with the verifier's log") {
    d.mode = kKernelRefused;
    auto r = policyctl(dir, socket_arg(dir) + " apply " + kExample);
    CHECK(r.code == 2);
    CHECK(r.err ==
          "stage path: the verifier rejected the program\n"
          "0: (61) r1 = *(u32 *)(r1 +0)\ninvalid mem access 'scalar'\n");
    r = policyctl(dir, socket_arg(dir) + " -o json apply " + kExample);
    CHECK(r.code == 2);
    auto j = json::parse(r.out);
    CHECK(j["result"] == 2);
    CHECK(j["text"] == "stage path: the verifier rejected the program");
    CHECK_THAT(j["detail"].get<std::string>(), Catch::Contains("invalid mem access"));
  }
  SECTION("-o json") {
    auto r = policyctl(dir, socket_arg(dir) + " -o json apply " + kExample);
    CHECK(r.code == 0);
    auto j = json::parse(r.out);
    CHECK(j["result"] == 0);
    CHECK(j["generation"] == 5);
    CHECK(j["changed"].size() == 2);
  }
  SECTION("an invalid file exits 1 without reaching the daemon") {
    for (const char* cmd : {"apply", "apply --dry-run", "diff"}) {
      INFO(cmd);
      auto r = policyctl(dir, socket_arg(dir) + " " + cmd + " " + kBroken);
      CHECK(r.code == 1);
      CHECK(r.err == expected_error(kBroken) + "\n");
    }
    auto r = policyctl(dir, socket_arg(dir) + " apply " + dir.file("missing.yaml"));
    CHECK(r.code == 1);
    CHECK_THAT(r.err, Catch::StartsWith(dir.file("missing.yaml") + ": "));
    CHECK(d.apply_calls == 0);
  }
}

TEST_CASE("policyctl apply of an invalid file needs no daemon", "[policyctl]") {
  TempDir dir;
  auto r = policyctl(dir, socket_arg(dir) + " apply " + kBroken);
  CHECK(r.code == 1);
  CHECK(r.err == expected_error(kBroken) + "\n");
}

TEST_CASE("policyctl detach, reload and other shapes", "[policyctl]") {
  TempDir dir;
  StubDaemon d(dir);
  auto r = policyctl(dir, socket_arg(dir) + " detach");
  CHECK(r.code == 0);
  CHECK(r.out == "detached from eth0, eth1; unpinned /sys/fs/bpf/policyd\n");

  r = policyctl(dir, socket_arg(dir) + " reload");
  CHECK(r.code == 0);
  CHECK(r.out ==
        "reloaded\n"
        "nested:\n"
        "  a: 1\n"
        "source: /etc/policyd/policy.yaml\n");
  r = policyctl(dir, socket_arg(dir) + " -o json reload");
  CHECK(json::parse(r.out) ==
        json{{"result", 0}, {"text", "reloaded"}, {"source", "/etc/policyd/policy.yaml"}, {"nested", {{"a", 1}}}});
}

TEST_CASE("policyctl events", "[policyctl]") {
  TempDir dir;
  SECTION("from a daemon without events: 2") {
    StubDaemon d(dir);
    auto r = policyctl(dir, socket_arg(dir) + " events");
    CHECK(r.code == 2);
    CHECK(r.err == "policyctl: events are not available from this daemon yet\n");
    r = policyctl(dir, socket_arg(dir) + " events --follow");
    CHECK(r.code == 2);
  }
  SECTION("recent events") {
    StubDaemon d(dir, true);
    auto r = policyctl(dir, socket_arg(dir) + " events");
    CHECK(r.code == 0);
    CHECK(r.out == "2023-11-14 22:13:20 UTC action=deny host=a.example.com\n");
  }
  SECTION("following until the daemon ends the stream") {
    StubDaemon d(dir, true);
    auto r = policyctl(dir, socket_arg(dir) + " events --follow");
    CHECK(r.code == 0);
    CHECK(r.out == "2023-11-14 22:13:21 UTC action=reject reason=parse_error\n");
    // -o json: JSON Lines, one event per line and nothing else
    r = policyctl(dir, socket_arg(dir) + " -o json events -f");
    CHECK(r.code == 0);
    CHECK(json::parse(r.out) == json{{"time", 1700000001}, {"action", "reject"}, {"reason", "parse_error"}});
  }
  SECTION("recent events as JSON Lines") {
    StubDaemon d(dir, true);
    auto r = policyctl(dir, socket_arg(dir) + " -o json events");
    CHECK(r.code == 0);
    CHECK(r.out == "{\"action\":\"deny\",\"host\":\"a.example.com\",\"time\":1700000000}\n");
  }
}

TEST_CASE("policyctl usage errors exit 1", "[policyctl]") {
  TempDir dir;
  CHECK(policyctl(dir, "").code == 1);
  CHECK(policyctl(dir, "frobnicate").code == 1);
  CHECK(policyctl(dir, "apply").code == 1);
  CHECK(policyctl(dir, "-o yaml status").code == 1);
  CHECK(policyctl(dir, "--help").code == 0);
}

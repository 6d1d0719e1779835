// ControlServer over real sockets: dispatch, errors, pipelining, limits, peer credentials,
// the socket file's lifecycle and permissions, streaming sessions.
#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <fstream>
#include <memory>
#include <string>
#include <thread>

#include "harness.hpp"

using nlohmann::json;
using policyd::control::ControlServer;
using policyd::control::Response;
using namespace policyd::test;

// The suite runs as root (scripts/test refuses otherwise): a test that needs it fails,
// naming what needs it, instead of skipping in silence.
#define REQUIRE_ROOT(what) \
  if (::geteuid() != 0) FAIL("needs root: " what)

namespace {

void register_test_handlers(policyd::control::Registry& r) {
  r["echo"] = [](const json& args) { return ok(args, "echoed"); };
  r["refuse"] = [](const json&) {
    return policyd::control::error_response(policyd::make_error("stage path: rejected", "0: (b7) r0 = 0\nbad"));
  };
  r["throw"] = [](const json&) -> Response { throw std::runtime_error("boom"); };
}

// A socket file nobody listens on, as a crashed daemon leaves it.
void make_stale_socket(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  REQUIRE(::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0);
  ::close(fd);
}

bool eventually(const std::function<bool()>& pred) {
  for (int i = 0; i < 500; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return pred();
}

mode_t mode_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

}  // namespace

TEST_CASE("requests are dispatched to their handlers", "[control]") {
  TempDir dir;
  ServerThread s(dir.file("policyd.sock"));
  register_test_handlers(s.registry());
  REQUIRE(s.start());
  Client c(dir.file("policyd.sock"));

  auto r = c.call({{"command", "echo"}, {"arguments", {{"x", 1}, {"y", "two"}}}});
  CHECK(r == json{{"result", 0}, {"text", "echoed"}, {"arguments", {{"x", 1}, {"y", "two"}}}});

  SECTION("arguments may be left out") {
    CHECK(c.call({{"command", "echo"}}) == json{{"result", 0}, {"text", "echoed"}, {"arguments", json::object()}});
    CHECK(c.call({{"command", "echo"}, {"arguments", nullptr}})["arguments"] == json::object());
  }
  SECTION("a refusal carries its detail") {
    auto f = c.call({{"command", "refuse"}});
    CHECK(f["result"] == 2);
    CHECK(f["text"] == "stage path: rejected");
    CHECK(f["arguments"]["detail"] == "0: (b7) r0 = 0\nbad");
  }
  SECTION("a handler that throws answers 2 and the connection goes on") {
    auto f = c.call({{"command", "throw"}});
    CHECK(f["result"] == 2);
    CHECK(f["text"] == "internal error in 'throw': boom");
    CHECK(c.call({{"command", "echo"}})["result"] == 0);
  }
  CHECK(s.stop());
}

TEST_CASE("an unknown command is answered with the known ones", "[control]") {
  TempDir dir;
  ServerThread s(dir.file("policyd.sock"));
  register_test_handlers(s.registry());
  s.server().add_stream("events", [](const json&, const std::shared_ptr<ControlServer::Session>&) { return ok(); });
  REQUIRE(s.start());
  Client c(dir.file("policyd.sock"));
  auto r = c.call({{"command", "nope"}});
  CHECK(r["result"] == 1);
  CHECK(r["text"] == "unknown command 'nope' (known: echo, events, refuse, throw)");

  SECTION("commands added while serving are served") {
    s.on_io([&] { s.server().add("late", [](const json&) { return ok({{"late", true}}); }); });
    CHECK(c.call({{"command", "late"}})["arguments"]["late"] == true);
  }
}

TEST_CASE("malformed requests are answered with 1 and the connection stays usable", "[control]") {
  TempDir dir;
  ServerThread s(dir.file("policyd.sock"));
  register_test_handlers(s.registry());
  REQUIRE(s.start());
  Client c(dir.file("policyd.sock"));

  REQUIRE(c.send("{not json\n"));
  auto r = c.response();
  CHECK(r["result"] == 1);
  CHECK_THAT(r["text"].get<std::string>(), Catch::StartsWith("malformed request: ") && Catch::Contains("parse error"));

  for (const char* bad : {"[1,2]", R"({"arguments":{}})", R"({"command":5})", R"("status")"}) {
    INFO(bad);
    REQUIRE(c.send(std::string(bad) + "\n"));
    r = c.response();
    CHECK(r["result"] == 1);
    CHECK(r["text"] == R"(malformed request: expected {"command": NAME, "arguments": {...}})");
  }
  REQUIRE(c.send("{\"command\":\"echo\",\"arguments\":[1]}\n"));
  CHECK(c.response()["text"] == "malformed request: \"arguments\" must be an object");

  // Blank lines are skipped; CRLF is accepted.
  REQUIRE(c.send("\n  \r\n{\"command\":\"echo\",\"arguments\":{\"n\":1}}\r\n"));
  CHECK(c.response()["arguments"]["n"] == 1);
}

TEST_CASE("several requests on one connection are answered in order", "[control]") {
  TempDir dir;
  ServerThread s(dir.file("policyd.sock"));
  register_test_handlers(s.registry());
  REQUIRE(s.start());
  Client c(dir.file("policyd.sock"));

  SECTION("one after another") {
    for (int i = 0; i < 5; ++i) CHECK(c.call({{"command", "echo"}, {"arguments", {{"i", i}}}})["arguments"]["i"] == i);
  }
  SECTION("pipelined in one write") {
    std::string batch;
    for (int i = 0; i < 20; ++i)
      batch += json{{"command", i % 5 == 4 ? "nope" : "echo"}, {"arguments", {{"i", i}}}}.dump() + "\n";
    REQUIRE(c.send(batch));
    for (int i = 0; i < 20; ++i) {
      auto r = c.response();
      if (i % 5 == 4)
        CHECK(r["result"] == 1);
      else
        CHECK(r["arguments"]["i"] == i);
    }
  }
  SECTION("a request split over several writes") {
    const std::string req = json{{"command", "echo"}, {"arguments", {{"split", true}}}}.dump() + "\n";
    for (std::size_t i = 0; i < req.size(); i += 7) {
      REQUIRE(c.send(req.substr(i, 7)));
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    CHECK(c.response()["arguments"]["split"] == true);
  }
  SECTION("a last request without its newline is answered when the client stops sending") {
    REQUIRE(c.send(R"({"command":"echo","arguments":{"last":1}})"));
    c.shutdown_write();
    CHECK(c.response()["arguments"]["last"] == 1);
    CHECK(c.closed_by_peer());
  }
  SECTION("other connections are served meanwhile") {
    Client d(dir.file("policyd.sock"));
    CHECK(d.call({{"command", "echo"}})["result"] == 0);
    CHECK(c.call({{"command", "echo"}})["result"] == 0);
    s.on_io([&] { CHECK(s.server().session_count() == 2); });
  }
}

TEST_CASE("request lines are limited to 16 MiB", "[control]") {
  TempDir dir;
  ServerThread s(dir.file("policyd.sock"));
  register_test_handlers(s.registry());
  REQUIRE(s.start());
  Client c(dir.file("policyd.sock"));

  SECTION("a large request within the limit is served") {
    const std::string big(4u << 20, 'p');
    auto r = c.call({{"command", "echo"}, {"arguments", {{"policy", big}}}});
    CHECK(r["result"] == 0);
    CHECK(r["arguments"]["policy"].get<std::string>().size() == big.size());
  }
  SECTION("a longer line gets an error, then the connection is closed") {
    std::string huge = R"({"command":"echo","arguments":{"policy":")";
    huge.append(policyd::control::kMaxRequestLine + 16, 'p');
    // The server stops reading at the limit, so send from another thread.
    std::thread sender([&] { c.send(huge); });
    auto r = c.response();
    sender.join();
    CHECK(r["result"] == 1);
    CHECK(r["text"] == "request line longer than 16 MiB; closing the connection");
    CHECK(c.closed_by_peer());
  }
}

TEST_CASE("the socket file: permissions, stale and live sockets, removal", "[control]") {
  TempDir dir;
  const std::string path = dir.file("policyd.sock");

  SECTION("0600 when the group does not exist") {
    ServerThread s(path, "policyd-no-such-group");
    REQUIRE(s.start());
    CHECK(mode_of(path) == 0600);
    CHECK(s.stop());
  }
  SECTION("0660 and the group's when it exists") {
    struct group* g = ::getgrnam("nogroup");
    // Debian's base-passwd always has it; a missing prerequisite fails, naming it.
    if (g == nullptr) FAIL("this test needs the group 'nogroup' (Debian's base-passwd)");
    const gid_t gid = g->gr_gid;
    ServerThread s(path, "nogroup");
    REQUIRE(s.start());
    struct stat st {};
    REQUIRE(::lstat(path.c_str(), &st) == 0);
    CHECK(S_ISSOCK(st.st_mode));
    REQUIRE_ROOT("giving the socket to group nogroup");
    CHECK((st.st_mode & 07777) == 0660);
    CHECK(st.st_gid == gid);
  }
  SECTION("a missing parent directory is created 0750") {
    const std::string nested = dir.file("run/policyd/policyd.sock");
    ServerThread s(nested);
    REQUIRE(s.start());
    CHECK(mode_of(dir.file("run/policyd")) == 0750);
    Client c(nested);
    CHECK(c.call({{"command", "x"}})["result"] == 1);
  }
  SECTION("a stale socket is replaced") {
    make_stale_socket(path);
    ServerThread s(path);
    register_test_handlers(s.registry());
    REQUIRE(s.start());
    Client c(path);
    CHECK(c.call({{"command", "echo"}})["result"] == 0);
  }
  SECTION("a live socket is left alone") {
    int other = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    REQUIRE(::bind(other, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(other, 4) == 0);
    ServerThread s(path);
    auto st = s.start();
    REQUIRE_FALSE(st);
    CHECK(st.error().message == "another policyd is serving " + path);
    Client c;
    CHECK(c.connect(path) == 0);  // still the other one's
    ::close(other);
  }
  SECTION("a file that is not a socket is left alone") {
    std::ofstream(path) << "not a socket\n";
    ServerThread s(path);
    auto st = s.start();
    REQUIRE_FALSE(st);
    CHECK(st.error().message == path + " exists and is not a socket; not replacing it");
    CHECK(std::filesystem::is_regular_file(path));
  }
  SECTION("stop() closes every session, unlinks the socket, and run() returns by itself") {
    ServerThread s(path);
    register_test_handlers(s.registry());
    REQUIRE(s.start());
    Client a(path), b(path);
    CHECK(a.call({{"command", "echo"}})["result"] == 0);
    CHECK(b.call({{"command", "echo"}})["result"] == 0);
    CHECK(s.stop());  // false if io_context::run() had to be stopped by force
    CHECK_FALSE(std::filesystem::exists(path));
    CHECK(a.closed_by_peer());
    CHECK(b.closed_by_peer());
    Client c;
    CHECK(c.connect(path) == ENOENT);
  }
  SECTION("stop() leaves a file that replaced its socket") {
    ServerThread s(path);
    REQUIRE(s.start());
    std::filesystem::remove(path);
    std::ofstream(path) << "someone else's\n";
    CHECK(s.stop());
    CHECK(std::filesystem::is_regular_file(path));
  }
  SECTION("a path too long for a socket is an error") {
    ServerThread s(dir.file(std::string(120, 'x')));
    auto st = s.start();
    REQUIRE_FALSE(st);
    CHECK_THAT(st.error().message, Catch::Contains("is too long"));
  }
}

namespace {

// In a forked child: become uid/gid 65534 with no supplementary groups, connect, send an
// echo request, and exit 0 if the response contains `expect`. Only async-signal-safe calls
// (the parent has threads).
[[noreturn]] void child_as_nobody(const char* path, const char* request, const char* expect) {
  if (::setgroups(0, nullptr) != 0 || ::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0)
    ::_exit(10);
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path, sizeof addr.sun_path - 1);
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) ::_exit(11);
  // A refused peer may find the connection closed already (EPIPE); the answer is there anyway.
  (void)::send(fd, request, std::strlen(request), MSG_NOSIGNAL);
  char buf[4096];
  std::size_t got = 0;
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 5000) <= 0) ::_exit(13);
    ssize_t n = ::recv(fd, buf + got, sizeof buf - 1 - got, 0);
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
    buf[got] = '\0';
    if (std::memchr(buf, '\n', got) != nullptr) break;
  }
  buf[got] = '\0';
  ::_exit(std::strstr(buf, expect) != nullptr ? 0 : 14);
}

int run_as_nobody(const std::string& path, const std::string& expect) {
  const std::string request = R"({"command":"echo","arguments":{"who":"nobody"}})"
                              "\n";
  pid_t pid = ::fork();
  if (pid == 0) child_as_nobody(path.c_str(), request.c_str(), expect.c_str());
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 100;
}

}  // namespace

TEST_CASE("peer credentials: only root, the daemon's uid and the group", "[control][root]") {
  REQUIRE_ROOT("the peer credential test runs a client as uid 65534");
  TempDir dir;
  const std::string path = dir.file("policyd.sock");

  SECTION("another uid outside the group is refused") {
    ServerThread s(path);  // group "policyd"
    register_test_handlers(s.registry());
    REQUIRE(s.start());
    ::chmod(path.c_str(), 0666);  // let the file permissions pass so the peer check decides
    CHECK(run_as_nobody(
              path, R"("result":2,"text":"permission denied: uid 65534 is not root and not in group policyd")") == 0);
    // root still is
    Client c(path);
    CHECK(c.call({{"command", "echo"}})["result"] == 0);
  }
  SECTION("a member of the group (by its gid) is served") {
    if (::getgrgid(65534) == nullptr) FAIL("this test needs a group with gid 65534 (Debian's nogroup)");
    ServerThread s(path, ::getgrgid(65534)->gr_name);
    register_test_handlers(s.registry());
    REQUIRE(s.start());
    CHECK(mode_of(path) == 0660);
    CHECK(run_as_nobody(path, R"({"arguments":{"who":"nobody"},"result":0,"text":"echoed"})") == 0);
  }
  SECTION("without the group's file permissions, connect itself fails") {
    ServerThread s(path, "policyd-no-such-group");
    REQUIRE(s.start());
    CHECK(run_as_nobody(path, "") == 11);
  }
}

TEST_CASE("a streaming command keeps its session", "[control]") {
  TempDir dir;
  ServerThread s(dir.file("policyd.sock"));
  register_test_handlers(s.registry());
  std::shared_ptr<ControlServer::Session> kept;
  std::atomic<int> closed{0};
  s.server().add_stream("events", [&](const json& args, const std::shared_ptr<ControlServer::Session>& session) {
    kept = session;
    session->on_close([&] { ++closed; });
    session->write({{"event", 1}});  // written after the response
    if (!args.value("follow", false)) session->finish();
    return ok({{"events", json::array()}}, "following");
  });
  REQUIRE(s.start());
  Client c(dir.file("policyd.sock"));

  SECTION("lines follow the response until the client goes") {
    auto r = c.call({{"command", "events"}, {"arguments", {{"follow", true}}}});
    CHECK(r["result"] == 0);
    CHECK(r["text"] == "following");
    CHECK(c.response() == json{{"event", 1}});
    bool wrote = false;
    s.on_io([&] { wrote = kept->write({{"event", 2}}); });
    CHECK(wrote);
    CHECK(c.response() == json{{"event", 2}});
    c.close();
    CHECK(eventually([&] { return closed == 1; }));
    s.on_io([&] {
      CHECK_FALSE(kept->is_open());
      CHECK_FALSE(kept->write({{"event", 3}}));
    });
  }
  SECTION("finish() closes once everything is written") {
    auto r = c.call({{"command", "events"}});
    CHECK(r["text"] == "following");
    CHECK(c.response() == json{{"event", 1}});
    CHECK(c.closed_by_peer());
    CHECK(eventually([&] { return closed == 1; }));
  }
  SECTION("stop() ends the stream") {
    c.call({{"command", "events"}, {"arguments", {{"follow", true}}}});
    CHECK(c.response() == json{{"event", 1}});
    CHECK(s.stop());
    CHECK(c.closed_by_peer());
    CHECK(closed == 1);
  }
  s.stop();
  kept.reset();
}

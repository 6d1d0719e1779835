// RAII fixtures for policyd's end-to-end tests (see harness.hpp).
#include "harness.hpp"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <climits>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <fcntl.h>
#include <poll.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef POLICYD_SOURCE_DIR
#error "POLICYD_SOURCE_DIR must be defined by the build"
#endif
#ifndef POLICYD_BIN
#error "POLICYD_BIN must be defined by the build"
#endif

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace policyd::e2e {

namespace {
size_t count_of(const std::string& text, std::string_view needle) {
  size_t n = 0;
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}
}  // namespace

namespace {

constexpr const char* kTestRoot = "/run/policyd-test";
constexpr const char* kSyncPath = "/__e2e_sync/";

std::string topology_script() { return source_dir() + "/scripts/netns-topology"; }
std::string backend_script() { return source_dir() + "/scripts/lib/nginx-backend"; }

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_file(const std::string& path, std::string_view text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out.flush()) throw std::runtime_error(cat("cannot write ", path));
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) lines.push_back(line);
  return lines;
}

int decode_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// Child side of fork(): own process group, default signals, given fds, exec.
[[noreturn]] void exec_child(const std::vector<std::string>& argv, int out_fd, int err_fd) {
  setpgid(0, 0);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int sig : {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGCHLD}) signal(sig, SIG_DFL);
  int null_fd = open("/dev/null", O_RDONLY);
  if (null_fd >= 0) dup2(null_fd, STDIN_FILENO);
  dup2(out_fd, STDOUT_FILENO);
  dup2(err_fd, STDERR_FILENO);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  execvp(args[0], args.data());
  dprintf(STDERR_FILENO, "exec %s: %s\n", args[0], strerror(errno));
  _exit(127);
}

// waitpid with a deadline (polling, so it stays bounded without signals).
std::optional<int> wait_until(pid_t pid, Clock::time_point deadline) {
  for (;;) {
    int status = 0;
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return decode_status(status);
    if (r < 0 && errno != EINTR) return -1;  // not our child any more
    if (Clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(10ms);
  }
}

std::string base36(unsigned long v, int width) {
  static constexpr char digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
  std::string s(static_cast<std::size_t>(width), '0');
  for (int i = width - 1; i >= 0; --i) {
    s[static_cast<std::size_t>(i)] = digits[v % 36];
    v /= 36;
  }
  return s;
}

bool pid_alive(long pid) { return pid > 0 && fs::exists(cat("/proc/", pid)); }

}  // namespace

std::string source_dir() { return POLICYD_SOURCE_DIR; }
std::string policyd_bin() { return POLICYD_BIN; }

// ---------------------------------------------------------------------------
// run / Process

ExecResult run(const std::vector<std::string>& argv, Millis timeout) {
  ExecResult res;
  int out_pipe[2], err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) return res;
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    close(out_pipe[0]);
    close(out_pipe[1]);
    return res;
  }
  const auto deadline = Clock::now() + timeout;
  pid_t pid = fork();
  if (pid < 0) {
    for (int fd : {out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]}) close(fd);
    return res;
  }
  if (pid == 0) exec_child(argv, out_pipe[1], err_pipe[1]);
  setpgid(pid, pid);  // also here, so kill(-pid) works even before the child ran
  close(out_pipe[1]);
  close(err_pipe[1]);

  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&res.out, &res.err};
  std::optional<int> status;
  std::optional<Clock::time_point> exited_at;
  int open_fds = 2;
  char buf[65536];
  for (;;) {
    if (!status) {
      int st = 0;
      if (waitpid(pid, &st, WNOHANG) == pid) {
        status = decode_status(st);
        exited_at = Clock::now();
      }
    }
    if (open_fds == 0 && status) break;
    const auto now = Clock::now();
    // A daemonizing grandchild may keep the pipes open: once the command itself
    // exited, drain for at most 200 ms more.
    if (exited_at && now - *exited_at > 200ms) break;
    if (now >= deadline) {
      kill(-pid, SIGKILL);
      res.timed_out = true;
      break;
    }
    if (open_fds == 0) {
      std::this_thread::sleep_for(5ms);
      continue;
    }
    int r = poll(fds, 2, 20);
    if (r < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        sinks[i]->append(buf, static_cast<std::size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (auto& f : fds)
    if (f.fd >= 0) close(f.fd);
  if (!status) {
    int st = 0;
    waitpid(pid, &st, 0);  // after SIGKILL: returns promptly
    status = decode_status(st);
  }
  res.exit_code = *status;
  return res;
}

Process::Process(const std::vector<std::string>& argv, const std::string& out_path,
                 const std::string& err_path) {
  int out_fd = open(out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (out_fd < 0) throw std::runtime_error(cat("cannot open ", out_path, ": ", strerror(errno)));
  int err_fd = out_fd;
  if (!err_path.empty() && err_path != out_path) {
    err_fd = open(err_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (err_fd < 0) {
      close(out_fd);
      throw std::runtime_error(cat("cannot open ", err_path, ": ", strerror(errno)));
    }
  }
  pid_ = fork();
  if (pid_ == 0) exec_child(argv, out_fd, err_fd);
  const int fork_errno = errno;
  close(out_fd);
  if (err_fd != out_fd) close(err_fd);
  if (pid_ < 0) throw std::runtime_error(std::string("fork: ") + strerror(fork_errno));
  setpgid(pid_, pid_);
}

Process::~Process() { stop(); }

bool Process::running() { return !exit_code().has_value(); }

std::optional<int> Process::exit_code() {
  if (!status_ && pid_ > 0) {
    int st = 0;
    pid_t r = waitpid(pid_, &st, WNOHANG);
    if (r == pid_) status_ = decode_status(st);
    else if (r < 0 && errno == ECHILD) status_ = -1;
  }
  return status_;
}

std::optional<int> Process::wait(Millis timeout) {
  if (!status_ && pid_ > 0) status_ = wait_until(pid_, Clock::now() + timeout);
  return status_;
}

int Process::stop(Millis grace) {
  if (pid_ <= 0) return -1;
  if (!exit_code()) {
    kill(pid_, SIGTERM);
    wait(grace);
  }
  // SIGKILL the group: the process itself if it ignored SIGTERM, and anything it left.
  kill(-pid_, SIGKILL);
  if (!status_) status_ = wait_until(pid_, Clock::now() + 5s).value_or(-1);
  return *status_;
}

// ---------------------------------------------------------------------------
// TempDir / sweep

TempDir::TempDir(std::string_view tag) {
  fs::create_directories(kTestRoot);
  std::string tmpl = cat(kTestRoot, "/", getpid(), "-", tag, "-XXXXXX");
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) throw std::runtime_error(cat("mkdtemp ", tmpl, ": ", strerror(errno)));
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

namespace {

// Marker file of a topology: "<pid>-netns-<name>" in kTestRoot. The sweep only ever
// removes namespaces that have one, so it cannot touch anybody else's.
std::string netns_marker(const std::string& name) {
  return cat(kTestRoot, "/", getpid(), "-netns-", name);
}

// Removes the topologies and temp dirs of every pid for which `doomed(pid)` holds.
template <typename Pred>
void sweep(Pred doomed) {
  std::error_code ec;
  std::vector<fs::path> dirs;
  // Entries are "<pid>-netns-<name>" (marker files) or "<pid>-<tag>-XXXXXX" (dirs).
  for (const auto& e : fs::directory_iterator(kTestRoot, ec)) {
    const std::string n = e.path().filename();
    const auto dash = n.find('-');
    if (dash == std::string::npos || dash == 0 || dash > 9 ||
        !std::all_of(n.begin(), n.begin() + static_cast<long>(dash),
                     [](char c) { return std::isdigit(c); }))
      continue;
    if (!doomed(std::stol(n.substr(0, dash)))) continue;
    if (n.compare(dash, 7, "-netns-") == 0) {
      // namespaces first: this also stops whatever still runs in them
      run({topology_script(), "down", n.substr(dash + 7)}, 20s);
      fs::remove(e.path(), ec);
    } else {
      dirs.push_back(e.path());
    }
  }
  std::vector<std::string> mountpoints;
  {
    std::istringstream info(read_file("/proc/self/mountinfo"));
    for (std::string line; std::getline(info, line);) {
      std::istringstream fields(line);
      std::string id, parent, devno, root, mp;
      fields >> id >> parent >> devno >> root >> mp;
      mountpoints.push_back(mp);
    }
  }
  for (const auto& dir : dirs) {
    const std::string prefix = dir.string() + "/";
    for (auto it = mountpoints.rbegin(); it != mountpoints.rend(); ++it)
      if (it->rfind(prefix, 0) == 0) umount2(it->c_str(), MNT_DETACH);
    fs::remove_all(dir, ec);
  }
}

}  // namespace

void sweep_stale() {
  const long self = getpid();
  sweep([self](long pid) { return pid != self && !pid_alive(pid); });
}

void sweep_pid(long pid) {
  sweep([pid](long p) { return p == pid; });
}

// ---------------------------------------------------------------------------
// Topology

Topology::Topology() {
  if (geteuid() != 0) throw std::runtime_error("the e2e tests need root (network namespaces, bpffs)");
  static std::atomic<unsigned> counter{0};
  name_ = cat("pd", base36(static_cast<unsigned long>(getpid()), 5),
               base36(counter++ % (36 * 36), 2));
  fs::create_directories(kTestRoot);
  write_file(netns_marker(name_), "");
  auto r = run({topology_script(), "up", name_}, 30s);
  if (r.exit_code != 0) {
    run({topology_script(), "down", name_}, 30s);
    std::error_code ec;
    fs::remove(netns_marker(name_), ec);
    throw std::runtime_error(
        cat("netns-topology up ", name_, " failed (", r.exit_code, "):\n", r.out, r.err));
  }
}

Topology::~Topology() {
  auto r = run({topology_script(), "down", name_}, 30s);
  if (r.exit_code != 0) {  // cannot throw from here; leave a trace (the marker stays for the sweep)
    fprintf(stderr, "e2e: netns-topology down %s failed: %s\n", name_.c_str(), r.err.c_str());
    return;
  }
  std::error_code ec;
  fs::remove(netns_marker(name_), ec);
}

std::string Topology::netns(Role role) const {
  switch (role) {
    case Role::client: return name_ + "-c";
    case Role::gw: return name_ + "-g";
    case Role::server: return name_ + "-s";
  }
  return {};
}

std::vector<std::string> Topology::in(Role role, const std::vector<std::string>& argv) const {
  std::vector<std::string> full{"ip", "netns", "exec", netns(role)};
  full.insert(full.end(), argv.begin(), argv.end());
  return full;
}

ExecResult Topology::exec(Role role, const std::vector<std::string>& argv, Millis timeout) const {
  return run(in(role, argv), timeout);
}

// ---------------------------------------------------------------------------
// Backend

Backend::Backend(const Topology& topo, Mode mode)
    : topo_(topo), dir_(mode == Mode::tls ? "nginx-tls" : "nginx") {
  chmod(dir_.path().c_str(), 0755);
  const std::string verb = mode == Mode::tls ? "start-tls" : "start";
  auto r = run({backend_script(), verb, topo_.name(), dir_.path()}, 30s);
  if (r.exit_code != 0) {
    run({backend_script(), "stop", topo_.name(), dir_.path()}, 30s);
    throw std::runtime_error(cat("nginx-backend ", verb, " failed (", r.exit_code, "):\n", r.out, r.err));
  }
}

Backend::~Backend() { run({backend_script(), "stop", topo_.name(), dir_.path()}, 30s); }

std::vector<std::string> Backend::access_log() const {
  auto lines = split_lines(read_file(dir_.file("access.log")));
  std::erase_if(lines, [](const std::string& l) { return l.find(kSyncPath) != std::string::npos; });
  return lines;
}

std::vector<std::string> Backend::lines_with(std::string_view needle) const {
  auto lines = access_log();
  std::erase_if(lines, [&](const std::string& l) { return l.find(needle) == std::string::npos; });
  return lines;
}

std::vector<std::string> Backend::served_with(std::string_view needle) const {
  auto lines = lines_with(needle);
  std::erase_if(lines, [](const std::string& l) { return l.find(" status=400 ") != std::string::npos; });
  return lines;
}

void Backend::sync() const {
  const std::string path = cat(kSyncPath, ++sync_seq_);
  const std::string url = cat("http://", kServerV4, path);
  auto r = topo_.exec(Role::gw,
                      {"curl", "-sS", "--max-time", "3", "-o", "/dev/null", "-H",
                       "Host: e2e-sync.invalid", url},
                      10s);
  if (r.exit_code != 0)
    throw std::runtime_error(cat("sync request to nginx failed: ", r.err));
  const std::string needle = cat("\"GET ", path, " HTTP/1.1\"");
  const auto deadline = Clock::now() + 2s;
  while (read_file(dir_.file("access.log")).find(needle) == std::string::npos) {
    if (Clock::now() >= deadline) throw std::runtime_error(cat("nginx did not log ", path));
    std::this_thread::sleep_for(10ms);
  }
}

std::string Backend::error_log() const { return read_file(dir_.file("error.log")); }

// ---------------------------------------------------------------------------
// Daemon

Daemon::BpfMount::BpfMount(std::string p) : path(std::move(p)) {
  fs::create_directories(path);
  if (mount("bpf", path.c_str(), "bpf", 0, "mode=0700") != 0)
    throw std::runtime_error(cat("mount -t bpf ", path, ": ", strerror(errno)));
}

Daemon::BpfMount::~BpfMount() {
  if (umount2(path.c_str(), 0) != 0) umount2(path.c_str(), MNT_DETACH);
}

Daemon::Detach::~Detach() {
  auto r = topo.exec(Role::gw, {policyd_bin(), "--detach", "--pin-dir", pin_dir}, 15s);
  if (r.exit_code != 0)
    fprintf(stderr, "e2e: policyd --detach --pin-dir %s exited %d: %s\n", pin_dir.c_str(),
            r.exit_code, r.err.c_str());
}

Daemon::Daemon(const Topology& topo, std::string_view policy_yaml, Expect expect, Millis timeout,
               std::vector<std::string> args)
    : dir_("policyd"),
      pin_dir_(dir_.file("bpf")),
      policy_path_(dir_.file("policy.yaml")),
      socket_path_(dir_.file("policyd.sock")),
      log_path_(dir_.file("policyd.log")),
      mount_((write_file(policy_path_, policy_yaml), pin_dir_)),
      detach_{topo, pin_dir_},
      topo_(topo),
      args_(std::move(args)) {
  start_and_wait(expect, timeout);
}

void Daemon::start_and_wait(Expect expect, Millis timeout, const std::vector<std::string>& env,
                            const std::vector<std::string>& faults) {
  const auto ready_before = count_of(log(), "ready: generation");
  std::vector<std::string> argv;
  if (!env.empty()) {
    argv.push_back("env");
    argv.insert(argv.end(), env.begin(), env.end());
  }
  argv.insert(argv.end(), launcher_.begin(), launcher_.end());
  if (faults.empty()) {
    argv.push_back(policyd_bin());
  } else {
    argv.push_back(POLICYD_FAULTS_BIN);
    argv.insert(argv.end(), faults.begin(), faults.end());
    argv.push_back("--");
  }
  for (const auto& a : {std::string("--config"), policy_path_, std::string("--pin-dir"), pin_dir_,
                        std::string("--socket"), socket_path_, std::string("--log-level"), std::string("debug")})
    argv.push_back(a);
  argv.insert(argv.end(), args_.begin(), args_.end());
  proc_.reset();
  proc_.emplace(topo_.in(Role::gw, argv), log_path_);
  const auto deadline = Clock::now() + timeout;
  if (expect == Expect::exit) {
    proc_->wait(timeout);
    return;
  }
  for (;;) {
    if (count_of(log(), "ready: generation") > ready_before) return;
    if (auto code = proc_->exit_code())
      throw std::runtime_error(
          cat("policyd exited with status ", *code, " before it was ready; its log:\n", log()));
    if (Clock::now() >= deadline)
      throw std::runtime_error(cat("policyd did not log \"ready: generation\" within ",
                                   timeout.count(), " ms; its log:\n", log()));
    std::this_thread::sleep_for(50ms);
  }
}

void Daemon::kill9() {
  if (proc_ && proc_->running()) {
    ::kill(proc_->pid(), SIGKILL);
    proc_->wait(5s);
  }
}

void Daemon::restart(Millis timeout, const std::vector<std::string>& env, Expect expect) {
  if (proc_ && proc_->running()) proc_->stop();
  start_and_wait(expect, timeout, env);
}

void Daemon::restart_with_faults(const std::vector<std::string>& faults, Millis timeout, Expect expect) {
  if (proc_ && proc_->running()) proc_->stop();
  start_and_wait(expect, timeout, {}, faults);
}

std::string Daemon::reload(std::string_view policy_yaml, Millis timeout) {
  const std::string before = log();
  const auto outcomes = [](const std::string& text) {
    return count_of(text, "ready: generation") + count_of(text, "reload refused") + count_of(text, "policy unchanged");
  };
  const auto seen = outcomes(before);
  write_file(policy_path_, policy_yaml);
  ::kill(proc_->pid(), SIGHUP);
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    const std::string now = log();
    if (outcomes(now) > seen) return now.substr(std::min(before.size(), now.size()));
    if (Clock::now() >= deadline)
      throw std::runtime_error(cat("policyd did not finish a reload within ", timeout.count(), " ms; its log:\n", now));
    std::this_thread::sleep_for(50ms);
  }
}

Daemon::~Daemon() {
  if (proc_) proc_->stop();
}

std::string Daemon::log() const { return read_file(log_path_); }

// ---------------------------------------------------------------------------
// curl

namespace {

std::optional<std::string> find_header(const std::vector<std::pair<std::string, std::string>>& hs,
                                       std::string_view name) {
  std::optional<std::string> v;
  for (const auto& [n, val] : hs)
    if (lower(n) == lower(name)) v = val;
  return v;
}

std::vector<std::pair<std::string, std::string>> parse_header_block(const std::string& block) {
  std::vector<std::pair<std::string, std::string>> hs;
  std::istringstream in(block);
  std::string line;
  std::getline(in, line);  // status line
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    hs.emplace_back(line.substr(0, colon), value);
  }
  return hs;
}

}  // namespace

std::optional<std::string> CurlResult::header(std::string_view name) const {
  // Only the last header block counts (earlier ones are 1xx responses).
  auto start = headers.rfind("HTTP/");
  return find_header(parse_header_block(start == std::string::npos ? headers : headers.substr(start)),
                     name);
}

CurlResult curl(const Topology& topo, const std::string& url,
                const std::vector<std::string>& extra_args) {
  static constexpr std::string_view kMarker = "\n@@e2e-http-code@@";
  std::vector<std::string> argv{"curl", "-sS", "--max-time", "5", "-D", "-", "-w",
                                std::string(kMarker) + "%{http_code}"};
  if (std::find(extra_args.begin(), extra_args.end(), "--connect-to") == extra_args.end()) {
    argv.push_back("--connect-to");
    argv.push_back(cat("::", kServerV4, ":"));
  }
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  argv.push_back(url);
  auto r = topo.exec(Role::client, argv, 60s);

  CurlResult res;
  res.curl_exit = r.exit_code;
  res.err = r.err;
  std::string out = r.out;
  if (auto m = out.rfind(kMarker); m != std::string::npos) {
    res.http_code = std::atoi(out.c_str() + m + kMarker.size());
    out.resize(m);
  }
  // Header blocks (one per response, 1xx included) come first, each ending in CRLFCRLF.
  std::size_t pos = 0;
  while (out.compare(pos, 5, "HTTP/") == 0) {
    auto end = out.find("\r\n\r\n", pos);
    if (end == std::string::npos) break;
    pos = end + 4;
  }
  res.headers = out.substr(0, pos);
  res.body = out.substr(pos);
  return res;
}

// ---------------------------------------------------------------------------
// server connections

int server_established(const Topology& topo) {
  auto r = topo.exec(Role::server, {"ss", "-Htn", "state", "established", "( sport = :80 )"}, 10s);
  if (r.exit_code != 0) throw std::runtime_error(cat("ss failed: ", r.err));
  return static_cast<int>(split_lines(r.out).size());
}

int wait_server_established(const Topology& topo, int want, Millis timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    int n = server_established(topo);
    if (n == want || Clock::now() >= deadline) return n;
    std::this_thread::sleep_for(50ms);
  }
}

// ---------------------------------------------------------------------------
// raw client

std::optional<std::string> RawResponse::header(std::string_view name) const {
  return find_header(headers, name);
}

namespace {

std::vector<std::string> rawclient_argv(const Topology& topo, std::string_view host,
                                        const nlohmann::json& steps,
                                        const std::vector<std::string>& extra_args,
                                        const TempDir& dir) {
  write_file(dir.file("steps.json"), steps.dump());
  std::vector<std::string> argv{"python3", source_dir() + "/tests/e2e/rawclient.py",
                                "--host", std::string(host), "--steps-file",
                                dir.file("steps.json")};
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  return topo.in(Role::client, argv);
}

}  // namespace

RawClient::RawClient(const Topology& topo, std::string_view host, const nlohmann::json& steps,
                     const std::vector<std::string>& extra_args)
    : dir_("raw"),
      proc_(rawclient_argv(topo, host, steps, extra_args, dir_), dir_.file("out.json"),
            dir_.file("err.txt")) {}

RawResult RawClient::wait(Millis timeout) {
  auto code = proc_.wait(timeout);
  RawResult res;
  res.err = read_file(dir_.file("err.txt"));
  if (!code) {
    proc_.stop();
    throw std::runtime_error(cat("rawclient.py did not finish within ", timeout.count(), " ms"));
  }
  res.json = read_file(dir_.file("out.json"));
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(res.json);
  } catch (const std::exception& e) {
    throw std::runtime_error(
        cat("rawclient.py exited ", *code, " without a JSON summary: ", res.json, res.err));
  }
  res.connected = j.value("connected", false);
  if (!res.connected) return res;
  res.statuses = j.at("statuses").get<std::vector<int>>();
  for (const auto& r : j.at("responses")) {
    RawResponse rr;
    rr.status = r.at("status").get<int>();
    rr.reason = r.at("reason").get<std::string>();
    for (const auto& h : r.at("headers"))
      rr.headers.emplace_back(h.at(0).get<std::string>(), h.at(1).get<std::string>());
    rr.body = r.at("body").get<std::string>();
    res.responses.push_back(std::move(rr));
  }
  res.closed = j.at("closed").get<bool>();
  res.reset = j.at("reset").get<bool>();
  res.timed_out = j.at("timed_out").get<bool>();
  if (!j.at("send_error").is_null()) res.send_error = j.at("send_error").get<std::string>();
  res.bytes = j.at("bytes").get<std::size_t>();
  res.trailing = j.at("trailing").get<std::size_t>();
  return res;
}

RawResult raw_client(const Topology& topo, std::string_view host, const nlohmann::json& steps,
                     const std::vector<std::string>& extra_args) {
  RawClient c(topo, host, steps, extra_args);
  return c.wait();
}

std::string http_request(std::string_view method, std::string_view target, std::string_view host,
                         std::string_view body, std::string_view extra_headers) {
  std::string r;
  r.append(method).append(" ").append(target).append(" HTTP/1.1\r\nHost: ").append(host).append("\r\n");
  r.append(extra_headers);
  if (!body.empty()) r.append("Content-Length: ").append(std::to_string(body.size())).append("\r\n");
  r.append("\r\n").append(body);
  return r;
}

}  // namespace policyd::e2e

// ===========================================================================
// TLS fixtures and clients (see the TLS block at the end of harness.hpp). Added as
// one block, after everything above.
namespace policyd::e2e {

int server_established_on(const Topology& topo, int port) {
  auto r = topo.exec(Role::server, {"ss", "-Htn", "state", "established", cat("( sport = :", port, " )")},
                     10s);
  if (r.exit_code != 0) throw std::runtime_error(cat("ss failed: ", r.err));
  return static_cast<int>(split_lines(r.out).size());
}

int wait_server_established_on(const Topology& topo, int port, int want, Millis timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    int n = server_established_on(topo, port);
    if (n == want || Clock::now() >= deadline) return n;
    std::this_thread::sleep_for(50ms);
  }
}

SClientResult s_client(const Topology& topo, std::string_view address,
                       const std::optional<std::string>& servername,
                       const std::vector<std::string>& extra_args, Millis timeout) {
  const std::string host = address.find(':') != std::string_view::npos
                               ? cat("[", address, "]")
                               : std::string(address);
  std::vector<std::string> argv{"openssl", "s_client", "-connect", cat(host, ":", kTlsPort), "-brief"};
  if (servername) {
    argv.push_back("-servername");
    argv.push_back(*servername);
  } else {
    argv.push_back("-noservername");
  }
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  const auto start = Clock::now();
  auto r = topo.exec(Role::client, argv, timeout);
  SClientResult res;
  res.elapsed = std::chrono::duration_cast<Millis>(Clock::now() - start);
  res.exit_code = r.exit_code;
  res.timed_out = r.timed_out;
  res.out = r.out;
  res.err = r.err;
  const std::string all = r.out + r.err;
  res.handshake = all.find("CONNECTION ESTABLISHED") != std::string::npos;
  static constexpr std::string_view kProto = "Protocol version: ";
  if (auto at = all.find(kProto); at != std::string::npos) {
    auto end = all.find('\n', at);
    res.protocol = all.substr(at + kProto.size(),
                              end == std::string::npos ? std::string::npos : end - at - kProto.size());
  }
  return res;
}

nlohmann::json client_hello(const std::vector<std::string>& args) {
  std::vector<std::string> argv{"python3", source_dir() + "/tests/e2e/clienthello.py"};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = run(argv, 20s);
  if (r.exit_code != 0 || r.timed_out)
    throw std::runtime_error(cat("clienthello.py exited ", r.exit_code, ": ", r.err));
  try {
    return nlohmann::json::parse(r.out);
  } catch (const std::exception& e) {
    throw std::runtime_error(cat("clienthello.py printed no JSON: ", r.out, r.err));
  }
}

std::vector<std::string> raw_tls_args() {
  return {"--port", std::to_string(kTlsPort), "--raw", "--idle-ms", "500", "--timeout", "8"};
}

RawResult raw_tls(const Topology& topo, std::string_view host, const nlohmann::json& steps,
                  const std::vector<std::string>& extra_args) {
  auto args = raw_tls_args();
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  return raw_client(topo, host, steps, args);
}

std::string raw_head_hex(const RawResult& r) {
  try {
    auto j = nlohmann::json::parse(r.json);
    if (j.contains("head_hex") && j["head_hex"].is_string()) return j["head_hex"].get<std::string>();
  } catch (const std::exception&) {
  }
  return {};
}

bool got_server_hello(const RawResult& r) {
  const std::string h = raw_head_hex(r);
  // record: type 0x16, version 0x03 0x0x, length; handshake type 0x02 (ServerHello)
  return h.size() >= 12 && h.compare(0, 4, "1603") == 0 && h.compare(10, 2, "02") == 0;
}

bool got_tls_alert(const RawResult& r) {
  const std::string h = raw_head_hex(r);
  return h.size() >= 6 && h.compare(0, 4, "1503") == 0;
}

// ---------------------------------------------------------------------------
// Cleanup of an interrupted run

namespace {

constexpr std::string_view kSweepFlag = "--sweep-after-signal";
char g_exe[PATH_MAX];
char g_pid[32];

// Async-signal-safe: builds the arguments from preformatted strings, then execv.
void on_signal(int sig) {
  char sig_arg[8];
  char digits[8];
  int n = 0;
  for (int v = sig; v > 0 && n < 7; v /= 10) digits[n++] = static_cast<char>('0' + v % 10);
  for (int i = 0; i < n; ++i) sig_arg[i] = digits[n - 1 - i];
  sig_arg[n] = '\0';
  char flag[sizeof "--sweep-after-signal"];
  for (std::size_t i = 0; i < sizeof flag; ++i) flag[i] = "--sweep-after-signal"[i];
  char* const args[] = {g_exe, flag, g_pid, sig_arg, nullptr};
  execv(g_exe, args);
  _exit(128 + sig);
}

}  // namespace

void install_cleanup_handlers() {
  const ssize_t len = readlink("/proc/self/exe", g_exe, sizeof g_exe - 1);
  if (len <= 0) return;
  g_exe[len] = '\0';
  std::snprintf(g_pid, sizeof g_pid, "%ld", static_cast<long>(getpid()));
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaction(sig, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

void handle_sweep_flag(int argc, char** argv) {
  if (argc != 4 || argv[1] != kSweepFlag) return;
  std::fprintf(stderr, "%s: interrupted; removing what run %s created\n", argv[0], argv[2]);
  sweep_pid(std::atol(argv[2]));
  const int sig = std::atoi(argv[3]);
  signal(sig, SIG_DFL);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  sigprocmask(SIG_UNBLOCK, &set, nullptr);
  raise(sig);
  std::exit(128 + sig);
}

}  // namespace policyd::e2e

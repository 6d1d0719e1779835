// RAII fixtures for policyd's end-to-end tests: network namespaces, nginx, the daemon, clients.
//
// Every fixture cleans up in its destructor, in the order the kernel needs:
// declare Topology first, then Backend, then Daemon, so that the daemon stops
// (and detaches) before nginx stops and the namespaces go away.
//
//   Topology topo;                             // NAME-c / NAME-g / NAME-s, veths, addresses
//   Backend nginx{topo};                       // nginx on port 80 in the server namespace
//   Daemon policyd{topo, kPolicyText};         // policyd in the gateway, waits for "ready: generation"
//   auto r = curl(topo, "http://app.example.com/healthz");
//   CHECK(r.http_code == 200);
//
// Nothing here runs a shell: commands are argv vectors run with fork/execvp, each
// with a hard timeout after which its whole process group is killed.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <sys/types.h>

#include <nlohmann/json.hpp>

namespace policyd::e2e {

using namespace std::chrono_literals;
using Millis = std::chrono::milliseconds;

// Addresses of the test topology (documentation ranges; they exist only inside
// the test namespaces). The gateway's client-facing interface carries the TC hook.
inline constexpr std::string_view kClientV4 = "198.51.100.2";
inline constexpr std::string_view kClientV6 = "2001:db8:c::2";
inline constexpr std::string_view kServerV4 = "192.0.2.2";
inline constexpr std::string_view kServerV6 = "2001:db8:5::2";
inline constexpr std::string_view kGatewayClientIf = "gw-c";

namespace detail {
inline void append(std::string& s, std::string_view v) { s.append(v); }
inline void append(std::string& s, char c) { s.push_back(c); }
template <typename T>
  requires(std::is_integral_v<T> && !std::is_same_v<T, char> && !std::is_same_v<T, bool>)
void append(std::string& s, T v) {
  s.append(std::to_string(v));
}
}  // namespace detail

// Concatenates strings, string_views, literals, chars and integers. Used instead of
// `"literal" + std::string(...)`, which GCC 12 at -O2/-O3 flags with a false
// -Wrestrict (GCC bug 105329) that -Werror turns into a build failure.
template <typename... Parts>
std::string cat(const Parts&... parts) {
  std::string s;
  (detail::append(s, parts), ...);
  return s;
}

// Where the tests find the repository's scripts and the daemon binary.
std::string source_dir();
std::string policyd_bin();

// ---------------------------------------------------------------------------
// Processes

// A command run to completion, or killed when its timeout hit.
struct ExecResult {
  int exit_code = -1;      // exit status; 128+N if killed by signal N; 127 if the command
                           // was not found; -1 if no process could be started
  bool timed_out = false;  // the timeout hit and the command's process group got SIGKILL
  std::string out;         // stdout
  std::string err;         // stderr
};

// Runs argv (execvp, no shell) in a new process group, stdin from /dev/null,
// capturing stdout and stderr. At `timeout` the whole group is SIGKILLed.
ExecResult run(const std::vector<std::string>& argv, Millis timeout);

// A background command in its own process group; stdout and stderr go to files
// (stderr to the stdout file when err_path is empty). The destructor stops it.
class Process {
 public:
  Process(const std::vector<std::string>& argv, const std::string& out_path,
          const std::string& err_path = {});
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  bool running();                             // false once it exited (and was reaped)
  std::optional<int> exit_code();             // exit status (128+N for signal N) once exited
  std::optional<int> wait(Millis timeout);    // bounded wait for exit
  // SIGTERM to the process, bounded wait, then SIGKILL to its process group.
  // Returns the exit status. Idempotent.
  int stop(Millis grace = 5s);

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
};

// A directory under /run/policyd-test (named after this process's pid, so a later
// run can sweep what a killed run left behind), removed recursively in the destructor.
class TempDir {
 public:
  explicit TempDir(std::string_view tag);
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

// Removes what killed earlier runs of e2e_tests left behind: topologies and
// /run/policyd-test directories (with their bpffs mounts) whose owning process no
// longer exists. A topology is only ever removed through the marker file
// /run/policyd-test/<pid>-netns-<name> its Topology wrote, never by name pattern.
// Called once at the start of the test run.
void sweep_stale();
// Removes everything process `pid` created (namespaces, with whatever runs in them;
// temp dirs and their mounts). main() execs itself into this on SIGINT/SIGTERM/SIGHUP,
// so an interrupted run cleans up after itself.
void sweep_pid(long pid);
// SIGINT, SIGTERM, SIGHUP: exec this binary into "--sweep-after-signal PID SIG", which
// removes what PID created (sweep_pid) and dies by SIG. A main() calls handle_sweep_flag()
// first thing, then install_cleanup_handlers().
void install_cleanup_handlers();
// If argv is "--sweep-after-signal PID SIG": sweep and die by SIG (does not return).
void handle_sweep_flag(int argc, char** argv);

// ---------------------------------------------------------------------------
// Fixtures

enum class Role { client, gw, server };

// Three namespaces NAME-c, NAME-g, NAME-s joined by veths (scripts/netns-topology).
// The name is unique per instance: "pd" + this pid (5 base-36 digits) + a counter
// (2 base-36 digits), 9 characters.
class Topology {
 public:
  Topology();   // scripts/netns-topology up NAME; throws with its stderr on failure
  ~Topology();  // scripts/netns-topology down NAME
  Topology(const Topology&) = delete;
  Topology& operator=(const Topology&) = delete;

  const std::string& name() const { return name_; }
  std::string netns(Role role) const;
  // {"ip", "netns", "exec", <ns of role>, argv...}
  std::vector<std::string> in(Role role, const std::vector<std::string>& argv) const;
  // Runs argv inside role's namespace (see run()).
  ExecResult exec(Role role, const std::vector<std::string>& argv, Millis timeout = 10s) const;

 private:
  std::string name_;
};

// nginx in the server namespace (scripts/lib/nginx-backend): port 80 on IPv4 and
// IPv6, keep-alive, answers every request with 200 "ok <method> <host> <uri>\n".
// Mode::tls (start-tls) adds port 443 on IPv4 and IPv6 (TLS 1.2 and 1.3, a self-signed
// P-256 certificate made at start into dir()/tls.crt) that answers every request with
// 200 "tls ok <SNI> <uri>\n" (<SNI>: $ssl_server_name as the client sent it, empty
// without one).
class Backend {
 public:
  enum class Mode { plain, tls };
  explicit Backend(const Topology& topo, Mode mode = Mode::plain);
  ~Backend();
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  // Access log, one line per request:
  //   <msec> <client> conn=<n>#<k> "<request line>" host=<host> status=<status> len=<bytes>
  //   uri="<the normalized path nginx matched its locations with>"
  // and for TLS requests, instead of uri: sni=<SNI or -> tls=<protocol>
  // Sync requests (see sync()) are left out. (A handshake that never carried a request
  // logs nothing.)
  std::vector<std::string> access_log() const;
  // Lines whose text contains `needle` (e.g. "\"GET /admin HTTP/1.1\"").
  std::vector<std::string> lines_with(std::string_view needle) const;
  // Like lines_with, but only requests nginx actually served: status=400 lines are
  // left out. nginx logs a 400 when a connection is reset while it holds only part
  // of a request head, which happens by design when a split head is denied (the
  // segments before the judged one pass through).
  std::vector<std::string> served_with(std::string_view needle) const;
  // Makes the log complete up to now: sends a request from the gateway namespace
  // straight to nginx (not through the TC hook, which is on gw-c ingress) and waits
  // (bounded) until nginx logged it; every request that reached nginx before it
  // is logged by then (one worker, in order).
  void sync() const;

  const std::string& dir() const { return dir_.path(); }
  std::string error_log() const;

 private:
  const Topology& topo_;
  TempDir dir_;
  mutable int sync_seq_ = 0;
};

inline constexpr int kTlsPort = 443;

// nginx in TLS mode. Declare it where Backend would go.
class TlsBackend : public Backend {
 public:
  explicit TlsBackend(const Topology& topo) : Backend(topo, Mode::tls) {}
};

// policyd running in the gateway namespace with a policy given as text.
// Layout of its temp dir: bpf/ (a bpffs mount, --pin-dir), policy.yaml,
// policyd.log (stdout+stderr), policyd.sock.
class Daemon {
 public:
  enum class Expect {
    ready,  // wait (bounded) for "ready: generation" in the log; throw with the log if
            // it does not appear or the process exits
    exit,   // wait (bounded) for the process to exit; never throws for that
  };
  // args: more policyd options, after the ones the fixture sets (e.g. {"--event-rate", "3"}).
  // The waits below are bounds, not expectations: a start loads and verifies every program,
  // which on 2 CPUs busy with other tests took over 10 s (ctest -j runs entries side by side).
  Daemon(const Topology& topo, std::string_view policy_yaml, Expect expect = Expect::ready,
         Millis timeout = 45s, std::vector<std::string> args = {});
  // SIGTERM (bounded wait, then SIGKILL), `policyd --detach --pin-dir DIR` in the
  // gateway namespace, umount the bpffs, remove the temp dir.
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  const std::string& policy_path() const { return policy_path_; }
  const std::string& pin_dir() const { return pin_dir_; }
  const std::string& socket_path() const { return socket_path_; }
  std::string log() const;
  bool running() { return proc_->running(); }
  std::optional<int> exit_code() { return proc_->exit_code(); }
  // SIGTERM now (bounded wait, then SIGKILL); returns the exit status. The pinned
  // chain stays attached by design; the destructor still detaches and cleans up.
  int stop(Millis grace = 5s) { return proc_->stop(grace); }
  // kill -9: no chance to clean up anything (the chain must keep enforcing regardless).
  void kill9();
  // Start policyd again on the same pin dir, config and log (after stop() or kill9()),
  // waiting (bounded) for its "ready: generation" line (or its exit, with Expect::exit);
  // throws with the log otherwise. env: extra VAR=value settings for the process.
  void restart(Millis timeout = 45s, const std::vector<std::string>& env = {}, Expect expect = Expect::ready);
  // restart() as policyd-faults with these faults (tests/faults/policyd_faults.cpp), e.g.
  // {"--corrupt-generation", "2"} or {"--verifier-reject"}.
  void restart_with_faults(const std::vector<std::string>& faults, Millis timeout = 45s, Expect expect = Expect::ready);
  // Later starts (restart()) run policyd through this command (e.g. setpriv with a
  // capability set): {launcher..., policyd, args...}.
  void set_launcher(std::vector<std::string> launcher) { launcher_ = std::move(launcher); }
  // Replace the policy file and send SIGHUP; waits (bounded) until the daemon logged the
  // outcome of that reload, and returns the log lines it wrote since.
  std::string reload(std::string_view policy_yaml, Millis timeout = 45s);

 private:
  struct BpfMount {  // mount -t bpf in the ctor, umount in the dtor
    explicit BpfMount(std::string path);
    ~BpfMount();
    std::string path;
  };
  struct Detach {  // runs policyd --detach in the dtor (after the daemon stopped)
    const Topology& topo;
    std::string pin_dir;
    ~Detach();
  };

  TempDir dir_;
  std::string pin_dir_;
  std::string policy_path_;
  std::string socket_path_;
  std::string log_path_;
  BpfMount mount_;
  Detach detach_;
  void start_and_wait(Expect expect, Millis timeout, const std::vector<std::string>& env = {},
                      const std::vector<std::string>& faults = {});
  const Topology& topo_;
  std::vector<std::string> launcher_;
  std::vector<std::string> args_;
  std::optional<Process> proc_;  // destroyed first: stop, then detach, umount, rm
};

// ---------------------------------------------------------------------------
// Clients

struct CurlResult {
  int http_code = 0;    // %{http_code}; 0 when no response arrived
  int curl_exit = -1;   // curl's exit status (28 timeout, 52 empty reply, 56 reset, ...)
  std::string headers;  // response header block(s) as received
  std::string body;
  std::string err;      // curl's stderr
  // Value of the last header `name` (case-insensitive), if present.
  std::optional<std::string> header(std::string_view name) const;
};

// curl from the client namespace. Adds `-sS --max-time 5 --connect-to ::<server v4>:`
// (any URL host goes to nginx's address through the gateway), unless extra_args
// carries its own --connect-to. Later options override earlier ones, so extra_args
// may pass e.g. {"--max-time", "3"}.
CurlResult curl(const Topology& topo, const std::string& url,
                const std::vector<std::string>& extra_args = {});

// Number of ESTABLISHED TCP connections on the server's port 80.
int server_established(const Topology& topo);
// Polls (bounded) until server_established() == want; returns the last count seen.
int wait_server_established(const Topology& topo, int want, Millis timeout = 2s);

// tests/e2e/rawclient.py's JSON summary.
struct RawResponse {
  int status = 0;
  std::string reason;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::optional<std::string> header(std::string_view name) const;
};
struct RawResult {
  bool connected = false;
  std::vector<int> statuses;
  std::vector<RawResponse> responses;
  bool closed = false;       // peer closed (EOF)
  bool reset = false;        // ECONNRESET / EPIPE
  bool timed_out = false;
  std::string send_error;    // errno name of a failed send, or empty
  std::size_t bytes = 0;
  std::size_t trailing = 0;  // received bytes that did not form a complete response
  std::string json;          // the raw summary (for failure messages)
  std::string err;           // rawclient.py's stderr
};

// Runs tests/e2e/rawclient.py in the client namespace against host:80 in the
// background (so the test can look at the server meanwhile). `steps` is the JSON
// step list rawclient.py documents; extra_args are more rawclient.py options.
class RawClient {
 public:
  RawClient(const Topology& topo, std::string_view host, const nlohmann::json& steps,
            const std::vector<std::string>& extra_args = {});
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;
  // Bounded wait for the run to end, then its parsed summary (throws if it did not end
  // or printed no summary).
  RawResult wait(Millis timeout = 20s);

 private:
  TempDir dir_;
  Process proc_;
};

// RawClient(...).wait() in one call.
RawResult raw_client(const Topology& topo, std::string_view host, const nlohmann::json& steps,
                     const std::vector<std::string>& extra_args = {});

// "METHOD TARGET HTTP/1.1\r\nHost: HOST\r\n" + extra header lines + "\r\n" + body
// (a Content-Length header is added when body is not empty).
std::string http_request(std::string_view method, std::string_view target, std::string_view host,
                         std::string_view body = {}, std::string_view extra_headers = {});

}  // namespace policyd::e2e

// ===========================================================================
// TLS fixtures and clients (tests/e2e/test_tls.cpp). Added as one block, after
// everything above; nothing above depends on it.
namespace policyd::e2e {

// ESTABLISHED TCP connections on the server's local port `port` (443 for TLS).
int server_established_on(const Topology& topo, int port);
// Polls (bounded) until server_established_on(port) == want; returns the last count seen.
int wait_server_established_on(const Topology& topo, int port, int want, Millis timeout = 2s);

// `openssl s_client -connect ADDRESS:443 -brief` from the client namespace, stdin from
// /dev/null (so it closes right after the handshake), with `-servername NAME`, or
// `-noservername` when servername is nullopt.
struct SClientResult {
  int exit_code = -1;      // 0 after a completed handshake; 1 when it failed (a reset
                           // shows as "errno=104" in err)
  bool timed_out = false;  // killed at the timeout (e.g. a dropped connection)
  bool handshake = false;  // "CONNECTION ESTABLISHED" was printed
  std::string protocol;    // "Protocol version:" it printed ("TLSv1.3"), if any
  std::string out;
  std::string err;
  Millis elapsed{0};
};
SClientResult s_client(const Topology& topo, std::string_view address,
                       const std::optional<std::string>& servername,
                       const std::vector<std::string>& extra_args = {}, Millis timeout = 10s);

// Runs tests/e2e/clienthello.py (on the host; it only prints) with args and parses its
// stdout as JSON. Throws with its stderr if it fails or prints no JSON. Use it with
// --format steps, --format info, --split-around-sni K or --split-at-sni-edges K.
nlohmann::json client_hello(const std::vector<std::string>& args);

// rawclient.py options for a TLS conversation on port 443: --port 443 --raw
// --idle-ms 500 --timeout 8 (give them to RawClient together with more options).
std::vector<std::string> raw_tls_args();
// raw_client() against host:443 with raw_tls_args() + extra_args.
RawResult raw_tls(const Topology& topo, std::string_view host, const nlohmann::json& steps,
                  const std::vector<std::string>& extra_args = {});
// First bytes the server sent (hex, at most 64 bytes) from a --raw summary.
std::string raw_head_hex(const RawResult& r);
// The server's first record is a handshake record holding a ServerHello (16 03 0x .. .. 02).
bool got_server_hello(const RawResult& r);
// The server's first record is a TLS alert (15 03 0x).
bool got_tls_alert(const RawResult& r);

}  // namespace policyd::e2e

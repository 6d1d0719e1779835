// policyctl: the operator's CLI (CLI.md). `validate` runs the daemon's own loader locally;
// every other command is one request on the control socket (daemon/control.hpp).
// Exit status: 0 done, 1 the input is invalid, 2 the daemon or the kernel refused,
// 3 the daemon cannot be reached.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "chain/compile.hpp"
#include "chain/jwt_tables.hpp"
#include "config/loader.hpp"
#include "daemon/completion.hpp"
#include "daemon/control.hpp"

namespace {

using json = nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr int kDone = 0;
constexpr int kInvalid = 1;
constexpr int kRefused = 2;
constexpr int kUnreachable = 3;

constexpr seconds kConnectTimeout{5};
constexpr seconds kShortTimeout{10};
constexpr seconds kLongTimeout{60};  // apply, reload: a transaction may take a while

struct Options {
  std::string socket;
  bool json = false;
};

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// ---------------------------------------------------------------------------------------
// Local validation: the daemon's loader and compiler, no daemon.

// Prints the outcome of checking `file` (success only if report_success) and returns 0 or 1.
int check_policy(const std::string& file, bool as_json, bool report_success) {
  try {
    auto policy = policyd::config::load_policy_file(file);
    // What the dataplane would be given: the same compile the daemon runs. The JWT providers'
    // key files are the daemon's: read when this user can, as the daemon will; when they
    // cannot be read here (another user, another host) everything else is still checked, with
    // a warning, and the daemon checks the files at apply.
    auto compiled = policyd::chain::compile_policy(policy, 0, 0, policyd::chain::KeyFiles::WhereReadable);
    if (!compiled) {
      if (as_json)
        std::puts(json{{"valid", false}, {"error", compiled.error().message}}.dump().c_str());
      else
        std::fprintf(stderr, "%s\n", compiled.error().message.c_str());
      return kInvalid;
    }
    const auto* tables = &compiled->tables;
    size_t routes = 0;
    for (const auto& h : policy.hosts) routes += h.routes.size();
    if (!report_success) return kDone;
    if (as_json) {
      json out{{"valid", true},
               {"file", file},
               {"listeners", policy.listeners.size()},
               {"hosts", policy.hosts.size()},
               {"routes", routes},
               {"sni_rules", policy.sni.size()},
               {"warnings", tables->warnings}};
      std::puts(out.dump().c_str());
    } else {
      for (const auto& w : tables->warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
      std::printf("%s: valid (%zu listeners, %zu hosts, %zu routes, %zu sni rules)\n", file.c_str(),
                  policy.listeners.size(), policy.hosts.size(), routes, policy.sni.size());
    }
    return kDone;
  } catch (const policyd::config::PolicyError& e) {
    if (as_json)
      std::puts(json{{"valid", false},
                     {"error", e.what()},
                     {"file", e.file()},
                     {"line", e.line()},
                     {"column", e.column()},
                     {"message", e.message()}}
                    .dump()
                    .c_str());
    else
      std::fprintf(stderr, "%s\n", e.what());
    return kInvalid;
  }
}

int validate(const std::string& file, bool as_json) { return check_policy(file, as_json, true); }

// ---------------------------------------------------------------------------------------
// The control socket, client side: blocking I/O with deadlines.

class Connection {
 public:
  Connection() = default;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection() {
    if (fd_ >= 0) ::close(fd_);
  }

  // Empty on success, else why not.
  std::string open(const std::string& path, milliseconds timeout) {
    sockaddr_un addr{};
    if (path.size() >= sizeof addr.sun_path) return std::strerror(ENAMETOOLONG);
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.data(), path.size());
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return std::strerror(errno);
    // A blocking connect on a local socket waits only while the listener's backlog is
    // full, for at most the send timeout.
    set_send_timeout(timeout);
    if (::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
      if (errno == EAGAIN)
        return fmt::format("not accepting connections (waited {} s)",
                           std::chrono::duration_cast<seconds>(timeout).count());
      return std::strerror(errno);
    }
    return {};
  }

  // Empty on success, else why not.
  std::string send_line(std::string line, milliseconds timeout) {
    line.push_back('\n');
    set_send_timeout(timeout);
    std::size_t done = 0;
    while (done < line.size()) {
      ssize_t n = ::send(fd_, line.data() + done, line.size() - done, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return "timed out sending the request";
        return std::strerror(errno);
      }
      done += static_cast<std::size_t>(n);
    }
    return {};
  }

  enum class Read { kLine, kClosed, kTimeout, kError };

  // One line (without its newline). No timeout: wait as long as it takes.
  Read read_line(std::string* line, std::optional<milliseconds> timeout, std::string* error) {
    const auto deadline = std::chrono::steady_clock::now() + timeout.value_or(milliseconds(0));
    for (;;) {
      if (auto nl = buf_.find('\n'); nl != std::string::npos) {
        line->assign(buf_, 0, nl);
        buf_.erase(0, nl + 1);
        return Read::kLine;
      }
      int wait_ms = -1;
      if (timeout) {
        auto left = std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return Read::kTimeout;
        wait_ms = static_cast<int>(left.count());
      }
      pollfd p{fd_, POLLIN, 0};
      int rc = ::poll(&p, 1, wait_ms);
      if (rc < 0) {
        if (errno == EINTR) continue;
        *error = std::strerror(errno);
        return Read::kError;
      }
      if (rc == 0) continue;  // the deadline check above decides
      char chunk[64 * 1024];
      ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n < 0) {
        if (errno == EINTR || errno == EAGAIN) continue;
        *error = std::strerror(errno);
        return Read::kError;
      }
      if (n == 0) {
        if (!buf_.empty()) {  // a last line without its newline
          line->swap(buf_);
          buf_.clear();
          return Read::kLine;
        }
        return Read::kClosed;
      }
      buf_.append(chunk, static_cast<std::size_t>(n));
    }
  }

 private:
  void set_send_timeout(milliseconds timeout) {
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }

  int fd_ = -1;
  std::string buf_;
};

// A failure of policyctl itself or of the transport: printed as text or as JSON.
int fail(const Options& o, int code, const std::string& message) {
  if (o.json)
    std::puts(dump(json{{"result", code}, {"text", message}}).c_str());
  else
    std::fprintf(stderr, "policyctl: %s\n", message.c_str());
  return code;
}

struct Exchange {
  int code = kDone;  // kDone when `response` holds the daemon's answer
  json response;
};

// Sends one request and reads its response. On failure, prints why and returns the code.
Exchange request(const Options& o, Connection& conn, const std::string& command, json arguments, milliseconds timeout) {
  Exchange x;
  if (auto err = conn.open(o.socket, kConnectTimeout); !err.empty()) {
    x.code = fail(o, kUnreachable, fmt::format("cannot reach policyd at {}: {}", o.socket, err));
    return x;
  }
  const std::string line = dump(json{{"command", command}, {"arguments", std::move(arguments)}});
  std::string send_error = conn.send_line(line, timeout);
  std::string text, read_error;
  // Even when sending failed, the daemon may have answered first (e.g. permission denied).
  auto got = conn.read_line(&text, send_error.empty() ? timeout : milliseconds(1000), &read_error);
  if (got != Connection::Read::kLine) {
    std::string why;
    if (!send_error.empty())
      why = fmt::format("cannot send to policyd at {}: {}", o.socket, send_error);
    else if (got == Connection::Read::kTimeout)
      why = fmt::format("no answer from policyd at {} within {} s (the request may still complete)", o.socket,
                        std::chrono::duration_cast<seconds>(timeout).count());
    else if (got == Connection::Read::kClosed)
      why = fmt::format("policyd at {} closed the connection without answering", o.socket);
    else
      why = fmt::format("reading from policyd at {}: {}", o.socket, read_error);
    x.code = fail(o, kUnreachable, why);
    return x;
  }
  try {
    x.response = json::parse(text);
  } catch (const json::exception& e) {
    x.code = fail(o, kRefused, fmt::format("malformed response from policyd: {}", e.what()));
    return x;
  }
  if (!x.response.is_object() || !x.response.contains("result") || !x.response["result"].is_number_integer()) {
    x.code = fail(o, kRefused, "malformed response from policyd: no integer \"result\"");
    return x;
  }
  if (!x.response.contains("arguments") || x.response["arguments"].is_null()) x.response["arguments"] = json::object();
  if (!x.response.contains("text") || !x.response["text"].is_string()) x.response["text"] = "";
  return x;
}

int exit_code(const json& response) {
  int r = response["result"].get<int>();
  return r >= kDone && r <= kRefused ? r : kRefused;
}

// ---------------------------------------------------------------------------------------
// Text rendering

std::string scalar(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return "-";
  if (v.is_boolean()) return v.get<bool>() ? "yes" : "no";
  return dump(v);
}

std::string str(const json& obj, const char* key, const std::string& fallback = "-") {
  auto it = obj.find(key);
  return it == obj.end() ? fallback : scalar(*it);
}

bool is_scalar_array(const json& v) {
  return std::all_of(v.begin(), v.end(), [](const json& e) { return !e.is_structured(); });
}

std::string one_line(const json& v) {
  if (!v.is_structured()) return scalar(v);
  std::vector<std::string> parts;
  if (v.is_object())
    for (const auto& [k, e] : v.items()) parts.push_back(fmt::format("{}={}", k, one_line(e)));
  else
    for (const auto& e : v) parts.push_back(one_line(e));
  return fmt::format("{}", fmt::join(parts, v.is_object() ? " " : ", "));
}

// Anything without a dedicated rendering: `key: value` lines, nested objects indented.
void print_generic(const json& obj, int indent = 0) {
  const std::string pad(static_cast<std::size_t>(indent), ' ');
  for (const auto& [key, v] : obj.items()) {
    if (v.is_object() && !v.empty()) {
      std::printf("%s%s:\n", pad.c_str(), key.c_str());
      print_generic(v, indent + 2);
    } else if (v.is_array() && !v.empty() && !is_scalar_array(v)) {
      std::printf("%s%s:\n", pad.c_str(), key.c_str());
      for (const auto& e : v) std::printf("%s  - %s\n", pad.c_str(), one_line(e).c_str());
    } else if (v.is_array() || v.is_object()) {
      std::printf("%s%s: %s\n", pad.c_str(), key.c_str(), v.empty() ? "(none)" : one_line(v).c_str());
    } else {
      std::printf("%s%s: %s\n", pad.c_str(), key.c_str(), scalar(v).c_str());
    }
  }
}

json without(json obj, std::initializer_list<const char*> keys) {
  for (const char* k : keys) obj.erase(k);
  return obj;
}

std::string timestamp(const json& v) {
  if (!v.is_number()) return scalar(v);
  std::time_t t = static_cast<std::time_t>(v.get<double>());
  std::tm tm{};
  char buf[64];
  if (::gmtime_r(&t, &tm) == nullptr || std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
    return scalar(v);
  return buf;
}

std::string duration(const json& us) {
  if (!us.is_number()) return scalar(us);
  double v = us.get<double>();
  if (v < 1000) return fmt::format("{:.0f} us", v);
  if (v < 1e6) return fmt::format("{:.1f} ms", v / 1e3);
  return fmt::format("{:.2f} s", v / 1e6);
}

// "a 1, b 2" for {a:1, b:2}
std::string pairs(const json& obj) {
  if (!obj.is_object() || obj.empty()) return "(none)";
  std::vector<std::string> parts;
  for (const auto& [k, v] : obj.items()) parts.push_back(fmt::format("{} {}", k, scalar(v)));
  return fmt::format("{}", fmt::join(parts, ", "));
}

void print_table(const std::vector<std::vector<std::string>>& rows, const std::string& indent) {
  std::vector<std::size_t> width;
  for (const auto& r : rows)
    for (std::size_t i = 0; i < r.size(); ++i) {
      if (width.size() <= i) width.push_back(0);
      width[i] = std::max(width[i], r[i].size());
    }
  for (const auto& r : rows) {
    std::string line = indent;
    for (std::size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
    }
    line.erase(line.find_last_not_of(' ') + 1);
    std::printf("%s\n", line.c_str());
  }
}

void render_status(const json& a) {
  std::printf("policyd %s\n", str(a, "version").c_str());
  std::string gen = str(a, "generation");
  std::vector<std::string> about;
  if (a.contains("policy_source")) about.push_back(fmt::format("from {}", scalar(a["policy_source"])));
  if (a.contains("since")) about.push_back(fmt::format("since {}", timestamp(a["since"])));
  if (!about.empty()) gen += fmt::format(" ({})", fmt::join(about, ", "));
  std::printf("generation:  %s\n", gen.c_str());
  std::printf("pin dir:     %s\n", str(a, "pin_dir").c_str());
  std::vector<std::string> ifs;
  if (auto it = a.find("interfaces"); it != a.end() && it->is_array())
    for (const auto& i : *it)
      ifs.push_back(i.is_object() ? fmt::format("{} (ifindex {})", str(i, "name"), str(i, "ifindex")) : scalar(i));
  std::printf("interfaces:  %s\n", ifs.empty() ? "(none)" : fmt::format("{}", fmt::join(ifs, ", ")).c_str());
  if (auto it = a.find("stages"); it != a.end() && it->is_array() && !it->empty()) {
    std::printf("stages:\n");
    std::vector<std::vector<std::string>> rows;
    for (const auto& s : *it) {
      if (!s.is_object()) {
        rows.push_back({scalar(s)});
        continue;
      }
      bool in_chain = s.value("in_chain", true);
      rows.push_back({str(s, "name"), fmt::format("prog {}", str(s, "prog_id")), in_chain ? "" : "(not in chain)"});
    }
    print_table(rows, "  ");
  }
  print_generic(without(a, {"version", "generation", "policy_source", "since", "pin_dir", "interfaces", "stages"}));
}

void render_stats(const json& a) {
  if (a.contains("verdicts")) std::printf("verdicts:   %s\n", pairs(a["verdicts"]).c_str());
  if (a.contains("fail_mode")) std::printf("fail mode:  %s\n", pairs(a["fail_mode"]).c_str());
  if (a.contains("ignored")) std::printf("ignored:    %s\n", pairs(a["ignored"]).c_str());
  if (a.contains("flows")) std::printf("flows:      %s\n", pairs(a["flows"]).c_str());
  for (const char* group : {"counters", "stages"}) {
    auto it = a.find(group);
    if (it == a.end() || !it->is_object() || it->empty()) continue;
    std::printf("%s:\n", group);
    std::vector<std::vector<std::string>> rows;
    for (const auto& [k, v] : it->items()) rows.push_back({k, scalar(v)});
    print_table(rows, "  ");
  }
  if (auto it = a.find("rules"); it != a.end() && it->is_array() && !it->empty()) {
    std::printf("rules:\n");
    std::vector<std::vector<std::string>> rows{{"RULE", "HOST", "PATH", "ACTION", "HITS"}};
    for (const auto& r : *it) {
      if (!r.is_object()) continue;
      rows.push_back({str(r, "rule"), str(r, "host"), str(r, "path"), str(r, "action"), str(r, "hits")});
    }
    print_table(rows, "  ");
  }
  print_generic(without(a, {"counters", "verdicts", "fail_mode", "ignored", "stages", "rules", "flows"}));
}

void render_apply(const json& a, bool dry_run_requested) {
  const bool dry = a.value("dry_run", dry_run_requested);
  std::vector<std::string> changes;
  if (auto it = a.find("changed"); it != a.end() && it->is_array())
    for (const auto& c : *it)
      changes.push_back(c.is_object() ? fmt::format("{}: {}", str(c, "stage"), str(c, "what")) : scalar(c));
  const std::string joined = fmt::format("{}", fmt::join(changes, "; "));
  if (dry)
    std::printf("dry run: %s\n", changes.empty() ? "no change" : fmt::format("would change {}", joined).c_str());
  else if (changes.empty())
    std::printf("no change (generation %s)\n", str(a, "generation").c_str());
  else if (a.contains("duration_us"))
    std::printf("applied generation %s (%s): %s\n", str(a, "generation").c_str(), duration(a["duration_us"]).c_str(),
                joined.c_str());
  else
    std::printf("applied generation %s: %s\n", str(a, "generation").c_str(), joined.c_str());
  if (auto it = a.find("unchanged"); it != a.end() && it->is_array() && !it->empty() && !changes.empty())
    std::printf("unchanged: %s\n", one_line(*it).c_str());
  if (auto it = a.find("warnings"); it != a.end() && it->is_array())
    for (const auto& w : *it) std::fprintf(stderr, "warning: %s\n", scalar(w).c_str());
  print_generic(without(a, {"generation", "dry_run", "changed", "unchanged", "duration_us", "warnings"}));
}

void render_detach(const json& a) {
  std::vector<std::string> ifs;
  if (auto it = a.find("detached"); it != a.end() && it->is_array())
    for (const auto& i : *it) ifs.push_back(scalar(i));
  std::string line = ifs.empty() ? "no interface was attached" : fmt::format("detached from {}", fmt::join(ifs, ", "));
  if (a.contains("pin_dir")) line += fmt::format("; unpinned {}", scalar(a["pin_dir"]));
  std::printf("%s\n", line.c_str());
  print_generic(without(a, {"detached", "pin_dir"}));
}

// An event's time: UTC, with milliseconds when it has them.
std::string event_time(const json& v) {
  if (!v.is_number()) return scalar(v);
  const double t = v.get<double>();
  std::string s = timestamp(json(std::floor(t)));
  const auto ms = static_cast<int>(std::lround((t - std::floor(t)) * 1000));
  if (ms > 0 && ms < 1000 && s.size() > 4) s.insert(s.size() - 4, fmt::format(".{:03}", ms));
  return s;
}

// An event on one line: its time, then key=value (logfmt: a value with spaces is quoted), the
// keys an operator reads first in a fixed order, then any others; unset (null) keys left out.
void render_event(const json& e) {
  if (!e.is_object()) {
    std::printf("%s\n", one_line(e).c_str());
    return;
  }
  static const std::vector<std::string> kFirst = {
      "action", "status",    "reason",    "jwt_reason",  "method", "host",  "path",      "client", "server",
      "listener", "protocol", "rule",     "rule_host",   "rule_path", "rule_action", "limit", "stage", "generation"};
  std::string line;
  if (auto t = e.find("time"); t != e.end()) line = event_time(*t);
  auto add = [&](const std::string& k, const json& v) {
    if (v.is_null()) return;
    std::string text = one_line(v);
    if (text.empty() || text.find_first_of(" \"=") != std::string::npos) text = dump(json(text));
    if (!line.empty()) line.push_back(' ');
    line += fmt::format("{}={}", k, text);
  };
  for (const auto& k : kFirst)
    if (auto it = e.find(k); it != e.end()) add(k, *it);
  for (const auto& [k, v] : e.items())
    if (k != "time" && std::find(kFirst.begin(), kFirst.end(), k) == kFirst.end()) add(k, v);
  std::printf("%s\n", line.c_str());
}

// One event as asked: a JSON object per line (-o json), or a line of text.
void print_event(const Options& o, const json& e) {
  if (o.json)
    std::printf("%s\n", dump(e).c_str());
  else
    render_event(e);
}

// ---------------------------------------------------------------------------------------
// Commands

// Prints a response: as JSON (arguments plus result and text), or as text; returns its code.
int report(const Options& o, const std::string& command, const json& response, bool dry_run = false) {
  const int code = exit_code(response);
  const json& args = response["arguments"];
  const std::string text = response["text"].get<std::string>();
  if (o.json) {
    json out = args.is_object() ? args : json{{"arguments", args}};
    out["result"] = response["result"];
    out["text"] = text;
    std::puts(dump(out).c_str());
    return code;
  }
  if (code != kDone) {
    std::fprintf(stderr, "%s\n", text.empty() ? fmt::format("policyd refused {}", command).c_str() : text.c_str());
    if (auto d = args.find("detail"); args.is_object() && d != args.end() && d->is_string())
      std::fprintf(stderr, "%s\n", d->get<std::string>().c_str());
    return code;
  }
  if (!args.is_object()) {
    std::printf("%s\n", text.empty() ? one_line(args).c_str() : text.c_str());
    return code;
  }
  if (command == "status")
    render_status(args);
  else if (command == "stats")
    render_stats(args);
  else if (command == "apply" || (command == "reload" && args.contains("changed")))
    render_apply(args, dry_run);
  else if (command == "detach")
    render_detach(args);
  else {
    if (!text.empty()) std::printf("%s\n", text.c_str());
    print_generic(args);
  }
  return code;
}

int simple(const Options& o, const std::string& command, milliseconds timeout) {
  Connection conn;
  auto x = request(o, conn, command, json::object(), timeout);
  if (x.code != kDone) return x.code;
  return report(o, command, x.response);
}

int apply(const Options& o, const std::string& file, bool dry_run) {
  // The same checks as `validate` first: a bad file never reaches the daemon.
  if (int rc = check_policy(file, o.json, false); rc != kDone) return rc;
  std::ifstream in(file, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in || !text) return fail(o, kInvalid, fmt::format("{}: cannot read: {}", file, std::strerror(errno)));
  std::error_code ec;
  auto source = std::filesystem::absolute(file, ec).lexically_normal().string();
  if (ec) source = file;
  json arguments{{"policy", text.str()}, {"source", source}, {"dry_run", dry_run}};
  try {
    if (auto size = arguments.dump().size(); size > policyd::control::kMaxRequestLine)
      return fail(o, kInvalid,
                  fmt::format("{}: too large to send ({} bytes; the control socket takes at most {} MiB)", file, size,
                              policyd::control::kMaxRequestLine >> 20));
  } catch (const json::type_error&) {
    return fail(o, kInvalid, fmt::format("{}: not valid UTF-8", file));
  }
  Connection conn;
  auto x = request(o, conn, "apply", std::move(arguments), kLongTimeout);
  if (x.code != kDone) return x.code;
  return report(o, "apply", x.response, dry_run);
}

// Recent events, or (follow) every new one until the daemon ends the stream or we are
// interrupted. Each event is one line: text, or with -o json one JSON object (JSON Lines,
// for jq and log shippers); a failure is reported as for any command.
int events(const Options& o, bool follow) {
  Connection conn;
  auto x = request(o, conn, "events", json{{"follow", follow}}, kShortTimeout);
  if (x.code != kDone) return x.code;
  const json& r = x.response;
  if (r["result"] == 1 && r["text"].get<std::string>().rfind("unknown command 'events'", 0) == 0)
    return fail(o, kRefused, "events are not available from this daemon yet");
  if (exit_code(r) != kDone) return report(o, "events", r);
  const json& args = r["arguments"];
  if (auto it = args.find("events"); args.is_object() && it != args.end() && it->is_array()) {
    for (const auto& e : *it) print_event(o, e);
    if (!o.json) print_generic(without(args, {"events"}));
  } else if (args.is_object() && !o.json) {
    print_generic(args);
  }
  std::fflush(stdout);
  if (!follow) return kDone;
  for (;;) {
    std::string line, error;
    auto got = conn.read_line(&line, std::nullopt, &error);
    if (got == Connection::Read::kClosed) return kDone;
    if (got != Connection::Read::kLine)
      return fail(o, kUnreachable, fmt::format("reading events from policyd at {}: {}", o.socket, error));
    try {
      print_event(o, json::parse(line));
    } catch (const json::exception&) {
      std::printf("%s\n", line.c_str());
    }
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"policyctl: operate policyd"};
  Options o;
  o.socket = "/run/policyd/policyd.sock";
  std::string output = "text";
  app.add_option("--socket", o.socket, "the daemon's control socket")->capture_default_str();
  app.add_option("-o,--output", output, "text|json")->check(CLI::IsMember({"text", "json"}));
  app.get_option("--socket")->type_name("PATH");  // completes to file names
  app.require_subcommand(1);
  app.fallthrough();  // --socket and -o may also follow the command

  std::string file;
  bool dry_run = false, follow = false;
  auto* validate_cmd = app.add_subcommand("validate", "check a policy file locally (no daemon needed)");
  validate_cmd->add_option("FILE", file, "policy file")->required();
  auto* apply_cmd =
      app.add_subcommand("apply", "validate, send to the daemon, apply as one transaction; prints what changed");
  apply_cmd->add_flag("--dry-run", dry_run, "print what would change, change nothing");
  apply_cmd->add_option("FILE", file, "policy file")->required();
  auto* diff_cmd = app.add_subcommand("diff", "print what applying FILE would change (apply --dry-run)");
  diff_cmd->add_option("FILE", file, "policy file")->required();
  auto* status_cmd =
      app.add_subcommand("status", "daemon, policy generation and source, attached interfaces, stages with prog ids");
  auto* stats_cmd =
      app.add_subcommand("stats", "per-stage and per-rule counters, verdicts, fail-mode reasons, flow table use");
  auto* events_cmd = app.add_subcommand("events", "deny / reject / fail-mode events as they happen");
  events_cmd->add_flag("-f,--follow", follow, "keep printing events as they happen");
  auto* reload_cmd = app.add_subcommand("reload", "re-read the daemon's config file");
  auto* detach_cmd =
      app.add_subcommand("detach", "remove the chain from every interface and unpin it (explicit teardown)");
  std::string shell;
  auto* completion_cmd = app.add_subcommand("completion", "print the completion script for a shell");
  completion_cmd->add_option("SHELL", shell, "bash or zsh")
      ->required()
      ->check(CLI::IsMember(std::vector<std::string>(std::begin(policyd::completion::kShells),
                                                     std::end(policyd::completion::kShells))));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kDone : kInvalid;
  }
  o.json = output == "json";

  if (validate_cmd->parsed()) return validate(file, o.json);
  if (apply_cmd->parsed()) return apply(o, file, dry_run);
  if (diff_cmd->parsed()) return apply(o, file, true);
  if (status_cmd->parsed()) return simple(o, "status", kShortTimeout);
  if (stats_cmd->parsed()) return simple(o, "stats", kShortTimeout);
  if (events_cmd->parsed()) return events(o, follow);
  if (reload_cmd->parsed()) return simple(o, "reload", kLongTimeout);
  if (detach_cmd->parsed()) return simple(o, "detach", kShortTimeout);
  if (completion_cmd->parsed()) {
    std::fputs(policyd::completion::script(app, shell).c_str(), stdout);
    return kDone;
  }
  return kInvalid;
}

#include "chain/preflight.hpp"

#include <arpa/inet.h>

#include <cstring>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>

namespace policyd::chain {

using config::Action;

namespace {

bool host_matches(const std::string& pattern, const std::string& host) {
  if (pattern == "*") return true;
  if (pattern.rfind("*.", 0) == 0) {
    std::string suffix = pattern.substr(1);  // ".example.com"
    return host.size() > suffix.size() && host.compare(host.size() - suffix.size(), suffix.size(), suffix) == 0;
  }
  return host == pattern;
}

bool path_matches(const config::PathMatch& m, const std::string& path) {
  if (m.kind == config::PathMatch::Exact) return path == m.value;
  return path.compare(0, m.value.size(), m.value) == 0;
}

std::string example_host(const std::string& pattern) {
  if (pattern == "*") return "preflight.invalid";
  if (pattern.rfind("*.", 0) == 0) return "preflight." + pattern.substr(2);
  return pattern;
}

std::string where(const config::SourceLoc& loc) { return fmt::format("{}:{}:{}", loc.file, loc.line, loc.column); }

uint32_t first_bit(uint32_t mask) {
  for (uint32_t b = 1; b; b <<= 1)
    if (mask & b) return b;
  return config::GET;
}

// a method outside `mask` (0 if every method is in it)
uint32_t other_method(uint32_t mask) {
  for (uint32_t b : {config::DELETE, config::PATCH, config::PUT, config::POST, config::GET})
    if (!(mask & b)) return b;
  return 0;
}

// ---- packets ------------------------------------------------------------------------
uint32_t sum16(const uint8_t* p, size_t n, uint32_t s) {
  for (size_t i = 0; i + 1 < n; i += 2) s += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  if (n & 1) s += static_cast<uint32_t>(p[n - 1] << 8);
  return s;
}

uint16_t fold(uint32_t s) {
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return static_cast<uint16_t>(s);
}

// An IPv4 TCP segment from 0.0.0.1 (a source no real packet has) to `dst`.
std::vector<uint8_t> segment(uint32_t dst_be, uint16_t sport, uint16_t dport, uint32_t seq, uint8_t flags,
                             const std::string& payload) {
  std::vector<uint8_t> f(14 + 20 + 20 + payload.size(), 0);
  f[12] = 0x08;
  size_t ip = 14, tcp = 34;
  f[ip] = 0x45;
  uint16_t tot = static_cast<uint16_t>(40 + payload.size());
  f[ip + 2] = static_cast<uint8_t>(tot >> 8);
  f[ip + 3] = static_cast<uint8_t>(tot);
  f[ip + 8] = 64;
  f[ip + 9] = 6;
  f[ip + 15] = 1;  // 0.0.0.1
  std::memcpy(&f[ip + 16], &dst_be, 4);
  uint16_t c = static_cast<uint16_t>(~fold(sum16(&f[ip], 20, 0)));
  f[ip + 10] = static_cast<uint8_t>(c >> 8);
  f[ip + 11] = static_cast<uint8_t>(c);
  f[tcp] = static_cast<uint8_t>(sport >> 8);
  f[tcp + 1] = static_cast<uint8_t>(sport);
  f[tcp + 2] = static_cast<uint8_t>(dport >> 8);
  f[tcp + 3] = static_cast<uint8_t>(dport);
  for (int i = 0; i < 4; ++i) f[tcp + 4 + i] = static_cast<uint8_t>(seq >> (24 - 8 * i));
  f[tcp + 12] = 0x50;
  f[tcp + 13] = flags;
  f[tcp + 14] = 0xff;
  f[tcp + 15] = 0xff;
  std::memcpy(&f[tcp + 20], payload.data(), payload.size());
  uint32_t s = sum16(&f[ip + 12], 8, 0) + 6 + static_cast<uint32_t>(20 + payload.size());
  s = sum16(&f[tcp], 20 + payload.size(), s);
  c = static_cast<uint16_t>(~fold(s));
  f[tcp + 16] = static_cast<uint8_t>(c >> 8);
  f[tcp + 17] = static_cast<uint8_t>(c);
  return f;
}

int test_run(int fd, const std::vector<uint8_t>& pkt) {
  std::vector<uint8_t> out(pkt.size() + 256);
  LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = pkt.data(), .data_out = out.data(),
              .data_size_in = static_cast<uint32_t>(pkt.size()), .data_size_out = static_cast<uint32_t>(out.size()),
              .repeat = 1);
  if (bpf_prog_test_run_opts(fd, &o) != 0) return -1;
  return static_cast<int>(o.retval);
}

Action action_from(unsigned a) {
  switch (a) {
    case PD_ACT_ALLOW: return Action::Allow;
    case PD_ACT_DROP: return Action::Drop;
    case PD_ACT_RESET: return Action::Reset;
    default: return Action::Deny;
  }
}

}  // namespace

Action reference_action(const config::Policy& policy, uint32_t method_bit, const std::string& host,
                        const std::string& path) {
  for (const auto& h : policy.hosts) {
    bool match = false;
    for (const auto& p : h.matches) match = match || host_matches(p, host);
    if (!match) continue;
    for (const auto& r : h.routes)
      if (path_matches(r.path, path) && (r.methods == 0 || (r.methods & method_bit))) return r.action;
    return policy.default_action;  // first matching host only
  }
  return policy.default_action;
}

std::vector<Probe> synthesize(const config::Policy& policy, size_t limit) {
  std::vector<Probe> probes;
  auto add = [&](uint32_t method, std::string host, std::string path, std::string why) {
    if (probes.size() >= limit) return;
    probes.push_back(Probe{std::string(config::to_string(static_cast<config::Method>(method))), std::move(host),
                           std::move(path), method, std::move(why)});
  };
  for (size_t hi = 0; hi < policy.hosts.size(); ++hi) {
    const auto& h = policy.hosts[hi];
    for (const auto& pattern : h.matches) {
      std::string host = example_host(pattern);
      for (size_t ri = 0; ri < h.routes.size(); ++ri) {
        const auto& r = h.routes[ri];
        std::string why = fmt::format("host {} ('{}') route {} at {}", hi + 1, pattern, ri + 1, where(r.loc));
        std::string path = r.path.kind == config::PathMatch::Exact ? r.path.value : r.path.value + "pf";
        add(first_bit(r.methods), host, path, why);                    // what the route takes
        if (uint32_t other = other_method(r.methods); r.methods && other)
          add(other, host, path, why + ", another method");             // its methods limit it
        if (r.path.kind == config::PathMatch::Exact)
          add(first_bit(r.methods), host, r.path.value + "-pf", why + ", a longer path");
      }
      add(config::GET, host, "/preflight-no-route", fmt::format("host {} ('{}'), no route", hi + 1, pattern));
    }
  }
  add(config::GET, "preflight-no-host.invalid", "/", "no host");
  return probes;
}

Result<PreflightReport> preflight(Dataplane& dp, const config::Policy& policy, uint32_t gen, size_t limit) {
  PreflightReport report;
  for (const auto& h : policy.hosts) report.rules += h.routes.size();
  const config::Listener* listener = nullptr;
  for (const auto& l : policy.listeners)
    if (l.protocol == config::Protocol::Http && (!l.address || l.address->family == 4)) {
      listener = &l;
      break;
    }
  if (!listener) return report;  // nothing HTTP to probe
  uint32_t dst = htonl(0x00000002);  // 0.0.0.2
  if (listener->address) std::memcpy(&dst, listener->address->addr.data(), 4);
  int fd = dp.preflight_prog_fd();
  if (fd < 0) return make_error("this dataplane has no preflight program");
  dp.set_preflight_gen(gen);

  uint16_t sport = 1;
  for (const auto& probe : synthesize(policy, limit)) {
    ++report.probes;
    std::string head = fmt::format("{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: policyd-preflight\r\n\r\n",
                                   probe.method, probe.path, probe.host);
    const uint16_t port = sport++;
    if (test_run(fd, segment(dst, port, listener->port, 1000, 0x02, "")) < 0)  // SYN: the flow starts
      return make_error(fmt::format("preflight could not run: {}", std::strerror(errno)));
    int ret = test_run(fd, segment(dst, port, listener->port, 1001, 0x18, head));
    Action want = reference_action(policy, probe.method_bit, probe.host, probe.path);
    std::string url = fmt::format("{} http://{}{}", probe.method, probe.host, probe.path);
    if (ret < PD_PREFLIGHT_RET || ret >= PD_PREFLIGHT_RET + PD_ACT_MAX) {
      report.failures.push_back(fmt::format("{}: policy says {}, the dataplane gave no verdict (returned {}) ({})",
                                            url, config::to_string(want), ret, probe.why));
      continue;
    }
    Action got = action_from(static_cast<unsigned>(ret - PD_PREFLIGHT_RET));
    if (got != want)
      report.failures.push_back(fmt::format("{}: policy says {}, the dataplane says {} ({})", url,
                                            config::to_string(want), config::to_string(got), probe.why));
  }
  return report;
}

}  // namespace policyd::chain

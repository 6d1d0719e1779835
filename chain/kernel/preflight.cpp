// Preflight: a prepared generation's verdicts on probes made from the policy (preflight.hpp).
#include "chain/kernel/preflight.hpp"

#include <arpa/inet.h>

#include <cstring>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>

#include "chain/compile.hpp"

namespace policyd::chain {

namespace {

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

void put16(std::string& s, size_t v) {
  s.push_back(static_cast<char>((v >> 8) & 0xff));
  s.push_back(static_cast<char>(v & 0xff));
}

// A TLS 1.3 ClientHello in one record, with a server_name extension when `name` is given.
std::string client_hello(const std::optional<std::string>& name) {
  std::string exts;
  auto ext = [&](uint16_t type, const std::string& body) {
    put16(exts, type);
    put16(exts, body.size());
    exts += body;
  };
  if (name) {
    std::string list(1, '\0');  // host_name
    put16(list, name->size());
    list += *name;
    std::string body;
    put16(body, list.size());
    ext(0x0000, body + list);
  }
  ext(0x002b, std::string("\x02\x03\x04", 3));        // supported_versions: TLS 1.3
  ext(0x000a, std::string("\x00\x02\x00\x1d", 4));    // supported_groups: x25519
  std::string ks("\x00\x24\x00\x1d\x00\x20", 6);      // key_share: x25519, 32 bytes
  ks += std::string(32, '\x5a');
  ext(0x0033, ks);
  std::string body("\x03\x03", 2);
  body += std::string(32, '\x11');                      // random
  body.push_back(0);                                     // session id
  body += std::string("\x00\x02\x13\x01\x01\x00", 6);  // one cipher suite, null compression
  put16(body, exts.size());
  body += exts;
  std::string hs(1, '\x01');
  hs.push_back(static_cast<char>(body.size() >> 16));
  put16(hs, body.size() & 0xffff);
  hs += body;
  std::string rec("\x16\x03\x01", 3);
  put16(rec, hs.size());
  return rec + hs;
}

int test_run(int fd, const std::vector<uint8_t>& pkt) {
  std::vector<uint8_t> out(pkt.size() + 256);
  LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = pkt.data(), .data_out = out.data(),
              .data_size_in = static_cast<uint32_t>(pkt.size()), .data_size_out = static_cast<uint32_t>(out.size()),
              .repeat = 1);
  if (bpf_prog_test_run_opts(fd, &o) != 0) return -1;
  return static_cast<int>(o.retval);
}

}  // namespace

Result<PreflightReport> preflight(Dataplane& dp, const config::Policy& policy, uint32_t gen, size_t limit) {
  PreflightReport report;
  for (const auto& h : policy.hosts) report.rules += h.routes.size();
  report.rules += policy.sni.size();
  // one IPv4 listener of each protocol to send the probes to
  const config::Listener* listener[2] = {nullptr, nullptr};
  for (const auto& l : policy.listeners) {
    auto& slot = listener[l.protocol == config::Protocol::Tls ? Probe::Tls : Probe::Http];
    if (!slot && (!l.address || l.address->family == 4)) slot = &l;
  }
  if (!listener[Probe::Http] && !listener[Probe::Tls]) return report;  // nothing to probe
  int fd = dp.preflight_prog_fd();
  if (fd < 0) return make_error("this dataplane has no preflight program");
  dp.set_preflight_gen(gen);

  uint16_t sport = 1;
  for (const auto& probe : synthesize(policy, limit)) {
    const config::Listener* l = listener[probe.kind];
    if (!l) continue;
    ++report.probes;
    uint32_t dst = htonl(0x00000002);  // 0.0.0.2
    if (l->address) std::memcpy(&dst, l->address->addr.data(), 4);
    std::string payload, what;
    unsigned want;  // pd_action
    if (probe.kind == Probe::Http) {
      // the path (decoded bytes, as routes hold them) as a request carries it: escaped where
      // it must be, and the dataplane decodes it back
      const std::string target = config::encode_path(probe.path);
      payload = fmt::format("{} {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: policyd-preflight\r\n\r\n", probe.method,
                            target, probe.host);
      what = fmt::format("{} http://{}{}", probe.method, probe.host, target);
      want = expected_action(policy, probe);
    } else {
      std::optional<std::string> name;
      if (!probe.host.empty()) name = probe.host;
      payload = client_hello(name);
      what = name ? fmt::format("ClientHello server_name '{}'", *name) : "ClientHello without server_name";
      want = expected_action(policy, probe);
    }
    const uint16_t port = sport++;
    if (test_run(fd, segment(dst, port, l->port, 1000, 0x02, "")) < 0)  // SYN: the flow starts
      return make_error(fmt::format("preflight could not run: {}", std::strerror(errno)));
    int ret = test_run(fd, segment(dst, port, l->port, 1001, 0x18, payload));
    if (ret < PD_PREFLIGHT_RET || ret >= PD_PREFLIGHT_RET + PD_ACT_MAX) {
      report.failures.push_back(fmt::format("{}: policy says {}, the dataplane gave no verdict (returned {}) ({})",
                                            what, abi::action_name(want), ret, probe.why));
      continue;
    }
    unsigned got = static_cast<unsigned>(ret - PD_PREFLIGHT_RET);
    if (got != want)
      report.failures.push_back(fmt::format("{}: policy says {}, the dataplane says {} ({})", what,
                                            abi::action_name(want), abi::action_name(got), probe.why));
  }
  return report;
}

}  // namespace policyd::chain

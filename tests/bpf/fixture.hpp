// A loaded dataplane (the real BPF programs, not attached) with a policy committed, and
// BPF_PROG_TEST_RUN of packets through its entry program.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "chain/kernel/dataplane.hpp"
#include "packet.hpp"

namespace policyd::test {

struct Outcome {
  int retval = -1;                // TC_ACT_*
  std::vector<uint8_t> in, out;   // the frame sent, the frame as the program left it
  TcpView tcp;                    // parsed `out`
  std::vector<uint64_t> delta;    // counter increments caused by this packet

  bool passed_unchanged() const { return retval == 0 && in == out; }
  bool dropped() const { return retval == 2; }
  // refused: the packet became a RST toward the server (deny/reset, client reply cloned)
  bool refused() const { return retval == 0 && tcp.ok && (tcp.flags & kRst); }
  bool truncated() const { return retval == 0 && out.size() < in.size() && !(tcp.flags & kRst); }
  uint64_t counter(unsigned idx) const { return idx < delta.size() ? delta[idx] : 0; }
  uint64_t reason(unsigned r) const { return counter(PD_C_REASON_BASE + r); }
  uint64_t verdict(unsigned a) const { return counter(PD_C_VERDICT_BASE + a); }
};

inline constexpr uint32_t kTestRunIf = 1;  // BPF_PROG_TEST_RUN's skb->ifindex: lo

class Fixture {
 public:
  // How the fixture gets its dataplane. Loading one verifies every program (seconds of
  // kernel time, most of this program's run), so by default the test cases share one: the
  // next fixture commits its policy as the next generation of it, after emptying every table
  // that keeps traffic state (flows, partial heads, verified tokens, rate-limit buckets).
  // A test that reads what only a fresh load has (the event rings and their budget, the
  // wall clock, exact flow-table use, generation tags it sets itself) asks for Load::fresh.
  enum class Load { shared, fresh };
  // Commits `policy_yaml` on a loaded dataplane; fails the test on error.
  explicit Fixture(const std::string& policy_yaml, Load load = Load::shared);
  void apply(const std::string& policy_yaml);  // commit another generation
  Outcome run(const Packet& p);
  // Through the program attached at egress (pd_egress): a packet of the server to a client.
  // came_in: the interface it was received on (0: made on this host); the entry program's
  // test runs see their packets arrive on lo (kTestRunIf).
  Outcome run_egress(const Packet& p, uint32_t came_in = 0);
  chain::Dataplane& dp() { return *dp_; }

 private:
  std::shared_ptr<chain::Dataplane> dp_;
  std::shared_ptr<uint32_t> tag_;  // the last generation tag committed on dp_
};

// One TCP connection's client side: the SYN, then segments with advancing sequence numbers.
class Conn {
 public:
  Conn(Fixture& fx, int family = 4, uint16_t sport = 0, int vlan = -1, uint16_t dport = 80);
  Outcome syn();
  Outcome send(const std::string& data);                     // next in-order segment
  Outcome send_at(uint32_t rel_seq, const std::string& data);  // relative to the first data byte
  Outcome fin();
  // The server's side, through pd_egress: its SYN-ACK (a window scale option unless
  // wscale < 0), and later packets acknowledging rel_ack bytes of the client's data with
  // window `window` (as sent: unscaled) and `data_len` bytes of its own.
  Outcome syn_ack(int wscale, uint16_t window);
  Outcome server(uint32_t rel_ack, uint16_t window, uint32_t data_len = 0);
  Outcome server_send(uint32_t rel_ack, uint16_t window, const std::string& data);  // these bytes
  uint32_t server_next() const { return srv_; }
  Packet base() const;
  // The segment send_at() would send, to change before Fixture::run().
  Packet at(uint32_t rel_seq, const std::string& data) const;
  void set_isn(uint32_t isn) { isn_ = isn; next_ = isn + 1; }  // before syn()
  uint32_t next_rel() const { return next_ - isn_ - 1; }
  // Another client address (before syn()): "" keeps the default of the family.
  void set_src(std::string src) { src_ = std::move(src); }

 private:
  Fixture& fx_;
  int family_, vlan_;
  uint16_t sport_, dport_;
  std::string src_;
  uint32_t isn_ = 100000, next_ = 100001, srv_ = 700001;
};

// A policy text for tests: `body` is appended after version/interfaces/listeners.
std::string policy_with(const std::string& body, const std::string& head = "");

// A temporary directory with an HS256 secret, and the jwt_providers section of a provider
// "main" (issuer https://auth.example.com, audience api, HS256) that uses it.
class HsProvider {
 public:
  HsProvider();
  ~HsProvider();
  HsProvider(const HsProvider&) = delete;
  HsProvider& operator=(const HsProvider&) = delete;
  const std::string& secret_file() const { return secret_; }
  const std::string& dir() const { return dir_; }
  std::string yaml() const;

 private:
  std::string dir_, secret_;
};

}  // namespace policyd::test

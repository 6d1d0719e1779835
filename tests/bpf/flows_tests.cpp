// Dataplane::flow_use (the policyd_flows gauge): the entries the entry program created are
// counted exactly; a full 262144-entry table is counted exactly by the batch walk (checked
// against a key-by-key walk) and the cost of both is printed (README "Metrics").
#include <bpf/bpf.h>

#include <chrono>
#include <iostream>

#include <catch2/catch.hpp>

#include "chain/abi.hpp"
#include "fixture.hpp"

using namespace policyd;
using namespace policyd::test;

TEST_CASE("flow_use counts the connections the entry program saw", "[flows]") {
  Fixture fx(policy_with(R"(chain: [host, path]
default_action: allow
)"), Fixture::Load::fresh);
  auto before = fx.dp().flow_use();
  REQUIRE(before);
  CHECK(before->entries == 0);
  CHECK(before->max == 4096);
  constexpr int kConnections = 37;
  for (int i = 0; i < kConnections; ++i) {
    Conn c(fx, i % 2 ? 6 : 4, static_cast<uint16_t>(20000 + i));
    c.syn();
    // a handshake counts once it completes: at the client's ACK, of the server's SYN-ACK
    // (every other one here) or of one the egress program did not see leave
    if (i % 2) c.syn_ack(7, 512);
    c.send("");
  }
  for (int i = 0; i < 5; ++i) {  // SYNs alone, or answered, are handshakes in progress, not flows
    Conn c(fx, 4, static_cast<uint16_t>(21000 + i));
    c.syn();
    if (i % 2) c.syn_ack(7, 512);
  }
  auto after = fx.dp().flow_use();
  REQUIRE(after);
  CHECK(after->entries == kConnections);
}

TEST_CASE("a full flow table is counted exactly, and what that costs", "[flows]") {
  chain::Dataplane::Options o;  // the default size: 262144 flows
  auto dp = chain::Dataplane::load(o);
  REQUIRE(dp);
  const int fd = (*dp)->map_fd(policyd::abi::Map::flows);
  REQUIRE(fd >= 0);
  const uint32_t max = o.max_flows;
  pd_flow value{};
  for (uint32_t i = 0; i < max; ++i) {
    pd_flow_key k{};
    k.family = 4;
    k.saddr[0] = i;
    k.daddr[0] = 0x0100000a;
    k.sport = static_cast<uint16_t>(i);
    k.dport = 80;
    bpf_map_update_elem(fd, &k, &value, BPF_ANY);  // an LRU map may evict a few before it is full
  }
  // the truth, key by key
  auto t0 = std::chrono::steady_clock::now();
  uint64_t walked = 0;
  pd_flow_key cur{}, next{};
  const pd_flow_key* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    ++walked;
    cur = next;
    prev = &cur;
  }
  auto t1 = std::chrono::steady_clock::now();
  auto use = (*dp)->flow_use();
  auto t2 = std::chrono::steady_clock::now();
  REQUIRE(use);
  CHECK(use->entries == walked);
  CHECK(use->max == max);
  CHECK(walked > max * 9 / 10);
  auto ms = [](auto d) { return std::chrono::duration<double, std::milli>(d).count(); };
  std::cout << "flow_use: " << use->entries << " of " << use->max << " flows counted in " << ms(t2 - t1)
            << " ms (batch lookups); key by key: " << ms(t1 - t0) << " ms\n";
}

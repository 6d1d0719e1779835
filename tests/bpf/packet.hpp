// Building test packets: Ethernet (+802.1Q), IPv4 or IPv6, TCP or UDP, with valid checksums,
// and reading back the TCP header of what a program returns.
#pragma once

#include <arpa/inet.h>

#include <array>
#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace policyd::test {

inline constexpr uint8_t kFin = 0x01, kSyn = 0x02, kRst = 0x04, kPsh = 0x08, kAck = 0x10, kUrg = 0x20;

struct Packet {
  int family = 4;
  int vlan = -1;  // 802.1Q VLAN id, -1: untagged
  std::string src = "198.51.100.2", dst = "192.0.2.2";
  uint16_t sport = 40000, dport = 80;
  uint32_t seq = 1000, ack = 5000;
  uint8_t flags = kAck | kPsh;
  uint8_t proto = 6;  // 6 TCP, 17 UDP
  bool more_fragments = false;
  uint8_t ttl = 64;             // IPv4 TTL / IPv6 hop limit
  std::string tcp_options;      // raw option bytes (padded with NOPs to a multiple of 4)
  uint16_t urgent = 0;          // urgent pointer (with kUrg in flags)
  uint16_t window = 65535;      // the TCP window field
  bool bad_checksum = false;    // the TCP/UDP checksum off by one
  // IPv6 extension headers between the fixed header and TCP/UDP, in order: {next-header
  // number, length in bytes}. Hop-by-hop (0) and destination options (60) are filled with
  // PadN, routing (43) is type 0 with no segments left, a fragment header (44) is 8 bytes at
  // offset 0 (M set by more_fragments), AH (51) a zero ICV.
  std::vector<std::pair<uint8_t, size_t>> ipv6_ext;
  std::string payload;

  std::vector<uint8_t> build() const;
};

struct TcpView {
  bool ok = false;
  int family = 0;
  std::string src, dst;
  uint16_t sport = 0, dport = 0;
  uint32_t seq = 0, ack = 0;
  uint8_t flags = 0;
  std::string payload;
  bool tcp_csum_ok = false;
  bool ip_csum_ok = false;
};

TcpView parse(const std::vector<uint8_t>& frame);

// A TLS 1.3-style ClientHello (GREASE, supported_versions, groups, signature algorithms,
// key_share, ALPN, optional padding), in one or several TLS records.
struct Hello {
  std::optional<std::string> sni = "api.example.com";
  size_t key_share = 32;
  bool sni_last = false;
  int records = 1;
  bool two_sni = false;
  size_t padding = 0;  // a padding extension (browsers pad to ~2 KB); only with sni_last
};

// The bytes; *sni_at (single record only) is the offset of the name within them.
std::string client_hello(const Hello& h, size_t* sni_at = nullptr);

}  // namespace policyd::test

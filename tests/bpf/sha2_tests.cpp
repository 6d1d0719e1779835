// HMAC-SHA-256/384/512 computed in BPF (bpf/include/pd_sha2.h), from the midstates of
// chain/hmac.hpp, against OpenSSL's HMAC(): RFC 4231, every short length, long messages at
// several offsets, keys around the block sizes, one-bit changes, bad arguments. Runs the
// test-only program of sha2_test.bpf.c with BPF_PROG_TEST_RUN.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "chain/abi.hpp"
#include "chain/hmac.hpp"
#include "sha2_test.skel.h"

namespace {

using Bytes = std::vector<uint8_t>;

// The value layouts of sha2_test.bpf.c (checked against the maps' value sizes at load).
struct Sha2In {
  uint32_t off, len, alg, want_len;
  uint64_t inner[8], outer[8];
  uint8_t want[64];
  uint8_t buf[PD_HEAD_MAX + PD_HEAD_SLACK];
};

struct Sha2Out {
  int32_t ret, equal;
  uint8_t mac[64];
};

struct Run {
  int ret = -1;
  bool equal = false;
  Bytes mac;  // mac_len(alg) bytes
  uint8_t tail_or = 0;  // OR of the mac bytes past mac_len: must be 0
  double ns = 0;        // average duration of one run
};

size_t mac_len(uint32_t alg) { return alg / 8; }

Bytes openssl_hmac(uint32_t alg, const Bytes& key, const uint8_t* msg, size_t len) {
  const EVP_MD* md = alg == 256 ? EVP_sha256() : alg == 384 ? EVP_sha384() : EVP_sha512();
  Bytes out(EVP_MAX_MD_SIZE);
  unsigned n = 0;
  static const uint8_t empty = 0;
  HMAC(md, key.empty() ? &empty : key.data(), static_cast<int>(key.size()), len ? msg : &empty, len, out.data(), &n);
  out.resize(n);
  return out;
}

Bytes from_hex(const std::string& h) {
  Bytes b;
  for (size_t i = 0; i + 1 < h.size(); i += 2) b.push_back(static_cast<uint8_t>(std::stoul(h.substr(i, 2), nullptr, 16)));
  return b;
}

Bytes bytes(const std::string& s) { return Bytes(s.begin(), s.end()); }

// The loaded program, once per process. The maps every policyd object declares (pd_maps.h,
// through pd_common.h) are shrunk: this program never touches them.
class Sha2Prog {
 public:
  static Sha2Prog& get() {
    static Sha2Prog p;
    return p;
  }

  // HMAC of the message at in_.buf[off..off+len) (the caller filled it) under key.
  Run run(uint32_t alg, uint32_t off, uint32_t len, const policyd::chain::HmacMidstates& m, const Bytes& want,
          int repeat = 1) {
    in_.off = off;
    in_.len = len;
    in_.alg = alg;
    in_.want_len = static_cast<uint32_t>(want.size());
    std::copy(m.inner.begin(), m.inner.end(), in_.inner);
    std::copy(m.outer.begin(), m.outer.end(), in_.outer);
    std::memset(in_.want, 0, sizeof(in_.want));
    std::memcpy(in_.want, want.data(), std::min(want.size(), sizeof(in_.want)));
    uint32_t zero = 0;
    REQUIRE(bpf_map_update_elem(bpf_map__fd(skel_->maps.sha2_in), &zero, &in_, BPF_ANY) == 0);
    Bytes pkt(64, 0);
    LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = pkt.data(), .data_size_in = static_cast<uint32_t>(pkt.size()),
                .repeat = repeat);
    REQUIRE(bpf_prog_test_run_opts(bpf_program__fd(skel_->progs.pd_sha2_test), &o) == 0);
    REQUIRE(o.retval == 0);
    Sha2Out out{};
    REQUIRE(bpf_map_lookup_elem(bpf_map__fd(skel_->maps.sha2_out), &zero, &out) == 0);
    Run r;
    r.ret = out.ret;
    r.equal = out.equal != 0;
    size_t n = std::min<size_t>(mac_len(alg), sizeof(out.mac));
    r.mac.assign(out.mac, out.mac + n);
    for (size_t i = n; i < sizeof(out.mac); ++i) r.tail_or |= out.mac[i];
    r.ns = o.duration;
    return r;
  }

  uint8_t* buf() { return in_.buf; }
  uint32_t verified_insns() const { return verified_insns_; }

 private:
  Sha2Prog() {
    skel_ = sha2_test_bpf__open();
    REQUIRE(skel_);
    bpf_map* map;
    bpf_object__for_each_map(map, skel_->obj) {
      if (std::strncmp(bpf_map__name(map), "sha2_", 5) != 0) REQUIRE(bpf_map__set_max_entries(map, 1) == 0);
    }
    REQUIRE(bpf_map__value_size(skel_->maps.sha2_in) == sizeof(Sha2In));
    REQUIRE(bpf_map__value_size(skel_->maps.sha2_out) == sizeof(Sha2Out));
    REQUIRE(sha2_test_bpf__load(skel_) == 0);
    bpf_prog_info info{};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(bpf_program__fd(skel_->progs.pd_sha2_test), &info, &len) == 0)
      verified_insns_ = info.verified_insns;
  }
  ~Sha2Prog() { sha2_test_bpf__destroy(skel_); }

  sha2_test_bpf* skel_ = nullptr;
  Sha2In in_{};
  uint32_t verified_insns_ = 0;
};

// Places msg at off (the rest of the buffer random, so a read past the message shows) and
// checks the BPF HMAC against OpenSSL's, and that the compare accepts it.
void check(uint32_t alg, const Bytes& key, const Bytes& msg, uint32_t off, std::mt19937& rng) {
  auto& p = Sha2Prog::get();
  for (size_t i = 0; i < sizeof(Sha2In::buf); ++i) p.buf()[i] = static_cast<uint8_t>(rng());
  std::copy(msg.begin(), msg.end(), p.buf() + off);
  Bytes want = openssl_hmac(alg, key, msg.data(), msg.size());
  auto r = p.run(alg, off, static_cast<uint32_t>(msg.size()),
                 policyd::chain::hmac_midstates(static_cast<int>(alg), {reinterpret_cast<const char*>(key.data()), key.size()}),
                 want);
  INFO("alg " << alg << " key " << key.size() << " bytes, message " << msg.size() << " bytes at " << off);
  REQUIRE(r.ret == 0);
  REQUIRE(r.mac == want);
  REQUIRE(r.equal);
  REQUIRE(r.tail_or == 0);
}

Bytes random_bytes(std::mt19937& rng, size_t n) {
  Bytes b(n);
  for (auto& c : b) c = static_cast<uint8_t>(rng());
  return b;
}

std::string_view view(const Bytes& b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

constexpr uint32_t kAlgs[] = {256, 384, 512};

}  // namespace

TEST_CASE("HMAC-SHA-2 in BPF: RFC 4231 test cases 1-7", "[sha2]") {
  struct Case {
    Bytes key, data;
    std::string sha256;  // the RFC's HMAC-SHA-256 (case 5: truncated to 128 bits)
  };
  Bytes k3(20, 0xaa), k6(131, 0xaa), k4;
  for (uint8_t i = 1; i <= 25; ++i) k4.push_back(i);
  const Case cases[] = {
      {Bytes(20, 0x0b), bytes("Hi There"), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"},
      {bytes("Jefe"), bytes("what do ya want for nothing?"),
       "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"},
      {k3, Bytes(50, 0xdd), "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"},
      {k4, Bytes(50, 0xcd), "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"},
      {Bytes(20, 0x0c), bytes("Test With Truncation"), "a3b6167473100ee06e0c796c2955552b"},
      {k6, bytes("Test Using Larger Than Block-Size Key - Hash Key First"),
       "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"},
      {k6,
       bytes("This is a test using a larger than block-size key and a larger than block-size data. The key needs "
             "to be hashed before being used by the HMAC algorithm."),
       "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"},
  };
  std::mt19937 rng(4231);
  int n = 0;
  for (const auto& c : cases) {
    ++n;
    INFO("RFC 4231 test case " << n);
    for (uint32_t alg : kAlgs) check(alg, c.key, c.data, 0, rng);
    Bytes rfc = from_hex(c.sha256);  // OpenSSL itself, pinned to the RFC
    Bytes got = openssl_hmac(256, c.key, c.data.data(), c.data.size());
    got.resize(rfc.size());
    REQUIRE(got == rfc);
  }
  REQUIRE(openssl_hmac(384, cases[0].key, cases[0].data.data(), cases[0].data.size()) ==
          from_hex("afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59cfaea9ea9076ede7f4af152e8b2fa9cb6"));
  REQUIRE(openssl_hmac(512, cases[0].key, cases[0].data.data(), cases[0].data.size()) ==
          from_hex("87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cdedaa833b7d6b8a702038b274eaea3f4e4"
                   "be9d914eeb61f1702e696c203a126854"));
}

TEST_CASE("HMAC-SHA-2 in BPF: every length 0..300 and long messages, at several offsets", "[sha2]") {
  std::mt19937 rng(1);
  Bytes key = random_bytes(rng, 32);
  std::vector<uint32_t> lengths;
  for (uint32_t len = 0; len <= 300; ++len) lengths.push_back(len);
  for (uint32_t len : {1000u, 2047u, 2048u, 4000u, 4096u}) lengths.push_back(len);
  for (uint32_t alg : kAlgs)
    for (uint32_t off : {0u, 1u, 7u, 1000u, 12000u})
      for (uint32_t len : lengths) check(alg, key, random_bytes(rng, len), off, rng);
  // the last byte of the head buffer
  for (uint32_t alg : kAlgs) check(alg, key, random_bytes(rng, PD_JWT_MAX), PD_HEAD_MAX - PD_JWT_MAX, rng);
}

TEST_CASE("HMAC-SHA-2 in BPF: keys around the block sizes", "[sha2]") {
  std::mt19937 rng(2);
  for (uint32_t alg : kAlgs)
    for (size_t klen : {0, 1, 32, 63, 64, 65, 127, 128, 129, 300})
      for (size_t mlen : {0, 55, 56, 111, 112, 300}) check(alg, random_bytes(rng, klen), random_bytes(rng, mlen), 3, rng);
}

TEST_CASE("HMAC-SHA-2 in BPF: one bit of message or key changes the MAC and fails the compare", "[sha2]") {
  std::mt19937 rng(3);
  auto& p = Sha2Prog::get();
  for (uint32_t alg : kAlgs) {
    INFO("alg " << alg);
    Bytes key = random_bytes(rng, 40), msg = random_bytes(rng, 300);
    auto m = policyd::chain::hmac_midstates(static_cast<int>(alg), view(key));
    Bytes want = openssl_hmac(alg, key, msg.data(), msg.size());
    std::copy(msg.begin(), msg.end(), p.buf());
    REQUIRE(p.run(alg, 0, 300, m, want).equal);

    p.buf()[123] ^= 0x10;  // the message
    auto r = p.run(alg, 0, 300, m, want);
    REQUIRE(r.ret == 0);
    REQUIRE(r.mac != want);
    REQUIRE_FALSE(r.equal);
    p.buf()[123] ^= 0x10;

    Bytes key2 = key;  // the key
    key2[7] ^= 0x01;
    r = p.run(alg, 0, 300, policyd::chain::hmac_midstates(static_cast<int>(alg), view(key2)), want);
    REQUIRE(r.ret == 0);
    REQUIRE(r.mac != want);
    REQUIRE_FALSE(r.equal);

    Bytes prefix(want.begin(), want.begin() + 32);  // a matching prefix of the wrong length
    REQUIRE(p.run(alg, 0, 300, m, prefix).equal == (alg == 256));

    for (size_t bit : {0ul, 8 * mac_len(alg) - 1}) {  // the expected MAC, first and last bit
      Bytes w = want;
      w[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
      REQUIRE_FALSE(p.run(alg, 0, 300, m, w).equal);
    }
  }
}

TEST_CASE("HMAC-SHA-2 in BPF: bad arguments", "[sha2]") {
  auto& p = Sha2Prog::get();
  auto m = policyd::chain::hmac_midstates(256, "k");
  REQUIRE(p.run(0, 0, 10, m, {}).ret == -1);
  REQUIRE(p.run(1, 0, 10, m, {}).ret == -1);
  REQUIRE(p.run(256, 0, PD_JWT_MAX + 1, m, {}).ret == -1);
  REQUIRE(p.run(256, PD_HEAD_MAX - 9, 10, m, {}).ret == -1);
  REQUIRE(p.run(256, 0xfffffff0u, 100, m, {}).ret == -1);
  REQUIRE_FALSE(p.run(0, 0, 10, m, {}).equal);
  REQUIRE_THROWS_AS(policyd::chain::hmac_midstates(1, "k"), std::invalid_argument);
}

TEST_CASE("HMAC-SHA-2 in BPF: time per HMAC (printed, not asserted)", "[sha2]") {
  std::mt19937 rng(5);
  auto& p = Sha2Prog::get();
  std::printf("pd_sha2: %u instructions verified\n", p.verified_insns());
  for (uint32_t alg : kAlgs)
    for (uint32_t len : {300u, 2048u}) {
      Bytes key = random_bytes(rng, 32), msg = random_bytes(rng, len);
      std::copy(msg.begin(), msg.end(), p.buf());
      auto r = p.run(alg, 0, len, policyd::chain::hmac_midstates(static_cast<int>(alg), view(key)),
                     openssl_hmac(alg, key, msg.data(), len), 20000);
      REQUIRE(r.equal);
      std::printf("pd_sha2: HMAC-SHA-%u of %4u bytes: %7.0f ns (BPF_PROG_TEST_RUN average of 20000)\n", alg, len, r.ns);
    }
}

// The rate limit's token arithmetic (bpf/include/pd_bucket.h) inside a BPF program, driven by
// a clock the test chooses: exact counts with no drift, refills, long idle gaps, a clock
// that reads earlier than the last refill, a limit made smaller, and the extremes of the
// configuration (hourly rates, the largest bursts). The limits are compiled from policies
// by the real compiler, so the test covers what the dataplane is given.
#include <catch2/catch.hpp>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include <cstdint>
#include <string>

#include "bucket_test.skel.h"
#include "chain/compile.hpp"
#include "config/loader.hpp"
#include "fixture.hpp"

using namespace policyd;

namespace {

struct BucketIo {
  uint64_t credit = 0, last_ns = 0;
  pd_rl_limit limit{};
  uint64_t now = 0, wait_ns = 0;
  int32_t taken = 0;
  uint32_t pad = 0;
};
static_assert(sizeof(BucketIo) == 16 + sizeof(pd_rl_limit) + 24);

// One limit as the compiler makes it from "rate" and "burst".
pd_rl_limit limit_of(const std::string& rate, uint64_t burst) {
  auto p = config::load_policy_string(test::policy_with("chain: [host, path, ratelimit]\nratelimits:\n  l:\n    key: global\n    rate: " + rate +
                                                         "\n    burst: " + std::to_string(burst) + "\n"),
                                      "t.yaml");
  auto t = chain::compile(p, 0, 1);
  REQUIRE(t);
  REQUIRE(t->limits.size() == 1);
  return t->limits[0];
}

class Bucket {
 public:
  explicit Bucket(const pd_rl_limit& l) {
    skel_ = bucket_test_bpf__open_and_load();
    REQUIRE(skel_);
    io_.limit = l;
    io_.credit = l.cap;  // a new bucket is full
  }
  ~Bucket() { bucket_test_bpf__destroy(skel_); }
  // One token at time `now` (ns); true if taken. wait(): ns until one would be there.
  bool take(uint64_t now) {
    io_.now = now;
    uint32_t zero = 0;
    REQUIRE(bpf_map_update_elem(bpf_map__fd(skel_->maps.bucket_io), &zero, &io_, BPF_ANY) == 0);
    uint8_t pkt[64] = {};
    LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = pkt, .data_size_in = sizeof(pkt), .repeat = 1);
    REQUIRE(bpf_prog_test_run_opts(bpf_program__fd(skel_->progs.bucket_take), &o) == 0);
    REQUIRE(bpf_map_lookup_elem(bpf_map__fd(skel_->maps.bucket_io), &zero, &io_) == 0);
    return io_.taken == 1;
  }
  uint64_t wait() const { return io_.wait_ns; }
  void set_limit(const pd_rl_limit& l) { io_.limit = l; }
  // how many of `n` requests at time `now` are admitted
  int burst(uint64_t now, int n) {
    int ok = 0;
    for (int i = 0; i < n; ++i) ok += take(now);
    return ok;
  }

 private:
  bucket_test_bpf* skel_ = nullptr;
  BucketIo io_;
};

constexpr uint64_t kSec = 1'000'000'000ULL;
const uint64_t kT0 = 5000 * kSec;  // an arbitrary boot-relative start

}  // namespace

TEST_CASE("a burst admits exactly burst tokens, then one per 1/rate, with the truth in wait", "[ratelimit][bucket]") {
  Bucket b(limit_of("10/s", 5));
  CHECK(b.burst(kT0, 8) == 5);
  CHECK_FALSE(b.take(kT0));
  CHECK(b.wait() == kSec / 10);  // the next token in 100 ms, exactly
  CHECK_FALSE(b.take(kT0 + kSec / 10 - 1));
  CHECK(b.wait() == 1);
  CHECK(b.take(kT0 + kSec / 10));
  CHECK_FALSE(b.take(kT0 + kSec / 10));
}

TEST_CASE("rates that do not divide a second count exactly, with no drift", "[ratelimit][bucket]") {
  Bucket b(limit_of("3/s", 2));
  // ~1000 s of requests every 7 ms: the burst, plus every token accrued by the last request
  // (3 per second, counted exactly: 1/3 s is not a whole number of ns)
  int ok = 0;
  uint64_t last = 0;
  for (uint64_t ms = 0; ms <= 1000 * 1000; ms += 7) {
    ok += b.take(kT0 + ms * 1'000'000ULL) ? 1 : 0;
    last = ms;
  }
  CHECK(ok == static_cast<int>(2 + last * 3 / 1000));
}

TEST_CASE("idle gaps refill to the burst and never beyond, however long", "[ratelimit][bucket]") {
  Bucket b(limit_of("100/s", 20));
  CHECK(b.burst(kT0, 25) == 20);
  CHECK(b.burst(kT0 + 50 * kSec, 25) == 20);                          // 50 s: full, not 5000
  CHECK(b.burst(kT0 + 50 * kSec + 100ULL * 365 * 86400 * kSec, 25) == 20);  // a century: no overflow
}

TEST_CASE("a clock that reads earlier than the last refill adds nothing", "[ratelimit][bucket]") {
  Bucket b(limit_of("10/s", 2));
  CHECK(b.burst(kT0 + kSec, 2) == 2);
  CHECK_FALSE(b.take(kT0));             // another CPU's earlier reading
  CHECK_FALSE(b.take(kT0 + kSec));      // and the refill point did not move back
  CHECK(b.take(kT0 + kSec + kSec / 10));
}

TEST_CASE("hourly and per-minute rates, and the largest bursts, count exactly", "[ratelimit][bucket]") {
  {
    Bucket b(limit_of("1/h", 1));
    CHECK(b.take(kT0));
    CHECK_FALSE(b.take(kT0 + 3599 * kSec));
    CHECK(b.wait() == kSec);
    CHECK(b.take(kT0 + 3600 * kSec));
  }
  {
    Bucket b(limit_of("7/m", 7));
    CHECK(b.burst(kT0, 10) == 7);
    CHECK(b.burst(kT0 + 60 * kSec, 10) == 7);
  }
  {
    const auto l = limit_of("1000000000/s", 1000000000);  // the largest the loader takes
    CHECK(l.cap == 1000000000ULL * l.cost);
    Bucket b(l);
    CHECK(b.burst(kT0, 3) == 3);
  }
}

TEST_CASE("a burst too large to count exactly is refused at compile time, naming the limit", "[ratelimit]") {
  auto p = config::load_policy_string(
      test::policy_with("chain: [host, path, ratelimit]\nratelimits:\n  huge:\n    key: global\n    rate: 1/h\n    burst: 1000000000\n"),
      "t.yaml");
  auto t = chain::compile(p, 0, 1);
  REQUIRE_FALSE(t);
  CHECK(t.error().message.find("rate limit 'huge'") != std::string::npos);
}

TEST_CASE("a limit made smaller caps what a bucket holds", "[ratelimit][bucket]") {
  auto big = limit_of("10/s", 100), small = limit_of("10/s", 3);
  REQUIRE(big.id == small.id);  // same name and key: the bucket carries over an apply
  Bucket b(big);
  CHECK(b.take(kT0));  // 99 left under the old limit
  b.set_limit(small);
  CHECK(b.burst(kT0, 10) == 3);
}

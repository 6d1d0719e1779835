// FairQueue (daemon/fair_queue.hpp): the JWT service's queue between the io loop and the
// verifying threads. One flooding source must not take the queue from the others.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "daemon/fair_queue.hpp"

using policyd::FairQueue;
using Queue = FairQueue<int, int, std::string>;

namespace {

// prefix + i (not operator+(const char*, std::string&&): GCC 12 at -O3 warns falsely)
std::string name(const char* prefix, int i) {
  std::string s(prefix);
  s += std::to_string(i);
  return s;
}

std::vector<std::string> drain(Queue& q) {
  std::vector<std::string> out;
  std::stop_source never;
  while (q.stats().depth) out.push_back(*q.take(never.get_token()));
  return out;
}

}  // namespace

TEST_CASE("sources are served in turn, each in its own order", "[fair_queue]") {
  Queue q({.total = 100, .per_source = 100});
  for (int i = 0; i < 5; ++i) REQUIRE(q.offer(1, 100 + i, name("a", i)) == Queue::Offer::queued);
  REQUIRE(q.offer(2, 200, "b0") == Queue::Offer::queued);
  REQUIRE(q.offer(2, 201, "b1") == Queue::Offer::queued);
  REQUIRE(q.offer(3, 300, "c0") == Queue::Offer::queued);
  CHECK(q.stats().sources == 3);
  CHECK(drain(q) == std::vector<std::string>{"a0", "b0", "c0", "a1", "b1", "a2", "a3", "a4"});
}

TEST_CASE("a key already queued is not queued again", "[fair_queue]") {
  Queue q({.total = 10, .per_source = 10});
  REQUIRE(q.offer(1, 7, "x") == Queue::Offer::queued);
  CHECK(q.offer(1, 7, "x again") == Queue::Offer::duplicate);
  CHECK(q.offer(2, 7, "x from elsewhere") == Queue::Offer::duplicate);
  CHECK(q.stats().duplicates == 2);
  CHECK(drain(q) == std::vector<std::string>{"x"});
  // taken: the same key may come again (its answer may have been lost)
  CHECK(q.offer(1, 7, "x later") == Queue::Offer::queued);
}

TEST_CASE("a source holds at most its share; the rest of it is dropped and counted", "[fair_queue]") {
  Queue q({.total = 100, .per_source = 3});
  for (int i = 0; i < 3; ++i) REQUIRE(q.offer(1, i, "a") == Queue::Offer::queued);
  CHECK(q.offer(1, 10, "a") == Queue::Offer::dropped);
  CHECK(q.offer(2, 20, "b") == Queue::Offer::queued);
  const auto s = q.stats();
  CHECK(s.dropped == 1);
  CHECK(s.depth == 4);
  CHECK(s.queued == 4);
}

TEST_CASE("a full queue makes room for a smaller source at the largest one's cost", "[fair_queue]") {
  Queue q({.total = 6, .per_source = 6});
  for (int i = 0; i < 6; ++i) REQUIRE(q.offer(1, i, name("flood", i)) == Queue::Offer::queued);
  // a new client gets in: the flood's newest job goes
  CHECK(q.offer(2, 100, "honest") == Queue::Offer::queued);
  CHECK(q.stats().dropped == 1);
  CHECK(q.stats().depth == 6);
  // the flood itself cannot push anyone out
  CHECK(q.offer(1, 50, "flood more") == Queue::Offer::dropped);
  // sources with as much queued as the largest but one cannot either
  Queue even({.total = 4, .per_source = 4});
  REQUIRE(even.offer(1, 1, "a") == Queue::Offer::queued);
  REQUIRE(even.offer(1, 2, "a") == Queue::Offer::queued);
  REQUIRE(even.offer(2, 3, "b") == Queue::Offer::queued);
  REQUIRE(even.offer(2, 4, "b") == Queue::Offer::queued);
  CHECK(even.offer(2, 5, "b") == Queue::Offer::dropped);
  CHECK(even.offer(3, 6, "c") == Queue::Offer::queued);  // 0 queued: takes one of 2's
  const auto out = drain(q);
  CHECK(out.size() == 6);
  CHECK(out[1] == "honest");  // its turn comes second, not after the flood
  CHECK(out.back() == "flood4");
}

TEST_CASE("takers wait for work and stop when asked", "[fair_queue]") {
  Queue q({.total = 1000, .per_source = 1000});
  std::atomic<int> done{0};
  {
    std::vector<std::jthread> workers;
    for (int w = 0; w < 3; ++w)
      workers.emplace_back([&](std::stop_token stop) {
        while (auto job = q.take(stop)) ++done;
      });
    for (int i = 0; i < 600; ++i) REQUIRE(q.offer(i % 7, i, "j") == Queue::Offer::queued);
    auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (done < 600 && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }  // the jthreads are asked to stop and joined, idle in take()
  CHECK(done == 600);
  CHECK(q.stats().depth == 0);
}

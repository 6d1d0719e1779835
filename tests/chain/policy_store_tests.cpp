// The policy pinned beside the chain (chain/policy_store.hpp): on a real bpffs, written,
// replaced and read back byte for byte, and nothing else is mistaken for one.
#include "chain/kernel/policy_store.hpp"

#include <bpf/bpf.h>
#include <sys/mount.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <string>

using namespace policyd::chain;

namespace {

// a bpffs mounted on a fresh temp dir, unmounted and removed at the end
struct BpfDir {
  BpfDir() {
    char tmpl[] = "/tmp/pd-policy-store-XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path = tmpl;
    REQUIRE(mount("bpf", path.c_str(), "bpf", 0, "mode=0700") == 0);
  }
  ~BpfDir() {
    umount2(path.c_str(), MNT_DETACH);
    std::filesystem::remove_all(path);
  }
  std::string path;
};

}  // namespace

TEST_CASE("a policy pinned beside the chain reads back byte for byte, and a new one replaces it", "[policy_store]") {
  BpfDir dir;
  CHECK_FALSE(read_saved_policy(dir.path).ok());  // none yet

  SECTION("a small policy, then a large one over several chunks, then a small one again") {
    REQUIRE(save_policy(dir.path, "/etc/policyd/policy.yaml", "version: 1\n").ok());
    auto one = read_saved_policy(dir.path);
    REQUIRE(one.ok());
    CHECK(one->source == "/etc/policyd/policy.yaml");
    CHECK(one->text == "version: 1\n");

    std::string big;
    for (int i = 0; big.size() < 3 * 4096 + 17; ++i) big += "# line " + std::to_string(i) + " caf\xc3\xa9 \x01\n";
    big.push_back('\0');  // any byte survives, NUL included
    big += "tail";
    const std::string source(300, 's');
    REQUIRE(save_policy(dir.path, source, big).ok());
    auto two = read_saved_policy(dir.path);
    REQUIRE(two.ok());
    CHECK(two->source == source);
    CHECK(two->text == big);

    REQUIRE(save_policy(dir.path, "b.yaml", "").ok());
    auto three = read_saved_policy(dir.path);
    REQUIRE(three.ok());
    CHECK(three->source == "b.yaml");
    CHECK(three->text.empty());
    // only the one pin: the temporary name was renamed over it
    size_t pins = 0;
    for (const auto& e : std::filesystem::directory_iterator(dir.path)) {
      if (e.path().extension() == ".debug") continue;  // a bpffs root's own maps.debug, progs.debug
      CHECK(e.path().filename() == kPolicySourcePin);
      ++pins;
    }
    CHECK(pins == 1);
  }
  SECTION("the saved map is frozen: nothing can change it behind the daemon's back") {
    REQUIRE(save_policy(dir.path, "a.yaml", "version: 1\n").ok());
    int fd = bpf_obj_get((dir.path + "/" + kPolicySourcePin).c_str());
    REQUIRE(fd >= 0);
    std::string chunk(4096, 'x');
    uint32_t key = 0;
    CHECK(bpf_map_update_elem(fd, &key, chunk.data(), BPF_ANY) != 0);
    close(fd);
    CHECK(read_saved_policy(dir.path)->text == "version: 1\n");
  }
  SECTION("another map pinned under that name is not taken for a policy") {
    int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "other", 4, 4096, 1, nullptr);
    REQUIRE(fd >= 0);
    REQUIRE(bpf_obj_pin(fd, (dir.path + "/" + kPolicySourcePin).c_str()) == 0);
    close(fd);
    auto r = read_saved_policy(dir.path);
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().message.find("is not a policy saved by policyd") != std::string::npos);
  }
}

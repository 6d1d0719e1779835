#include "fixture.hpp"

#include <bpf/bpf.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <catch2/catch.hpp>

#include "chain/compile.hpp"
#include "config/loader.hpp"

namespace policyd::test {

namespace {
std::atomic<uint16_t> g_port{41000};
}

std::string policy_with(const std::string& body, const std::string& head) {
  return "version: 1\ninterfaces: [\"lo\"]\nlisteners:\n  - name: web\n    port: 80\n    protocol: http\n" +
         head + body;
}

HsProvider::HsProvider() {
  char dir[] = "/tmp/pd-hs.XXXXXX";
  if (!mkdtemp(dir)) FAIL("mkdtemp");
  dir_ = dir;
  secret_ = dir_ + "/main.key";
  std::ofstream(secret_) << "test-secret-" << dir_ << "\n";
}

HsProvider::~HsProvider() { std::filesystem::remove_all(dir_); }

std::string HsProvider::yaml() const {
  return "jwt_providers:\n  main:\n    issuer: \"https://auth.example.com\"\n    audiences: [\"api\"]\n"
         "    algorithms: [HS256]\n    secret_file: \"" + secret_ + "\"\n";
}

namespace {

std::shared_ptr<chain::Dataplane> load_dataplane() {
  chain::Dataplane::Options o;
  o.max_flows = 4096;
  o.accum_entries = 64;
  auto dp = chain::Dataplane::load(o);
  if (!dp) FAIL("loading the dataplane: " << dp.error().message << "\n" << dp.error().detail);
  return std::shared_ptr<chain::Dataplane>(std::move(dp.value()));
}

// Deletes every entry of a hash map (keys of key_size bytes).
void empty_map(int fd, size_t key_size) {
  std::vector<uint8_t> key(key_size), next(key_size);
  for (int i = 0; i < 1'000'000 && bpf_map_get_next_key(fd, nullptr, next.data()) == 0; ++i)
    REQUIRE(bpf_map_delete_elem(fd, next.data()) == 0);
  REQUIRE(bpf_map_get_next_key(fd, nullptr, key.data()) != 0);
}

void empty_traffic_state(chain::Dataplane& dp) {
  using policyd::abi::Map;
  for (Map m : {Map::flows, Map::syn, Map::accum, Map::accum_src, Map::jwt_cache, Map::rl_buckets, Map::rl_counts}) {
    int fd = dp.map_fd(m);
    REQUIRE(fd >= 0);
    struct bpf_map_info info {};
    uint32_t len = sizeof info;
    REQUIRE(bpf_obj_get_info_by_fd(fd, &info, &len) == 0);
    empty_map(fd, info.key_size);
  }
}

}  // namespace

Fixture::Fixture(const std::string& policy_yaml, Load load) {
  static std::shared_ptr<chain::Dataplane> shared;
  static auto shared_tag = std::make_shared<uint32_t>(0);
  if (load == Load::fresh) {
    dp_ = load_dataplane();
    tag_ = std::make_shared<uint32_t>(0);
  } else {
    if (!shared) shared = load_dataplane();
    else empty_traffic_state(*shared);
    dp_ = shared;
    tag_ = shared_tag;
  }
  apply(policy_yaml);
}

void Fixture::apply(const std::string& policy_yaml) {
  auto policy = config::load_policy_string(policy_yaml, "test.yaml");
  uint32_t& tag = *tag_;
  uint32_t gen = tag == 0 ? dp_->active_gen() ^ 1 : dp_->inactive_gen();
  auto keys = chain::read_key_material(policy);
  if (!keys) FAIL("jwt keys: " << keys.error().message);
  auto tables = chain::compile(policy, gen, dp_->hash_seed(), &*keys);
  if (!tables) FAIL("compile: " << tables.error().message);
  auto st = dp_->commit(*tables, gen, ++tag);
  if (!st) FAIL("commit: " << st.error().message);
}

Outcome Fixture::run(const Packet& p) {
  Outcome o;
  o.in = p.build();
  auto before = dp_->read_counters().values;
  o.out.assign(o.in.size() + 1024, 0);
  LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = o.in.data(), .data_out = o.out.data(),
              .data_size_in = static_cast<uint32_t>(o.in.size()),
              .data_size_out = static_cast<uint32_t>(o.out.size()), .repeat = 1);
  int err = bpf_prog_test_run_opts(dp_->entry_prog_fd(), &opts);
  REQUIRE(err == 0);
  o.retval = static_cast<int>(opts.retval);
  o.out.resize(opts.data_size_out);
  o.tcp = parse(o.out);
  auto after = dp_->read_counters().values;
  o.delta.resize(after.size());
  for (size_t i = 0; i < after.size() && i < before.size(); ++i) o.delta[i] = after[i] - before[i];
  return o;
}

Conn::Conn(Fixture& fx, int family, uint16_t sport, int vlan, uint16_t dport)
    : fx_(fx), family_(family), vlan_(vlan), sport_(sport ? sport : g_port++), dport_(dport) {}

Packet Conn::base() const {
  Packet p;
  p.family = family_;
  p.vlan = vlan_;
  if (family_ == 6) {
    p.src = "2001:db8:c::2";
    p.dst = "2001:db8:5::2";
  }
  if (!src_.empty()) p.src = src_;
  p.sport = sport_;
  p.dport = dport_;
  p.ack = srv_;
  return p;
}

Outcome Fixture::run_egress(const Packet& p, uint32_t came_in) {
  Outcome o;
  o.in = p.build();
  auto before = dp_->read_counters().values;
  o.out.assign(o.in.size() + 64, 0);
  __sk_buff skb{};
  skb.ingress_ifindex = came_in;
  LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = o.in.data(), .data_out = o.out.data(),
              .data_size_in = static_cast<uint32_t>(o.in.size()),
              .data_size_out = static_cast<uint32_t>(o.out.size()), .ctx_in = &skb, .ctx_size_in = sizeof(skb),
              .repeat = 1);
  REQUIRE(bpf_prog_test_run_opts(dp_->egress_prog_fd(), &opts) == 0);
  o.retval = static_cast<int>(opts.retval);
  o.out.resize(opts.data_size_out);
  o.tcp = parse(o.out);
  auto after = dp_->read_counters().values;
  o.delta.resize(after.size());
  for (size_t i = 0; i < after.size() && i < before.size(); ++i) o.delta[i] = after[i] - before[i];
  return o;
}

namespace {

// The server's packet of a connection: addresses and ports the other way round.
Packet reversed(Packet p) {
  std::swap(p.src, p.dst);
  std::swap(p.sport, p.dport);
  return p;
}

}  // namespace

Outcome Conn::syn_ack(int wscale, uint16_t window) {
  Packet p = reversed(base());
  p.flags = kSyn | kAck;
  p.seq = srv_ - 1;
  p.ack = isn_ + 1;
  p.window = window;
  if (wscale >= 0) p.tcp_options = std::string("\x01\x03\x03", 3) + static_cast<char>(wscale);
  return fx_.run_egress(p);
}

Outcome Conn::server(uint32_t rel_ack, uint16_t window, uint32_t data_len) {
  Packet p = reversed(base());
  p.flags = kAck | (data_len ? kPsh : 0);
  p.seq = srv_;
  p.ack = isn_ + 1 + rel_ack;
  p.window = window;
  p.payload.assign(data_len, 'r');
  srv_ += data_len;
  return fx_.run_egress(p);
}

Outcome Conn::server_send(uint32_t rel_ack, uint16_t window, const std::string& data) {
  Packet p = reversed(base());
  p.flags = kAck | kPsh;
  p.seq = srv_;
  p.ack = isn_ + 1 + rel_ack;
  p.window = window;
  p.payload = data;
  srv_ += static_cast<uint32_t>(data.size());
  return fx_.run_egress(p);
}

Outcome Conn::syn() {
  Packet p = base();
  p.flags = kSyn;
  p.seq = isn_;
  p.ack = 0;
  next_ = isn_ + 1;
  return fx_.run(p);
}

Outcome Conn::send(const std::string& data) {
  Packet p = base();
  p.seq = next_;
  p.payload = data;
  next_ += static_cast<uint32_t>(data.size());
  return fx_.run(p);
}

Packet Conn::at(uint32_t rel_seq, const std::string& data) const {
  Packet p = base();
  p.seq = isn_ + 1 + rel_seq;
  p.payload = data;
  return p;
}

Outcome Conn::send_at(uint32_t rel_seq, const std::string& data) { return fx_.run(at(rel_seq, data)); }

Outcome Conn::fin() {
  Packet p = base();
  p.seq = next_;
  p.flags = kFin | kAck;
  return fx_.run(p);
}

}  // namespace policyd::test

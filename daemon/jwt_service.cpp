#include "daemon/jwt_service.hpp"

#include <algorithm>
#include <cstring>
#include <ctime>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace policyd {

namespace {

std::shared_ptr<spdlog::logger> log_jwt() { return spdlog::get("chain"); }

unsigned worker_count(unsigned asked) {
  if (asked) return std::min(asked, 64u);
  unsigned cpus = std::thread::hardware_concurrency();
  return std::clamp(cpus > 1 ? cpus - 1 : 1u, 1u, 4u);
}

}  // namespace

JwtService::JwtService(boost::asio::io_context& io, chain::Dataplane& dp, Options options)
    : dp_(dp),
      options_(options),
      events_(io),
      clock_(io),
      queue_({.total = options.queue, .per_source = options.per_client}) {}

JwtService::~JwtService() { stop(); }

Status JwtService::start() {
  cache_fd_ = dp_.map_fd(policyd::abi::Map::jwt_cache);
  if (cache_fd_ < 0) return make_error("the chain has no token cache");
  rb_ = ring_buffer__new(dp_.map_fd(policyd::abi::Map::events), &JwtService::on_event, this, nullptr);
  if (!rb_) return make_error(fmt::format("opening the events ring buffer: {}", std::strerror(errno)));
  events_.assign(ring_buffer__epoll_fd(rb_));
  for (unsigned i = 0, n = worker_count(options_.workers); i < n; ++i)
    workers_.emplace_back([this](std::stop_token stop) { work(stop); });
  wait_events();
  tick();
  return Ok{};
}

void JwtService::stop() {
  if (stopped_) return;
  stopped_ = true;
  for (auto& w : workers_) w.request_stop();
  workers_.clear();  // joins: a worker finishes the token in hand
  boost::system::error_code ec;
  clock_.cancel();
  if (events_.is_open()) {
    events_.cancel(ec);
    events_.release();  // the ring buffer owns (and closes) its epoll fd
  }
  if (rb_) ring_buffer__free(rb_);
  rb_ = nullptr;
}

void JwtService::set_active(const config::Policy& policy, const chain::Tables& tables,
                            std::map<std::string, jwt::Keys> keys) {
  auto a = std::make_shared<Active>(Active{policy, tables, std::move(keys)});
  std::lock_guard lock(active_mutex_);
  active_ = std::move(a);
}

JwtService::Stats JwtService::stats() const {
  auto q = queue_.stats();
  return Stats{.received = received_.load(),
               .valid = valid_.load(),
               .invalid = invalid_.load(),
               .stale = stale_.load(),
               .dropped = q.dropped,
               .duplicates = q.duplicates,
               .queued = q.depth,
               .workers = static_cast<unsigned>(workers_.size())};
}

void JwtService::wait_events() {
  events_.async_wait(boost::asio::posix::stream_descriptor::wait_read, [this](const boost::system::error_code& ec) {
    if (ec || stopped_) return;
    ring_buffer__consume(rb_);  // copies only: verifying is the workers'
    wait_events();
  });
}

void JwtService::tick() {
  if (auto st = dp_.refresh_runtime(); !st) log_jwt()->warn("{}", st.error().message);
  clock_.expires_after(std::chrono::seconds(1));
  clock_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec && !stopped_) tick();
  });
}

int JwtService::on_event(void* self, void* data, size_t size) {
  auto* me = static_cast<JwtService*>(self);
  if (size < sizeof(uint32_t)) return 0;
  uint32_t type = 0;
  std::memcpy(&type, data, sizeof(type));
  if (type == PD_EV_JWT_VERIFY && size >= sizeof(pd_event_jwt))
    me->enqueue(*static_cast<const pd_event_jwt*>(data));
  return 0;
}

void JwtService::enqueue(const pd_event_jwt& ev) {
  ++received_;
  if (ev.token_len > PD_JWT_MAX) {
    ++stale_;
    return;
  }
  // the client: an IPv4 address, or the /64 an IPv6 client has to itself
  Source source{ev.saddr[0], 0, 0, 0};
  if (ev.family == 6) source = {ev.saddr[0], ev.saddr[1], 0, 6};
  Job job{.provider = ev.provider,
          .key = ev.key,
          .tail = ev.tail,
          .token = std::string(reinterpret_cast<const char*>(ev.token), ev.token_len)};
  queue_.offer(source, Key{ev.key.token_hash, ev.key.epoch}, std::move(job));
}

void JwtService::work(std::stop_token stop) {
  while (auto job = queue_.take(stop)) {
    std::shared_ptr<const Active> active;
    {
      std::lock_guard lock(active_mutex_);
      active = active_;
    }
    if (!active) {
      ++stale_;
      continue;
    }
    verify(*job, *active);
  }
}

void JwtService::verify(const Job& job, const Active& active) {
  const auto& tables = active.tables;
  const uint32_t index = job.provider % PD_JWT_PROVIDERS;
  const pd_jwt_provider* p = nullptr;
  for (const auto& [idx, val] : tables.jwt_providers)
    if (idx % PD_JWT_PROVIDERS == index) p = &val;
  if (!p || index >= tables.jwt.providers.size() || p->epoch != job.key.epoch) {
    ++stale_;
    return;
  }
  const std::string& name = tables.jwt.providers[index];
  auto cfg = active.policy.jwt_providers.find(name);
  auto keys = active.keys.find(name);
  if (cfg == active.policy.jwt_providers.end() || keys == active.keys.end()) {
    ++stale_;
    return;
  }
  std::string detail;
  auto v = chain::jwt_answer(job.token, cfg->second, keys->second, tables.jwt_claims, tables.config.hash_seed,
                             static_cast<int64_t>(std::time(nullptr)), &detail);
  v.tail = job.tail;
  (v.state == PD_JC_VALID ? valid_ : invalid_)++;
  if (v.state != PD_JC_VALID)
    log_jwt()->debug("jwt provider '{}': token refused ({}): {}", name,
                     jwt::reason_name(static_cast<pd_jwt_reason>(v.reason)), detail);
  // straight into the map (its fd is the chain's for the daemon's life): no Dataplane state
  // is touched off the io loop
  if (bpf_map_update_elem(cache_fd_, &job.key, &v, BPF_ANY) != 0)
    log_jwt()->warn("writing the token cache: {}", std::strerror(errno));
}

}  // namespace policyd

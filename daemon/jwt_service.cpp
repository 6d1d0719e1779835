#include "daemon/jwt_service.hpp"

#include <ctime>

#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace policyd {

namespace {

std::shared_ptr<spdlog::logger> log_jwt() { return spdlog::get("chain"); }

}  // namespace

JwtService::JwtService(boost::asio::io_context& io, chain::Dataplane& dp)
    : dp_(dp), events_(io), clock_(io) {}

JwtService::~JwtService() { stop(); }

Status JwtService::start() {
  rb_ = ring_buffer__new(dp_.map_fd("pd_events"), &JwtService::on_event, this, nullptr);
  if (!rb_) return make_error(fmt::format("opening the events ring buffer: {}", std::strerror(errno)));
  events_.assign(ring_buffer__epoll_fd(rb_));
  wait_events();
  tick();
  return Ok{};
}

void JwtService::stop() {
  if (stopped_) return;
  stopped_ = true;
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
  policy_ = policy;
  tables_ = tables;
  keys_ = std::move(keys);
}

void JwtService::wait_events() {
  events_.async_wait(boost::asio::posix::stream_descriptor::wait_read, [this](const boost::system::error_code& ec) {
    if (ec || stopped_) return;
    ring_buffer__consume(rb_);
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
    me->handle(*static_cast<const pd_event_jwt*>(data));
  return 0;
}

void JwtService::handle(const pd_event_jwt& ev) {
  ++stats_.received;
  const uint32_t index = ev.provider % PD_JWT_PROVIDERS;
  const pd_jwt_provider* p = nullptr;
  for (const auto& [idx, val] : tables_.jwt_providers)
    if (idx % PD_JWT_PROVIDERS == index) p = &val;
  if (!p || index >= tables_.jwt.providers.size() || p->epoch != ev.key.epoch ||
      ev.token_len > PD_JWT_MAX) {
    ++stats_.stale;
    return;
  }
  const std::string& name = tables_.jwt.providers[index];
  auto cfg = policy_.jwt_providers.find(name);
  auto keys = keys_.find(name);
  if (cfg == policy_.jwt_providers.end() || keys == keys_.end()) {
    ++stats_.stale;
    return;
  }
  std::string_view token(reinterpret_cast<const char*>(ev.token), ev.token_len);
  std::string detail;
  auto v = chain::jwt_answer(token, cfg->second, keys->second, tables_.jwt_claims, tables_.config.hash_seed,
                  static_cast<int64_t>(std::time(nullptr)), &detail);
  v.tail = ev.tail;
  (v.state == PD_JC_VALID ? stats_.valid : stats_.invalid)++;
  if (v.state != PD_JC_VALID)
    log_jwt()->debug("jwt provider '{}': token refused ({}): {}", name,
                     jwt::reason_name(static_cast<pd_jwt_reason>(v.reason)), detail);
  if (auto st = dp_.put_jwt_answer(ev.key, v); !st) log_jwt()->warn("{}", st.error().message);
}

}  // namespace policyd

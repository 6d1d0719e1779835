#include "daemon/event_service.hpp"

#include <arpa/inet.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "chain/abi.hpp"
#include "chain/jwt/jwt.hpp"

namespace policyd {

namespace {

std::shared_ptr<spdlog::logger> log_events() { return spdlog::get("events"); }

int64_t clock_ns(clockid_t id) {
  timespec t{};
  clock_gettime(id, &t);
  return static_cast<int64_t>(t.tv_sec) * 1000000000LL + t.tv_nsec;
}

// "198.51.100.2:40101", "[2001:db8::2]:443"
std::string endpoint(int family, const __u32 addr[4], __u16 port_be) {
  char buf[INET6_ADDRSTRLEN] = "?";
  unsigned port = ntohs(port_be);
  if (family == 6) {
    inet_ntop(AF_INET6, addr, buf, sizeof buf);
    return fmt::format("[{}]:{}", buf, port);
  }
  inet_ntop(AF_INET, addr, buf, sizeof buf);
  return fmt::format("{}:{}", buf, port);
}

// Bytes the dataplane copied (at most `cap` of `len`); "..." says the rest was cut.
std::string carried(const __u8* bytes, unsigned len, unsigned cap) {
  std::string s(reinterpret_cast<const char*>(bytes), std::min(len, cap));
  if (len > cap) s += "...";
  return s;
}

std::string method_name(uint32_t bit) {
  if (bit == 0) return {};
  auto name = config::to_string(static_cast<config::Method>(bit));
  return name.empty() ? "other" : std::string(name);
}

}  // namespace

EventNames event_names(const config::Policy& policy, const chain::Tables& tables, uint32_t generation) {
  EventNames n;
  n.generation = generation;
  for (const auto& r : tables.rules) n.rules.emplace(r.rule, r);
  n.listeners = policy.listeners;
  for (const auto& [name, limit] : policy.ratelimits) n.limits.push_back(name);  // the compiler's order
  for (const auto& src : tables.programs)
    if (src.own) n.own_stages[src.stage] = src.name;
  return n;
}

nlohmann::json event_json(const pd_event_decision& ev, const EventNames* names, int64_t unix_ms) {
  using nlohmann::json;
  json j;
  j["time"] = static_cast<double>(unix_ms) / 1000.0;
  j["generation"] = ev.gen_tag;
  j["action"] = abi::action_name(ev.action);
  j["status"] = ev.status ? json(ev.status) : json(nullptr);
  j["reason"] = ev.reason != PD_R_NONE ? json(abi::reason_name(ev.reason)) : json(nullptr);
  if (ev.action == PD_ACT_UNAUTH) j["jwt_reason"] = jwt::reason_name(static_cast<pd_jwt_reason>(ev.jwt_reason));
  if (ev.rule == PD_RULE_NONE) {
    j["rule"] = nullptr;
  } else {
    j["rule"] = ev.rule;
    if (names) {
      if (auto it = names->rules.find(ev.rule); it != names->rules.end()) {
        j["rule_host"] = it->second.host_pattern;
        j["rule_path"] = it->second.path;
        j["rule_action"] = it->second.action;
      }
    }
  }
  if (ev.stage == PD_STAGE_RATELIMIT && ev.ratelimit) {
    size_t li = ev.ratelimit - 1u;
    if (names && li < names->limits.size())
      j["limit"] = names->limits[li];
    else
      j["limit"] = li;
  }
  j["stage"] = abi::stage_name(ev.stage);
  if (names)
    if (auto it = names->own_stages.find(ev.stage); it != names->own_stages.end()) j["stage"] = it->second;
  if (ev.proto == PD_PROTO_HTTP) j["protocol"] = "http";
  if (ev.proto == PD_PROTO_TLS) j["protocol"] = "tls";
  if (ev.listener == PD_LISTENER_NONE)
    j["listener"] = nullptr;  // the packet's port is unknown (an IPv6 header chain too long to walk)
  else if (names && ev.listener < names->listeners.size())
    j["listener"] = names->listeners[ev.listener].name;
  else
    j["listener"] = ev.listener;
  if (auto m = method_name(ev.method); !m.empty()) j["method"] = m;
  j["host"] = ev.host_len ? json(carried(ev.host, ev.host_len, PD_LOG_HOST)) : json(nullptr);
  // the normalized path is decoded bytes: shown escaped, as a request would carry it
  j["path"] = ev.path_len ? json(config::encode_path(carried(ev.path, ev.path_len, PD_LOG_PATH))) : json(nullptr);
  j["client"] = endpoint(ev.flow.family, ev.flow.saddr, ev.flow.sport);
  j["server"] = endpoint(ev.flow.family, ev.flow.daddr, ev.flow.dport);
  return j;
}

std::string event_line(const nlohmann::json& e) {
  auto s = [&](const char* key) -> std::string {
    auto it = e.find(key);
    if (it == e.end() || it->is_null()) return {};
    return it->is_string() ? it->get<std::string>() : it->dump();
  };
  std::string line = s("action");
  if (auto v = s("status"); !v.empty()) line += " " + v;
  if (auto v = s("method"); !v.empty()) line += " " + v;
  std::string target = s("host") + s("path");
  if (!target.empty()) line += " " + target;
  line += fmt::format(" client {} server {}", s("client"), s("server"));
  if (auto v = s("listener"); !v.empty()) line += " listener " + v;
  if (auto v = s("reason"); !v.empty()) line += fmt::format(" reason {} (fail mode)", v);
  if (auto v = s("jwt_reason"); !v.empty()) line += " token " + v;
  if (auto v = s("rule"); !v.empty()) {
    line += " rule " + v;
    if (auto h = s("rule_host"); !h.empty()) line += fmt::format(" ({} {})", h, s("rule_path"));
  } else if (s("stage") == "verdict") {
    line += " default_action";
  }
  if (auto v = s("limit"); !v.empty()) line += " limit " + v;
  line += " generation " + s("generation");
  return line;
}

EventService::EventService(boost::asio::io_context& io, chain::Dataplane& dp, Options opts)
    : dp_(dp), opts_(opts), events_(io) {}

EventService::~EventService() { stop(); }

Status EventService::start() {
  rb_ = ring_buffer__new(dp_.map_fd(policyd::abi::Map::log), &EventService::on_event, this, nullptr);
  if (!rb_) return make_error(fmt::format("opening the decision events ring buffer pd_log: {}", std::strerror(errno)));
  events_.assign(ring_buffer__epoll_fd(rb_));
  poll();  // what was sent while no daemon read (a restart) is still worth showing
  wait_events();
  return Ok{};
}

void EventService::stop() {
  if (stopped_) return;
  stopped_ = true;
  boost::system::error_code ec;
  if (events_.is_open()) {
    events_.cancel(ec);
    events_.release();  // the ring buffer owns (and closes) its epoll fd
  }
  if (rb_) ring_buffer__free(rb_);
  rb_ = nullptr;
  auto followers = std::move(followers_);
  followers_.clear();
  for (const auto& s : followers) s->finish();
}

void EventService::set_active(const config::Policy& policy, const chain::Tables& tables, uint32_t generation) {
  if (!names_.empty() && names_.back()->generation == generation) names_.pop_back();  // same generation, new names
  names_.push_back(std::make_shared<const EventNames>(event_names(policy, tables, generation)));
  while (names_.size() > PD_GENERATIONS) names_.pop_front();
}

void EventService::wait_events() {
  events_.async_wait(boost::asio::posix::stream_descriptor::wait_read, [this](const boost::system::error_code& ec) {
    if (ec || stopped_) return;
    poll();
    wait_events();
  });
}

void EventService::poll() {
  if (rb_) ring_buffer__consume(rb_);
}

int EventService::on_event(void* self, void* data, size_t size) {
  auto* me = static_cast<EventService*>(self);
  uint32_t type = 0;
  if (size >= sizeof(type)) std::memcpy(&type, data, sizeof(type));
  if (type != PD_EV_DECISION || size < sizeof(pd_event_decision)) {
    ++me->stats_.malformed;
    return 0;
  }
  pd_event_decision ev;
  std::memcpy(&ev, data, sizeof ev);
  me->handle(ev);
  return 0;
}

void EventService::handle(const pd_event_decision& ev) {
  ++stats_.received;
  // bpf_ktime_get_ns is CLOCK_MONOTONIC: to wall time by the offset between the clocks now
  const int64_t offset = clock_ns(CLOCK_REALTIME) - clock_ns(CLOCK_MONOTONIC);
  const int64_t unix_ms = (static_cast<int64_t>(ev.ktime_ns) + offset) / 1000000;
  const EventNames* names = nullptr;
  for (const auto& n : names_)
    if (n->generation == ev.gen_tag) names = n.get();
  nlohmann::json j = event_json(ev, names, unix_ms);
  if (opts_.log_level != spdlog::level::off)
    if (auto log = log_events()) log->log(opts_.log_level, "{}", event_line(j));
  for (const auto& s : followers_)
    if (!s->write(j)) ++stats_.follower_drops;
  history_.push_back(std::move(j));
  while (history_.size() > opts_.history) history_.pop_front();
}

control::Response EventService::command(const nlohmann::json& arguments,
                                        const std::shared_ptr<control::ControlServer::Session>& session) {
  control::Response r;
  auto follow = arguments.find("follow");
  if (follow != arguments.end() && !follow->is_boolean()) {
    r.result = 1;
    r.text = "events: \"follow\" must be true or false";
    return r;
  }
  poll();  // include what arrived since the io loop last looked
  if (follow != arguments.end() && follow->get<bool>()) {
    if (stopped_) {
      r.result = 2;
      r.text = "events: the daemon is stopping";
      return r;
    }
    followers_.insert(session);
    session->on_close([this, alive = std::weak_ptr<char>(alive_), s = std::weak_ptr(session)] {
      if (alive.expired()) return;
      if (auto p = s.lock()) followers_.erase(p);
    });
    r.arguments = {{"events", nlohmann::json::array()}};
    return r;
  }
  nlohmann::json recent = nlohmann::json::array();
  for (const auto& e : history_) recent.push_back(e);
  r.arguments = {{"events", std::move(recent)}};
  return r;
}

}  // namespace policyd

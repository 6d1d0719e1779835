// The reference evaluation of POLICY.md and the probes made from a policy (reference.hpp).
#include "chain/reference.hpp"

#include <algorithm>
#include <cctype>

#include <fmt/format.h>

#include "chain/compile.hpp"

namespace policyd::chain {

using config::Action;

namespace {

bool host_matches(const std::string& pattern, const std::string& host) {
  if (pattern == "*") return true;
  if (pattern.rfind("*.", 0) == 0) {
    std::string suffix = pattern.substr(1);  // ".example.com"
    return host.size() > suffix.size() && host.compare(host.size() - suffix.size(), suffix.size(), suffix) == 0;
  }
  return host == pattern;
}

bool path_matches(const config::PathMatch& m, const std::string& path) {
  if (m.kind == config::PathMatch::Exact) return path == m.value;
  return path.compare(0, m.value.size(), m.value) == 0;
}

std::string example_host(const std::string& pattern) {
  if (pattern == "*") return "preflight.invalid";
  if (pattern.rfind("*.", 0) == 0) return "preflight." + pattern.substr(2);
  return pattern;
}

std::string where(const config::SourceLoc& loc) { return fmt::format("{}:{}:{}", loc.file, loc.line, loc.column); }

uint32_t first_bit(uint32_t mask) {
  for (uint32_t b = 1; b; b <<= 1)
    if (mask & b) return b;
  return config::GET;
}

// a method outside `mask` (0 if every method is in it)
uint32_t other_method(uint32_t mask) {
  for (uint32_t b : {config::DELETE, config::PATCH, config::PUT, config::POST, config::GET})
    if (!(mask & b)) return b;
  return 0;
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string upper(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

const config::Route* reference_route(const config::Policy& policy, uint32_t method_bit, const std::string& host,
                                     const std::string& path) {
  for (const auto& h : policy.hosts) {
    bool match = false;
    for (const auto& p : h.matches) match = match || host_matches(p, host);
    if (!match) continue;
    for (const auto& r : h.routes)
      if (path_matches(r.path, path) && (r.methods == 0 || (r.methods & method_bit))) return &r;
    return nullptr;  // first matching host only
  }
  return nullptr;
}

Action reference_action(const config::Policy& policy, uint32_t method_bit, const std::string& host,
                        const std::string& path) {
  const config::Route* r = reference_route(policy, method_bit, host, path);
  return r ? r->action : policy.default_action;
}

Action reference_sni_action(const config::Policy& policy, const std::optional<std::string>& server_name) {
  if (!policy.runs(config::StageKind::Sni)) return policy.default_action;
  if (!server_name) return policy.missing_sni;
  std::string name = lower(*server_name);
  if (!name.empty() && name.back() == '.') name.pop_back();
  for (const auto& r : policy.sni)
    if (host_matches(r.match, name)) return r.action;
  return policy.default_action;
}

std::vector<Probe> synthesize(const config::Policy& policy, size_t limit) {
  std::vector<Probe> probes;
  auto add = [&](uint32_t method, std::string host, std::string path, std::string why) {
    if (probes.size() >= limit) return;
    probes.push_back(Probe{Probe::Http, std::string(config::to_string(static_cast<config::Method>(method))), std::move(host),
                           std::move(path), method, std::move(why)});
  };
  for (size_t hi = 0; hi < policy.hosts.size(); ++hi) {
    const auto& h = policy.hosts[hi];
    for (const auto& pattern : h.matches) {
      std::string host = example_host(pattern);
      for (size_t ri = 0; ri < h.routes.size(); ++ri) {
        const auto& r = h.routes[ri];
        std::string why = fmt::format("host {} ('{}') route {} at {}", hi + 1, pattern, ri + 1, where(r.loc));
        std::string path = r.path.kind == config::PathMatch::Exact ? r.path.value : r.path.value + "pf";
        add(first_bit(r.methods), host, path, why);                    // what the route takes
        if (uint32_t other = other_method(r.methods); r.methods && other)
          add(other, host, path, why + ", another method");             // its methods limit it
        if (r.path.kind == config::PathMatch::Exact)
          add(first_bit(r.methods), host, r.path.value + "-pf", why + ", a longer path");
      }
      add(config::GET, host, "/preflight-no-route", fmt::format("host {} ('{}'), no route", hi + 1, pattern));
    }
  }
  add(config::GET, "preflight-no-host.invalid", "/", "no host");

  bool tls = std::any_of(policy.listeners.begin(), policy.listeners.end(),
                         [](const config::Listener& l) { return l.protocol == config::Protocol::Tls; });
  if (!tls) return probes;
  auto add_tls = [&](std::string name, std::string why) {
    if (probes.size() >= limit) return;
    Probe p;
    p.kind = Probe::Tls;
    p.host = std::move(name);
    p.why = std::move(why);
    probes.push_back(std::move(p));
  };
  for (size_t i = 0; i < policy.sni.size(); ++i) {
    const auto& r = policy.sni[i];
    std::string why = fmt::format("sni rule {} ('{}') at {}", i + 1, r.match, where(r.loc));
    std::string name = example_host(r.match);
    add_tls(name, why);
    add_tls(upper(name) + ".", why + ", upper case with a trailing dot");
  }
  add_tls("preflight-no-sni-rule.invalid", "no sni rule");
  add_tls("", "no server_name (missing_sni)");
  return probes;
}

unsigned expected_action(const config::Policy& policy, const Probe& probe) {
  if (probe.kind == Probe::Tls) {
    std::optional<std::string> name;
    if (!probe.host.empty()) name = probe.host;
    return action_of(reference_sni_action(policy, name));
  }
  // a route that needs a token refuses a request without one (probes carry none)
  const config::Route* route = reference_route(policy, probe.method_bit, probe.host, probe.path);
  if (route && route->jwt && route->action == Action::Allow && policy.runs(config::StageKind::Jwt))
    return PD_ACT_UNAUTH;
  return action_of(route ? route->action : policy.default_action);
}

}  // namespace policyd::chain

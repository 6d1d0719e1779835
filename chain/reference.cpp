// The reference evaluation of POLICY.md and the probes made from a policy (reference.hpp).
#include "chain/reference.hpp"

#include <algorithm>
#include <cctype>

#include <fmt/format.h>

#include "chain/compile.hpp"
#include "chain/stage.hpp"

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

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
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
  for (const auto& stage : stages()) stage->probes(policy, limit, probes);
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

// The reference evaluation of POLICY.md — what a policy means for one request or one
// ClientHello, written independently of the compile step and the dataplane — and the probes
// made from a policy (for every route: one request it matches and ones it must not). Preflight
// (chain/kernel/preflight.hpp) runs the probes through a prepared generation and compares.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "config/policy.hpp"

namespace policyd::chain {

struct Probe {
  enum Kind { Http, Tls };
  Kind kind = Http;
  std::string method;
  std::string host;  // HTTP: normalized authority; TLS: the server_name sent ("" = none)
  std::string path;  // normalized path
  uint32_t method_bit = 0;
  std::string why;   // which rule it exercises ("host 1 route 2 at file:line:col")
};

// The route that takes a request (host and path already normalized), nullptr if none does.
const config::Route* reference_route(const config::Policy& policy, uint32_t method_bit, const std::string& host,
                                     const std::string& path);
// The policy's meaning for one request (host and path already normalized).
config::Action reference_action(const config::Policy& policy, uint32_t method_bit, const std::string& host,
                                const std::string& path);

// The policy's meaning for a ClientHello with this server_name (nullopt: no server_name
// extension). Names compare case-insensitively; a trailing dot is not part of the name.
config::Action reference_sni_action(const config::Policy& policy, const std::optional<std::string>& server_name);

// The probes for a policy: at most `limit` (the earliest rules first).
std::vector<Probe> synthesize(const config::Policy& policy, size_t limit);

// What the policy says for a probe (a pd_action): a route that needs a token refuses a probe,
// which carries none.
unsigned expected_action(const config::Policy& policy, const Probe& probe);

}  // namespace policyd::chain

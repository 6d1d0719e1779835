// Preflight: before a prepared generation goes live, requests synthesized from the policy
// (for every route: one it matches and ones it must not) run through the real programs of
// that generation with BPF_PROG_TEST_RUN, and each verdict is compared with what the policy
// means — evaluated independently, here, by a reference implementation of POLICY.md.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "chain/dataplane.hpp"
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

struct PreflightReport {
  size_t probes = 0;
  size_t rules = 0;   // routes and sni rules in the policy
  std::vector<std::string> failures;  // "GET http://h/p: policy says deny, dataplane says allow (why)"
};

// Runs every probe against generation `gen` (prepared, not active). Error only if the
// probes could not run at all.
Result<PreflightReport> preflight(Dataplane& dp, const config::Policy& policy, uint32_t gen, size_t limit = 4096);

}  // namespace policyd::chain

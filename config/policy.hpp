// Policy: the typed form of a policy file (POLICY.md), as the loader hands it to the controller.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace policyd::config {

// What happens to a request. `reject` exists only for rate limits (LimitAction).
enum class Action { Allow, Deny, Drop, Reset };
enum class LimitAction { Reject, Drop };
enum class FailMode { Closed, Open };
enum class Protocol { Http, Tls };
enum class QuicMode { Deny, Allow };
enum class StageKind { Sni, Host, Path, Jwt, Ratelimit };

// HTTP request methods as bits of Route::methods (0 = any method).
enum Method : uint32_t {
  GET = 1u << 0,
  HEAD = 1u << 1,
  POST = 1u << 2,
  PUT = 1u << 3,
  DELETE = 1u << 4,
  CONNECT = 1u << 5,
  OPTIONS = 1u << 6,
  TRACE = 1u << 7,
  PATCH = 1u << 8,
};

// Bit of a method token; tokens are case-sensitive (RFC 9110), so "get" has none.
std::optional<uint32_t> method_bit(std::string_view token);

// Where a list element was written, 1-based. Locations say where, not what: every SourceLoc
// compares equal, so moving a rule to another line does not make two policies differ.
struct SourceLoc {
  std::string file;
  int line = 0;
  int column = 0;

  friend bool operator==(const SourceLoc&, const SourceLoc&) noexcept { return true; }
};

// A destination address or prefix; "192.0.2.10" is 192.0.2.10/32. No host bits are set
// beyond prefix_len.
struct IpPrefix {
  int family = 4;                  // 4 or 6
  std::array<uint8_t, 16> addr{};  // network byte order; IPv4 in the first 4 bytes
  int prefix_len = 32;

  bool operator==(const IpPrefix&) const = default;
};

struct Listener {
  std::string name;
  uint16_t port = 0;
  Protocol protocol = Protocol::Http;
  QuicMode quic = QuicMode::Deny;
  std::optional<IpPrefix> address;  // absent: any destination address
  SourceLoc loc;

  bool operator==(const Listener&) const = default;
};

struct SniRule {
  std::string match;  // "api.example.com", "*.example.com" or "*"; lower-case, no trailing dot
  Action action = Action::Deny;
  SourceLoc loc;

  bool operator==(const SniRule&) const = default;
};

struct PathMatch {
  enum Kind { Exact, Prefix };
  Kind kind = Prefix;
  std::string value;

  bool operator==(const PathMatch&) const = default;
};

struct JwtRef {
  std::string provider;                        // a key of Policy::jwt_providers
  std::map<std::string, std::string> require;  // claim -> required value

  bool operator==(const JwtRef&) const = default;
};

struct Route {
  PathMatch path;
  uint32_t methods = 0;  // Method bits; 0 = any method
  std::optional<JwtRef> jwt;
  std::optional<std::string> ratelimit;  // a key of Policy::ratelimits
  Action action = Action::Deny;
  SourceLoc loc;

  bool operator==(const Route&) const = default;
};

struct HostRule {
  std::vector<std::string> matches;  // same pattern forms as SniRule::match
  std::vector<Route> routes;
  SourceLoc loc;

  bool operator==(const HostRule&) const = default;
};

struct JwtProvider {
  std::string name;
  std::string issuer;
  std::vector<std::string> audiences;
  std::vector<std::string> algorithms;     // of HS256 HS384 HS512 RS256 RS384 RS512 ES256 ES384
  std::optional<std::string> secret_file;  // set when an HS* algorithm is listed; resolved path
  std::optional<std::string> jwks_file;    // set when an RS*/ES* algorithm is listed; resolved path
  std::chrono::seconds clock_skew{30};
  bool require_exp = true;
  SourceLoc loc;

  bool operator==(const JwtProvider&) const = default;
};

struct RateLimit {
  enum Key { ClientIp, JwtSub, Host, Route, Global };
  enum Unit { PerSecond, PerMinute, PerHour };

  std::string name;
  Key key = ClientIp;
  uint64_t rate = 0;  // tokens per unit, >= 1
  Unit unit = PerSecond;
  uint64_t burst = 0;  // bucket size; the rate when not given
  LimitAction action = LimitAction::Reject;
  SourceLoc loc;

  bool operator==(const RateLimit&) const = default;
};

struct Limits {
  uint32_t max_head_bytes = 8192;  // 512..16384
  uint32_t max_flows = 262144;     // 1024..16777216

  bool operator==(const Limits&) const = default;
};

// A stage whose program comes from a BPF object file (`stages:`): a built-in stage whose
// program is replaced by another build of it (e.g. a new jwt.bpf.o), or an operator's own
// stage, written against bpf/include/policyd/stage.h and placed after a stage of the chain.
struct StageSpec {
  std::string name;
  std::string object;                // the object file (relative paths: from the policy's directory)
  std::optional<std::string> after;  // an own stage: the stage it runs after
  SourceLoc loc;

  bool operator==(const StageSpec&) const = default;
};

// Stages built into policyd, by the names `chain` and `stages` use.
inline constexpr std::string_view kBuiltinStages[] = {"entry", "http", "sni", "host", "path", "jwt", "ratelimit",
                                                      "verdict"};
// Own stages a policy may add.
inline constexpr size_t kMaxOwnStages = 8;

struct Policy {
  int version = 1;
  std::vector<std::string> interfaces;  // names or globs with * and ?
  std::vector<Listener> listeners;
  std::vector<StageKind> chain{StageKind::Sni, StageKind::Host, StageKind::Path, StageKind::Jwt,
                               StageKind::Ratelimit};
  Action default_action = Action::Deny;
  FailMode fail_mode = FailMode::Closed;
  Limits limits;
  std::vector<SniRule> sni;
  Action missing_sni = Action::Deny;
  std::vector<HostRule> hosts;
  std::map<std::string, JwtProvider> jwt_providers;
  std::map<std::string, RateLimit> ratelimits;
  std::vector<StageSpec> stages;  // programs from object files, in the order given
  std::string source_path;  // the file (or name) the policy was loaded from

  // Is `stage` in the chain? (the loader's checks and the reference evaluation both ask)
  bool runs(StageKind stage) const;

  bool operator==(const Policy&) const = default;
};

// The spelling used in policy files ("allow", "tls", "ratelimit", "client_ip", "s", ...).
std::string_view to_string(Action);
std::string_view to_string(LimitAction);
std::string_view to_string(FailMode);
std::string_view to_string(Protocol);
std::string_view to_string(QuicMode);
std::string_view to_string(StageKind);
std::string_view to_string(PathMatch::Kind);
// A decoded path (a route's value, a normalized request path) written back as a request
// target would carry it: bytes outside printable ASCII, and '%', '?', '#', as %XX with
// upper-case hex digits; everything else as itself. For display (always valid UTF-8) and
// for requests made from a route (preflight).
std::string encode_path(std::string_view decoded);
std::string_view to_string(RateLimit::Key);
std::string_view to_string(RateLimit::Unit);
std::string_view to_string(Method);  // "GET", ...; "" for a value that is not a single method bit

}  // namespace policyd::config

// Names of the Policy enumerations as they are spelled in policy files.
#include "config/policy.hpp"

#include <algorithm>

namespace policyd::config {

namespace {

struct MethodName {
  Method bit;
  std::string_view name;
};

constexpr MethodName kMethods[] = {
    {GET, "GET"},         {HEAD, "HEAD"},     {POST, "POST"},
    {PUT, "PUT"},         {DELETE, "DELETE"}, {CONNECT, "CONNECT"},
    {OPTIONS, "OPTIONS"}, {TRACE, "TRACE"},   {PATCH, "PATCH"},
};

}  // namespace

std::optional<uint32_t> method_bit(std::string_view token) {
  for (const auto& m : kMethods) {
    if (m.name == token) return m.bit;
  }
  return std::nullopt;
}

std::string_view to_string(Method m) {
  for (const auto& entry : kMethods) {
    if (entry.bit == m) return entry.name;
  }
  return "";
}

std::string_view to_string(Action a) {
  switch (a) {
    case Action::Allow:
      return "allow";
    case Action::Deny:
      return "deny";
    case Action::Drop:
      return "drop";
    case Action::Reset:
      return "reset";
  }
  return "";
}

std::string_view to_string(LimitAction a) {
  switch (a) {
    case LimitAction::Reject:
      return "reject";
    case LimitAction::Drop:
      return "drop";
  }
  return "";
}

std::string_view to_string(FailMode m) {
  switch (m) {
    case FailMode::Closed:
      return "closed";
    case FailMode::Open:
      return "open";
  }
  return "";
}

std::string_view to_string(Protocol p) {
  switch (p) {
    case Protocol::Http:
      return "http";
    case Protocol::Tls:
      return "tls";
  }
  return "";
}

std::string_view to_string(QuicMode q) {
  switch (q) {
    case QuicMode::Deny:
      return "deny";
    case QuicMode::Allow:
      return "allow";
  }
  return "";
}

bool Policy::runs(StageKind stage) const { return std::find(chain.begin(), chain.end(), stage) != chain.end(); }

std::string_view to_string(StageKind s) {
  switch (s) {
    case StageKind::Sni:
      return "sni";
    case StageKind::Host:
      return "host";
    case StageKind::Path:
      return "path";
    case StageKind::Jwt:
      return "jwt";
    case StageKind::Ratelimit:
      return "ratelimit";
  }
  return "";
}

std::string encode_path(std::string_view decoded) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(decoded.size());
  for (const char ch : decoded) {
    const auto c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c >= 0x7f || c == '%' || c == '?' || c == '#') {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    } else {
      out.push_back(ch);
    }
  }
  return out;
}

std::string_view to_string(PathMatch::Kind k) {
  switch (k) {
    case PathMatch::Exact:
      return "exact";
    case PathMatch::Prefix:
      return "prefix";
  }
  return "";
}

std::string_view to_string(RateLimit::Key k) {
  switch (k) {
    case RateLimit::ClientIp:
      return "client_ip";
    case RateLimit::JwtSub:
      return "jwt_sub";
    case RateLimit::Host:
      return "host";
    case RateLimit::Route:
      return "route";
    case RateLimit::Global:
      return "global";
  }
  return "";
}

std::string_view to_string(RateLimit::Unit u) {
  switch (u) {
    case RateLimit::PerSecond:
      return "s";
    case RateLimit::PerMinute:
      return "m";
    case RateLimit::PerHour:
      return "h";
  }
  return "";
}

}  // namespace policyd::config

// YAML -> Policy: YAML::convert<> per policy struct, a fixed key set per mapping, and a
// YAML-positioned error that becomes a PolicyError at the loader boundary.
#include "config/loader.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <set>
#include <utility>

namespace policyd::config {

namespace {

constexpr size_t kMaxRoutes = 65536;
constexpr size_t kMaxHostPatterns = 16384;
constexpr size_t kMaxSniRules = 8192;
constexpr size_t kMaxNameLength = 253;
constexpr size_t kMaxLabelLength = 63;
constexpr size_t kMaxPathLength = 255;
constexpr size_t kMaxInterfaceName = 15;  // IFNAMSIZ - 1
constexpr size_t kMaxIdentifier = 64;
constexpr uint64_t kMaxRate = 1'000'000'000;
constexpr std::chrono::seconds kMaxClockSkew{3600};

constexpr std::array kActions{Action::Allow, Action::Deny, Action::Drop, Action::Reset};
constexpr std::array kLimitActions{LimitAction::Reject, LimitAction::Drop};
constexpr std::array kFailModes{FailMode::Closed, FailMode::Open};
constexpr std::array kProtocols{Protocol::Http, Protocol::Tls};
constexpr std::array kQuicModes{QuicMode::Deny, QuicMode::Allow};
constexpr std::array kStages{StageKind::Sni, StageKind::Host, StageKind::Path, StageKind::Jwt,
                             StageKind::Ratelimit};
constexpr std::array kLimitKeys{RateLimit::ClientIp, RateLimit::JwtSub, RateLimit::Host,
                                RateLimit::Route, RateLimit::Global};
constexpr std::array<std::string_view, 8> kAlgorithms{"HS256", "HS384", "HS512", "RS256",
                                                      "RS384", "RS512", "ES256", "ES384"};

// An error at a YAML position, thrown while decoding; the loader adds the file name.
class YamlError : public std::runtime_error {
 public:
  YamlError(const YAML::Mark& mark, const std::string& message)
      : std::runtime_error(message), mark_(mark) {}
  const YAML::Mark& mark() const noexcept { return mark_; }

 private:
  YAML::Mark mark_;
};

[[noreturn]] void fail(const YAML::Mark& mark, const std::string& message) {
  throw YamlError(mark, message);
}

// 'text', with control bytes shown as \xHH so a message stays on one line.
std::string in_quotes(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out = "'";
  for (const char c : s) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) {
      out += "\\x";
      out += kHex[byte >> 4];
      out += kHex[byte & 0xf];
    } else {
      out += c;
    }
  }
  return out + "'";
}

std::string position(const SourceLoc& loc) {
  return std::to_string(loc.line) + ":" + std::to_string(loc.column);
}

SourceLoc loc_of(const YAML::Node& node) {
  const YAML::Mark mark = node.Mark();
  return SourceLoc{"", mark.line + 1, mark.column + 1};
}

// What a node holds, for "got ..." in messages.
std::string got(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Scalar:
      return in_quotes(node.Scalar());
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a mapping";
    default:
      return "nothing";
  }
}

[[noreturn]] void expected(const YAML::Node& node, std::string_view what, std::string_view key) {
  fail(node.Mark(),
       "expected " + std::string(what) + " for " + in_quotes(key) + ", got " + got(node));
}

template <typename Range>
std::string join(const Range& items, std::string_view separator) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += separator;
    out += item;
  }
  return out;
}

// The entries of one YAML mapping, checked against the keys a `what` (e.g. "route") may have:
// an unknown or repeated key, or a key without a value, is an error at the key.
class Fields {
 public:
  Fields(const YAML::Node& node, std::string what, std::initializer_list<std::string_view> keys,
         std::string_view shape = "a mapping")
      : node_(node), what_(std::move(what)) {
    if (!node.IsMap()) {
      fail(node.Mark(), "expected " + std::string(shape) + " for " + what_ + ", got " + got(node));
    }
    for (const auto& entry : node) {
      const YAML::Node& key = entry.first;
      if (!key.IsScalar())
        fail(key.Mark(), "expected a key name in " + what_ + ", got " + got(key));
      const std::string& name = key.Scalar();
      if (std::find(keys.begin(), keys.end(), name) == keys.end()) {
        fail(key.Mark(), "unknown key " + in_quotes(name) + " in " + what_ +
                             " (expected one of: " + join(keys, ", ") + ")");
      }
      if (find(name) != nullptr)
        fail(key.Mark(), "duplicate key " + in_quotes(name) + " in " + what_);
      if (entry.second.IsNull())
        fail(key.Mark(), "missing value for " + in_quotes(name) + " in " + what_);
      entries_.push_back({key, entry.second});
    }
  }

  std::optional<YAML::Node> get(std::string_view key) const {
    const Entry* e = find(key);
    if (e == nullptr) return std::nullopt;
    return e->value;
  }

  YAML::Node require(std::string_view key) const {
    const Entry* e = find(key);
    if (e == nullptr) fail(node_.Mark(), "missing required key " + in_quotes(key) + " in " + what_);
    return e->value;
  }

  // Position of the key itself (present keys only).
  YAML::Mark key_mark(std::string_view key) const { return find(key)->key.Mark(); }
  bool has(std::string_view key) const { return find(key) != nullptr; }

 private:
  struct Entry {
    YAML::Node key;
    YAML::Node value;
  };

  const Entry* find(std::string_view key) const {
    for (const auto& e : entries_) {
      if (e.key.Scalar() == key) return &e;
    }
    return nullptr;
  }

  YAML::Node node_;
  std::string what_;
  std::vector<Entry> entries_;
};

// Elements of a list; an empty element is reported by its index (YAML marks it oddly).
std::vector<YAML::Node> elements(const YAML::Node& node, std::string_view key, bool may_be_empty) {
  if (!node.IsSequence()) expected(node, "a list", key);
  std::vector<YAML::Node> out;
  for (const auto& element : node) {
    if (element.IsNull()) {
      fail(node.Mark(),
           "entry " + std::to_string(out.size() + 1) + " of " + in_quotes(key) + " is empty");
    }
    out.push_back(element);
  }
  if (out.empty() && !may_be_empty) fail(node.Mark(), in_quotes(key) + " must not be empty");
  return out;
}

// A string, or a list of strings; returns the scalar nodes.
std::vector<YAML::Node> string_list(const YAML::Node& node, std::string_view key) {
  if (node.IsScalar()) return {node};
  if (!node.IsSequence()) expected(node, "a string or a list of strings", key);
  std::vector<YAML::Node> out = elements(node, key, false);
  for (const auto& element : out) {
    if (!element.IsScalar()) {
      fail(element.Mark(), "expected a string in " + in_quotes(key) + ", got " + got(element));
    }
  }
  return out;
}

const std::string& scalar(const YAML::Node& node, std::string_view what, std::string_view key) {
  if (!node.IsScalar()) expected(node, what, key);
  return node.Scalar();
}

const std::string& non_empty_string(const YAML::Node& node, std::string_view key) {
  const std::string& s = scalar(node, "a non-empty string", key);
  if (s.empty()) expected(node, "a non-empty string", key);
  return s;
}

// Plain decimal digits, no sign, no leading zeros.
std::optional<uint64_t> parse_decimal(std::string_view s) {
  if (s.empty() || s.size() > 20 || (s.size() > 1 && s[0] == '0')) return std::nullopt;
  uint64_t value = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec != std::errc{} || end != s.data() + s.size()) return std::nullopt;
  return value;
}

uint64_t parse_number(const YAML::Node& node, std::string_view key, uint64_t min, uint64_t max,
                      std::string_view what = "a whole number") {
  const std::string description =
      std::string(what) + " " + std::to_string(min) + ".." + std::to_string(max);
  const auto value = parse_decimal(scalar(node, description, key));
  if (!value || *value < min || *value > max) expected(node, description, key);
  return *value;
}

bool parse_bool(const YAML::Node& node, std::string_view key) {
  const std::string& s = scalar(node, "true or false", key);
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  expected(node, "true or false", key);
}

template <typename E, size_t N>
E parse_enum(const YAML::Node& node, std::string_view key, const std::array<E, N>& values) {
  std::string names;
  for (E v : values) names += (names.empty() ? "" : ", ") + std::string(to_string(v));
  const std::string what = "one of " + names;
  const std::string& s = scalar(node, what, key);
  for (E v : values) {
    if (to_string(v) == s) return v;
  }
  expected(node, what, key);
}

bool identifier_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-' || c == '.';
}

// Names of listeners, jwt providers and rate limits.
std::string parse_identifier(const YAML::Node& node, std::string_view what) {
  const std::string expectation = "a name (1 to " + std::to_string(kMaxIdentifier) +
                                  " letters, digits, '_', '-' or '.') for " + std::string(what);
  if (!node.IsScalar()) fail(node.Mark(), "expected " + expectation + ", got " + got(node));
  const std::string& s = node.Scalar();
  if (s.empty() || s.size() > kMaxIdentifier || !std::all_of(s.begin(), s.end(), identifier_char)) {
    fail(node.Mark(), "expected " + expectation + ", got " + got(node));
  }
  return s;
}

// Host and SNI patterns: "name.example", "*.suffix.example" or "*"; lower-cased, no trailing dot.
std::string parse_host_pattern(const YAML::Node& node, std::string_view key) {
  const std::string& raw = scalar(node, "a host name, '*.suffix' or '*'", key);
  auto invalid = [&](const std::string& reason) {
    fail(node.Mark(),
         "invalid host pattern " + in_quotes(raw) + " for " + in_quotes(key) + ": " + reason);
  };
  std::string name = raw;
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) {
    return static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  });
  if (!name.empty() && name.back() == '.') name.pop_back();
  if (name.empty()) invalid("empty name");
  if (name.size() > kMaxNameLength) invalid("longer than 253 bytes");
  if (name == "*") return name;
  size_t start = 0;
  for (size_t label_index = 0;; ++label_index) {
    const size_t dot = name.find('.', start);
    const std::string_view label = std::string_view(name).substr(
        start, dot == std::string::npos ? std::string::npos : dot - start);
    if (label.empty()) invalid("empty label");
    if (label.size() > kMaxLabelLength) invalid("label longer than 63 bytes");
    if (label.find('*') != std::string_view::npos) {
      if (label != "*" || label_index != 0) invalid("'*' is only allowed as the whole first label");
    } else {
      for (char c : label) {
        if (static_cast<unsigned char>(c) >= 0x80) {
          invalid("non-ASCII names must be written in their xn-- (punycode) form");
        }
        const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
        if (!ok) {
          invalid("character " + in_quotes(std::string(1, c)) +
                  " is not allowed (labels use a-z, 0-9, '-' and '_')");
        }
      }
    }
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return name;
}

bool hex_digit(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return c - 'A' + 10;
}

// A path of a route; it is compared with normalized request paths, so it must be one itself.
// Escapes are decoded, as requests' are (and as nginx decodes them before it matches a
// location): "/a%40b" and "/a@b" are one path. The value returned is the decoded bytes.
std::string parse_path_value(const YAML::Node& node, std::string_view key, PathMatch::Kind kind) {
  const std::string& path = scalar(node, "a path starting with '/'", key);
  auto invalid = [&](const std::string& reason) {
    fail(node.Mark(), "invalid path " + in_quotes(path) + " for " + in_quotes(key) + ": " + reason);
  };
  if (path.empty() || path[0] != '/') invalid("it must start with '/'");
  std::string decoded;
  for (size_t i = 0; i < path.size(); ++i) {
    const auto c = static_cast<unsigned char>(path[i]);
    if (c == '?') invalid("'?' is not allowed (the query string is not part of the matched path; write %3F for the character)");
    if (c == '#') invalid("'#' is not allowed (fragments are not sent to servers; write %23 for the character)");
    if (c == '\\') invalid("'\\' is not allowed");
    if (c == ' ') invalid("spaces are not allowed (write %20)");
    if (c < 0x20 || c == 0x7f) invalid("control bytes are not allowed");
    if (c != '%') {
      decoded.push_back(static_cast<char>(c));
      continue;
    }
    if (i + 2 >= path.size() || !hex_digit(path[i + 1]) || !hex_digit(path[i + 2])) {
      invalid("'%' must start a percent-encoding like %20 (write %25 for the character)");
    }
    const std::string escape = path.substr(i, 3);
    const auto byte = static_cast<unsigned char>(hex_value(path[i + 1]) * 16 + hex_value(path[i + 2]));
    if (byte == '/' || byte == '\\' || byte == 0) {
      invalid(in_quotes(escape) +
              " is an encoded '/', '\\' or NUL; requests containing one get the fail mode, so this "
              "path would never match");
    }
    decoded.push_back(static_cast<char>(byte));
    i += 2;
  }
  if (decoded.size() > kMaxPathLength) invalid("longer than 255 bytes (decoded)");
  if (decoded.find("//") != std::string::npos) {
    invalid("'//' never occurs in a normalized request path (repeated slashes are merged)");
  }
  const bool dot_segment =
      decoded.find("/./") != std::string::npos || decoded.find("/../") != std::string::npos ||
      (kind == PathMatch::Exact && (decoded.ends_with("/.") || decoded.ends_with("/..")));
  if (dot_segment) invalid("dot segments never occur in a normalized request path (escapes decoded)");
  return decoded;
}

std::string parse_interface(const YAML::Node& node) {
  const std::string& name = scalar(node, "an interface name or glob", "interfaces");
  auto invalid = [&](const std::string& reason) {
    fail(node.Mark(), "invalid interface " + in_quotes(name) + " for 'interfaces': " + reason);
  };
  if (name.empty()) invalid("empty name");
  for (char c : name) {
    if (c == '/' || c == ':' || static_cast<unsigned char>(c) <= ' ' || c == 0x7f) {
      invalid("'/', ':', whitespace and control bytes are not allowed");
    }
  }
  const bool glob = name.find_first_of("*?") != std::string::npos;
  if (!glob && (name == "." || name == "..")) invalid("not an interface name");
  // '*' may match nothing, '?' exactly one byte: what is left must fit in IFNAMSIZ - 1.
  const auto fixed =
      static_cast<size_t>(std::count_if(name.begin(), name.end(), [](char c) { return c != '*'; }));
  if (fixed > kMaxInterfaceName) invalid("longer than 15 characters");
  return name;
}

IpPrefix parse_prefix(const YAML::Node& node, std::string_view key) {
  const std::string what = "an IPv4 or IPv6 address or prefix";
  const std::string& text = scalar(node, what, key);
  const size_t slash = text.find('/');
  const std::string address = text.substr(0, slash);
  IpPrefix prefix;
  if (inet_pton(AF_INET, address.c_str(), prefix.addr.data()) == 1) {
    prefix.family = 4;
    prefix.prefix_len = 32;
  } else if (inet_pton(AF_INET6, address.c_str(), prefix.addr.data()) == 1) {
    prefix.family = 6;
    prefix.prefix_len = 128;
  } else {
    expected(node, what, key);
  }
  const int max_len = prefix.prefix_len;
  if (slash != std::string::npos) {
    const auto len = parse_decimal(std::string_view(text).substr(slash + 1));
    if (!len || *len > static_cast<uint64_t>(max_len)) {
      expected(
          node,
          "an IPv" + std::to_string(prefix.family) + " prefix length 0.." + std::to_string(max_len),
          key);
    }
    prefix.prefix_len = static_cast<int>(*len);
  }
  IpPrefix network = prefix;
  for (int bit = prefix.prefix_len; bit < max_len; ++bit) {
    network.addr[bit / 8] &= static_cast<uint8_t>(~(0x80u >> (bit % 8)));
  }
  if (network.addr != prefix.addr) {
    char buf[INET6_ADDRSTRLEN] = {};
    inet_ntop(prefix.family == 4 ? AF_INET : AF_INET6, network.addr.data(), buf, sizeof buf);
    fail(node.Mark(), "expected a prefix without host bits for " + in_quotes(key) + ", got " +
                          got(node) + " (did you mean " + buf + "/" +
                          std::to_string(prefix.prefix_len) + "?)");
  }
  return prefix;
}

bool overlaps(const IpPrefix& a, const IpPrefix& b) {
  if (a.family != b.family) return false;
  const int len = std::min(a.prefix_len, b.prefix_len);
  for (int bit = 0; bit < len; ++bit) {
    const uint8_t mask = static_cast<uint8_t>(0x80u >> (bit % 8));
    if ((a.addr[bit / 8] & mask) != (b.addr[bit / 8] & mask)) return false;
  }
  return true;
}

uint32_t parse_methods(const YAML::Node& node) {
  uint32_t methods = 0;
  for (const YAML::Node& element : string_list(node, "methods")) {
    const std::string& token = element.Scalar();
    const auto bit = method_bit(token);
    if (!bit) {
      fail(element.Mark(), "unknown HTTP method " + in_quotes(token) +
                               " in 'methods' (methods are case-sensitive: GET, HEAD, POST, PUT, "
                               "DELETE, CONNECT, OPTIONS, TRACE, PATCH)");
    }
    if (methods & *bit)
      fail(element.Mark(), "duplicate method " + in_quotes(token) + " in 'methods'");
    methods |= *bit;
  }
  return methods;
}

// "100/s", "10/m", "5/h".
void parse_rate(const YAML::Node& node, RateLimit& limit) {
  const std::string what = "a rate like 100/s, 10/m or 5/h";
  const std::string& text = scalar(node, what, "rate");
  const size_t slash = text.find('/');
  if (slash == std::string::npos) expected(node, what, "rate");
  const auto count = parse_decimal(std::string_view(text).substr(0, slash));
  const std::string_view unit = std::string_view(text).substr(slash + 1);
  if (!count) expected(node, what, "rate");
  if (unit == "s") {
    limit.unit = RateLimit::PerSecond;
  } else if (unit == "m") {
    limit.unit = RateLimit::PerMinute;
  } else if (unit == "h") {
    limit.unit = RateLimit::PerHour;
  } else {
    expected(node, what, "rate");
  }
  if (*count < 1 || *count > kMaxRate) {
    expected(node, "a rate of 1 to " + std::to_string(kMaxRate) + " per second, minute or hour",
             "rate");
  }
  limit.rate = *count;
}

// "30s", "2m", "1h".
std::chrono::seconds parse_duration(const YAML::Node& node, std::string_view key) {
  const std::string what = "a duration like 30s, 2m or 1h";
  const std::string& text = scalar(node, what, key);
  if (text.size() < 2) expected(node, what, key);
  const auto count = parse_decimal(std::string_view(text).substr(0, text.size() - 1));
  if (!count) expected(node, what, key);
  uint64_t factor = 0;
  switch (text.back()) {
    case 's':
      factor = 1;
      break;
    case 'm':
      factor = 60;
      break;
    case 'h':
      factor = 3600;
      break;
    default:
      expected(node, what, key);
  }
  if (*count > static_cast<uint64_t>(kMaxClockSkew.count()) / factor) {
    expected(node, "a duration of at most 1h", key);
  }
  return std::chrono::seconds(static_cast<int64_t>(*count * factor));
}

}  // namespace
}  // namespace policyd::config

// One decoder per policy struct. They see the loader's helpers above through this directive,
// which is confined to this file.
namespace YAML {

using namespace policyd::config;

template <>
struct convert<Listener> {
  static bool decode(const Node& node, Listener& listener) {
    const Fields f(node, "listener", {"name", "port", "protocol", "quic", "address"});
    listener.name = parse_identifier(f.require("name"), "'name'");
    listener.port =
        static_cast<uint16_t>(parse_number(f.require("port"), "port", 1, 65535, "a port number"));
    listener.protocol = parse_enum(f.require("protocol"), "protocol", kProtocols);
    if (auto quic = f.get("quic")) listener.quic = parse_enum(*quic, "quic", kQuicModes);
    if (auto address = f.get("address")) listener.address = parse_prefix(*address, "address");
    listener.loc = loc_of(node);
    return true;
  }
};

template <>
struct convert<Limits> {
  static bool decode(const Node& node, Limits& limits) {
    const Fields f(node, "limits", {"max_head_bytes", "max_flows"});
    if (auto v = f.get("max_head_bytes")) {
      limits.max_head_bytes = static_cast<uint32_t>(parse_number(*v, "max_head_bytes", 512, 16384));
    }
    if (auto v = f.get("max_flows")) {
      limits.max_flows = static_cast<uint32_t>(parse_number(*v, "max_flows", 1024, 16777216));
    }
    return true;
  }
};

template <>
struct convert<SniRule> {
  static bool decode(const Node& node, SniRule& rule) {
    const Fields f(node, "sni rule", {"match", "action"});
    rule.match = parse_host_pattern(f.require("match"), "match");
    rule.action = parse_enum(f.require("action"), "action", kActions);
    rule.loc = loc_of(node);
    return true;
  }
};

template <>
struct convert<PathMatch> {
  static bool decode(const Node& node, PathMatch& path) {
    const Fields f(node, "path", {"exact", "prefix"},
                   "{ exact: \"/...\" } or { prefix: \"/...\" }");
    if (f.has("exact") && f.has("prefix")) {
      const Mark a = f.key_mark("exact");
      const Mark b = f.key_mark("prefix");
      const Mark later = a.pos > b.pos ? a : b;
      fail(later, "path has both 'exact' and 'prefix'; use one of them");
    }
    if (auto exact = f.get("exact")) {
      path.kind = PathMatch::Exact;
      path.value = parse_path_value(*exact, "exact", PathMatch::Exact);
    } else if (auto prefix = f.get("prefix")) {
      path.kind = PathMatch::Prefix;
      path.value = parse_path_value(*prefix, "prefix", PathMatch::Prefix);
    } else {
      fail(node.Mark(), "path needs 'exact' or 'prefix'");
    }
    return true;
  }
};

template <>
struct convert<JwtRef> {
  static bool decode(const Node& node, JwtRef& ref) {
    if (node.IsScalar()) {
      ref.provider = non_empty_string(node, "jwt");
      return true;
    }
    const Fields f(node, "route jwt", {"provider", "require"},
                   "a provider name or { provider: NAME, require: { CLAIM: VALUE } }");
    ref.provider = non_empty_string(f.require("provider"), "provider");
    if (auto require = f.get("require")) {
      if (!require->IsMap()) expected(*require, "a mapping of claim names to values", "require");
      for (const auto& entry : *require) {
        const Node& claim = entry.first;
        const Node& value = entry.second;
        const std::string& name = scalar(claim, "a claim name", "require");
        if (name.empty()) fail(claim.Mark(), "empty claim name in 'require'");
        if (ref.require.count(name))
          fail(claim.Mark(), "duplicate claim " + in_quotes(name) + " in 'require'");
        if (!value.IsScalar()) {
          fail(value.IsNull() ? claim.Mark() : value.Mark(),
               "expected a string for claim " + in_quotes(name) + " in 'require', got " +
                   got(value));
        }
        ref.require.emplace(name, value.Scalar());
      }
    }
    return true;
  }
};

template <>
struct convert<Route> {
  static bool decode(const Node& node, Route& route) {
    const Fields f(node, "route", {"path", "methods", "jwt", "ratelimit", "action"});
    route.path = f.require("path").as<PathMatch>();
    if (auto methods = f.get("methods")) route.methods = parse_methods(*methods);
    if (auto jwt = f.get("jwt")) route.jwt = jwt->as<JwtRef>();
    if (auto ratelimit = f.get("ratelimit"))
      route.ratelimit = non_empty_string(*ratelimit, "ratelimit");
    route.action = parse_enum(f.require("action"), "action", kActions);
    route.loc = loc_of(node);
    return true;
  }
};

template <>
struct convert<HostRule> {
  static bool decode(const Node& node, HostRule& host) {
    const Fields f(node, "host", {"match", "routes"});
    for (const Node& pattern : string_list(f.require("match"), "match")) {
      host.matches.push_back(parse_host_pattern(pattern, "match"));
    }
    for (const Node& route : elements(f.require("routes"), "routes", false)) {
      host.routes.push_back(route.as<Route>());
    }
    host.loc = loc_of(node);
    return true;
  }
};

template <>
struct convert<JwtProvider> {
  static bool decode(const Node& node, JwtProvider& provider) {
    const Fields f(node, "jwt provider",
                   {"issuer", "audiences", "algorithms", "secret_file", "jwks_file", "clock_skew",
                    "require_exp"});
    provider.issuer = non_empty_string(f.require("issuer"), "issuer");
    for (const Node& audience : string_list(f.require("audiences"), "audiences")) {
      provider.audiences.push_back(non_empty_string(audience, "audiences"));
    }
    if (auto secret = f.get("secret_file"))
      provider.secret_file = non_empty_string(*secret, "secret_file");
    if (auto jwks = f.get("jwks_file")) provider.jwks_file = non_empty_string(*jwks, "jwks_file");
    if (auto skew = f.get("clock_skew")) provider.clock_skew = parse_duration(*skew, "clock_skew");
    if (auto exp = f.get("require_exp")) provider.require_exp = parse_bool(*exp, "require_exp");
    const std::string algorithm_names = join(kAlgorithms, ", ");
    for (const Node& element : string_list(f.require("algorithms"), "algorithms")) {
      const std::string& name = element.Scalar();
      std::string lower = name;
      std::transform(lower.begin(), lower.end(), lower.begin(),
                     [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      if (lower == "none") {
        fail(element.Mark(), "algorithm " + in_quotes(name) +
                                 " is never accepted: it would let unsigned tokens pass");
      }
      if (std::find(kAlgorithms.begin(), kAlgorithms.end(), name) == kAlgorithms.end()) {
        expected(element, "one of " + algorithm_names, "algorithms");
      }
      if (std::find(provider.algorithms.begin(), provider.algorithms.end(), name) !=
          provider.algorithms.end()) {
        fail(element.Mark(), "duplicate algorithm " + in_quotes(name) + " in 'algorithms'");
      }
      if (name[0] == 'H' && !provider.secret_file) {
        fail(element.Mark(),
             "algorithm " + in_quotes(name) + " needs 'secret_file' (the shared secret)");
      }
      if (name[0] != 'H' && !provider.jwks_file) {
        fail(element.Mark(),
             "algorithm " + in_quotes(name) + " needs 'jwks_file' (the public keys)");
      }
      provider.algorithms.push_back(name);
    }
    provider.loc = loc_of(node);
    return true;
  }
};

template <>
struct convert<RateLimit> {
  static bool decode(const Node& node, RateLimit& limit) {
    const Fields f(node, "ratelimit", {"key", "rate", "burst", "action"});
    limit.key = parse_enum(f.require("key"), "key", kLimitKeys);
    parse_rate(f.require("rate"), limit);
    limit.burst = limit.rate;
    if (auto burst = f.get("burst")) limit.burst = parse_number(*burst, "burst", 1, kMaxRate);
    if (auto action = f.get("action")) limit.action = parse_enum(*action, "action", kLimitActions);
    limit.loc = loc_of(node);
    return true;
  }
};

}  // namespace YAML

namespace policyd::config {

namespace {

std::vector<StageKind> parse_chain(const YAML::Node& node) {
  std::vector<StageKind> chain;
  std::vector<YAML::Node> entries = elements(node, "chain", true);
  for (const YAML::Node& entry : entries) {
    const StageKind stage = parse_enum(entry, "chain", kStages);
    if (std::find(chain.begin(), chain.end(), stage) != chain.end()) {
      fail(entry.Mark(), "duplicate stage " + in_quotes(to_string(stage)) + " in 'chain'");
    }
    chain.push_back(stage);
  }
  auto index = [&](StageKind s) -> std::ptrdiff_t {
    const auto it = std::find(chain.begin(), chain.end(), s);
    return it == chain.end() ? -1 : it - chain.begin();
  };
  const auto host = index(StageKind::Host);
  const auto path = index(StageKind::Path);
  if ((host < 0) != (path < 0)) {
    const bool has_host = host >= 0;
    fail(entries[static_cast<size_t>(has_host ? host : path)].Mark(),
         std::string("'") + (has_host ? "host" : "path") + "' is in the chain but '" +
             (has_host ? "path" : "host") +
             "' is not: routes are chosen by host, then path, so the chain needs both or neither");
  }
  if (host > path) {
    fail(entries[static_cast<size_t>(path)].Mark(),
         "'path' must come after 'host' in the chain: routes are chosen by host, then path");
  }
  for (StageKind per_route : {StageKind::Jwt, StageKind::Ratelimit}) {
    const auto at = index(per_route);
    if (at < 0) continue;
    const std::string name = in_quotes(to_string(per_route));
    if (path < 0) {
      fail(entries[static_cast<size_t>(at)].Mark(),
           name + " needs 'host' and 'path' in the chain: it applies to the route they choose");
    }
    if (at < path) {
      fail(entries[static_cast<size_t>(at)].Mark(),
           name +
               " must come after 'path' in the chain: it applies to the route that host and path "
               "choose");
    }
  }
  return chain;
}

template <typename T>
std::string defined_names(const std::map<std::string, T>& items, std::string_view section) {
  if (items.empty()) return "(no " + std::string(section) + " are defined)";
  std::vector<std::string> names;
  for (const auto& [name, item] : items) names.push_back(name);
  return "(defined: " + join(names, ", ") + ")";
}

// Named sections (jwt_providers, ratelimits): a mapping from name to definition.
template <typename T>
std::map<std::string, T> parse_named(const YAML::Node& node, std::string_view section,
                                     std::string_view what) {
  if (!node.IsMap()) expected(node, "a mapping of names to definitions", section);
  std::map<std::string, T> out;
  for (const auto& entry : node) {
    const YAML::Node& key = entry.first;
    const std::string name = parse_identifier(key, "a " + std::string(what));
    if (out.count(name)) fail(key.Mark(), "duplicate " + std::string(what) + " " + in_quotes(name));
    if (entry.second.IsNull())
      fail(key.Mark(), "missing value for " + std::string(what) + " " + in_quotes(name));
    T item = entry.second.as<T>();
    item.name = name;
    item.loc = loc_of(key);
    out.emplace(name, std::move(item));
  }
  return out;
}

void check_listener(const Policy& policy, const Listener& listener, const YAML::Node& node) {
  for (const Listener& other : policy.listeners) {
    if (other.name == listener.name) {
      fail(node["name"].Mark(), "listener name " + in_quotes(listener.name) +
                                    " is already used at " + position(other.loc));
    }
    if (other.port != listener.port) continue;
    const std::string used = "port " + std::to_string(listener.port) +
                             " is already used by listener " + in_quotes(other.name) + " at " +
                             position(other.loc);
    if (!other.address || !listener.address) fail(node["port"].Mark(), used);
    if (overlaps(*other.address, *listener.address))
      fail(node["port"].Mark(), used + " for an overlapping address");
  }
}

// Cross-references of one route: to providers, rate limits and the stages that apply them.
void check_route(const Policy& policy, const Route& route, const YAML::Node& node) {
  if (route.jwt) {
    const YAML::Node jwt = node["jwt"];
    const YAML::Mark mark = jwt.IsMap() ? jwt["provider"].Mark() : jwt.Mark();
    if (!policy.jwt_providers.count(route.jwt->provider)) {
      fail(mark, "unknown jwt provider " + in_quotes(route.jwt->provider) + " " +
                     defined_names(policy.jwt_providers, "jwt_providers"));
    }
    if (!policy.runs(StageKind::Jwt)) {
      fail(mark, "route requires a JWT from " + in_quotes(route.jwt->provider) +
                     " but 'jwt' is not in the chain");
    }
  }
  if (route.ratelimit) {
    const YAML::Mark mark = node["ratelimit"].Mark();
    const auto it = policy.ratelimits.find(*route.ratelimit);
    if (it == policy.ratelimits.end()) {
      fail(mark, "unknown ratelimit " + in_quotes(*route.ratelimit) + " " +
                     defined_names(policy.ratelimits, "ratelimits"));
    }
    if (!policy.runs(StageKind::Ratelimit)) {
      fail(mark, "route uses ratelimit " + in_quotes(*route.ratelimit) +
                     " but 'ratelimit' is not in the chain");
    }
    if (it->second.key == RateLimit::JwtSub) {
      const std::string name = "ratelimit " + in_quotes(*route.ratelimit) + " is keyed by jwt_sub";
      if (!route.jwt) fail(mark, name + " but this route has no 'jwt'");
      const auto jwt_at = std::find(policy.chain.begin(), policy.chain.end(), StageKind::Jwt);
      const auto limit_at =
          std::find(policy.chain.begin(), policy.chain.end(), StageKind::Ratelimit);
      if (jwt_at > limit_at)
        fail(mark, name + ", so 'jwt' must come before 'ratelimit' in the chain");
    }
  }
}

void parse_hosts(Policy& policy, const YAML::Node& node) {
  std::map<std::string, SourceLoc> patterns;
  size_t routes = 0;
  for (const YAML::Node& element : elements(node, "hosts", true)) {
    HostRule host = element.as<HostRule>();
    const std::vector<YAML::Node> match_nodes = string_list(element["match"], "match");
    for (size_t i = 0; i < host.matches.size(); ++i) {
      const auto [it, inserted] = patterns.emplace(host.matches[i], loc_of(match_nodes[i]));
      if (!inserted) {
        fail(match_nodes[i].Mark(), "host pattern " + in_quotes(host.matches[i]) +
                                        " is already used at " + position(it->second));
      }
      if (patterns.size() > kMaxHostPatterns) {
        fail(match_nodes[i].Mark(),
             "too many host patterns: a policy holds at most " + std::to_string(kMaxHostPatterns));
      }
    }
    const YAML::Node route_nodes = element["routes"];
    for (size_t i = 0; i < host.routes.size(); ++i) {
      if (++routes > kMaxRoutes) {
        fail(route_nodes[i].Mark(),
             "too many routes: a policy holds at most " + std::to_string(kMaxRoutes));
      }
      check_route(policy, host.routes[i], route_nodes[i]);
    }
    policy.hosts.push_back(std::move(host));
  }
}

bool builtin_stage(std::string_view name) {
  return std::find(std::begin(kBuiltinStages), std::end(kBuiltinStages), name) != std::end(kBuiltinStages);
}

void parse_stages(Policy& policy, const YAML::Node& node) {
  std::set<std::string> names;
  size_t own = 0;
  for (const YAML::Node& element : elements(node, "stages", true)) {
    const Fields f(element, "stage", {"name", "object", "after"});
    StageSpec spec;
    spec.loc = loc_of(element);
    const YAML::Node name = f.require("name");
    spec.name = non_empty_string(name, "name");
    const bool valid = spec.name.size() <= 15 && std::islower(static_cast<unsigned char>(spec.name[0])) &&
                       std::all_of(spec.name.begin(), spec.name.end(), [](char c) {
                         return std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '_';
                       });
    if (!valid)
      fail(name.Mark(), "stage name " + in_quotes(spec.name) +
                            " must be 1..15 of a-z, 0-9 and '_', starting with a letter (it names the BPF program)");
    if (!names.insert(spec.name).second) fail(name.Mark(), "stage " + in_quotes(spec.name) + " is listed twice in 'stages'");
    spec.object = non_empty_string(f.require("object"), "object");
    const bool builtin = builtin_stage(spec.name);
    if (spec.name == "entry")
      fail(name.Mark(), "the entry program cannot be replaced while it runs (it is what the interfaces run); "
                        "a new build of it takes a restart of policyd");
    if (auto after = f.get("after")) {
      if (builtin)
        fail(after->Mark(), "'after' places an own stage; " + in_quotes(spec.name) +
                                " is a built-in stage, whose place is set by 'chain'");
      spec.after = non_empty_string(*after, "after");
      const std::string& a = *spec.after;
      bool known = false;
      for (StageKind k : policy.chain) known = known || to_string(k) == a;
      for (const auto& earlier : policy.stages) known = known || (!builtin_stage(earlier.name) && earlier.name == a);
      if (!known)
        fail(after->Mark(), "stage " + in_quotes(spec.name) + " runs after " + in_quotes(a) +
                                ", which is neither in 'chain' nor an own stage listed before it");
    } else if (!builtin) {
      fail(element.Mark(), "own stage " + in_quotes(spec.name) +
                               " needs 'after': the stage of the chain (or own stage listed before it) it runs after");
    }
    if (!builtin && ++own > kMaxOwnStages)
      fail(element.Mark(), "more than " + std::to_string(kMaxOwnStages) + " own stages");
    policy.stages.push_back(std::move(spec));
  }
}

std::string resolve(const std::filesystem::path& base, const std::string& file) {
  const std::filesystem::path p(file);
  if (p.is_absolute() || base.empty()) return file;
  return (base / p).lexically_normal().string();
}

Policy decode_policy(const YAML::Node& root, const std::filesystem::path& base) {
  const Fields f(root, "policy",
                 {"version", "interfaces", "listeners", "chain", "default_action", "fail_mode",
                  "limits", "sni", "missing_sni", "hosts", "jwt_providers", "ratelimits", "stages"});
  Policy policy;

  const YAML::Node version = f.require("version");
  if (!version.IsScalar() || version.Scalar() != "1") {
    fail(version.Mark(), "unsupported policy version " + got(version) + " (expected 1)");
  }
  policy.version = 1;

  std::set<std::string> seen_interfaces;
  for (const YAML::Node& element : string_list(f.require("interfaces"), "interfaces")) {
    std::string name = parse_interface(element);
    if (!seen_interfaces.insert(name).second) {
      fail(element.Mark(), "duplicate interface " + in_quotes(name) + " in 'interfaces'");
    }
    policy.interfaces.push_back(std::move(name));
  }

  for (const YAML::Node& element : elements(f.require("listeners"), "listeners", false)) {
    Listener listener = element.as<Listener>();
    check_listener(policy, listener, element);
    policy.listeners.push_back(std::move(listener));
  }

  if (auto chain = f.get("chain")) policy.chain = parse_chain(*chain);
  if (auto v = f.get("default_action"))
    policy.default_action = parse_enum(*v, "default_action", kActions);
  if (auto v = f.get("fail_mode")) policy.fail_mode = parse_enum(*v, "fail_mode", kFailModes);
  if (auto v = f.get("limits")) policy.limits = v->as<Limits>();

  if (auto sni = f.get("sni")) {
    std::map<std::string, SourceLoc> patterns;
    for (const YAML::Node& element : elements(*sni, "sni", true)) {
      SniRule rule = element.as<SniRule>();
      const auto [it, inserted] = patterns.emplace(rule.match, loc_of(element["match"]));
      if (!inserted) {
        fail(element["match"].Mark(), "sni pattern " + in_quotes(rule.match) +
                                          " is already used at " + position(it->second));
      }
      if (policy.sni.size() >= kMaxSniRules)
        fail(element.Mark(), "too many sni rules: a policy holds at most " + std::to_string(kMaxSniRules));
      policy.sni.push_back(std::move(rule));
    }
    if (!policy.sni.empty() && !policy.runs(StageKind::Sni)) {
      fail(f.key_mark("sni"),
           "sni rules are defined but 'sni' is not in the chain, so they would never apply");
    }
  }
  if (auto v = f.get("missing_sni")) policy.missing_sni = parse_enum(*v, "missing_sni", kActions);

  if (auto v = f.get("jwt_providers")) {
    policy.jwt_providers = parse_named<JwtProvider>(*v, "jwt_providers", "jwt provider");
    for (auto& [name, provider] : policy.jwt_providers) {
      if (provider.secret_file) provider.secret_file = resolve(base, *provider.secret_file);
      if (provider.jwks_file) provider.jwks_file = resolve(base, *provider.jwks_file);
    }
  }
  if (auto v = f.get("ratelimits"))
    policy.ratelimits = parse_named<RateLimit>(*v, "ratelimits", "ratelimit");

  if (auto v = f.get("stages")) {
    parse_stages(policy, *v);
    for (auto& st : policy.stages) st.object = resolve(base, st.object);
  }

  if (auto hosts = f.get("hosts")) {
    parse_hosts(policy, *hosts);
    if (!policy.hosts.empty() && !policy.runs(StageKind::Host)) {
      fail(f.key_mark("hosts"),
           "hosts are defined but 'host' is not in the chain, so they would never apply");
    }
  }
  return policy;
}

void stamp_file(Policy& policy, const std::string& file) {
  policy.source_path = file;
  for (auto& l : policy.listeners) l.loc.file = file;
  for (auto& r : policy.sni) r.loc.file = file;
  for (auto& h : policy.hosts) {
    h.loc.file = file;
    for (auto& r : h.routes) r.loc.file = file;
  }
  for (auto& [name, p] : policy.jwt_providers) p.loc.file = file;
  for (auto& [name, r] : policy.ratelimits) r.loc.file = file;
  for (auto& st : policy.stages) st.loc.file = file;
}

PolicyError at(const std::string& file, const YAML::Mark& mark, const std::string& message) {
  if (mark.is_null()) return PolicyError(file, 0, 0, message);
  return PolicyError(file, mark.line + 1, mark.column + 1, message);
}

std::filesystem::path base_directory(const std::string& name) {
  std::error_code ec;
  const std::filesystem::path absolute = std::filesystem::absolute(name, ec);
  if (ec) return std::filesystem::path(name).parent_path();
  return absolute.parent_path();
}

}  // namespace

PolicyError::PolicyError(std::string file, int line, int column, std::string message)
    : std::runtime_error(line > 0 ? file + ":" + std::to_string(line) + ":" +
                                        std::to_string(column) + ": " + message
                                  : file + ": " + message),
      file_(std::move(file)),
      line_(line),
      column_(column),
      message_(std::move(message)) {}

Policy load_policy_string(std::string_view yaml, const std::string& name_for_errors) {
  try {
    const std::vector<YAML::Node> documents = YAML::LoadAll(std::string(yaml));
    if (documents.empty() || documents[0].IsNull()) {
      throw PolicyError(
          name_for_errors, 1, 1,
          "the policy is empty (expected a mapping with version, interfaces and listeners)");
    }
    if (documents.size() > 1) {
      throw at(name_for_errors, documents[1].Mark(),
               "a policy file holds exactly one YAML document");
    }
    Policy policy = decode_policy(documents[0], base_directory(name_for_errors));
    stamp_file(policy, name_for_errors);
    return policy;
  } catch (const YamlError& e) {
    throw at(name_for_errors, e.mark(), e.what());
  } catch (const YAML::ParserException& e) {
    throw at(name_for_errors, e.mark, "invalid YAML: " + e.msg);
  } catch (const YAML::Exception& e) {
    throw at(name_for_errors, e.mark, e.msg);
  }
}

std::string read_policy_text(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw PolicyError(path, 0, 0, std::string("cannot read: ") + std::strerror(errno));
  std::string text;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      throw PolicyError(path, 0, 0, std::string("cannot read: ") + std::strerror(err));
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return text;
}

Policy load_policy_file(const std::string& path) { return load_policy_string(read_policy_text(path), path); }

}  // namespace policyd::config

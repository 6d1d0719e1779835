#include "chain/stages/entry.hpp"

#include <cstring>

#include "chain/stages/common.hpp"

namespace policyd::chain::builtin {

using config::Action;

Status EntryStage::compile(const CompileInput& in, Tables& t) const {
  const auto& policy = in.policy;
  const uint32_t gen = in.gen;
  t.config.max_head_bytes = policy.limits.max_head_bytes;
  for (size_t i = 0; i < policy.listeners.size(); ++i) {
    const auto& l = policy.listeners[i];
    for (const auto& other : t.listeners)
      if (other.key.port == l.port)
        return make_error(fmt::format("{}: listener '{}': port {} is already used by listener {}; "
                                      "one listener per port is supported",
                                      where(l.loc), l.name, l.port, other.val.id));
    ListenerEntry e{};
    e.key.gen = gen;
    e.key.port = l.port;
    e.val.id = static_cast<uint16_t>(i);
    e.val.proto = l.protocol == config::Protocol::Tls ? PD_PROTO_TLS : PD_PROTO_HTTP;
    // UDP to a TLS listener's port is QUIC (HTTP/3), which would never meet the SNI stage
    if (l.protocol == config::Protocol::Tls && l.quic == config::QuicMode::Deny) {
      e.val.quic_deny = 1;
      t.config.quic_deny = 1;
    }
    if (l.address) {
      e.val.addr_family = static_cast<uint8_t>(l.address->family);
      e.val.prefix_len = static_cast<uint8_t>(l.address->prefix_len);
      std::memcpy(e.val.addr, l.address->addr.data(), 16);
    }
    t.listeners.push_back(e);
  }
  return Ok{};
}

std::string EntryStage::diff(const Tables& a, const Tables& b) const {
  std::vector<std::string> parts{diff_entries<ListenerEntry, pd_listener_key>(a.listeners, b.listeners, "listeners:")};
  if (a.config.max_head_bytes != b.config.max_head_bytes)
    parts.push_back(fmt::format("max_head_bytes {} -> {}", a.config.max_head_bytes, b.config.max_head_bytes));
  return join(parts);
}

Status EntryStage::write(const Tables& t, uint32_t gen, TableWriter& w) const {
  if (auto st = w.erase_if<pd_listener_key>(abi::Map::listeners, [gen](const pd_listener_key& k) { return k.gen == gen; });
      !st)
    return st;
  for (const auto& e : t.listeners) {
    pd_listener_key k = e.key;
    k.gen = gen;
    if (auto st = w.put(abi::Map::listeners, k, e.val); !st) return st;
  }
  return Ok{};
}

}  // namespace policyd::chain::builtin

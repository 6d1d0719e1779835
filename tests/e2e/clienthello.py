#!/usr/bin/env python3
"""Crafted TLS ClientHellos for policyd's end-to-end tests (stdlib only).

Builds the first flight of a TLS 1.3 client the way current browsers send it:
record header, handshake header, legacy_version 0x0303, random, a 32-byte
session id, cipher suites and extensions (GREASE, server_name, supported_groups,
signature_algorithms, supported_versions, key_share, ALPN, padding, ...). All
"random" bytes come from --seed, so the same options give the same bytes.
It never completes a handshake: a test only looks at what the gateway does with
it (the server answers with a ServerHello when it gets through, the client sees
a reset when it is denied).

Shape:
  --sni NAME               server_name (sent as given: pass API.EXAMPLE.COM for
                           upper case); without --sni there is no server_name
  --key-share-bytes N      add a fake post-quantum key share (group 0x11ec) of N
                           bytes before the x25519 share (1216 is X25519MLKEM768)
  --pad-to N               padding extension so the handshake message is >= N bytes
  --alpn LIST              comma-separated ALPN protocols (default h2,http/1.1;
                           "" for no ALPN extension)
  --sni-last               put server_name after every other extension
  --shuffle SEED           shuffle the extension order (server_name included unless
                           --sni-last) with its own seed
  --records N              cut the handshake message into N TLS records of about
                           equal size
  --record-cut-in-sni      two records, the boundary in the middle of the name
  --seed S                 seed of the random, session id, key shares, GREASE values
  --sni-extra NAME         a second host_name entry, NAME, in the same server_name list
                           (RFC 6066 allows one name per type)
  --sni-twice NAME         a second server_name extension, holding NAME, right after the
                           first (RFC 8446 forbids repeated extensions)

Malformations (each makes the ClientHello invalid in one way):
  --bad-record-length      the first record ends after the random; the byte after it
                           (the session id length, 0x20) is no record type
  --huge-record-length     record length 0xffff (over the 2^14 + 2048 maximum)
  --bad-record-type        content type application_data (0x17) instead of handshake
  --bad-handshake-type     handshake type 2 (ServerHello) instead of 1
  --bad-handshake-length   handshake length 16 short of the ClientHello inside it
  --bad-extensions-length  extensions block length 16 beyond the handshake message
  --truncate-extensions    the last extension loses its last 3 bytes; every length
                           around it still matches what is sent
  --bad-sni-length         host name length 16 beyond the server_name list
  --not-tls                a plaintext HTTP request instead of TLS

Output (--format):
  hex     (default) the bytes in hex, one line
  steps   a rawclient.py steps list: one {"hex": ...} step per chunk, cut at the
          --split offsets; --hold-ms N appends {"sleep_ms": N}
  info    {"length", "hex", "sni": [start, end) of the name bytes or null,
           "records": [offset of every record header], "server_name_ext": offset}
With --split-around-sni K, --split-at-sni-edges K or --split-each-record the
output is instead a JSON list [{"cut": OFFSET, "steps": [...]}, ...], one
two-chunk step list per cut (each is one connection for the test to make):
  --split-around-sni K     every offset in [name_start - K, name_end + K]
  --split-at-sni-edges K   every offset in [start - K, start + K] and [end - K, end + K]
Offsets count bytes on the wire from the first record header; name_end is one
past the last byte of the name.
Exit status: 0 done, 2 bad arguments.
"""

import argparse
import json
import random
import struct
import sys

# Extension types
EXT_SERVER_NAME = 0
EXT_STATUS_REQUEST = 5
EXT_SUPPORTED_GROUPS = 10
EXT_EC_POINT_FORMATS = 11
EXT_SIGNATURE_ALGORITHMS = 13
EXT_ALPN = 16
EXT_SCT = 18
EXT_PADDING = 21
EXT_EXTENDED_MASTER_SECRET = 23
EXT_SESSION_TICKET = 35
EXT_SUPPORTED_VERSIONS = 43
EXT_PSK_KEY_EXCHANGE_MODES = 45
EXT_KEY_SHARE = 51
EXT_RENEGOTIATION_INFO = 0xFF01

GROUP_X25519 = 0x001D
GROUP_SECP256R1 = 0x0017
GROUP_SECP384R1 = 0x0018
GROUP_X25519MLKEM768 = 0x11EC

CIPHER_SUITES = [0x1301, 0x1302, 0x1303, 0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8,
                 0xC013, 0xC014, 0x009C, 0x009D, 0x002F, 0x0035]
SIGNATURE_ALGORITHMS = [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601]


def usage_error(message):
    print(f"clienthello: {message}", file=sys.stderr)
    sys.exit(2)


def u8(v):
    return struct.pack("!B", v)


def u16(v):
    return struct.pack("!H", v)


def u24(v):
    return struct.pack("!I", v)[1:]


def vec8(body):
    return u8(len(body)) + body


def vec16(body):
    return u16(len(body)) + body


def grease_values(rng):
    """Two different GREASE values (0x?A?A) and one for each other use."""
    picks = rng.sample(range(16), 4)
    return [(p << 12) | 0x0A00 | (p << 4) | 0x0A for p in picks]


class Extension:
    def __init__(self, ext_type, data, name):
        self.type = ext_type
        self.data = data
        self.name = name

    def encode(self):
        return u16(self.type) + vec16(self.data)


def server_name_ext(name, bad_length, extra=None):
    host = name.encode("ascii")
    name_len = len(host) + (16 if bad_length else 0)
    entry = u8(0) + u16(name_len) + host
    if extra is not None:
        entry += u8(0) + vec16(extra.encode("ascii"))
    return Extension(EXT_SERVER_NAME, vec16(entry), "server_name")


def build_extensions(args, rng, grease):
    exts = [Extension(grease[0], b"", "grease")]
    if args.sni is not None:
        exts.append(server_name_ext(args.sni, args.bad_sni_length, args.sni_extra))
        if args.sni_twice is not None:
            exts.append(server_name_ext(args.sni_twice, False))
    exts.append(Extension(EXT_EXTENDED_MASTER_SECRET, b"", "extended_master_secret"))
    exts.append(Extension(EXT_RENEGOTIATION_INFO, b"\x00", "renegotiation_info"))
    groups = [grease[2]]
    if args.key_share_bytes > 0:
        groups.append(GROUP_X25519MLKEM768)
    groups += [GROUP_X25519, GROUP_SECP256R1, GROUP_SECP384R1]
    exts.append(Extension(EXT_SUPPORTED_GROUPS, vec16(b"".join(u16(g) for g in groups)),
                          "supported_groups"))
    exts.append(Extension(EXT_EC_POINT_FORMATS, vec8(b"\x00"), "ec_point_formats"))
    exts.append(Extension(EXT_SESSION_TICKET, b"", "session_ticket"))
    if args.alpn:
        protos = b"".join(vec8(p.encode("ascii")) for p in args.alpn.split(",") if p)
        exts.append(Extension(EXT_ALPN, vec16(protos), "alpn"))
    exts.append(Extension(EXT_STATUS_REQUEST, u8(1) + u16(0) + u16(0), "status_request"))
    exts.append(Extension(EXT_SIGNATURE_ALGORITHMS,
                          vec16(b"".join(u16(a) for a in SIGNATURE_ALGORITHMS)),
                          "signature_algorithms"))
    exts.append(Extension(EXT_SCT, b"", "signed_certificate_timestamp"))
    shares = u16(grease[2]) + vec16(b"\x00")
    if args.key_share_bytes > 0:
        shares += u16(GROUP_X25519MLKEM768) + vec16(rng.randbytes(args.key_share_bytes))
    shares += u16(GROUP_X25519) + vec16(rng.randbytes(32))
    exts.append(Extension(EXT_KEY_SHARE, vec16(shares), "key_share"))
    exts.append(Extension(EXT_PSK_KEY_EXCHANGE_MODES, vec8(b"\x01"), "psk_key_exchange_modes"))
    versions = u16(grease[3]) + u16(0x0304) + u16(0x0303)
    exts.append(Extension(EXT_SUPPORTED_VERSIONS, vec8(versions), "supported_versions"))
    exts.append(Extension(grease[1], b"\x00", "grease"))

    if args.shuffle is not None:
        random.Random(args.shuffle).shuffle(exts)
    if args.sni_last:
        exts = [e for e in exts if e.type != EXT_SERVER_NAME] + \
               [e for e in exts if e.type == EXT_SERVER_NAME]
    return exts


def build_hello(args):
    """Returns (handshake message bytes, offset of the host name in it or None,
    offset of the server_name extension in it or None)."""
    rng = random.Random(args.seed)
    grease = grease_values(rng)
    client_random = rng.randbytes(32)
    session_id = rng.randbytes(32)
    suites = [grease[0]] + CIPHER_SUITES
    fixed = (u16(0x0303) + client_random + vec8(session_id) +
             vec16(b"".join(u16(s) for s in suites)) + vec8(b"\x00"))
    exts = build_extensions(args, rng, grease)

    def assemble(extensions, pad):
        all_exts = list(extensions)
        if pad is not None:
            # padding goes before server_name when that one must come last
            at = len(all_exts)
            if args.sni_last and all_exts and all_exts[-1].type == EXT_SERVER_NAME:
                at -= 1
            all_exts.insert(at, Extension(EXT_PADDING, b"\x00" * pad, "padding"))
        return all_exts

    final = assemble(exts, None)
    if args.pad_to:
        base = 4 + len(fixed) + 2 + sum(len(e.encode()) for e in exts)
        need = args.pad_to - base - 4  # the padding extension's own header
        if need >= 0:
            final = assemble(exts, need)

    ext_bytes = b""
    sni_at = None
    ext_at = None
    for e in final:
        if e.type == EXT_SERVER_NAME and ext_at is None:
            ext_at = 4 + len(fixed) + 2 + len(ext_bytes)
            sni_at = ext_at + 4 + 2 + 1 + 2
        ext_bytes += e.encode()
    if args.truncate_extensions:
        ext_bytes = ext_bytes[:-3]
    ext_len = len(ext_bytes) + (16 if args.bad_extensions_length else 0)
    body = fixed + u16(ext_len) + ext_bytes
    hs_type = 2 if args.bad_handshake_type else 1
    hs_len = len(body) - (16 if args.bad_handshake_length else 0)
    return u8(hs_type) + u24(hs_len) + body, sni_at, ext_at


def record(content, ctype=0x16, length=None):
    return u8(ctype) + u16(0x0301) + u16(len(content) if length is None else length) + content


def frame(args, hs, sni_at):
    """Wraps the handshake message in records. Returns (wire bytes, list of
    (record header offset on the wire, handshake offset of its first byte))."""
    ctype = 0x17 if args.bad_record_type else 0x16
    if args.bad_record_length:
        # a record that ends right after the random: the next "record header" would
        # start with the session id length (0x20), which is no content type
        short = 4 + 2 + 32
        return record(hs, ctype, length=short), [(0, 0)]
    if args.huge_record_length:
        return record(hs, ctype, length=0xFFFF), [(0, 0)]
    cuts = []
    if args.record_cut_in_sni:
        if sni_at is None:
            usage_error("--record-cut-in-sni needs --sni")
        cuts = [sni_at + len(args.sni) // 2]
    elif args.records > 1:
        n = args.records
        if n > len(hs):
            usage_error("--records is larger than the handshake message")
        cuts = [len(hs) * i // n for i in range(1, n)]
    bounds = [0] + cuts + [len(hs)]
    wire = b""
    layout = []
    for a, b in zip(bounds, bounds[1:]):
        layout.append((len(wire), a))
        wire += record(hs[a:b], ctype)
    return wire, layout


def wire_offset(layout, hs_off):
    """Offset on the wire of handshake byte hs_off."""
    at = None
    for rec_off, hs_start in layout:
        if hs_start <= hs_off:
            at = rec_off + 5 + (hs_off - hs_start)
    return at


def parse_offsets(text):
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        usage_error(f"bad offset list '{text}'")


def chunks(data, cuts):
    bounds = [0] + sorted(set(cuts)) + [len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def steps_for(data, cuts, hold_ms):
    steps = [{"hex": c.hex()} for c in chunks(data, cuts)]
    if hold_ms:
        steps.append({"sleep_ms": hold_ms})
    return steps


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sni")
    ap.add_argument("--key-share-bytes", type=int, default=0)
    ap.add_argument("--pad-to", type=int, default=0)
    ap.add_argument("--alpn", default="h2,http/1.1")
    ap.add_argument("--sni-last", action="store_true")
    ap.add_argument("--shuffle", type=int)
    ap.add_argument("--records", type=int, default=1)
    ap.add_argument("--record-cut-in-sni", action="store_true")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--sni-extra")
    ap.add_argument("--sni-twice")
    for flag in ("--bad-record-length", "--huge-record-length", "--bad-record-type",
                 "--bad-handshake-type", "--bad-handshake-length", "--bad-extensions-length",
                 "--truncate-extensions", "--bad-sni-length", "--not-tls"):
        ap.add_argument(flag, action="store_true")
    ap.add_argument("--format", choices=["hex", "steps", "info"], default="hex")
    ap.add_argument("--split", default="", help="comma-separated wire offsets to cut at")
    ap.add_argument("--split-around-sni", type=int, metavar="K")
    ap.add_argument("--split-at-sni-edges", type=int, metavar="K")
    ap.add_argument("--hold-ms", type=int, default=0, help="sleep step after the last chunk")
    args = ap.parse_args()

    if args.sni is not None:
        try:
            args.sni.encode("ascii")
        except UnicodeEncodeError:
            usage_error("--sni must be ASCII (pass the A-label)")
        if len(args.sni) > 255:
            usage_error("--sni is longer than 255 bytes")
    for extra in (args.sni_extra, args.sni_twice):
        if extra is not None and (args.sni is None or len(extra) > 255 or not extra.isascii()):
            usage_error("--sni-extra/--sni-twice need --sni and an ASCII name")
    if not 1 <= args.records <= 64:
        usage_error("--records must be 1..64")
    if not 0 <= args.key_share_bytes <= 8192 or not 0 <= args.pad_to <= 16000:
        usage_error("--key-share-bytes must be 0..8192 and --pad-to 0..16000")
    if not 0 <= args.hold_ms <= 5000:
        usage_error("--hold-ms must be 0..5000")

    sni = None
    ext_wire = None
    layout = [(0, 0)]
    if args.not_tls:
        host = args.sni or "api.example.com"
        data = f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode("ascii")
        layout = []
    else:
        hs, sni_at, ext_at = build_hello(args)
        data, layout = frame(args, hs, sni_at)
        if sni_at is not None:
            start = wire_offset(layout, sni_at)
            end = wire_offset(layout, sni_at + len(args.sni) - 1) + 1
            sni = [start, end]
            ext_wire = wire_offset(layout, ext_at)

    windows = []
    if args.split_around_sni is not None or args.split_at_sni_edges is not None:
        if sni is None:
            usage_error("--split-around-sni/--split-at-sni-edges need --sni")
        if args.split_around_sni is not None:
            k = args.split_around_sni
            windows += range(sni[0] - k, sni[1] + k + 1)
        if args.split_at_sni_edges is not None:
            k = args.split_at_sni_edges
            windows += range(sni[0] - k, sni[0] + k + 1)
            windows += range(sni[1] - k, sni[1] + k + 1)
        windows = sorted({c for c in windows if 0 < c < len(data)})
        print(json.dumps([{"cut": c, "steps": steps_for(data, [c], args.hold_ms)} for c in windows]))
        return 0

    cuts = parse_offsets(args.split)
    for c in cuts:
        if not 0 < c < len(data):
            usage_error(f"split offset {c} is outside (0, {len(data)})")
    if args.format == "hex":
        print(data.hex())
    elif args.format == "steps":
        print(json.dumps(steps_for(data, cuts, args.hold_ms)))
    else:
        print(json.dumps({
            "length": len(data),
            "hex": data.hex(),
            "sni": sni,
            "server_name_ext": ext_wire,
            "records": [r for r, _ in layout],
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())

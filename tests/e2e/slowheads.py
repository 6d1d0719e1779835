#!/usr/bin/python3
"""A flood of half-sent request heads, for policyd's flood tests (stdlib only).

Runs in the client namespace: --count connections to --dst:--port from --src, one after
another; each sends the first half of a request head (--head: never its end) and is held
open, as a slowloris client holds them. Once all are sent it prints {"sent": N, "errors": E,
"elapsed_ms": T} (flushed: the test reads it), holds them --hold-s seconds more, and resets
them all (SO_LINGER 0).
"""
import argparse
import json
import resource
import socket
import struct
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dst", required=True)
    p.add_argument("--src", default="")
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--head", default="GET /healthz HTTP/1.1\r\nHost: app.exa")
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--hold-s", type=float, default=5.0)
    a = p.parse_args()
    if not 0 < a.count <= 100000 or not 0 < a.timeout <= 120 or not 0 <= a.hold_s <= 60:
        raise SystemExit("--count must be in (0, 100000], --timeout in (0, 120], --hold-s in [0, 60]")
    resource.setrlimit(resource.RLIMIT_NOFILE, (a.count + 64, a.count + 64))
    linger = struct.pack("ii", 1, 0)
    sent = errors = 0
    held = []
    start = time.monotonic()
    for _ in range(a.count):
        if time.monotonic() - start > a.timeout:
            break
        s = socket.socket(socket.AF_INET6 if ":" in a.dst else socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.settimeout(2)
            if a.src:
                s.bind((a.src, 0))
            s.connect((a.dst, a.port))
            s.sendall(a.head.encode("latin-1"))
            sent += 1
            held.append(s)
        except OSError:
            errors += 1
            s.close()
    print(json.dumps({"sent": sent, "errors": errors, "elapsed_ms": int((time.monotonic() - start) * 1000)}),
          flush=True)
    time.sleep(a.hold_s)
    for s in held:
        s.close()


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""A flood of forged JWTs, for policyd's flood tests (stdlib only).

Runs in the client namespace: for --seconds, keeps --conns connections to --dst:--port
in flight, each sending one request with a token that is new every time (a random "jti")
and well formed: the header given (--alg, --kid), claims a provider accepts (--iss, --aud,
exp in an hour) and a random signature of --sig-bytes. The dataplane cannot tell it from a
real one and sends it to the daemon to verify. A connection is reset as soon as its request
is written: the gateway has sent the token on by then (holding the segment), and the next
connection starts. Prints {"sent": N, "elapsed_ms": T, "errors": E}.
"""
import argparse
import base64
import errno
import json
import os
import selectors
import socket
import struct
import time


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dst", required=True)
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--host", default="app.example.com")
    p.add_argument("--path", default="/v1/flood")
    p.add_argument("--alg", default="ES384")
    p.add_argument("--kid", default="ec-1")
    p.add_argument("--iss", default="https://auth.example.com")
    p.add_argument("--aud", default="api")
    p.add_argument("--sig-bytes", type=int, default=96)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--conns", type=int, default=64)
    a = p.parse_args()
    if not 0 < a.seconds <= 120 or not 0 < a.conns <= 1024:
        raise SystemExit("--seconds must be in (0, 120], --conns in (0, 1024]")

    header = b64(json.dumps({"alg": a.alg, "typ": "JWT", "kid": a.kid}, separators=(",", ":")).encode())
    exp = int(time.time()) + 3600

    def request():
        claims = {"iss": a.iss, "aud": a.aud, "sub": "mallory", "exp": exp, "jti": b64(os.urandom(12))}
        token = ".".join([header, b64(json.dumps(claims, separators=(",", ":")).encode()),
                          b64(os.urandom(a.sig_bytes))])
        return (f"GET {a.path} HTTP/1.1\r\nHost: {a.host}\r\nAuthorization: Bearer {token}\r\n"
                f"\r\n").encode()

    linger = struct.pack("ii", 1, 0)  # close() sends a RST
    sel = selectors.DefaultSelector()
    sent = errors = 0
    start = time.monotonic()
    deadline = start + a.seconds

    def open_one():
        nonlocal errors
        s = socket.socket(socket.AF_INET6 if ":" in a.dst else socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        s.setblocking(False)
        rc = s.connect_ex((a.dst, a.port))
        if rc not in (0, errno.EINPROGRESS):
            errors += 1
            s.close()
            return
        sel.register(s, selectors.EVENT_WRITE, time.monotonic())

    for _ in range(a.conns):
        open_one()
    while time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.05):
            s = key.fileobj
            sel.unregister(s)
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                try:
                    s.send(request())
                    sent += 1
                except OSError:
                    errors += 1
            else:
                errors += 1
            s.close()
            open_one()
        # a handshake that never completed (bounded: 2 s) is given up and replaced
        now = time.monotonic()
        for key in list(sel.get_map().values()):
            if now - key.data > 2:
                sel.unregister(key.fileobj)
                key.fileobj.close()
                errors += 1
                open_one()
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    print(json.dumps({"sent": sent, "errors": errors, "elapsed_ms": int((time.monotonic() - start) * 1000)}))


if __name__ == "__main__":
    main()

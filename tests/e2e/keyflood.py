#!/usr/bin/python3
"""Many new rate-limit keys, for policyd's flood tests (stdlib only).

Runs in the client namespace: --count requests to --dst:--port, each on a connection of its
own, with the Host header --host-pattern formatted with the request's number (a new name
under a wildcard host each time, so a `key: host` limit meets a new key each time). Reads each
answer's status line (bounded: 2 s a request, --timeout in all). Prints
{"statuses": {"200": N, "429": M, ...}, "errors": E, "elapsed_ms": T}.
"""
import argparse
import json
import socket
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dst", required=True)
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--path", default="/")
    p.add_argument("--host-pattern", default="f{}.example.com")
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--timeout", type=float, default=60.0)
    a = p.parse_args()
    if not 0 < a.count <= 100000 or not 0 < a.timeout <= 120:
        raise SystemExit("--count must be in (0, 100000], --timeout in (0, 120]")
    statuses, errors = {}, 0
    start = time.monotonic()
    for i in range(a.count):
        if time.monotonic() - start > a.timeout:
            errors += a.count - i
            break
        host = a.host_pattern.format(i)
        try:
            with socket.create_connection((a.dst, a.port), timeout=2) as s:
                s.sendall(f"GET {a.path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
                got = b""
                while b"\r\n" not in got:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    got += chunk
            line = got.split(b"\r\n", 1)[0].split()
            code = line[1].decode() if len(line) > 1 else "none"
        except OSError:
            errors += 1
            continue
        statuses[code] = statuses.get(code, 0) + 1
    print(json.dumps({"statuses": statuses, "errors": errors,
                      "elapsed_ms": int((time.monotonic() - start) * 1000)}))


if __name__ == "__main__":
    main()

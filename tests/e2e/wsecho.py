#!/usr/bin/python3
"""WebSocket through policyd, with a real library on both ends (Debian's python3-websockets).

  wsecho.py server --port P
      an echo server on 127.0.0.1:P (behind nginx's /ws/ location); prints "listening" once
      it accepts connections, then runs until killed.
  wsecho.py client --connect ADDR --host NAME --path /ws/x --messages N --size S [--text T]
      opens ws://NAME/PATH at ADDR:80 (the Host header names NAME), sends N binary messages
      of S bytes (and, with --text, one text message T), reads each echo back, closes, and
      prints one JSON line: {"status": 101 or the refusal's status, "echoed": messages whose
      echo matched, "bytes": bytes echoed, "closed": clean close, "error": text or null}.
Every wait is bounded (--timeout, default 20 s).
"""
import argparse
import asyncio
import json
import os
import sys

import websockets


async def serve(port):
    async def echo(ws, path=None):
        async for message in ws:
            await ws.send(message)

    async with websockets.serve(echo, "127.0.0.1", port, max_size=2**22):
        print("listening", flush=True)
        await asyncio.Future()


async def client(args):
    out = {"status": None, "echoed": 0, "bytes": 0, "closed": False, "error": None}
    uri = f"ws://{args.host}{args.path}"
    try:
        async with websockets.connect(uri, host=args.connect, port=80, open_timeout=args.timeout,
                                      max_size=2**22, compression=None) as ws:
            out["status"] = 101
            messages = [os.urandom(args.size) for _ in range(args.messages)]
            if args.text is not None:
                messages.append(args.text)
            for m in messages:
                await ws.send(m)
                back = await asyncio.wait_for(ws.recv(), args.timeout)
                if back == m:
                    out["echoed"] += 1
                    out["bytes"] += len(m)
            await ws.close()
            out["closed"] = ws.close_code == 1000
    except websockets.exceptions.InvalidStatusCode as e:
        out["status"] = e.status_code
        out["error"] = str(e)
    except Exception as e:  # a reset, a timeout: say what
        out["error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(out), flush=True)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("server")
    s.add_argument("--port", type=int, required=True)
    c = sub.add_parser("client")
    c.add_argument("--connect", required=True)
    c.add_argument("--host", required=True)
    c.add_argument("--path", default="/ws/echo")
    c.add_argument("--messages", type=int, default=10)
    c.add_argument("--size", type=int, default=1000)
    c.add_argument("--text")
    c.add_argument("--timeout", type=float, default=20.0)
    args = p.parse_args()
    if args.mode == "server":
        asyncio.run(serve(args.port))
    else:
        asyncio.run(asyncio.wait_for(client(args), args.timeout * 3))


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Scripted raw HTTP/1.1 client for policyd's end-to-end tests (stdlib only).

Connects to HOST:PORT, sets TCP_NODELAY, runs a list of steps (send chunks, pause,
wait for responses) and prints one JSON object summarizing what came back.
Each chunk is written with one send() and followed by a short pause, so with
Nagle off every chunk leaves as its own TCP segment: a request head can be
split anywhere, several requests can be pipelined in one chunk, and a keep-alive
conversation can wait for each response before sending the next request.

Steps (a JSON list, given with --steps or --steps-file):
  "text"                       send the text; every character must be <= U+00FF and
                               becomes one byte (so "\\r\\n" in JSON is CRLF, "\\u00ff" is 0xff)
  {"send": "text", "pause_ms": N}   same, with its own pause after the send
  {"hex": "474554"}            send raw bytes given in hex
  {"sleep_ms": N}              pause (reading whatever arrives meanwhile); the socket
                               stays open for the pause even if the peer closed or reset
  {"await": N}                 read until N responses in total have been parsed, the
                               connection ends, or --await-ms passes
  {"shutdown": "write"}        half-close (send FIN) and keep reading
  {"wait_file": PATH, "max_ms": N}  pause (reading) until PATH exists, at most N ms: the
                               test says when to go on (after a reload, say) instead of a
                               guess of how long that takes

After the last step the client keeps reading until the peer closes or resets, or
--expect responses are complete and --linger-ms passed without the connection
ending, or nothing arrived for --idle-ms, or the --timeout deadline hits.
Every wait is bounded; the whole run never exceeds --timeout (+ connect time).

Output (stdout, one JSON object):
  statuses     status codes of the parsed responses, in order
  responses    [{status, reason, headers: [[name, value], ...], body}]  (body latin-1)
  closed       the peer closed the connection (EOF)
  reset        the connection was reset (ECONNRESET on recv or send, or EPIPE)
  send_error   errno name of a failed send, "skipped: connection ended" when a send
               step came after the connection had ended, else null
  timed_out    the --timeout deadline ended the run
  bytes        raw bytes received
  trailing     bytes received that did not form a complete response
  steps_done   how many steps ran before the run ended
  local        the client's "address port"
Exit status: 0 when it connected (whatever happened later), 1 on connect failure,
2 on bad arguments.

--raw (for non-HTTP protocols such as TLS): received bytes are not parsed as HTTP
(statuses and responses stay empty, every byte is trailing, await steps and
--expect never complete) and the summary also has
  head_hex     the first 64 bytes received, in hex
"""

import argparse
import errno
import json
import os
import select
import socket
import sys
import time

MAX_PAUSE_MS = 5000
MAX_WAIT_FILE_MS = 60000
MAX_TIMEOUT_S = 60


def usage_error(message):
    print(message, file=sys.stderr)
    sys.exit(2)


class Response:
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def to_json(self):
        return {
            "status": self.status,
            "reason": self.reason,
            "headers": self.headers,
            "body": self.body.decode("latin-1"),
        }


def parse_responses(buf, eof):
    """Parses as many complete HTTP/1.x responses from buf as possible.

    Returns (responses, consumed_bytes). A response without Content-Length or
    chunked encoding extends to the end of the connection (complete only at eof).
    """
    out = []
    pos = 0
    while True:
        end = buf.find(b"\r\n\r\n", pos)
        if end < 0:
            break
        head = buf[pos:end].decode("latin-1")
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            break  # not a response: leave it as trailing bytes
        status = int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append([name.strip(), value.strip()])
        lower = {n.lower(): v for n, v in headers}
        body_start = end + 4
        if 100 <= status < 200 or status in (204, 304):
            out.append(Response(status, reason, headers, b""))
            pos = body_start
            continue
        if "chunked" in lower.get("transfer-encoding", "").lower():
            body, used = parse_chunked(buf, body_start)
            if body is None:
                break
            out.append(Response(status, reason, headers, body))
            pos = used
            continue
        if "content-length" in lower:
            try:
                length = int(lower["content-length"])
            except ValueError:
                break
            if len(buf) - body_start < length:
                break
            out.append(Response(status, reason, headers, buf[body_start:body_start + length]))
            pos = body_start + length
            continue
        if not eof:
            break
        out.append(Response(status, reason, headers, buf[body_start:]))
        pos = len(buf)
    return out, pos


def parse_chunked(buf, pos):
    body = b""
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None, pos
        try:
            size = int(buf[pos:eol].split(b";")[0], 16)
        except ValueError:
            return None, pos
        pos = eol + 2
        if size == 0:
            end = buf.find(b"\r\n", pos)  # no trailers expected; skip to final CRLF
            if end < 0:
                return None, pos
            return body, end + 2
        if len(buf) - pos < size + 2:
            return None, pos
        body += buf[pos:pos + size]
        pos += size + 2


class Conn:
    def __init__(self, sock, deadline):
        self.sock = sock
        self.deadline = deadline
        self.buf = b""
        self.closed = False
        self.reset = False
        self.send_error = None
        self.timed_out = False
        self.last_rx = time.monotonic()
        self.raw = False  # --raw: do not parse HTTP

    def ended(self):
        return self.closed or self.reset

    def responses(self):
        if self.raw:
            return [], 0
        return parse_responses(self.buf, self.ended())

    def count(self):
        return len(self.responses()[0])

    def read_for(self, seconds, until=None):
        """Reads for up to `seconds` (never past the deadline); stops early when the
        connection ends or until() becomes true."""
        stop = min(time.monotonic() + max(0.0, seconds), self.deadline)
        while not self.ended():
            if until is not None and until():
                return
            now = time.monotonic()
            if now >= stop:
                if now >= self.deadline:
                    self.timed_out = True
                return
            ready, _, _ = select.select([self.sock], [], [], min(0.05, stop - now))
            if not ready:
                continue
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                self.reset = True
                return
            except OSError as e:
                if e.errno in (errno.ECONNRESET, errno.EPIPE):
                    self.reset = True
                else:
                    self.send_error = self.send_error or errno.errorcode.get(e.errno, str(e.errno))
                    self.closed = True
                return
            if not data:
                self.closed = True
                return
            self.buf += data
            self.last_rx = time.monotonic()

    def send(self, data):
        if self.ended():
            self.send_error = self.send_error or "skipped: connection ended"
            return False
        try:
            self.sock.sendall(data)
            return True
        except OSError as e:
            name = errno.errorcode.get(e.errno, str(e.errno))
            self.send_error = name
            if e.errno in (errno.ECONNRESET, errno.EPIPE):
                self.reset = True
            else:
                self.closed = True
            return False


def to_bytes(text):
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        usage_error("rawclient: send text must only contain characters <= U+00FF")


def bounded_ms(value, what):
    if not isinstance(value, (int, float)) or value < 0 or value > MAX_PAUSE_MS:
        usage_error(f"rawclient: {what} must be 0..{MAX_PAUSE_MS} ms")
    return value / 1000.0


def wait_file_s(step):
    value = step.get("max_ms", 10000)
    if not isinstance(value, (int, float)) or value < 0 or value > MAX_WAIT_FILE_MS:
        usage_error(f"rawclient: wait_file max_ms must be 0..{MAX_WAIT_FILE_MS}")
    return value / 1000.0


def validate_steps(steps):
    if not isinstance(steps, list):
        usage_error("rawclient: steps must be a JSON list")
    for step in steps:
        if isinstance(step, str):
            to_bytes(step)
        elif isinstance(step, dict) and "send" in step and isinstance(step["send"], str):
            to_bytes(step["send"])
            bounded_ms(step.get("pause_ms", 0), "pause_ms")
        elif isinstance(step, dict) and "hex" in step:
            try:
                bytes.fromhex(step["hex"])
            except (TypeError, ValueError):
                usage_error(f"rawclient: bad hex in step {step!r}")
            bounded_ms(step.get("pause_ms", 0), "pause_ms")
        elif isinstance(step, dict) and "sleep_ms" in step:
            bounded_ms(step["sleep_ms"], "sleep_ms")
        elif isinstance(step, dict) and "await" in step and isinstance(step["await"], int):
            pass
        elif isinstance(step, dict) and step.get("shutdown") == "write":
            pass
        elif isinstance(step, dict) and isinstance(step.get("wait_file"), str):
            wait_file_s(step)
        else:
            usage_error(f"rawclient: unknown step {step!r}")


def hold(conn, seconds):
    """Pauses for `seconds` (bounded by the deadline), reading while the connection
    lasts; the socket stays open even after the peer closed or reset it."""
    stop = min(time.monotonic() + seconds, conn.deadline)
    conn.read_for(seconds)
    left = stop - time.monotonic()
    if left > 0:
        time.sleep(left)


def run_steps(conn, steps, pause_s, await_s):
    """Runs the steps. Sends are skipped once the connection ended; pauses still
    happen (so a test can look at the other side while this end is still open)."""
    done = 0
    for step in steps:
        if time.monotonic() >= conn.deadline:
            conn.timed_out = True
            break
        if isinstance(step, str):
            conn.send(to_bytes(step))
            hold(conn, pause_s)
        elif isinstance(step, dict) and "send" in step:
            conn.send(to_bytes(step["send"]))
            hold(conn, bounded_ms(step.get("pause_ms", pause_s * 1000), "pause_ms"))
        elif isinstance(step, dict) and "hex" in step:
            conn.send(bytes.fromhex(step["hex"]))
            hold(conn, bounded_ms(step.get("pause_ms", pause_s * 1000), "pause_ms"))
        elif isinstance(step, dict) and "sleep_ms" in step:
            hold(conn, bounded_ms(step["sleep_ms"], "sleep_ms"))
        elif isinstance(step, dict) and "await" in step:
            want = int(step["await"])
            conn.read_for(await_s, until=lambda: conn.count() >= want)
        elif isinstance(step, dict) and step.get("shutdown") == "write":
            try:
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        elif isinstance(step, dict) and "wait_file" in step:
            stop = min(time.monotonic() + wait_file_s(step), conn.deadline)
            while not os.path.exists(step["wait_file"]) and time.monotonic() < stop:
                conn.read_for(0.02)
        else:
            usage_error(f"rawclient: unknown step {step!r}")
        done += 1
    return done


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", required=True, help="address or name to connect to (IPv4 or IPv6)")
    ap.add_argument("--port", type=int, default=80)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--steps", help="JSON list of steps")
    src.add_argument("--steps-file", help="file holding the JSON list of steps")
    ap.add_argument("--pause-ms", type=float, default=100, help="pause after each send (default 100)")
    ap.add_argument("--await-ms", type=float, default=3000, help="bound of each await step (default 3000)")
    ap.add_argument("--expect", type=int, default=None,
                    help="stop reading once this many responses are complete (after --linger-ms)")
    ap.add_argument("--linger-ms", type=float, default=300,
                    help="after --expect responses, wait this long for the connection to end (default 300)")
    ap.add_argument("--idle-ms", type=float, default=1500,
                    help="stop after this long without data (default 1500)")
    ap.add_argument("--timeout", type=float, default=10, help="total deadline in seconds (default 10)")
    ap.add_argument("--raw", action="store_true",
                    help="do not parse HTTP; report bytes, reset, close and head_hex only")
    args = ap.parse_args()

    if not 0 < args.timeout <= MAX_TIMEOUT_S:
        usage_error(f"rawclient: --timeout must be in (0, {MAX_TIMEOUT_S}]")
    pause_s = bounded_ms(args.pause_ms, "--pause-ms")
    await_s = bounded_ms(args.await_ms, "--await-ms")
    idle_s = bounded_ms(args.idle_ms, "--idle-ms")
    linger_s = bounded_ms(args.linger_ms, "--linger-ms")
    if args.steps is not None:
        steps = json.loads(args.steps)
    else:
        with open(args.steps_file, encoding="utf-8") as f:
            steps = json.load(f)
    validate_steps(steps)

    try:
        sock = socket.create_connection((args.host, args.port), timeout=min(5.0, args.timeout))
    except OSError as e:
        print(json.dumps({"connected": False, "error": str(e)}))
        return 1
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(True)
    sock.settimeout(None)
    local = sock.getsockname()
    conn = Conn(sock, time.monotonic() + args.timeout)
    conn.raw = args.raw

    steps_done = run_steps(conn, steps, pause_s, await_s)

    # Final read: until the connection ends, enough responses plus linger, idle, or deadline.
    conn.last_rx = time.monotonic()
    while not conn.ended() and time.monotonic() < conn.deadline:
        if args.expect is not None and conn.count() >= args.expect:
            conn.read_for(linger_s)
            break
        idle_left = conn.last_rx + idle_s - time.monotonic()
        if idle_left <= 0:
            break
        conn.read_for(min(idle_left, 0.1))
    if not conn.ended() and time.monotonic() >= conn.deadline:
        conn.timed_out = True

    responses, used = conn.responses()
    sock.close()
    summary = {
        "connected": True,
        "local": f"{local[0]} {local[1]}",
        "statuses": [r.status for r in responses],
        "responses": [r.to_json() for r in responses],
        "closed": conn.closed,
        "reset": conn.reset,
        "send_error": conn.send_error,
        "timed_out": conn.timed_out,
        "bytes": len(conn.buf),
        "trailing": len(conn.buf) - used,
        "steps_done": steps_done,
    }
    if args.raw:
        summary["head_hex"] = conn.buf[:64].hex()
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

-- wrk script for scripts/bench: one static request (so wrk keeps its fast path: no
-- per-request Lua) and, at the end, the run's figures as one JSON object.
--
-- Environment:
--   BENCH_HOST   Host header (required)
--   BENCH_PATH   request path (default /)
--   BENCH_TOKEN  if set: "Authorization: Bearer $BENCH_TOKEN"
--   BENCH_CLOSE  if "1": "Connection: close" (one connection per request)
--   BENCH_OUT    file the JSON summary is written to (required)
--
-- JSON: requests, duration_us, bytes, errors {connect, read, write, status, timeout}
-- (status: responses other than 2xx/3xx), latency_us {min, p50, p90, p99, p999, max,
-- mean, stdev} (wrk's per-request latency, microseconds).

local out = os.getenv("BENCH_OUT")
local host = os.getenv("BENCH_HOST")
if not out or not host then
  io.stderr:write("bench-wrk.lua: BENCH_OUT and BENCH_HOST must be set\n")
  os.exit(2)
end

wrk.method = "GET"
wrk.path = os.getenv("BENCH_PATH") or "/"
wrk.headers["Host"] = host
wrk.headers["User-Agent"] = "wrk (policyd bench)"
local token = os.getenv("BENCH_TOKEN")
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end
if os.getenv("BENCH_CLOSE") == "1" then
  wrk.headers["Connection"] = "close"
end

function done(summary, latency, requests)
  local e = summary.errors
  local f = assert(io.open(out, "w"))
  f:write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f,"stdev":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean, latency.stdev))
  f:close()
end

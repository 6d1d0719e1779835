#!/usr/bin/env bash
# CTest's smoke run of the benchmark (scripts/bench --quick) against the already-built
# tree, so the benchmark cannot silently rot. It asserts that everything ran, that every
# contender enforced the policy (scripts/bench checks that before timing and fails
# otherwise) and that the report was written. Nothing here asserts anything about time.
#
# Usage: bench_smoke.sh SOURCE_DIR BUILD_DIR   (report in BUILD_DIR/bench-smoke)
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 SOURCE_DIR BUILD_DIR" >&2; exit 2; }
src=$1 build=$2
out=$build/bench-smoke

"$src/scripts/bench" --quick --no-build --build-dir "$build" --out "$out"

/usr/bin/python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
fail = []
def need(cond, what):
    if not cond:
        fail.append(what)

report = open(os.path.join(out, "report.md")).read()
for heading in ("## Machine", "## Micro", "## Macro", "### Correctness", "#### keep-alive",
                "#### connection per request", "## Appendix: every macro run"):
    need(heading in report, f"report.md has no '{heading}'")
r = json.load(open(os.path.join(out, "results.json")))
need(r["micro"] and len(r["micro"]["cases"]) > 0, "no micro cases")
checks = r["checks"]
need(len(checks) > 0 and all(c["ok"] for c in checks), "a correctness check failed")
contenders = ("direct", "empty", "policyd", "haproxy")
for c in contenders:
    need(any(ch["contender"] == c for ch in checks), f"no checks for {c}")
# the contenders that enforce nothing let every check through
for c in ("direct", "empty"):
    need(all(ch["got"] == 200 for ch in checks if ch["contender"] == c), f"{c} refused a check")
# the enforcing contenders really refused: 403, 401 and 429 each seen from both
for c in ("policyd", "haproxy"):
    for code in (403, 401, 429):
        need(any(ch["contender"] == c and ch["got"] == code for ch in checks), f"{c} never answered {code}")
runs = r["macro"]["runs"]
n = 3 * 2 * len(contenders)   # workloads x modes x contenders, one round
need(len(runs) == n, f"{len(runs)} timed runs, expected {n}")
for c in contenders:
    need(sum(run["contender"] == c for run in runs) == 6, f"not 6 timed runs of {c}")
need(all(run["requests"] > 0 and run["errors"]["status"] == 0 for run in runs), "a run had no or non-2xx responses")
need(len(r["macro"]["summary"]) == n, "summary incomplete")
need(len(r["macro"].get("cost_split", [])) == 6, "no split of policyd's cost (hook, chain) for every workload and mode")
need("### Where policyd's cost goes" in report, "report.md has no section on where policyd's cost goes")
# hot swap and scale (tests/bench/bench_hotswap, bench_scale): their sections, no failed request
titles = [sec["title"] for sec in r.get("sections", [])]
for t in ("Hot swap", "Scale: cost per packet", "Scale: policyd"):
    need(any(x.startswith(t) for x in titles), f"no section '{t}...'")
hs = json.load(open(os.path.join(out, "raw", "hotswap.json")))
need(len(hs["runs"]) == hs["applies"] > 0, "hot swap: not every apply recorded")
need(hs["failed_requests"] == 0 and hs["generation_mismatch"] == 0, "hot swap: requests failed during the applies")
sc = json.load(open(os.path.join(out, "raw", "scale.json")))
for d in ("hosts", "routes", "flows_fast", "flows_new"):
    need(len(sc["per_packet"][d]["points"]) >= 2, f"scale: no {d} curve")
need(len(sc.get("daemon", [])) >= 2, "scale: no daemon figures")
for name, plot in r["plots"].items():
    need(plot and plot.endswith(".svg") and os.path.getsize(os.path.join(out, plot)) > 0, f"plot {name}: {plot}")
if fail:
    print("bench smoke: " + "; ".join(fail), file=sys.stderr)
    sys.exit(1)
print(f"bench smoke: report written ({out}/report.md), {len(checks)} checks passed, {len(runs)} runs")
PY

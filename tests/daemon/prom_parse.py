#!/usr/bin/python3
"""Parses a Prometheus text exposition (format 0.0.4) with prometheus_client's own parser
(python3-prometheus-client), a reader independent of policyd, and prints what it read as JSON:

  {"families": [{"name": N, "type": T, "help": H,
                 "samples": [{"name": N, "labels": {..}, "value": V}, ...]}, ...]}

  prom_parse.py FILE        (or - for stdin)

On top of the parser (which is lenient) it checks what a scraper relies on: every family is
declared once, no sample (name and labels) appears twice, and a histogram's buckets are
cumulative and end at le="+Inf" equal to _count. Exits 1 with the reason on any problem.
"""
import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families


def fail(msg):
    print(f"prom_parse.py: {msg}", file=sys.stderr)
    sys.exit(1)


def check_histogram(fam):
    buckets = [s for s in fam.samples if s.name == fam.name + "_bucket"]
    counts = [s for s in fam.samples if s.name == fam.name + "_count"]
    if not buckets or len(counts) != 1:
        fail(f"histogram {fam.name}: needs buckets and one _count")
    bounds = [float(s.labels["le"]) for s in buckets]
    if bounds != sorted(bounds) or not math.isinf(bounds[-1]):
        fail(f"histogram {fam.name}: buckets not in order or no le=\"+Inf\"")
    values = [s.value for s in buckets]
    if values != sorted(values):
        fail(f"histogram {fam.name}: buckets are not cumulative: {values}")
    if values[-1] != counts[0].value:
        fail(f"histogram {fam.name}: +Inf bucket {values[-1]} != _count {counts[0].value}")


def main():
    if len(sys.argv) != 2:
        fail("usage: prom_parse.py FILE|-")
    text = sys.stdin.read() if sys.argv[1] == "-" else open(sys.argv[1], encoding="utf-8").read()
    if not text.endswith("\n"):
        fail("the exposition does not end with a line feed")
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as e:  # the parser raises ValueError and others on malformed input
        fail(f"parse error: {e!r}")
    seen_families, seen_samples, out = set(), set(), []
    for fam in families:
        if fam.name in seen_families:
            fail(f"family {fam.name} declared twice")
        seen_families.add(fam.name)
        samples = []
        for s in fam.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            if key in seen_samples:
                fail(f"sample {s.name}{s.labels} appears twice")
            seen_samples.add(key)
            value = s.value
            if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
                value = int(value)
            samples.append({"name": s.name, "labels": s.labels, "value": value})
        if fam.type == "histogram":
            check_histogram(fam)
        out.append({"name": fam.name, "type": fam.type, "help": fam.documentation, "samples": samples})
    json.dump({"families": out}, sys.stdout)
    print()


if __name__ == "__main__":
    main()

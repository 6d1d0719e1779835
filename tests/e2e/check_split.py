#!/usr/bin/env python3
"""The e2e CTest entries together run every test case of e2e_tests exactly once.

Usage: check_split.py E2E_TESTS SPEC [SPEC ...]  (the Catch2 test specs of the entries)
Exits 1 naming each test case that no entry runs, or that two entries run.
"""
import subprocess
import sys


def names(binary, spec=None):
    argv = [binary, "-#", "--list-test-names-only"] + ([spec] if spec else [])
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
    return [line for line in out.splitlines() if line.strip()]


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    binary, specs = sys.argv[1], sys.argv[2:]
    everything = names(binary)
    runs = {}
    for spec in specs:
        for name in names(binary, spec):
            runs.setdefault(name, []).append(spec)
    bad = 0
    for name in everything:
        got = runs.get(name, [])
        if len(got) != 1:
            bad += 1
            where = "no entry" if not got else "several entries: " + ", ".join(got)
            print(f"e2e test case in {where}: {name}")
    print(f"{len(everything)} e2e test cases, {len(specs)} entries, {bad} not run exactly once")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Where the CPU time between two `profile.sh` runs goes, per request, by part.

    PROFILE_SECONDS=5 benches/load/profile.sh axum bare
    PROFILE_SECONDS=5 benches/load/profile.sh axum qiflow-noaccess
    python3 benches/load/perf_diff.py \\
        target/load-bench/profile-axum-bare.data RPS_OF_BARE \\
        target/load-bench/profile-axum-qiflow-noaccess.data RPS_OF_QIFLOW

Each RPS is the "Requests/sec" line `profile.sh` printed for that run. The script reads both
profiles with `perf report` (samples per symbol, at `profile.sh`'s 999 Hz over its recorded
seconds, `--seconds`, default 5), turns the samples into microseconds of CPU per request, and
prints the difference B - A in total, by part (the kernel, the allocator, memcpy, the clock,
and the crate a symbol belongs to), and for the symbols that moved most. The kernel part
includes waking the load generator when a response lands on loopback, which a slower server pays
more often: a cost of the benchmark, charged to the server.
"""

import argparse
import collections
import re
import subprocess
import sys

FREQUENCY = 999  # perf record -F in profile.sh
CRATES = [
    "qiflow", "tracing", "sharded_slab", "metrics", "hyper", "axum", "tokio", "http::", "uuid",
    "bytes", "hashbrown", "serde", "matchit", "tower", "triomphe", "fastrand", "core::", "alloc::",
    "std::",
]


def samples(path):
    """Samples per (object, symbol) of a perf.data file."""
    out = subprocess.run(
        ["perf", "report", "-i", path, "--no-children", "--sort", "dso,sym", "-g", "none",
         "--stdio", "-F", "sample,dso,sym"],
        capture_output=True, text=True, check=True,
    ).stdout
    counts = collections.Counter()
    for line in out.splitlines():
        m = re.match(r"\s*(\d+)\s+(\S+)\s+\[.\]\s+(.*)", line)
        if m:
            counts[(m.group(2), m.group(3).strip())] += int(m.group(1))
    return counts


def part(dso, sym):
    if "kernel" in dso:
        return "kernel"
    if "libc" in dso:
        if any(x in sym for x in ("malloc", "free", "_int_")):
            return "allocator"
        if "mem" in sym:
            return "memcpy/memcmp"
        return "libc, other"
    if "vdso" in dso:
        return "clock"
    for name in CRATES:
        if name in sym:
            return name.rstrip(":")
    return "other"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a")
    p.add_argument("rps_a", type=float)
    p.add_argument("b")
    p.add_argument("rps_b", type=float)
    p.add_argument("--seconds", type=float, default=5.0, help="profile.sh's PROFILE_SECONDS")
    p.add_argument("--top", type=int, default=30)
    args = p.parse_args()
    a, b = samples(args.a), samples(args.b)
    if not a or not b:
        sys.exit("perf_diff.py: a profile has no samples (was it recorded by profile.sh?)")
    # Microseconds of CPU per request for one sample.
    ka = 1e6 / FREQUENCY / (args.rps_a * args.seconds)
    kb = 1e6 / FREQUENCY / (args.rps_b * args.seconds)
    total_a, total_b = sum(a.values()) * ka, sum(b.values()) * kb
    print(f"CPU us per request: A {total_a:.2f}, B {total_b:.2f}, B - A {total_b - total_a:+.2f}")
    parts = collections.Counter()
    symbols = {}
    for key in set(a) | set(b):
        delta = b[key] * kb - a[key] * ka
        parts[part(*key)] += delta
        symbols[key] = delta
    print("\nby part (us per request, B - A):")
    for name, delta in sorted(parts.items(), key=lambda x: -x[1]):
        print(f"  {delta:+.3f}  {name}")
    print(f"\nthe {args.top} symbols that moved most:")
    for (dso, sym), delta in sorted(symbols.items(), key=lambda x: -abs(x[1]))[: args.top]:
        print(f"  {delta:+.3f}  {sym[:110]}  [{dso}]")


if __name__ == "__main__":
    main()

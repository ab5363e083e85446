#!/bin/sh
# The profiler's share of the CPU in the end-to-end benchmark's rounds with profiling on,
# by sampling: timing cannot resolve 1% on a shared two-core machine, a sampled profile can.
#
# usage: tests/benches/end_to_end_share.sh        (E2E_ROUNDS, E2E_ROUND_SECS as for the bench)
# needs: perf (record -g), python3. Builds the benchmark first; takes about half a minute.
#
# Samples are put in 0.5 s bins, and a bin counts as profiling-on when at least 3 of its
# samples are in the recorder (the warm-up round and the rounds with profiling on). Printed:
# the share of those bins' samples with a profiler frame anywhere in their call chain, and
# the share with every `clock_gettime` chain added (the benchmark's own latency clock, or
# CPU-clock reads whose chain was not unwound).
set -eu
cargo bench -p profiling-integration --bench end_to_end --no-run >/dev/null 2>&1
BIN=$(ls -t "${CARGO_TARGET_DIR:-target}"/release/deps/end_to_end-* | grep -v '\.d$' | head -1)
DATA=$(mktemp)
trap 'rm -f "$DATA"' EXIT
E2E_ROUNDS=${E2E_ROUNDS:-4} E2E_ROUND_SECS=${E2E_ROUND_SECS:-3} \
    perf record -q -F 2000 -g -o "$DATA" "$BIN" --bench 2>&1 | grep -E '^\|' || true
perf script -i "$DATA" -F time,ip,sym 2>/dev/null | python3 -c '
import re, sys
samples, cur = [], None
for line in sys.stdin:
    m = re.match(r"\s*([\d.]+):\s*$", line)
    if m:
        if cur:
            samples.append(cur)
        cur = (float(m.group(1)), [])
    elif cur is not None and line.strip():
        cur[1].append(line.strip())
if cur:
    samples.append(cur)
t0 = samples[0][0]
bins = {}
for t, chain in samples:
    b = int((t - t0) / 0.5)
    n, p = bins.get(b, (0, 0))
    bins[b] = (n + 1, p + ("profiling_core::record::recorder" in chain[0] if chain else 0))
on = {b for b, (n, p) in bins.items() if p >= 3}
inside = [chain for t, chain in samples if int((t - t0) / 0.5) in on]
prof = re.compile(r"profiling_core::record|Instrumented<|thread_cpu_clock|posix_cpu_clock")
own = sum(1 for c in inside if any(prof.search(f) for f in c))
clock = sum(1 for c in inside if any("clock_gettime@@" in f for f in c) and not any(prof.search(f) for f in c))
print("samples %d, in profiling-on bins %d" % (len(samples), len(inside)))
print("profiler frame in the chain: %d = %.2f%%" % (own, 100.0 * own / len(inside)))
print("with every other clock_gettime chain: %d = %.2f%%" % (own + clock, 100.0 * (own + clock) / len(inside)))
'

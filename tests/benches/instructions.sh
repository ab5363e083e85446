#!/bin/sh
# Instructions per call of one row of the overhead benchmark, counted by valgrind's
# callgrind: deterministic, so it compares two builds on a machine whose timings the load
# blurs (instructions are not time: a stall costs time and no instruction).
#
# usage: tests/benches/instructions.sh ROW FUNCTION
#   e.g. tests/benches/instructions.sh profiled_enabled overhead::profiled_fn
#        tests/benches/instructions.sh profiled_async_ready overhead::poll_ready
# needs: valgrind (callgrind_annotate), python3. Builds the benchmark first; takes a minute or two.
set -eu
ROW=$1
FUNCTION=$2
cargo bench -p profiling-integration --features bench-peers --bench overhead --no-run >/dev/null 2>&1
BIN=$(ls -t "${CARGO_TARGET_DIR:-target}"/release/deps/overhead-* | grep -v '\.d$' | head -1)
# Two runs of different lengths: the difference of their counts over the difference of their
# calls is the marginal cost of a call, free of one-time costs (the recorder's setup, the
# clock's calibration) that a single run would spread over however many calls it made.
count() {
    out=$(mktemp)
    valgrind --tool=callgrind --callgrind-out-file="$out" "$BIN" --bench --profile-time "$1" "per_call/$ROW\$" >/dev/null 2>&1
    callgrind_annotate --tree=both --inclusive=yes "$out" 2>/dev/null | python3 -c '
import re, sys
f = sys.argv[1]
for line in sys.stdin:
    m = re.match(r"\s*([\d,]+) .*>\s+\S*:" + re.escape(f) + r" .*\(([\d,]+)x\)", line)
    if m:
        ir, n = (int(g.replace(",", "")) for g in m.groups())
        if n > 1000:
            print(ir, n)
            break
' "$FUNCTION"
    rm -f "$out"
}
set -- $(count 1) $(count 4)
python3 -c "import sys; a, b, c, d = map(int, sys.argv[1:]); print('$FUNCTION: %.1f instructions per call (%d and %d calls)' % ((c - a) / (d - b), b, d))" "$@"

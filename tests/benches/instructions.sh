#!/bin/sh
# Instructions per call of one row of the overhead benchmark, counted by valgrind's
# callgrind: deterministic, so it compares two builds on a machine whose timings the load
# blurs (instructions are not time: a stall costs time and no instruction).
#
# usage: tests/benches/instructions.sh ROW FUNCTION
#   e.g. tests/benches/instructions.sh profiled_enabled overhead::workloads::profiled_fn
#        tests/benches/instructions.sh profiled_async_ready overhead::workloads::poll_ready
#        tests/benches/instructions.sh tracing_instrument_registry_profiling_layer overhead::workloads::tracing_fn
# needs: valgrind, python3. Builds the benchmark first (OVERHEAD_BIN=path counts a saved
# build instead); takes a minute or two. Valgrind runs one thread at a time: with
# --fair-sched the background thread that answers a new thread's switch-detector request
# gets its turn, so a row counts the path a real run takes (CPU attributed by frames);
# without it, the request went unanswered and every count until the seventh session was of
# the path by windows.
#
# One run: N is the number of calls of FUNCTION (the measured function); the per-call cost
# is the self cost of every function called at least 0.9 N times, over N. One-time work
# (the recorder's setup, the clock's calibration, which loops for a fixed time and so runs
# a number of instructions that depends on the load) lives in functions called a few times
# and drops out. So do the thread CPU clock's reads: under valgrind, which runs code some
# 50 times slower, a window of wall time holds far fewer calls than natively. Repeat runs
# agree within about 1% (the boundaries that end a CPU window, which is wall time, are a
# varying share of the calls). The earlier version took the difference of two runs of
# different lengths, which the calibration's varying count moved by up to 4%.
set -eu
ROW=$1
FUNCTION=$2
if [ -n "${OVERHEAD_BIN:-}" ]; then
    BIN=$OVERHEAD_BIN # a saved build, to compare with
else
    cargo bench -p profiling-integration --features bench-peers --bench overhead --no-run >/dev/null 2>&1
    BIN=$(ls -t "${CARGO_TARGET_DIR:-target}"/release/deps/overhead-* | grep -v '\.d$' | head -1)
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
valgrind --tool=callgrind --fair-sched=yes --callgrind-out-file="$out" "$BIN" --bench --profile-time 1 "per_call/$ROW\$" >/dev/null 2>&1
python3 - "$out" "$FUNCTION" <<'EOF'
import collections, re, sys
path, function = sys.argv[1], sys.argv[2]
self_cost, calls = collections.Counter(), collections.Counter()
names, fn, cfn, after_calls = {}, None, None, False

def name(token):
    # Callgrind compresses names: "(12) full name" the first time, "(12)" after.
    m = re.match(r"\((\d+)\)(?: (.*))?", token)
    if not m:
        return token
    if m.group(2):
        names[m.group(1)] = m.group(2)
    return names[m.group(1)]

for line in open(path):
    if line.startswith("fn="):
        fn = name(line[3:].strip())
    elif line.startswith("cfn="):
        cfn = name(line[4:].strip())
    elif line.startswith("calls="):
        calls[cfn] += int(line[6:].split()[0])
        after_calls = True
    elif line[:1].isdigit() or line[:1] in "+-*":
        if after_calls:  # the inclusive cost of the call just named: not self cost
            after_calls = False
        elif fn:
            self_cost[fn] += int(line.split()[-1])

n = max((c for f, c in calls.items() if f == function or f.endswith(" " + function)), default=0)
if n < 1000:
    sys.exit(f"{function}: called {n} times in the run; is it the row's function?")
hot = [(c / n, calls[f] / n, f) for f, c in self_cost.items()
       if calls.get(f, 0) >= 0.9 * n and not re.search(r"clock_gettime|quanta|Timespec|Instant", f)]
print(f"{function}: {sum(h[0] for h in hot):.1f} instructions per call ({n} calls)")
for per_call, times, f in sorted(hot, reverse=True):
    if per_call >= 1:
        try:
            print(f"  {per_call:7.1f}  x{times:.2f}  {f[:120]}")
        except BrokenPipeError:  # the reader (`head`) has what it wanted
            break
EOF

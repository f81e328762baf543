#!/usr/bin/env bash
# Where Chorus spends its time and memory under the benchmark's load:
#  1. CPU: `perf record` (call graphs) of a release node while chorus-bench
#     sends one-to-one messages at BENCH_PROFILE_RATE msg/s, then the top
#     symbols and the top crates (perf report);
#  2. memory: `heaptrack` of a node holding BENCH_PROFILE_SESSIONS idle
#     sessions, then the allocation sites that hold the most memory.
# Needs perf and heaptrack (Debian: linux-perf, heaptrack); run as root.
# Output: bench/results/profile-<time>/{cpu.txt,memory.txt,memory-top.txt}
# (memory-top.txt: the heap at its peak grouped by holder, per session;
# bench/heap_groups.py).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
RATE=${BENCH_PROFILE_RATE:-4000}
SESSIONS=${BENCH_PROFILE_SESSIONS:-2000}
OUT=$ROOT/bench/results/profile-$(date -u +%Y%m%d-%H%M%S)
PORT=27222
export RUST_BACKTRACE=0
mkdir -p "$OUT"
for tool in perf heaptrack heaptrack_print; do
    command -v "$tool" >/dev/null || { echo "$tool is missing (apt-get install linux-perf heaptrack)" >&2; exit 1; }
done
cargo build --release -j2 -p chorus-server -p chorus-bench
CHORUS=$ROOT/target/release/chorus
BENCH=$ROOT/target/release/chorus-bench
ulimit -n "$(ulimit -Hn)"

node_dir() { # NAME
    local d=$OUT/$1
    mkdir -p "$d"
    sed -e "s#@DATA@#$d/data#; s#@PORT@#$PORT#; s#@PORT_TLS@#$((PORT + 1))#; s#@PORT_HTTP@#$((PORT + 2))#" \
        bench/chorus-bench.toml >"$d/chorus.toml"
    echo "$d"
}
wait_port() {
    for _ in $(seq 1 600); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
common=(--addr "127.0.0.1:$PORT" --domain bench.test --label chorus --out "$OUT/results.jsonl")

PARTS=${BENCH_PROFILE_PARTS:-cpu memory}

# 1. CPU under one-to-one load.
if [[ " $PARTS " == *" cpu "* ]]; then
d=$(node_dir cpu)
"$CHORUS" serve -c "$d/chorus.toml" >"$d/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
wait_port $PORT
"$BENCH" provision "${common[@]}" --users 200 >/dev/null
"$BENCH" one2one "${common[@]}" --pid "$pid" --pairs 100 --rates "$RATE" --step-secs 30 --name profile_one2one &
load=$!
sleep 8
perf record -F 499 -g -p "$pid" -o "$OUT/perf.data" -- sleep 15 2>"$OUT/perf-record.log"
wait "$load" || true
kill "$pid" && wait "$pid" 2>/dev/null || true
{
    echo "# perf: chorus under $RATE one-to-one msg/s (100 pairs), self time by symbol"
    perf report -i "$OUT/perf.data" --no-children --sort symbol --percent-limit 0.7 --stdio -g none 2>/dev/null | grep '%' | cut -c1-140 | head -60
    echo
    echo "# self time by shared object"
    perf report -i "$OUT/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null | grep '%' | head -15
    echo
    echo "# inclusive time (children) by symbol"
    perf report -i "$OUT/perf.data" --children --sort symbol --percent-limit 3 --stdio -g none 2>/dev/null | grep '%' | cut -c1-140 | head -60
} >"$OUT/cpu.txt" || true  # head closes its pipe early
fi

# 2. Memory of idle sessions.
if [[ " $PARTS " == *" memory "* ]]; then
d=$(node_dir memory)
heaptrack -o "$OUT/heaptrack" "$CHORUS" serve -c "$d/chorus.toml" >"$d/server.log" 2>&1 &
wait_port $PORT
# heaptrack runs the node as its child: signal the node itself.
pid=$(pgrep -f "^$CHORUS serve -c $d/chorus.toml" | head -n1)
"$BENCH" provision "${common[@]}" --users "$SESSIONS" >/dev/null
"$BENCH" idle "${common[@]}" --sessions "$SESSIONS" --settle-secs 3
kill "$pid" || true
wait || true
trap - EXIT
heaptrack_print -f "$OUT"/heaptrack*.zst --print-peaks 1 --print-allocators 0 --print-temporary 0 \
    --print-leaks 0 --peak-limit 25 2>/dev/null >"$OUT/memory.txt" || true
# The same peak, grouped by what holds it, per session.
heaptrack_print -f "$OUT"/heaptrack*.zst -F "$OUT/peak-stacks.txt" --flamegraph-cost-type peak \
    >/dev/null 2>&1 || true
python3 bench/heap_groups.py "$OUT/peak-stacks.txt" "$SESSIONS" >"$OUT/memory-top.txt" || true
fi
echo "profile written to $OUT (cpu.txt, memory.txt, memory-top.txt)"

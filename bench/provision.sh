#!/usr/bin/env bash
# Bulk provisioning benchmark (issue 17): times, with N accounts (env
# PROVISION_BENCH_ACCOUNTS, default 10,000) and the configured PBKDF2
# iterations (10,000, the default):
#   1. `chorus user seed NAME=PASSWORD...` into a stopped node,
#   2. `chorus user import FILE` (CSV with names) into a stopped node,
#   3. the same import into a running node (through its control socket).
# The target: 10,000 accounts in under 10 s. CHORUS_C2S__SCRAM_ITERATIONS=4096
# measures with RFC 7677's minimum instead. Uses target/release/chorus
# (cargo build --release -p chorus-server) unless CHORUS_BIN says otherwise.
# Everything stays in a temporary directory and on 127.0.0.1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
N="${PROVISION_BENCH_ACCOUNTS:-10000}"
BIN="${CHORUS_BIN:-target/release/chorus}"
test -x "$BIN" || { echo "build $BIN first: cargo build --release -p chorus-server"; exit 1; }
work="$(mktemp -d)"
node_pid=""
cleanup() {
    [ -n "$node_pid" ] && kill "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

config() { # DIR PORTBASE
    cat > "$1/chorus.toml" <<TOML
[server]
domain = "bench.example"
data_dir = "$1/data"
[c2s]
starttls_listen = "127.0.0.1:$2"
direct_tls_listen = "127.0.0.1:$(($2 + 1))"
[http]
listen = "127.0.0.1:$(($2 + 2))"
TOML
}

seconds() { date +%s.%N; }

report() { # WHAT START END
    awk -v what="$1" -v s="$2" -v e="$3" -v n="$N" \
        'BEGIN { t = e - s; printf "  %-34s %6.2f s  %8.0f accounts/s  %s\n", what, t, n / t, (t < 10 ? "(< 10 s)" : "(target 10 s missed)") }'
}

echo "provisioning benchmark: $N accounts, $(nproc) cores, PBKDF2 iterations ${CHORUS_C2S__SCRAM_ITERATIONS:-10000} (c2s.scram_iterations), $BIN"
seq 1 "$N" | awk '{ print "user" $1 "=pw-" $1 "-secret" }' > "$work/seed.txt"
{ echo "user,name,password"; seq 1 "$N" | awk '{ print "person" $1 ",\"Person " $1 ", Dept " ($1 % 40) "\",pw-" $1 "-secret" }'; } > "$work/people.csv"

mkdir -p "$work/seed"; config "$work/seed" 17100
mapfile -t pairs < "$work/seed.txt" # one command line, as a container's entry point has it
t0=$(seconds); "$BIN" --config "$work/seed/chorus.toml" user seed "${pairs[@]}" > /dev/null; t1=$(seconds)
report "user seed, stopped node" "$t0" "$t1"

mkdir -p "$work/import"; config "$work/import" 17110
t0=$(seconds); "$BIN" --config "$work/import/chorus.toml" user import "$work/people.csv" > /dev/null; t1=$(seconds)
report "user import, stopped node" "$t0" "$t1"

mkdir -p "$work/live"; config "$work/live" 17120
"$BIN" --config "$work/live/chorus.toml" serve 2> "$work/live/node.log" &
node_pid=$!
for _ in $(seq 1 300); do
    [ -S "$work/live/data/control.sock" ] && break
    kill -0 "$node_pid" 2>/dev/null || { cat "$work/live/node.log"; exit 1; }
    sleep 0.1 # the node has no readiness signal a shell can wait on but its socket
done
t0=$(seconds); "$BIN" --config "$work/live/chorus.toml" user import "$work/people.csv" > /dev/null; t1=$(seconds)
report "user import, running node" "$t0" "$t1"
count=$("$BIN" --config "$work/live/chorus.toml" user list | wc -l)
echo "  accounts on the running node: $count"

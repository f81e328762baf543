#!/usr/bin/env bash
# Side-by-side benchmark of Chorus, Prosody and ejabberd on this machine, in
# one run: installs the reference servers from Debian, builds Chorus and
# chorus-bench in release mode, runs every scenario against each server in
# turn (one server at a time, so they never compete for the CPU), then the
# cross-site scenario on a local three-site Chorus cluster whose links run
# through WAN-latency proxies, and prints one table with Chorus's ratio to
# each server. Everything listens on 127.0.0.1 only and stops by itself.
#
#   bash bench/run.sh                  # the full run (about 40 minutes)
#   BENCH_SCALE=smoke bash bench/run.sh   # tiny sizes, to check the harness
#   BENCH_SERVERS="chorus prosody" bash bench/run.sh
#   BENCH_ONLY_MEMORY=1 bash bench/run.sh # only the fresh-server memory
#                                         # and tsung scenarios
#   BENCH_ONLY_SCENARIOS="one2one room" bash bench/run.sh
#       # only these scenarios (after provisioning), on every server; names:
#       # login idle one2one presence room mam memory cross_site
#
# Results: bench/results/<timestamp>/{results.jsonl,table.md,*.log}.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

SCALE=${BENCH_SCALE:-full}
# Servers that also run presence with 200-contact rosters: setting up the
# 20,100 mutual subscriptions over XMPP takes Prosody and ejabberd far
# longer than the scenario itself (see BENCHMARKS.md); "all" runs it anyway.
PRESENCE_BIG_SERVERS=${BENCH_PRESENCE_BIG_SERVERS:-}
SERVERS=${BENCH_SERVERS:-"chorus prosody ejabberd"}
OUT=${BENCH_OUT:-$ROOT/bench/results/$(date -u +%Y%m%d-%H%M%S)}
DOMAIN=bench.test
WAN_DELAY_MS=${BENCH_WAN_DELAY_MS:-40}
WAN_JITTER_MS=${BENCH_WAN_JITTER_MS:-5}
export RUST_BACKTRACE=0

case "$SCALE" in
full)
    USERS=3000 LOGIN_USERS=2000 IDLE_SESSIONS=3000
    PAIRS=100 RATES=250,500,1000,2000,4000,8000,16000,32000,64000 STEP_SECS=10
    PRESENCE_USERS=100 PRESENCE_CONTACTS=50 PRESENCE_UPDATES=10
    PRESENCE_BIG_USERS=201 PRESENCE_BIG_CONTACTS=200 PRESENCE_BIG_UPDATES=5
    ROOMS=10 OCCUPANTS=20 ROOM_MESSAGES=10
    MAM_MESSAGES=5000 MAM_QUERIES=200
    CROSS_PAIRS=50 CROSS_RATES=100,1000,2000
    MEM_SESSIONS="5000 19000" TSUNG_CHAT_USERS=1000 TSUNG_CHAT_RATE=2000 TSUNG_CHAT_SECS=30
    MEMORY_SERVERS=${BENCH_MEMORY_SERVERS:-$SERVERS} TSUNG_CHAT_OPTS=""
    PRESENCE_BIG_SERVERS=${PRESENCE_BIG_SERVERS:-chorus} ;;
smoke)
    USERS=60 LOGIN_USERS=40 IDLE_SESSIONS=60
    PAIRS=10 RATES=50,100 STEP_SECS=2
    PRESENCE_USERS=12 PRESENCE_CONTACTS=4 PRESENCE_UPDATES=2
    PRESENCE_BIG_USERS=12 PRESENCE_BIG_CONTACTS=10 PRESENCE_BIG_UPDATES=2
    ROOMS=2 OCCUPANTS=5 ROOM_MESSAGES=2
    MAM_MESSAGES=200 MAM_QUERIES=10
    CROSS_PAIRS=5 CROSS_RATES=50
    MEM_SESSIONS="100" TSUNG_CHAT_USERS=20 TSUNG_CHAT_RATE=40 TSUNG_CHAT_SECS=3
    # The harness check: the fresh-server phase on Chorus only.
    MEMORY_SERVERS=${BENCH_MEMORY_SERVERS:-chorus}
    # 20 users would otherwise send in lockstep, and tsung leaves a message
    # untimed when two reach a user in one read.
    TSUNG_CHAT_OPTS=--poisson
    PRESENCE_BIG_SERVERS=${PRESENCE_BIG_SERVERS:-all} ;;
*) echo "BENCH_SCALE must be full or smoke" >&2; exit 2 ;;
esac

mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"
echo "== chorus-bench: scale $SCALE, servers: $SERVERS, results in $OUT"

bash scripts/deps
# BENCH_PROFILE=dev uses debug binaries (for checking the harness only).
PROFILE=${BENCH_PROFILE:-release}
cargo build --profile "$PROFILE" -j2 -p chorus-server -p chorus-bench
BIN=$ROOT/target/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")
CHORUS=$BIN/chorus
BENCH=$BIN/chorus-bench
if [[ "$SERVERS" == *prosody* || "$SERVERS" == *ejabberd* ]]; then
    bash bench/refservers/refserver.sh install
fi
if [[ "${BENCH_MEMORY_TOOLS:-tsung}" == *tsung* ]] && ! command -v tsung >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tsung
fi
ulimit -n "$(ulimit -Hn)"

# Prosody and ejabberd run as their service users, so their directories
# must be reachable by them wherever OUT is (a pytest tmp dir is 0700).
REF=$(mktemp -d /tmp/chorus-bench-ref.XXXXXX)
chmod 755 "$REF"
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] && kill "$p" 2>/dev/null || true
    done
    for s in prosody ejabberd; do
        [ -e "$REF/$s/pid" ] && bash bench/refservers/refserver.sh stop "$s" "$REF/$s" >/dev/null 2>&1 || true
        [ -d "$REF/$s/log" ] && mkdir -p "$OUT/$s" && cp -r "$REF/$s/log" "$OUT/$s/" 2>/dev/null || true
    done
    rm -rf "$REF"
}
trap cleanup EXIT

# Whether a scenario runs (BENCH_ONLY_SCENARIOS unset: all of them).
wants() { # NAME
    [ -z "${BENCH_ONLY_SCENARIOS:-}" ] || [[ " $BENCH_ONLY_SCENARIOS " == *" $1 "* ]]
}

wait_port() { # PORT
    for _ in $(seq 1 600); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    return 1
}

chorus_config() { # DIR PORT
    sed -e "s#@DATA@#$1/data#; s#@PORT@#$2#; s#@PORT_TLS@#$(($2 + 1))#; s#@PORT_HTTP@#$(($2 + 2))#" \
        bench/chorus-bench.toml >"$1/chorus.toml"
}

start_server() { # NAME PORT -> sets SERVER_PID
    local name=$1 port=$2 dir=$OUT/$1
    case "$name" in
    chorus)
        rm -rf "$dir" && mkdir -p "$dir"
        chorus_config "$dir" "$port"
        "$CHORUS" serve -c "$dir/chorus.toml" >"$dir/server.log" 2>&1 &
        SERVER_PID=$!
        PIDS+=("$SERVER_PID")
        wait_port "$port" ;;
    prosody | ejabberd)
        bash bench/refservers/refserver.sh start "$name" "$REF/$name" "$port" "$DOMAIN" >/dev/null
        SERVER_PID=$(cat "$REF/$name/pid") ;;
    esac
}

stop_server() { # NAME
    case "$1" in
    chorus) kill "$SERVER_PID" && wait "$SERVER_PID" 2>/dev/null || true ;;
    *) bash bench/refservers/refserver.sh stop "$1" "$REF/$1" >/dev/null ;;
    esac
}

run_server() { # NAME PORT
    local name=$1 port=$2
    echo "== $name"
    start_server "$name" "$port"
    local common=(--addr "127.0.0.1:$port" --domain "$DOMAIN" --pid "$SERVER_PID" --label "$name" --out "$RESULTS")
    "$BENCH" provision "${common[@]}" --users "$USERS"
    wants login && "$BENCH" login "${common[@]}" --users "$LOGIN_USERS"
    wants idle && "$BENCH" idle "${common[@]}" --sessions "$IDLE_SESSIONS"
    wants one2one && "$BENCH" one2one "${common[@]}" --pairs "$PAIRS" --rates "$RATES" --step-secs "$STEP_SECS"
    wants presence && "$BENCH" presence "${common[@]}" --users "$PRESENCE_USERS" --contacts "$PRESENCE_CONTACTS" --updates "$PRESENCE_UPDATES"
    wants presence && [[ "$PRESENCE_BIG_SERVERS" == all || " $PRESENCE_BIG_SERVERS " == *" $name "* ]] &&
        "$BENCH" presence "${common[@]}" --users "$PRESENCE_BIG_USERS" --contacts "$PRESENCE_BIG_CONTACTS" --updates "$PRESENCE_BIG_UPDATES" --setup-secs 600
    wants room && "$BENCH" room "${common[@]}" --rooms "$ROOMS" --occupants "$OCCUPANTS" --messages "$ROOM_MESSAGES"
    wants mam && "$BENCH" mam "${common[@]}" --messages "$MAM_MESSAGES" --queries "$MAM_QUERIES"
    stop_server "$name"
}

# Memory per idle session, witnessed twice: by chorus-bench (SCRAM) and by
# tsung (SASL PLAIN), each against a fresh server that holds only the
# provisioned accounts, so neither measures memory freed by an earlier
# scenario (run_server's `idle` follows the login storm). Then tsung's
# one-to-one chat with every message timed.
TOOLS=${BENCH_MEMORY_TOOLS:-"chorus-bench tsung"}
WS_PYTHON=python3
[ -x "$ROOT/.venv/bin/python" ] && WS_PYTHON=$ROOT/.venv/bin/python
memory_server() { # NAME PORT
    local name=$1 port=$2 n tool
    local common=(--addr "127.0.0.1:$port" --domain "$DOMAIN" --label "$name" --concurrency 256)
    for n in $MEM_SESSIONS; do
        for tool in $TOOLS; do
            echo "== $name: $n idle sessions held by $tool, on a fresh server"
            start_server "$name" "$port"
            "$BENCH" provision "${common[@]}" --pid "$SERVER_PID" --users "$n" >/dev/null
            case $tool in
            chorus-bench) "$BENCH" idle "${common[@]}" --pid "$SERVER_PID" --out "$RESULTS" \
                --sessions "$n" --name "idle_fresh_$n" ;;
            tsung) python3 bench/tsung.py idle --port "$port" --pid "$SERVER_PID" --domain "$DOMAIN" \
                --label "$name" --out "$RESULTS" --work "$OUT/tsung-$name" --sessions "$n" ;;
            esac
            stop_server "$name"
        done
    done
    # Web clients (XMPP over WebSocket, RFC 7395): Chorus only, the
    # reference servers' configs in bench/refservers/ serve no WebSocket.
    if [ "$name" = chorus ]; then
        n=${MEM_SESSIONS%% *}
        echo "== $name: $n idle WebSocket sessions, on a fresh server"
        start_server "$name" "$port"
        "$BENCH" provision "${common[@]}" --pid "$SERVER_PID" --users "$n" >/dev/null
        # It needs the `websockets` package: the end-to-end suite's venv.
        "$WS_PYTHON" bench/ws_idle.py --url "wss://127.0.0.1:$((port + 2))/xmpp-websocket" --pid "$SERVER_PID" \
            --domain "$DOMAIN" --label "$name" --out "$RESULTS" --sessions "$n" ||
            echo "!! $name: the WebSocket memory scenario failed (needs: bash scripts/test, or pip install websockets)"
        stop_server "$name"
    fi
    if [[ " $TOOLS " == *" tsung "* ]]; then
        echo "== $name: tsung one-to-one, $TSUNG_CHAT_USERS users, $TSUNG_CHAT_RATE msg/s"
        start_server "$name" "$port"
        "$BENCH" provision "${common[@]}" --pid "$SERVER_PID" --users "$TSUNG_CHAT_USERS" >/dev/null
        python3 bench/tsung.py chat --port "$port" --pid "$SERVER_PID" --domain "$DOMAIN" \
            --label "$name" --out "$RESULTS" --work "$OUT/tsung-$name" \
            --users "$TSUNG_CHAT_USERS" --rate "$TSUNG_CHAT_RATE" --secs "$TSUNG_CHAT_SECS" $TSUNG_CHAT_OPTS
        stop_server "$name"
    fi
}

port=25222
for s in $SERVERS; do
    if [ -z "${BENCH_ONLY_MEMORY:-}" ]; then
        run_server "$s" "$port" || echo "!! $s: a scenario failed (see above); going on with the next server"
    fi
    if [[ " $MEMORY_SERVERS " == *" $s "* ]] && wants memory; then
        memory_server "$s" "$port" || echo "!! $s: a memory or tsung scenario failed (see above); going on"
    fi
    port=$((port + 100))
done

# Cross-site delivery: three single-node sites whose cluster links each run
# through a proxy adding WAN_DELAY_MS (+ jitter) in each direction.
if [[ "$SERVERS" == *chorus* && -z "${BENCH_ONLY_MEMORY:-}" ]] && wants cross_site; then
    echo "== chorus, three sites, +${WAN_DELAY_MS} ms one way between sites"
    X=$OUT/cross
    rm -rf "$X" && mkdir -p "$X"
    sites=(london newyork tokyo)
    nodes=()
    for s in "${sites[@]}"; do nodes+=(--node "$s-1=localhost"); done
    "$CHORUS" cert bundle --out "$X/certs" "${nodes[@]}" >/dev/null
    for i in 0 1 2; do
        d=$X/${sites[$i]}
        mkdir -p "$d"
        chorus_config "$d" $((26222 + 10 * i))
        cat >>"$d/chorus.toml" <<EOF

[cluster]
node_id = "${sites[$i]}-1"
site = "${sites[$i]}"
listen = "127.0.0.1:$((26225 + 10 * i))"
ca_file = "$X/certs/ca.pem"
cert_file = "$X/certs/${sites[$i]}-1.pem"
key_file = "$X/certs/${sites[$i]}-1.key"
EOF
        for j in 0 1 2; do
            [ "$i" = "$j" ] && continue
            proxy=$((26300 + 10 * i + j))
            "$BENCH" proxy --listen "127.0.0.1:$proxy" --to "127.0.0.1:$((26225 + 10 * j))" \
                --delay-ms "$WAN_DELAY_MS" --jitter-ms "$WAN_JITTER_MS" 2>>"$X/proxy.log" &
            PIDS+=($!)
            cat >>"$d/chorus.toml" <<EOF

[[cluster.peers]]
id = "${sites[$j]}-1"
site = "${sites[$j]}"
addr = "127.0.0.1:$proxy"
EOF
        done
    done
    # Registration replicates: provision on london, wait for it on the others.
    cross_pids=()
    for i in 0 1 2; do
        "$CHORUS" serve -c "$X/${sites[$i]}/chorus.toml" >"$X/${sites[$i]}.log" 2>&1 &
        cross_pids+=($!)
        PIDS+=($!)
    done
    for i in 0 1 2; do wait_port $((26222 + 10 * i)); done
    common=(--domain "$DOMAIN" --label chorus --out "$RESULTS")
    "$BENCH" provision --addr 127.0.0.1:26222 --domain "$DOMAIN" --out "$X/provision.jsonl" --users $((2 * CROSS_PAIRS)) --prefix cross
    # Accounts reach the other sites by replication: wait until newyork lists
    # them all (retrying logins instead would trip the failed-login throttle).
    want=$((2 * CROSS_PAIRS))
    for _ in $(seq 1 300); do
        have=$("$CHORUS" -c "$X/newyork/chorus.toml" user list 2>/dev/null | grep -c '^cross' || true)
        [ "$have" -ge "$want" ] && break
        sleep 0.2
    done
    [ "$have" -ge "$want" ] || { echo "only $have of $want accounts reached newyork" >&2; exit 1; }
    "$BENCH" one2one --addr 127.0.0.1:26222 --recv-addr 127.0.0.1:26232 --pid "${cross_pids[0]}" "${common[@]}" \
        --prefix cross --pairs "$CROSS_PAIRS" --rates "$CROSS_RATES" --step-secs "$STEP_SECS" \
        --name "cross_site_${WAN_DELAY_MS}ms" --p99-limit-ms 2000
fi

echo
echo "== results ($OUT/table.md)"
"$BENCH" table --ours chorus "$RESULTS" | tee "$OUT/table.md"

#!/usr/bin/env bash
# A/B of bellwether builds under the same ingest load (prints numbers, asserts nothing). On a
# shared machine whose speed drifts minute to minute, a change is only visible when the
# builds alternate: each round runs every binary once, in a fresh data dir:
#   1. closed loop: 100-event batches from CONNECTIONS connections for SECONDS;
#   2. after a 3 s pause, open loop at RATE events/s for SECONDS (p50/p99/max ack latency);
# then the rollup lag and the server's RSS.
# Usage: [UNLIMITED_AB=1] bench/ingest_ab.sh RATE ROUNDS BINARY... (e.g. copies of
# target/release/bellwether built from the two commits; cp them aside, the next build
# overwrites the file). UNLIMITED_AB=1 lifts the default rate limits (bench/lib.sh's
# $UNLIMITED config) for builds that know `[server]` (issue 28 on); older builds refuse it.
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:?events/s for the open-loop run}
ROUNDS=${2:?rounds}
shift 2
[ $# -ge 1 ] || { echo "give at least one binary" >&2; exit 2; }
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
CONNECTIONS=${CONNECTIONS:-32}
cargo build --release --locked --example loadgen >&2
LOADGEN=target/release/examples/loadgen
BIN=$1 # lib.sh builds nothing when BIN is set
. bench/lib.sh
metric() { curl -s "$URL/metrics" | awk -v name="$1" '$1 == name {print $2}'; }

echo "machine: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%dT%H:%MZ); open loop at $RATE events/s"
echo
echo "| round | binary | closed loop events/s | closed p99 ms | open loop achieved events/s | open p50 / p99 / max ms | rollup lag after | RSS MB |"
echo "|---|---|---|---|---|---|---|---|"
for round in $(seq 1 "$ROUNDS"); do
    for binary in "$@"; do
        rm -rf "$DATA"
        config=/dev/null
        [ "${UNLIMITED_AB:-0}" = 1 ] && config=$UNLIMITED
        BELLWETHER_CONFIG=$config BELLWETHER_WRITE_KEYS=bench-key BELLWETHER_LOG=warn start bellwether "$binary" serve --data-dir "$DATA" --listen 127.0.0.1:0
        closed=$($LOADGEN --url "$URL" --batch 100 --connections "$CONNECTIONS" --seconds "$SECONDS_PER_RUN")
        sleep 3
        open=$($LOADGEN --url "$URL" --batch 100 --connections "$CONNECTIONS" --seconds "$SECONDS_PER_RUN" --rate "$RATE")
        echo "| $round | $binary | $(field "$closed" events_per_sec) | $(field "$closed" p99_ms) | $(field "$open" events_per_sec) | $(field "$open" p50_ms) / $(field "$open" p99_ms) / $(field "$open" max_ms) | $(metric bellwether_rollup_lag_events) | $(rss_mb "$PID") |"
        kill -9 "$PID"
    done
done

#!/usr/bin/env bash
# Ingest benchmark (issue 3). Prints numbers, asserts nothing. Measures, in one run on the
# same machine:
#   1. the ceiling: an axum server with the same Segment parser that stores nothing
#      (examples/ceiling.rs), for 100-event batches and single calls;
#   2. bellwether serve (durable: a 200 means fsynced), same loads, as a ratio to 1;
#   3. p99 acknowledgement latency at 70% of bellwether's measured batched maximum;
#   4. server RSS after TOTAL_EVENTS events (default 10 M) have been stored.
# Usage: bench/ingest.sh [SECONDS=10] [TOTAL_EVENTS=10000000]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_RUN=${1:-10}
TOTAL_EVENTS=${2:-10000000}
CONNECTIONS=${CONNECTIONS:-64}
cargo build --release --locked --bin bellwether --example ceiling --example loadgen >&2
BIN=target/release/bellwether
LOADGEN=target/release/examples/loadgen
. bench/lib.sh
metric() { curl -s "$URL/metrics" | awk -v name="$1" '$1 == name {print $2}'; }

echo "machine: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%dT%H:%MZ)"

start ceiling target/release/examples/ceiling
ceil_batch=$($LOADGEN --url "$URL" --batch 100 --connections "$CONNECTIONS" --seconds "$SECONDS_PER_RUN")
ceil_single=$($LOADGEN --url "$URL" --batch 1 --connections "$CONNECTIONS" --seconds "$SECONDS_PER_RUN")
kill -9 "$PID"

BELLWETHER_CONFIG=$UNLIMITED BELLWETHER_WRITE_KEYS=bench-key BELLWETHER_LOG=warn start bellwether "$BIN" serve --data-dir "$work/data" --listen 127.0.0.1:0
BW_PID=$PID
bw_batch=$($LOADGEN --url "$URL" --batch 100 --connections "$CONNECTIONS" --seconds "$SECONDS_PER_RUN")
# The rollup worker yields the CPU to ingest: how long after the burst until it has caught up.
lag_at_end=$(metric bellwether_rollup_lag_events)
caught_up_s=$(python3 - "$URL" <<'EOF2'
import sys, time, urllib.request
started = time.monotonic()
while True:
    text = urllib.request.urlopen(sys.argv[1] + "/metrics").read().decode()
    lag = next(float(l.split()[1]) for l in text.splitlines() if l.startswith("bellwether_rollup_lag_events "))
    if lag == 0:
        print(f"{time.monotonic() - started:.1f}")
        break
    time.sleep(0.1)
EOF2
)
bw_single=$($LOADGEN --url "$URL" --batch 1 --connections "$CONNECTIONS" --seconds "$SECONDS_PER_RUN")
max=$(field "$bw_batch" events_per_sec)
rate=$(python3 -c "print(int($max * 0.7))")
bw_rated=$($LOADGEN --url "$URL" --batch 100 --connections "$CONNECTIONS" --seconds "$SECONDS_PER_RUN" --rate "$rate")
BW_URL=$URL
# The same open-loop load against the ceiling: the harness's own latency floor.
start ceiling2 target/release/examples/ceiling
ceil_rated=$($LOADGEN --url "$URL" --batch 100 --connections "$CONNECTIONS" --seconds "$SECONDS_PER_RUN" --rate "$rate")
kill -9 "$PID"
URL=$BW_URL

stored=$(curl -s "$URL/metrics" | awk '/^bellwether_ingest_accepted_total/ {print $2}')
remaining=$(python3 -c "print(max(0, $TOTAL_EVENTS - int(float('$stored'))))")
echo "filling to $TOTAL_EVENTS stored events ($remaining more)..." >&2
fill=$($LOADGEN --url "$URL" --batch 100 --connections "$CONNECTIONS" --seconds 100000 --total-events "$remaining")
stored=$(curl -s "$URL/metrics" | awk '/^bellwether_ingest_accepted_total/ {print $2}')
rss=$(rss_mb "$BW_PID"); hwm=$(hwm_mb "$BW_PID")
db_mb=$(du -sm "$work/data" | cut -f1)

ratio() { python3 -c "print(f'{$(field "$1" events_per_sec) / $(field "$2" events_per_sec):.2f}')"; }
echo
echo "| measure | ceiling (no storage) | bellwether (durable) | ratio |"
echo "|---|---|---|---|"
echo "| 100-event batches, $CONNECTIONS connections, events/s | $(field "$ceil_batch" events_per_sec) | $(field "$bw_batch" events_per_sec) | $(ratio "$bw_batch" "$ceil_batch") |"
echo "| single calls, $CONNECTIONS connections, events/s | $(field "$ceil_single" events_per_sec) | $(field "$bw_single" events_per_sec) | $(ratio "$bw_single" "$ceil_single") |"
echo
echo "Rollups after the batched run: $lag_at_end events behind when it ended, caught up $caught_up_s s later."
echo
echo "| at 70% of bellwether's max ($rate events/s, batches of 100) | ceiling | bellwether |"
echo "|---|---|---|"
echo "| achieved events/s | $(field "$ceil_rated" events_per_sec) | $(field "$bw_rated" events_per_sec) |"
echo "| p50 / p99 / max ack latency ms | $(field "$ceil_rated" p50_ms) / $(field "$ceil_rated" p99_ms) / $(field "$ceil_rated" max_ms) | $(field "$bw_rated" p50_ms) / $(field "$bw_rated" p99_ms) / $(field "$bw_rated" max_ms) |"
echo "| errors | $(field "$ceil_rated" errors) | $(field "$bw_rated" errors) |"
echo
echo "| after $stored events stored | value |"
echo "|---|---|"
echo "| fill rate events/s | $(field "$fill" events_per_sec) (errors $(field "$fill" errors)) |"
echo "| server RSS now / peak MB | $rss / $hwm |"
echo "| data dir MB | $db_mb |"

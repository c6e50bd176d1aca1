#!/usr/bin/env bash
# ClickHouse store vs embedded store (issue 11). Prints numbers, asserts nothing. In one run
# on the same machine, against ClickHouse (Debian's clickhouse-server, started here as a
# plain process):
#   1. the same load generator sends TOTAL_EVENTS synthetic events (100-event batches) to a
#      node on the embedded store and to a node on ClickHouse: ingest rate, ack latency,
#      memory of each process, disk;
#   2. a generated customer base (ACCOUNTS accounts, one year: about 10 M events at 2,000)
#      is loaded into each store the same way (records by `import`, events by the tracking
#      API, GEN_CONNECTIONS connections), then the full metrics export is timed on each
#      (second of two runs; the first brings the embedded rollups up to date) and the two
#      exports compared cell by cell.
# Usage: [ACCOUNTS=2000] [GEN_CONNECTIONS=32] bench/clickhouse.sh [TOTAL_EVENTS=10000000]
set -Eeuo pipefail
cd "$(dirname "$0")/.."
TOTAL_EVENTS=${1:-10000000}
ACCOUNTS=${ACCOUNTS:-2000}
GEN_CONNECTIONS=${GEN_CONNECTIONS:-32}
END_DATE=2026-11-20
CONNECTIONS=${CONNECTIONS:-32}
CLICKHOUSE=${CLICKHOUSE:-/usr/sbin/clickhouse-server}
[ -x "$CLICKHOUSE" ] || { echo "no $CLICKHOUSE: apt-get install clickhouse-server (scripts/test.sh does)" >&2; exit 1; }
cargo build --release --locked --bin bellwether --example loadgen >&2
BIN=target/release/bellwether
LOADGEN=target/release/examples/loadgen
. bench/lib.sh
trap 'echo "bench/clickhouse.sh failed at line $LINENO; the logs:" >&2; tail -n 20 "$work"/*.err >&2 2>/dev/null || true' ERR
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# ClickHouse, configured as the tests configure it.
ch="$work/clickhouse"; mkdir -p "$ch"/{data,tmp,user_files,log}
http_port=$(free_port); tcp_port=$(free_port)
cat > "$ch/users.xml" <<'XML'
<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
XML
cat > "$ch/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$ch/log/server.log</log><errorlog>$ch/log/error.log</errorlog><console>0</console></logger>
  <http_port>$http_port</http_port><tcp_port>$tcp_port</tcp_port><listen_host>127.0.0.1</listen_host>
  <path>$ch/data/</path><tmp_path>$ch/tmp/</tmp_path><user_files_path>$ch/user_files/</user_files_path>
  <users_config>$ch/users.xml</users_config><default_profile>default</default_profile><default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size><max_concurrent_queries>100</max_concurrent_queries>
</yandex>
XML
"$CLICKHOUSE" --config-file="$ch/config.xml" > /dev/null 2>&1 &
CH_PID=$!; pids+=("$CH_PID"); disown "$CH_PID"
for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$http_port/ping" > /dev/null && break; sleep 0.1; done

echo "machine: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%dT%H:%MZ), clickhouse $(curl -s "http://127.0.0.1:$http_port/?query=SELECT%20version()")"
run() { # run NAME [--store URL]: fills a fresh node with TOTAL_EVENTS events; sets RESULT, RSS, HWM
    local name=$1; shift
    BELLWETHER_CONFIG=$UNLIMITED BELLWETHER_WRITE_KEYS=bench-key BELLWETHER_LOG=warn start "$name" "$BIN" serve --data-dir "$work/$name" --listen 127.0.0.1:0 "$@"
    echo "$name: sending $TOTAL_EVENTS events..." >&2
    RESULT=$($LOADGEN --url "$URL" --batch 100 --connections "$CONNECTIONS" --seconds 100000 --total-events "$TOTAL_EVENTS")
    RSS=$(rss_mb "$PID"); HWM=$(hwm_mb "$PID")
    kill -9 "$PID"
}
run embedded
emb=$RESULT; emb_rss=$RSS; emb_hwm=$HWM; emb_disk=$(du -sm "$work/embedded" | cut -f1)
run clickhouse --store "clickhouse://127.0.0.1:$http_port/bench"
chn=$RESULT; chn_rss=$RSS; chn_hwm=$HWM
ch_rss=$(rss_mb "$CH_PID"); ch_hwm=$(hwm_mb "$CH_PID")
ch_disk=$(du -sm "$ch/data" | cut -f1)
rows=$(curl -s "http://127.0.0.1:$http_port/" --data-binary "SELECT count() FROM bench.events")
activity=$(curl -s "http://127.0.0.1:$http_port/" --data-binary "SELECT count() FROM bench.activity")

echo
echo "| $TOTAL_EVENTS events, 100-event batches, $CONNECTIONS connections | embedded | ClickHouse |"
echo "|---|---|---|"
echo "| events/s | $(field "$emb" events_per_sec) | $(field "$chn" events_per_sec) |"
echo "| p50 / p99 / max ack ms | $(field "$emb" p50_ms) / $(field "$emb" p99_ms) / $(field "$emb" max_ms) | $(field "$chn" p50_ms) / $(field "$chn" p99_ms) / $(field "$chn" max_ms) |"
echo "| errors | $(field "$emb" errors) | $(field "$chn" errors) |"
echo "| bellwether RSS now / peak MB | $emb_rss / $emb_hwm | $chn_rss / $chn_hwm |"
echo "| clickhouse-server RSS now / peak MB | - | $ch_rss / $ch_hwm |"
echo "| disk MB | $emb_disk | $ch_disk (events rows $rows, activity rows $activity, before merges) |"

# 2. A generated customer base on both stores, and the full export.
echo "generating $ACCOUNTS accounts, one year to $END_DATE..." >&2
"$BIN" generate --out "$work/gen" --accounts "$ACCOUNTS" --years 1 --end-date "$END_DATE" --seed 42 >&2
gen_config="$work/gen/bellwether.toml"
# The generated config (exchange rates) with the abuse limits lifted (see bench/lib.sh).
cat "$UNLIMITED" >> "$gen_config"
load() { # load NAME [--store URL]: imports the records, sends the events; sets LOAD, HWM
    local name=$1; shift
    for kind in csms accounts subscriptions tickets survey_responses suggestions kpis; do
        "$BIN" --config "$gen_config" --data-dir "$work/$name" "$@" import "$kind" "$work/gen/$kind.csv" > /dev/null 2> "$work/$name.import.err"
    done
    BELLWETHER_CONFIG=$gen_config BELLWETHER_WRITE_KEYS=bench-key BELLWETHER_LOG=warn start "$name" "$BIN" serve --data-dir "$work/$name" --listen 127.0.0.1:0 "$@"
    echo "$name: sending the generated events..." >&2
    LOAD=$($LOADGEN --url "$URL" --connections "$GEN_CONNECTIONS" --file "$work/gen/events.ndjson.gz" 2> "$work/$name.loadgen.err")
    HWM=$(hwm_mb "$PID")
    kill -TERM "$PID"; while kill -0 "$PID" 2>/dev/null; do sleep 0.1; done
}
export_time() { # export_time NAME OUT [--store URL]: the second of two full exports; sets SECONDS_RSS ("s MB")
    local name=$1 out=$2; shift 2
    for _ in 1 2; do
        /usr/bin/time -o "$work/$name.time" -f "%e %M" "$BIN" --config "$gen_config" --data-dir "$work/$name" "$@" metrics --as-of "$END_DATE" --format json > "$out" 2> "$work/$name.export.err"
        SECONDS_RSS=$(awk '{printf "%s %.0f", $1, $2/1024}' "$work/$name.time")
    done
}
load gen_embedded
emb_load=$LOAD; emb_load_hwm=$HWM
export_time gen_embedded "$work/embedded.json"; emb_export=$SECONDS_RSS
load gen_clickhouse --store "clickhouse://127.0.0.1:$http_port/bench_gen"
chn_load=$LOAD; chn_load_hwm=$HWM
export_time gen_clickhouse "$work/clickhouse.json" --store "clickhouse://127.0.0.1:$http_port/bench_gen"; chn_export=$SECONDS_RSS
same=$(python3 - "$work/embedded.json" "$work/clickhouse.json" <<'EOF2'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
cells = sum(len(r) for r in a)
differ = sum(1 for x, y in zip(a, b) for k in x if x[k] != y.get(k)) + abs(len(a) - len(b)) * len(a[0] if a else {})
print(f"{len(a)} accounts, {cells} cells, {differ} differ")
EOF2
)
echo
echo "| generated base ($ACCOUNTS accounts, 1 year) | embedded | ClickHouse |"
echo "|---|---|---|"
echo "| events loaded | $(field "$emb_load" events) | $(field "$chn_load" events) |"
echo "| ingest events/s ($GEN_CONNECTIONS connections, generated batches) | $(field "$emb_load" events_per_sec) | $(field "$chn_load" events_per_sec) |"
echo "| node peak RSS while loading MB | $emb_load_hwm | $chn_load_hwm |"
echo "| full export \`metrics --format json\`: seconds, peak RSS MB | $emb_export | $chn_export |"
echo "| exports compared | $same | |"

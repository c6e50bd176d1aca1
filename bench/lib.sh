# Set-up and shell helpers shared by the benchmark scripts (sourced from the repo root):
# builds the binary unless BIN is given (scripts that also need the examples build them all
# first and set BIN), makes $work (removed on exit, with every pid in
# pids killed), copies the binary to $B, and names the data dir $DATA.
if [ -z "${BIN:-}" ]; then
    cargo build --release --locked --bin bellwether >&2
    BIN=target/release/bellwether
fi
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
# A private copy: a rebuild during the run cannot change the binary under test.
cp "$BIN" "$work/bellwether"
B=$work/bellwether
DATA=$work/data
# Capacity benchmarks measure the server, not its abuse limits (issue 28: per-source and
# per-address rate limits and connection caps are on by default); this config lifts them.
UNLIMITED=$work/unlimited.toml
cat > "$UNLIMITED" <<'TOML'
[ingest]
rate_limit_per_second = 0
[server]
requests_per_second_per_address = 0
max_connections = 1024
max_connections_per_address = 1024
TOML

stop() { kill -TERM "$1"; for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done; kill -9 "$1" 2>/dev/null || true; }
hwm_mb() { awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }
rss_mb() { awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$1/status"; }
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])['$2'])" "$1"; }
start() { # start NAME CMD...: runs CMD, waits for its "listening on URL" line, sets URL and PID
    local name=$1; shift
    "$@" > "$work/$name.out" 2> "$work/$name.err" &
    PID=$!; pids+=("$PID"); disown "$PID"
    for _ in $(seq 1 200); do
        URL=$(grep -o 'http://[0-9.:]*' "$work/$name.out" 2>/dev/null | head -1 || true)
        [ -n "$URL" ] && return 0
        sleep 0.05
    done
    echo "$name did not start" >&2; cat "$work/$name.err" >&2; exit 1
}
sql() { python3 -c 'import sqlite3, sys; c = sqlite3.connect(f"file:{sys.argv[1]}/bellwether.db?mode=ro", uri=True); c.execute(f"ATTACH DATABASE \"file:{sys.argv[1]}/rollups.db?mode=ro\" AS rollups"); print("|".join(str(v) for v in c.execute(sys.argv[2]).fetchone()))' "$DATA" "$1"; }
timed() { # timed OUT CMD...: runs CMD with stdout to OUT; prints "wall_seconds peak_rss_mb" (RSS from /usr/bin/time -v when there is one)
    local out=$1; shift
    if [ -x /usr/bin/time ]; then
        local started ended
        started=$(date +%s.%N)
        /usr/bin/time -v -o "$out.time" "$@" > "$out" 2> "$out.err"
        ended=$(date +%s.%N)
        python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.3f}", end=" ")' "$started" "$ended"
        awk -F': ' '/Maximum resident set size/ {printf "%.0f\n", $2/1024}' "$out.time"
    else
        python3 -c '
import resource, subprocess, sys, time
with open(sys.argv[1], "wb") as out, open(sys.argv[1] + ".err", "wb") as err:
    started = time.monotonic()
    subprocess.run(sys.argv[2:], stdout=out, stderr=err, check=True)
    wall = time.monotonic() - started
print(f"{wall:.3f} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f}")' "$out" "$@"
    fi
}
median() { python3 -c 'import statistics, sys; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.3f}")' "$@"; }

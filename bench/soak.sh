#!/usr/bin/env bash
# Soak (issue 12): sustained ingest at 70% of the measured batched maximum for DURATION
# seconds (default 600) into a running demo, while a signed-in user loads dashboard pages
# and an API client reads the API once a second. Prints, and asserts nothing:
#   ingest: events/s sent, errors (must be 0), p50/p99/max acknowledgement latency;
#   dashboard and API: requests, errors (must be 0), p50/p99 latency;
#   server RSS every 30 s.
# Usage: bench/soak.sh [DURATION_SECONDS=600] [ACCOUNTS=100]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-600}
ACCOUNTS=${2:-100}
cargo build --release --locked --bin bellwether --example loadgen >&2
source bench/lib.sh
LOADGEN=target/release/examples/loadgen

echo "== demo with $ACCOUNTS accounts (load, then serve)" >&2
BELLWETHER_CONFIG=$UNLIMITED "$B" --data-dir "$DATA" demo --accounts "$ACCOUNTS" --listen 127.0.0.1:0 > "$work/demo.out" 2> "$work/demo.err" &
PID=$!; pids+=("$PID")
for _ in $(seq 1 1200); do grep -q 'listening on' "$work/demo.out" 2>/dev/null && break; sleep 0.25; done
URL=$(grep -o 'http://[0-9.:]*' "$work/demo.out" | head -1)
[ -n "$URL" ] || { cat "$work/demo.err" >&2; exit 1; }
TOKEN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["api_token"])' "$DATA/demo.json")
LOGIN=$(python3 -c 'import json,sys; l=json.load(open(sys.argv[1]))["logins"][0]; print(l[0] + ":" + l[1])' "$DATA/demo.json")
KEY=demo-write-key

echo "== maximum batched rate (10 s, closed loop)" >&2
MAX=$("$LOADGEN" --url "$URL" --key "$KEY" --batch 100 --connections 32 --seconds 10 | python3 -c 'import json,sys; print(json.load(sys.stdin)["events_per_sec"])')
RATE=$(python3 -c "print(round(float('$MAX') * 0.7))")
echo "max $MAX events/s; soaking at $RATE events/s for $DURATION s" >&2

"$LOADGEN" --url "$URL" --key "$KEY" --batch 100 --connections 32 --seconds "$DURATION" --rate "$RATE" > "$work/ingest.json" &
LOAD=$!; pids+=("$LOAD")

# The reader: a signed-in dashboard user and an API client, one request a second each.
python3 - "$URL" "$LOGIN" "$TOKEN" "$DURATION" "$PID" > "$work/readers.json" <<'EOF' &
import http.cookiejar, json, statistics, sys, time, urllib.error, urllib.parse, urllib.request
url, login, token, duration, pid = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]
user, password = login.split(":", 1)
jar = http.cookiejar.CookieJar()
browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
browser.open(url + "/login", data=urllib.parse.urlencode({"username": user, "password": password}).encode()).read()
pages = ["/portfolio", "/segments", "/inbox", "/listening", "/indicators", "/outcomes"]
apis = ["/api/v1/health", "/api/v1/segments", "/api/v1/tasks", "/api/v1/alerts"]
results = {"dashboard": [], "api": []}
errors = {"dashboard": 0, "api": 0}
rss = []
started = time.monotonic()
i = 0
while time.monotonic() - started < duration:
    tick = time.monotonic()
    for kind, path, opener, headers in (("dashboard", pages[i % len(pages)], browser, {}), ("api", apis[i % len(apis)], urllib.request.build_opener(), {"Authorization": "Bearer " + token})):
        t = time.monotonic()
        try:
            with opener.open(urllib.request.Request(url + path, headers=headers), timeout=60) as r:
                r.read()
                ok = r.status == 200 and (kind == "api" or "/login" not in r.url)
        except (urllib.error.URLError, OSError):
            ok = False
        results[kind].append((time.monotonic() - t) * 1000)
        errors[kind] += 0 if ok else 1
    if i % 30 == 0:
        with open(f"/proc/{pid}/status") as status:
            rss.append([round(time.monotonic() - started), next(int(l.split()[1]) // 1024 for l in status if l.startswith("VmRSS"))])
    i += 1
    time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
def q(values, p):
    values = sorted(values)
    return round(values[min(len(values) - 1, int(p * len(values)))], 1) if values else None
print(json.dumps({kind: {"requests": len(v), "errors": errors[kind], "p50_ms": q(v, 0.5), "p99_ms": q(v, 0.99)} for kind, v in results.items()} | {"rss_mb": rss}))
EOF
READERS=$!; pids+=("$READERS")
wait "$LOAD"
wait "$READERS"
echo "== results ($DURATION s at 70% of $MAX events/s, demo of $ACCOUNTS accounts)"
echo "ingest: $(cat "$work/ingest.json")"
echo "readers: $(cat "$work/readers.json")"
echo "server errors logged: $(grep -c ' ERROR ' "$work/demo.err" || true)"

#!/usr/bin/env bash
# Hostile-traffic probes (issue 28). Prints what each probe saw; asserts nothing. Starts a
# release `bellwether serve` on loopback with its defaults (a fresh data dir, one user) and runs
# bench/hostile.py against it: 64 parallel sign-ins x 4 with other names from other loopback
# addresses (peak and settled RSS from /proc, /v1/track latency meanwhile), the right password
# during another address's attack, a partial request head, an idle keep-alive connection, a
# stalled body, 2,000 connections from one address, 1,000 survey lookups from one address.
# Usage: [BIN=path/to/bellwether (skips the build)] [WAIT=40] bench/hostile.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
echo "machine: $(nproc) cores, $(uname -r), $(date -u +%Y-%m-%dT%H:%MZ); HEAD $(git rev-parse --short HEAD 2>/dev/null || echo "?")"
password=hostile-bench-password
echo "$password" | "$B" --data-dir "$DATA" user create admin --role admin --password-stdin > /dev/null 2>&1
BELLWETHER_WRITE_KEYS=bench-key BELLWETHER_LOG=error start bellwether "$B" --data-dir "$DATA" serve --listen 127.0.0.1:0
python3 bench/hostile.py --url "$URL" --pid "$PID" --write-key bench-key --user admin --password "$password" --wait "${WAIT:-40}"

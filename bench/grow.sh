#!/usr/bin/env bash
# A pool growing: one memory-store server, KEYS keys added by requests of
# 10,000 (`POST /v1/pools/grow/keys {"count": 10000}`), one after the
# other. Prints the median request and the slowest five with the pool's
# size after each: a request that copied or rehashed every key before it
# would stand out at the sizes where a table doubles.
#
#   bench/grow.sh                 # 3,000,000 keys, about 1 minute
#   KEYS=10000000 bench/grow.sh
#
# Needs curl and python3. Loopback only; only the server started here is
# stopped, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${KEYS:-3000000}
BIN=target/release/keyward
. bench/lib.sh
need curl python3
cargo build --release --locked -q
start_keyward memory:
python3 - "$PORT" "$KEYS" <<'PY'
import http.client, json, statistics, sys, time
port, keys = int(sys.argv[1]), int(sys.argv[2])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
times = []
for i in range(keys // 10000):
    started = time.perf_counter()
    conn.request("POST", "/v1/pools/grow/keys", body=json.dumps({"count": 10000}),
                 headers={"content-type": "application/json"})
    reply = conn.getresponse()
    reply.read()
    if reply.status != 201:
        sys.exit(f"add {i + 1}: HTTP {reply.status}")
    times.append(((time.perf_counter() - started) * 1000, (i + 1) * 10000))
print(f"{len(times)} adds of 10,000 keys; median {statistics.median(t for t, _ in times):.1f} ms")
print("slowest:", ", ".join(f"{t:.0f} ms (to {n:,} keys)" for t, n in sorted(times, reverse=True)[:5]))
PY
echo "RSS: $(awk '/^VmRSS:/ {print int($2 / 1024)}' "/proc/$PID/status") MiB"

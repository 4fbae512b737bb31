#!/usr/bin/env bash
# Issue 4 benchmark: lease+release throughput and p99 through the Redis
# backend at 64 connections (wrk), next to redis-benchmark running a trivial
# EVALSHA on the same private Redis in the same run; prints the ratio.
# Needs wrk, redis-server, redis-cli, redis-benchmark (Debian packages).
# Loopback only, a private redis-server on a free port (never 6379); every
# run is bounded; only the processes started here are stopped, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
BIN=target/release/keyward
. bench/lib.sh
need wrk redis-server redis-cli redis-benchmark
cargo build --release --locked -q
start_redis
start_keyward "redis://127.0.0.1:$RPORT/0"
KPORT=$PORT
curl -sf -XPOST "127.0.0.1:$KPORT/v1/pools/bench/keys" -d '{"count":10000}' >/dev/null

echo "# keyward on Redis: lease+release, wrk -t2 -c$CONNECTIONS -d$DURATION"
wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/lease_release.lua "http://127.0.0.1:$KPORT" -- bench >"$work/wrk.txt"
cat "$work/wrk.txt"
K_RPS=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
K_P99=$(awk '$1 == "99%" {print $2}' "$work/wrk.txt")

echo
echo "# redis-benchmark: EVALSHA of 'return 1' on the same Redis, -c$CONNECTIONS"
SHA=$(redis-cli -p "$RPORT" script load "return 1")
# As many requests as keyward served, at least 200k, so both runs are
# of similar length.
N=$(python3 -c "print(max(200000, int(float('$K_RPS') * 10)))")
redis-benchmark -p "$RPORT" -c "$CONNECTIONS" -n "$N" --csv evalsha "$SHA" 0 >"$work/rb.csv"
cat "$work/rb.csv"
R_RPS=$(tail -1 "$work/rb.csv" | awk -F'","' '{print $2}')
R_P99=$(tail -1 "$work/rb.csv" | awk -F'","' '{print $7}')

echo
echo "| | requests/s | p99 |"
echo "|---|---|---|"
echo "| keyward lease+release (each request one EVALSHA) | $K_RPS | $K_P99 |"
echo "| redis-benchmark EVALSHA 'return 1' | $R_RPS | ${R_P99} ms |"
python3 -c "print(f'ratio keyward/redis-benchmark: {float(\"$K_RPS\")/float(\"$R_RPS\"):.2f} (target >= 0.50)')"

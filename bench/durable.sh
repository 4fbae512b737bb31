#!/usr/bin/env bash
# Issue 3 benchmark: durable (sqlite:) lease+release throughput at 1, 8 and
# 64 connections next to the memory store in the same run. (Start-up time
# and database bytes per key: bench/startup.sh.)
# Needs wrk (Debian package). Loopback only; every run is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
BIN=target/release/keyward
. bench/lib.sh
cargo build --release --locked -q
need wrk
rps() { awk '/Requests\/sec/ {print int($2)}'; }

echo "| connections | memory lease+release req/s | sqlite lease+release req/s | sqlite/memory |"
echo "|---|---|---|---|"
start_keyward memory:; MEM=$PORT
start_keyward "sqlite:$work/bench.db"; SQL=$PORT
for port in $MEM $SQL; do
  curl -sf -XPOST "127.0.0.1:$port/v1/pools/bench/keys" -d '{"count":10000}' >/dev/null
done
for c in 1 8 64; do
  t=$(( c < 2 ? 1 : 2 ))
  m=$(wrk -t$t -c$c -d$DURATION -s bench/lease_release.lua "http://127.0.0.1:$MEM" -- bench | rps)
  s=$(wrk -t$t -c$c -d$DURATION -s bench/lease_release.lua "http://127.0.0.1:$SQL" -- bench | rps)
  echo "| $c | $m | $s | $(python3 -c "print(f'{$s/$m:.2f}')") |"
done


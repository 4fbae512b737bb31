#!/usr/bin/env bash
# Issue 3 benchmark: durable (sqlite:) lease+release throughput at 1, 8 and
# 64 connections next to the memory store in the same run; start-up time
# with 1,000,000 keys and 1,000,000 issued tokens; DB bytes per key.
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

echo
echo "Start-up with 1,000,000 keys and 1,000,000 issued tokens:"
db="$work/big.db"
start_keyward "sqlite:$db"; BIG=$PORT; BIGPID=$PID
for _ in $(seq 100); do curl -sf -XPOST "127.0.0.1:$BIG/v1/pools/big/keys" -d '{"count":10000}' >/dev/null; done
curl -sf -XPUT "127.0.0.1:$BIG/v1/keyspaces/big" -d '{"alphabet":"abcdefghijklmnopqrstuvwxyz","length":6}' >/dev/null
cat > "$work/issue.lua" <<'LUA'
local n = 0
function request() n = n + 1; if n > 1000000 then wrk.thread:stop() end; return wrk.format("POST", "/v1/keyspaces/big/tokens") end
LUA
# Bounded: stops when the keyspace reports 1,000,000 issued, or after 300 s.
for _ in $(seq 30); do
  wrk -t2 -c64 -d10s -s "$work/issue.lua" "http://127.0.0.1:$BIG" >/dev/null
  issued=$(curl -sf "127.0.0.1:$BIG/v1/keyspaces/big" | python3 -c 'import json,sys; print(json.load(sys.stdin)["issued"])')
  [ "$issued" -ge 1000000 ] && break
done
kill "$BIGPID"; wait "$BIGPID" 2>/dev/null || true
keys=$(sqlite3 "$db" "select count(*) from keys" 2>/dev/null || echo "?")
bytes=$(( $(stat -c %s "$db") + $(stat -c %s "$db-wal" 2>/dev/null || echo 0) ))
PORT=$(free_port)
t0=$(date +%s.%N)
"$BIN" serve --listen 127.0.0.1:$PORT --store "sqlite:$db" >"$work/log.big" 2>&1 &
PID=$!; pids+=("$PID")
for _ in $(seq 600); do curl -sf "127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.02; done
t1=$(date +%s.%N)
echo "- keys in DB: $keys; issued tokens: $issued"
echo "- start-up to ready: $(python3 -c "print(f'{$t1-$t0:.2f}')") s"
echo "- DB size: $bytes bytes = $(python3 -c "print(f'{$bytes/1000000:.1f}')") bytes per key (keys dominate; tokens store only a counter)"

#!/usr/bin/env bash
# Start-up of a SQLite store holding 1,000,000 pool keys and 1,000,000
# issued tokens with the Part 2 state in place: half the keys carry one
# shared label set, 1,000 keys are cooling, the tokens were issued in bulk
# under 10 batches, 1,000 of them activated on a machine and 100 revoked.
# The server is stopped and started ROUNDS times; prints the time from
# start to `/readyz` 200 of each start and their median, the resident
# memory after start, and the database's bytes per key.
#
#   bench/startup.sh                # about 2 minutes
#   KEYS=100000 TOKENS=100000 ROUNDS=1 bench/startup.sh   # a quick look
#
# Needs curl, jq, python3. Loopback only; every wait is bounded; only
# processes started here are stopped, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${KEYS:-1000000}
TOKENS=${TOKENS:-1000000}
ROUNDS=${ROUNDS:-3}
BIN=target/release/keyward
. bench/lib.sh
need curl jq python3
cargo build --release --locked -q
db="$work/big.db"
start_keyward "sqlite:$db"
url="127.0.0.1:$PORT"
post() { curl -fsS -XPOST "$url$1" -H 'content-type: application/json' -d "$2"; }

# Keys: 10,000 per request, every other request with the shared labels.
for i in $(seq $((KEYS / 10000))); do
  if [ $((i % 2)) = 0 ]; then body='{"count":10000,"labels":{"provider":"example","tier":"paid"}}'; else body='{"count":10000}'; fi
  post /v1/pools/big/keys "$body" >/dev/null
done
# 1,000 keys cooling for an hour (leased, then reported rate limited).
cool_keys big 1000
# Tokens: 10,000 per request under 10 batches; the first 1,000 of the
# last request activated with a fingerprint, 100 of those revoked.
curl -fsS -XPUT "$url/v1/keyspaces/big" -d '{"alphabet":"crockford","length":12,"format":{"group":4,"prefix":"BIG-","check":true},"max_activations":2}' >/dev/null
for i in $(seq $((TOKENS / 10000))); do
  post /v1/keyspaces/big/tokens "{\"count\":10000,\"batch\":\"b$((i % 10))\"}" >"$work/tokens.json"
done
jq -r '.tokens[:1000][]' "$work/tokens.json" >"$work/marked.txt"
n=0
while read -r token; do
  post "/v1/keyspaces/big/tokens/$token/activate" '{"fingerprint":"host-1"}' >/dev/null
  n=$((n + 1))
  if [ $n -le 100 ]; then post "/v1/keyspaces/big/tokens/$token/revoke" '{"reason":"refund"}' >/dev/null; fi
done <"$work/marked.txt"
pool=$(curl -fsS "$url/v1/pools/big" | jq -c '{total, cooling}')
ks=$(curl -fsS "$url/v1/keyspaces/big" | jq -c '{issued, activated, revoked}')
kill "$PID"; wait "$PID" 2>/dev/null || true
bytes=$(( $(stat -c %s "$db") + $(stat -c %s "$db-wal" 2>/dev/null || echo 0) ))

times=()
for _ in $(seq "$ROUNDS"); do
  port=$(free_port)
  t0=$(date +%s.%N)
  "$BIN" serve --listen "127.0.0.1:$port" --store "sqlite:$db" >"$work/start.log" 2>&1 &
  pid=$!; pids+=("$pid")
  for _ in $(seq 1500); do curl -sf "127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.02; done
  t1=$(date +%s.%N)
  curl -sf "127.0.0.1:$port/readyz" >/dev/null || { echo "not ready in 30 s" >&2; cat "$work/start.log" >&2; exit 1; }
  times+=("$(python3 -c "print(f'{$t1 - $t0:.2f}')")")
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  kill "$pid"; wait "$pid" 2>/dev/null || true
done
median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
echo "pool: $pool; keyspace: $ks"
echo "start-up to /readyz 200: ${times[*]} s (median $median s)"
echo "resident memory after start: $((rss / 1024)) MiB"
echo "database: $bytes bytes, $(python3 -c "print(f'{$bytes / $KEYS:.1f}')") bytes per key"

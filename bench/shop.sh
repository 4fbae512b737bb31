#!/usr/bin/env bash
# Shop keyspaces, measured on one server (memory store by default):
#   - status of a readable code (crockford^12, groups of 4, prefix, check
#     character) against a bare token of the same space, `keyward bench
#     --workload status`, ROUNDS interleaved rounds, medians;
#   - bulk issue of 10,000 tokens per request, JSON against
#     `Accept: text/csv`, on the readable keyspace: REQUESTS requests of
#     each, interleaved, median tokens per second (curl's time_total).
#
#   bench/shop.sh                         # target/release/keyward, memory
#   STORE=sqlite ROUNDS=7 bench/shop.sh
#
# Needs curl and python3. Loopback only; a private server on a free port,
# stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/keyward}
ROUNDS=${ROUNDS:-5}
REQUESTS=${REQUESTS:-9}
DURATION=${DURATION:-3s}
CONNECTIONS=${CONNECTIONS:-32}
STORE=${STORE:-memory}
source bench/lib.sh
need curl python3
case "$STORE" in
  memory) url="memory:" ;;
  sqlite) url="sqlite:$work/shop.db" ;;
  *) echo "STORE is memory or sqlite" >&2; exit 1 ;;
esac
start_keyward "$url"
base="http://127.0.0.1:$PORT"
curl -fsS -XPUT "$base/v1/keyspaces/bare" -d '{"alphabet": "crockford", "length": 12}' >/dev/null
curl -fsS -XPUT "$base/v1/keyspaces/readable" \
  -d '{"alphabet": "crockford", "length": 12, "format": {"group": 4, "prefix": "LIC-", "check": true}}' >/dev/null

median() { sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
rate() { "$BIN" bench --url "$base" --json --workload status --keyspace "$1" \
  -c "$CONNECTIONS" -d "$DURATION" --tokens 1000 | python3 -c 'import json, sys; print(round(json.load(sys.stdin)["requests_per_sec"]))'; }

: >"$work/bare" ; : >"$work/readable"
for round in $(seq "$ROUNDS"); do
  for ks in bare readable; do
    r=$(rate "$ks"); echo "$r" >>"$work/$ks"
    echo "round $round status $ks: $r req/s"
  done
done
b=$(median <"$work/bare"); f=$(median <"$work/readable")
echo "status, median of $ROUNDS: bare $b req/s, readable $f req/s, ratio $(python3 -c "print(round($f / $b, 3))")"

: >"$work/json" ; : >"$work/csv"
for i in $(seq "$REQUESTS"); do
  for kind in json csv; do
    accept=application/json; [ "$kind" = csv ] && accept=text/csv
    t=$(curl -fsS -o /dev/null -w '%{time_total}' -XPOST "$base/v1/keyspaces/readable/tokens" \
      -H "Accept: $accept" -d '{"count": 10000, "batch": "bench"}')
    python3 -c "print(round(10000 / $t))" >>"$work/$kind"
  done
done
j=$(median <"$work/json"); c=$(median <"$work/csv")
echo "bulk issue of 10,000, median of $REQUESTS requests: JSON $j tokens/s, CSV $c tokens/s, ratio $(python3 -c "print(round($c / $j, 3))")"

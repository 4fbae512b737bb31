#!/usr/bin/env bash
# A/B of lease+release between two keyward binaries, interleaved: for each
# round and store, BASE then NEW each serve a fresh store, and NEW's
# `keyward bench` loads it (lease-release, a 1000-key pool). Prints every
# run and the medians with the NEW/BASE ratio: on a shared machine compare
# the ratio, not the absolute figures.
#
#   bench/ab.sh /path/to/keyward-before target/release/keyward
#   ROUNDS=3 DURATION=2s STORES="memory redis" bench/ab.sh OLD NEW
#
# BASE_ARGS and NEW_ARGS add `keyward bench` flags to each side, so one
# binary can be compared with itself, e.g. the cost of idempotency keys:
#
#   NEW_ARGS=--idempotency-keys bench/ab.sh target/release/keyward target/release/keyward
#
# Needs curl and python3; redis-server and redis-cli for the redis store.
# Loopback only; private servers on free ports; only processes started
# here are stopped, by PID.
set -euo pipefail
BASE=${1:?usage: bench/ab.sh BASE_BINARY NEW_BINARY}
NEW=${2:?usage: bench/ab.sh BASE_BINARY NEW_BINARY}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-3s}
CONNECTIONS=${CONNECTIONS:-64}
STORES=${STORES:-"memory sqlite redis"}
BASE_ARGS=${BASE_ARGS:-}
NEW_ARGS=${NEW_ARGS:-}
work=$(mktemp -d)
results="$work/results.txt"
: >"$results"
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
if [[ " $STORES " == *" redis "* ]]; then
  RPORT=$(free_port)
  redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 1 50); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
for round in $(seq 1 "$ROUNDS"); do
  for store in $STORES; do
    for side in base new; do
      bin=$BASE
      args=$BASE_ARGS
      if [ "$side" = new ]; then bin=$NEW; args=$NEW_ARGS; fi
      port=$(free_port)
      case $store in
        memory) spec=memory: ;;
        sqlite) rm -f "$work"/db*; spec="sqlite:$work/db" ;;
        redis) redis-cli -p "$RPORT" flushall >/dev/null; spec="redis://127.0.0.1:$RPORT/0" ;;
      esac
      "$bin" serve --listen "127.0.0.1:$port" --store "$spec" >"$work/server.log" 2>&1 &
      server=$!
      for _ in $(seq 1 100); do curl -fs "127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
      rate=$("$NEW" bench --url "http://127.0.0.1:$port" --json --workload lease-release --pool ab \
        --keys 1000 -c "$CONNECTIONS" -d "$DURATION" $args | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(int(d["requests_per_sec"]) if d["status_errors"] == 0 and d["transport_errors"] == 0 else -1)')
      kill "$server"
      wait "$server" 2>/dev/null || true
      echo "$round $store $side $rate" | tee -a "$results"
    done
  done
done
python3 - "$results" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    _, store, side, rate = line.split()
    runs[(store, side)].append(int(rate))
for store in dict.fromkeys(s for s, _ in runs):
    base, new = runs[(store, "base")], runs[(store, "new")]
    b, n = statistics.median(base), statistics.median(new)
    print(f"{store}: base {b:.0f} req/s {base}, new {n:.0f} req/s {new}, new/base {n / b:.2f}")
PY

#!/usr/bin/env bash
# Scale-out on one Redis: 1, 2 and 4 keyward processes share one private
# redis-server; one `keyward bench` per process (lease+release of its own
# pool, CONNECTIONS each) runs at the same time; prints each process's
# req/s, the sum, and the CPU redis-server used (its share of one core,
# from /proc) over the timed part.
#
#   bench/scale.sh                        # PROCS="1 2 4", 32 connections, 5 s
#   PROCS="1 2" DURATION=10s bench/scale.sh
#
# On a machine where everything shares few cores the sum is bounded by
# the cores, not by Redis: read Redis's share to see how close it is to
# one core. Needs curl, python3, redis-server and redis-cli. Loopback only;
# private servers on free ports, stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/keyward}
PROCS=${PROCS:-"1 2 4"}
DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-32}
KEYS=${KEYS:-1000}
source bench/lib.sh
need curl python3 redis-server redis-cli
start_redis
RPID=$(pgrep -f "redis-server 127.0.0.1:$RPORT" | head -1)
ports=()
for _ in 1 2 3 4; do
  start_keyward "redis://127.0.0.1:$RPORT/0"
  ports+=("$PORT")
done
ticks() { awk '{print $14 + $15}' "/proc/$RPID/stat"; }
hz=$(getconf CLK_TCK)
secs=${DURATION%s}
for n in $PROCS; do
  # Prepare each process's pool untimed.
  for i in $(seq 0 $((n - 1))); do
    "$BIN" bench --url "http://127.0.0.1:${ports[$i]}" --workload lease-release --pool "scale$i" \
      --keys "$KEYS" -c 2 -d 200ms --json >/dev/null
  done
  t0=$(ticks)
  for i in $(seq 0 $((n - 1))); do
    "$BIN" bench --url "http://127.0.0.1:${ports[$i]}" --workload lease-release --pool "scale$i" \
      --keys "$KEYS" -c "$CONNECTIONS" -d "$DURATION" --json >"$work/scale.$n.$i.json" &
  done
  wait_for=$(jobs -p | tail -n "$n")
  for p in $wait_for; do wait "$p"; done
  t1=$(ticks)
  python3 - "$work" "$n" "$t0" "$t1" "$hz" "$secs" <<'PY'
import json, sys
work, n, t0, t1, hz, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
rates = [json.load(open(f"{work}/scale.{n}.{i}.json"))["requests_per_sec"] for i in range(n)]
share = (t1 - t0) / hz / secs
print(f"{n} process(es): " + " + ".join(f"{r:,.0f}" for r in rates)
      + f" = {sum(rates):,.0f} req/s; redis-server used {share:.2f} of a core")
PY
done

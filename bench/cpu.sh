#!/usr/bin/env bash
# Where the CPU of one request goes: for each store, GET /healthz and
# lease+release on the Part 2 pool (1,000 keys in two label sets, 100
# cooling) at 32 connections, by wrk and by `keyward bench` (without and
# with an Idempotency-Key on every request). For each figure: req/s, and
# the CPU microseconds per request of keyward, of redis-server (redis
# store) and of the load tool (from /proc and the tool's own rusage), the
# cores left idle, and Redis's `evalsha` microseconds per request.
#
# On a machine where the load tool, keyward and Redis share the cores,
# req/s is about cores / (sum of CPU per request) while nothing idles; so
# the sums show what bounds each ratio of the throughput targets, and
# `bound` is the ratio to the memory store's same figure that the CPU per
# request alone allows (memory's sum / this sum); `x healthz` is against
# the same server's healthz by wrk.
#
#   bench/cpu.sh                             # 3 rounds, 5 s per figure
#   STORES=redis ROUNDS=1 DURATION=3 bench/cpu.sh
#
# Each figure's row is the round with the median req/s. Needs wrk, curl,
# python3; redis-server and redis-cli for the redis store (skipped if
# missing). Loopback only; private servers on free ports, stopped by PID
# on exit; every run is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
STORES=${STORES:-"memory sqlite redis"}
BIN=${BIN:-target/release/keyward}
source bench/lib.sh
need wrk curl python3
[ "$BIN" = target/release/keyward ] && cargo build --release --locked -q
results="$work/cpu.jsonl"
: >"$results"

declare -A port_of pid_of rport_of rpid_of
active=()
for store in $STORES; do
  RPORT="" RPID=""
  case $store in
    memory) url=memory: ;;
    sqlite) url="sqlite:$work/cpu.db" ;;
    redis)
      if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        echo "redis-server/redis-cli missing: skipping the redis store" >&2; continue
      fi
      start_redis
      RPID=${pids[-1]}
      url="redis://127.0.0.1:$RPORT/0" ;;
    *) echo "unknown store $store" >&2; exit 1 ;;
  esac
  start_keyward "$url"
  part2_pool
  active+=("$store"); port_of[$store]=$PORT; pid_of[$store]=$PID
  rport_of[$store]=$RPORT; rpid_of[$store]=$RPID
done

ticks() { [ -n "$1" ] && awk '{print $14 + $15}' "/proc/$1/stat" || echo 0; }
# idle_ticks: idle + iowait ticks of all cores since boot.
idle_ticks() { awk '/^cpu /{print $5 + $6}' /proc/stat; }

# measure STORE LABEL TOOL-COMMAND...: runs the load tool under
# /usr/bin/time and appends one JSON line with the CPU per request.
measure() {
  local store=$1 label=$2; shift 2
  local pid=${pid_of[$store]} rpid=${rpid_of[$store]} rport=${rport_of[$store]}
  [ -n "$rport" ] && redis-cli -p "$rport" config resetstat >/dev/null
  local k0 r0 i0 k1 r1 i1
  k0=$(ticks "$pid"); r0=$(ticks "$rpid"); i0=$(idle_ticks)
  /usr/bin/time -f "tool_cpu %U %S" -o "$work/time.txt" "$@" >"$work/out.txt"
  k1=$(ticks "$pid"); r1=$(ticks "$rpid"); i1=$(idle_ticks)
  local stats=""
  [ -n "$rport" ] && stats=$(redis-cli -p "$rport" info commandstats | tr -d '\r' | grep '^cmdstat_evalsha:' || true)
  python3 - "$store" "$label" "$DURATION" "$(getconf CLK_TCK)" "$k0" "$k1" "$r0" "$r1" "$i0" "$i1" \
    "$work/out.txt" "$work/time.txt" "$stats" >>"$results" <<'PY'
import json, re, sys
store, label, secs, hz = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
k0, k1, r0, r1, i0, i1 = map(int, sys.argv[5:11])
out, tm, stats = open(sys.argv[11]).read(), open(sys.argv[12]).read(), sys.argv[13]
if out.lstrip().startswith("{"):
    rps = json.loads(out)["requests_per_sec"]
else:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
reqs = rps * secs
user, system = map(float, re.search(r"tool_cpu ([\d.]+) ([\d.]+)", tm).groups())
per = lambda t: t / hz * 1e6 / reqs
r = {"store": store, "label": label, "rps": rps, "keyward": per(k1 - k0),
     "redis": per(r1 - r0), "tool": (user + system) * 1e6 / reqs,
     "idle": (i1 - i0) / hz / secs}
m = re.search(r"calls=(\d+),usec=(\d+)", stats)
if m:
    r["evalsha_per_req"] = int(m.group(2)) / reqs
    r["req_per_call"] = reqs / max(int(m.group(1)), 1)
print(json.dumps(r))
print(f"{store:7} {label:22} {rps:9.0f} req/s  keyward {r['keyward']:5.1f} redis {r['redis']:5.1f} "
      f"tool {r['tool']:5.1f} µs/req  idle {r['idle']:.2f}", file=sys.stderr)
PY
}

for round in $(seq "$ROUNDS"); do
  echo "--- round $round of $ROUNDS" >&2
  for store in "${active[@]}"; do
    url="http://127.0.0.1:${port_of[$store]}"
    measure "$store" "healthz wrk" wrk -t2 -c32 -d"${DURATION}s" "$url/healthz"
    measure "$store" "lease-release wrk" wrk -t2 -c32 -d"${DURATION}s" -s bench/lease_release.lua "$url" -- part2
    measure "$store" "lease-release bench" "$BIN" bench --url "$url" --json --workload lease-release \
      --pool part2 --keys 1000 -c 32 -d "${DURATION}s"
    measure "$store" "lease-release bench idem" "$BIN" bench --url "$url" --json --workload lease-release \
      --pool part2 --keys 1000 -c 32 -d "${DURATION}s" --idempotency-keys
  done
done

python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def median_round(store, label):
    rs = sorted((r for r in rows if r["store"] == store and r["label"] == label), key=lambda r: r["rps"])
    return rs[len(rs) // 2] if rs else None
def total(r):
    return r["keyward"] + r["redis"] + r["tool"]
labels = ["healthz wrk", "lease-release wrk", "lease-release bench", "lease-release bench idem"]
stores = [s for s in ("memory", "sqlite", "redis") if any(r["store"] == s for r in rows)]
print("| store | load (32 connections) | req/s | keyward µs/req | redis µs/req | tool µs/req | sum | idle cores | x healthz | x memory | bound | evalsha µs/req |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for s in stores:
    for label in labels:
        r = median_round(s, label)
        if not r:
            continue
        m = median_round("memory", label)
        x = f"{r['rps'] / m['rps']:.2f}" if m else ""
        bound = f"{total(m) / total(r):.2f}" if m else ""
        ev = f"{r['evalsha_per_req']:.1f}" if "evalsha_per_req" in r else ""
        h = median_round(s, "healthz wrk")
        xh = f"{r['rps'] / h['rps']:.2f}" if h and label.endswith("wrk") else ""
        print(f"| {s} | {label} | {r['rps']:,.0f} | {r['keyward']:.1f} | {r['redis']:.1f} | {r['tool']:.1f} "
              f"| {total(r):.1f} | {r['idle']:.2f} | {xh} | {x} | {bound} | {ev} |")
PY

#!/usr/bin/env bash
# Benchmark suite, one run: for each store (memory, sqlite, redis), one
# release keyward; `keyward bench` measures GET /healthz (the ceiling),
# lease+release at pool sizes 10^3, 10^5, 10^6 (and 10^7 on memory), issue
# and status, and issuance in the first and the last 10 % of a 10^6
# keyspace, in ROUNDS rounds that interleave the stores (medians
# reported; every server runs from the start); at 32
# connections on every store, healthz and lease+release on a pool with
# the Part 2 features on (labels, 100 of 1,000 keys cooling), without and
# with an Idempotency-Key on every request (on Redis with `INFO
# commandstats` around it), and the same two loads with wrk (WRK_ROUNDS
# rounds, medians); on memory
# also lease+release at 32 connections (p99 target), the two loads with
# wrk at $CONNECTIONS, and resident bytes per pool key at 10^6 and 10^7
# keys. Prints one table with ratios and writes it, with the machine, to
# $OUT.
#
# Needs wrk, curl, python3; redis-server and redis-cli for the redis store
# (skipped if missing). Loopback only; private servers on free ports (never
# 6379); every run is bounded; only processes started here are stopped, by
# PID. About 15 minutes with the defaults. RSS=0 skips the memory-per-key
# step; RSS_SIZES sets its pool sizes.
#
#   bench/run.sh                          # everything, writes BENCHMARKS.md
#   STORES=memory SIZES="1000 100000" MEMORY_SIZES="1000 100000" ROUNDS=1 \
#     DURATION=2s OUT=/tmp/b.md bench/run.sh   # a quick look
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-3s}
ROUNDS=${ROUNDS:-5}
WRK_ROUNDS=${WRK_ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-64}
SIZES=${SIZES:-"1000 100000 1000000"}
MEMORY_SIZES=${MEMORY_SIZES:-"$SIZES 10000000"}
STORES=${STORES:-"memory sqlite redis"}
OUT=${OUT:-BENCHMARKS.md}
BIN=target/release/keyward
. bench/lib.sh
need wrk curl python3
cargo build --release --locked -q
results="$work/results.jsonl"
: >"$results"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
first=$(echo "$SIZES" | awk '{print $1}')

# tag.py STORE LABEL: a `keyward bench --json` report on stdin, tagged, to
# stdout; a one-line summary to stderr.
cat >"$work/tag.py" <<'PY'
import json, sys
r = json.load(sys.stdin)
r.update(store=sys.argv[1], label=sys.argv[2], tool="keyward bench")
print(json.dumps(r))
errors = r["status_errors"] + r["transport_errors"] + r["bad_responses"]
print(f"{r['store']:7} {r['label']:26} {r['requests_per_sec']:9.0f} req/s  "
      f"p99 {r['latency_us']['p99'] / 1000:.3f} ms  errors {errors}", file=sys.stderr)
PY

# record STORE LABEL BENCH-ARGS...: one `keyward bench --json` run, tagged.
record() {
  local store=$1 label=$2; shift 2
  "$BIN" bench --url "http://127.0.0.1:$PORT" --json "$@" | python3 "$work/tag.py" "$store" "$label" >>"$results"
}

# record_wrk STORE LABEL WRK-ARGS...: one wrk run, tagged.
record_wrk() {
  local store=$1 label=$2; shift 2
  wrk -t2 -c"${WRK_CONNECTIONS:-$CONNECTIONS}" -d"$DURATION" --latency "$@" >"$work/wrk.txt"
  python3 - "$store" "$label" "$work/wrk.txt" >>"$results" <<'PY'
import json, re, sys
store, label, path = sys.argv[1:]
text = open(path).read()
def ms(v):
    n, unit = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 1e-3, "ms": 1, "s": 1e3}[unit]
pct = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)", text, re.M))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
r = {"store": store, "label": label, "tool": "wrk", "requests_per_sec": rps,
     "operations_per_sec": None, "connections": None,
     "latency_us": {k: ms(v) * 1000 for k, v in (("p50", pct["50"]), ("p90", pct["90"]), ("p99", pct["99"]))},
     "status_errors": int(non2xx.group(1)) if non2xx else 0, "transport_errors": errors, "bad_responses": 0}
print(json.dumps(r))
print(f"{store:7} {label:24} {rps:9.0f} req/s  (wrk)", file=sys.stderr)
PY
}

# fill_keyspace NAME UPTO: issue tokens until at least UPTO are issued,
# in runs short enough not to overshoot much (bounded: 200 runs).
fill_keyspace() {
  local issued rate=20000 left ms
  for _ in $(seq 200); do
    issued=$(curl -sf "127.0.0.1:$PORT/v1/keyspaces/$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["issued"])')
    left=$(( $2 - issued ))
    [ "$left" -le 0 ] && return
    ms=$(python3 -c "print(int(min(5000, max(50, $left / max($rate, 1) * 800))))")
    rate=$("$BIN" bench --url "http://127.0.0.1:$PORT" --json --workload issue --keyspace "$1" \
      -c "$CONNECTIONS" -d "${ms}ms" | python3 -c 'import json,sys; print(int(json.load(sys.stdin)["requests_per_sec"]))')
  done
  echo "could not fill keyspace $1" >&2; exit 1
}

# commandstats LABEL REQUESTS: Redis's `evalsha` calls and time since the
# last `CONFIG RESETSTAT`, for REQUESTS HTTP requests, tagged.
commandstats() {
  redis-cli -p "$RPORT" info commandstats >"$work/commandstats.txt"
  python3 - "$1" "$2" "$work/commandstats.txt" >>"$results" <<'PY'
import json, re, sys
label, requests, path = sys.argv[1], int(float(sys.argv[2])), sys.argv[3]
m = re.search(r"cmdstat_evalsha:calls=(\d+),usec=(\d+)", open(path).read())
calls, usec = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
print(json.dumps({"store": "redis", "label": label, "tool": "commandstats", "calls": calls, "usec": usec,
                  "requests": requests, "requests_per_sec": usec / max(requests, 1)}))
PY
}

# Every store's server runs from the start, prepared, so that the rounds
# interleave the stores too: round r measures every figure on every store
# before round r + 1 begins. A drift of the machine's speed (other
# services share it) then moves every store alike, and the ratios between
# stores hold; run one store after the other, and a slow quarter of an
# hour made one store look slow against the rest.
declare -A port_of pid_of rport_of sizes_of
active=()
for store in $STORES; do
  RPORT=
  case $store in
    memory) url=memory:; sizes=$MEMORY_SIZES ;;
    sqlite) url="sqlite:$work/bench.db"; sizes=$SIZES ;;
    redis)
      if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        echo "redis-server/redis-cli missing: skipping the redis store" >&2; continue
      fi
      start_redis
      url="redis://127.0.0.1:$RPORT/0"; sizes=$SIZES ;;
    *) echo "unknown store $store" >&2; exit 1 ;;
  esac
  start_keyward "$url"
  active+=("$store"); port_of[$store]=$PORT; pid_of[$store]=$PID; rport_of[$store]=$RPORT
  sizes_of[$store]=$sizes
  # Prepare everything first, so no figure pays for another's preparation
  # (SQLite checkpointing 50 MB of fresh keys, say) in its timed part:
  # every pool, the keyspace of `issue`/`status`, and two 10^6 keyspaces
  # (10 digits x 6), one empty and one filled to 90 %. The pools' keys
  # need no keep-alive: the suite outlasts the default 5 minutes, and the
  # reaper purging 10^7 keys mid-run would load every figure after it
  # (a lease or release never touches the keep-alive index either way).
  for n in $sizes; do
    curl -sf -XPUT "127.0.0.1:$PORT/v1/pools/p$n" -d '{"keepalive_ttl_ms": 0}' >/dev/null
    "$BIN" bench --url "http://127.0.0.1:$PORT" --json --workload lease-release --pool "p$n" --keys "$n" -c 1 -d 1ms >/dev/null
  done
  "$BIN" bench --url "http://127.0.0.1:$PORT" --json --workload status -c 1 -d 1ms >/dev/null
  for ks in fresh full; do
    curl -sf -XPUT "127.0.0.1:$PORT/v1/keyspaces/$ks" -d '{"alphabet":"0123456789","length":6}' >/dev/null
  done
  fill_keyspace full 900000
  part2_pool
done

# use STORE: point PORT, RPORT and sizes at that store's server.
use() { PORT=${port_of[$1]}; RPORT=${rport_of[$1]}; sizes=${sizes_of[$1]}; }

# Rounds: each figure is measured once per round, in the same order, and
# the report takes the median.
for round in $(seq "$ROUNDS"); do
  for store in "${active[@]}"; do
    use "$store"
    echo "--- round $round of $ROUNDS: $store" >&2
    record "$store" healthz --workload healthz -c "$CONNECTIONS" -d "$DURATION"
    for n in $sizes; do
      record "$store" "lease-release $n" --workload lease-release --pool "p$n" --keys "$n" -c "$CONNECTIONS" -d "$DURATION"
    done
    record "$store" issue --workload issue -c "$CONNECTIONS" -d "$DURATION"
    record "$store" status --workload status -c "$CONNECTIONS" -d "$DURATION"
    # 200 ms each: five rounds at up to 100k tokens/s stay inside the
    # first and the last 10 % of the 10^6 tokens (at 400 ms, the memory
    # store's 67k tokens/s ran out of the last 10 %).
    record "$store" "issue first 10%" --workload issue --keyspace fresh -c "$CONNECTIONS" -d 200ms
    record "$store" "issue last 10%" --workload issue --keyspace full -c "$CONNECTIONS" -d 200ms
    # At 32 connections on every store: the ceiling, lease+release on the
    # Part 2 pool (on Redis with `INFO commandstats` around it), and the
    # same with an Idempotency-Key on every request.
    record "$store" "healthz c32" --workload healthz -c 32 -d "$DURATION"
    [ "$store" = redis ] && redis-cli -p "$RPORT" config resetstat >/dev/null
    record "$store" "lease-release part2 c32" --workload lease-release --pool part2 --keys 1000 -c 32 -d "$DURATION"
    if [ "$store" = redis ]; then
      commandstats "evalsha part2 c32" "$(tail -1 "$results" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')"
    fi
    record "$store" "lease-release part2 c32 idem" --workload lease-release --pool part2 --keys 1000 -c 32 -d "$DURATION" --idempotency-keys
    if [ "$store" = memory ]; then
      record "$store" "lease-release $first c32" --workload lease-release --pool "p$first" --keys "$first" -c 32 -d "$DURATION"
    fi
  done
done

# wrk, the neutral client, in rounds of its own (WRK_ROUNDS, medians):
# on memory at $CONNECTIONS too; on every store the Part 2 pool at 32.
for round in $(seq "$WRK_ROUNDS"); do
  for store in "${active[@]}"; do
    use "$store"
    echo "--- wrk round $round of $WRK_ROUNDS: $store" >&2
    if [ "$store" = memory ]; then
      record_wrk "$store" "healthz" "http://127.0.0.1:$PORT/healthz"
      record_wrk "$store" "lease-release $first" -s bench/lease_release.lua "http://127.0.0.1:$PORT" -- "p$first"
    fi
    WRK_CONNECTIONS=32 record_wrk "$store" "healthz c32" "http://127.0.0.1:$PORT/healthz"
    WRK_CONNECTIONS=32 record_wrk "$store" "lease-release part2 c32" -s bench/lease_release.lua "http://127.0.0.1:$PORT" -- part2
  done
done
for store in "${active[@]}"; do
  kill "${pid_of[$store]}"; wait "${pid_of[$store]}" 2>/dev/null || true
done

# Resident memory per pool key on the memory store: a fresh server, RSS
# after start-up, after 10^6 keys and after 10^7 keys (RSS delta / n).
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
if [[ " $STORES " == *" memory "* ]] && [ "${RSS:-1}" = 1 ]; then
  start_keyward memory:
  base=$(rss_kib "$PID")
  for n in ${RSS_SIZES:-1000000 10000000}; do
    "$BIN" bench --url "http://127.0.0.1:$PORT" --json --workload lease-release --pool rss \
      --keys "$n" -c 1 -d 1ms >/dev/null
    rss=$(rss_kib "$PID")
    echo "{\"store\": \"memory\", \"label\": \"rss $n\", \"tool\": \"VmRSS\", \"keys\": $n, \"rss_kib\": $rss, \"base_kib\": $base}" >>"$results"
    echo "memory  rss with $n keys: $rss KiB (start $base KiB)" >&2
  done
  kill "$PID"; wait "$PID" 2>/dev/null || true
fi

load_end=$(cut -d' ' -f1-3 /proc/loadavg)
python3 - "$results" "$OUT" "$CONNECTIONS" "$DURATION" "$first" "$load_start" "$load_end" <<'PY'
import json, os, platform, re, subprocess, sys, datetime
path, out, conns, duration, first, load_start, load_end = sys.argv[1:]
rows = [json.loads(l) for l in open(path)]
# The previous run's req/s per (store, load, tool), from the file this run
# replaces: the `before` column.
before = {}
if os.path.exists(out):
    for line in open(out):
        m = re.match(r"\| (\w+) \| ([^|]+?) \| ([^|]+?) \| ([\d,]+) \|", line)
        if m:
            before[(m.group(1), m.group(2), m.group(3))] = int(m.group(4).replace(",", ""))
# One row per figure: the round with the median throughput.
def median_rows(rows):
    groups, order = {}, []
    for r in rows:
        k = (r["store"], r["label"], r["tool"])
        if k not in groups:
            order.append(k)
        groups.setdefault(k, []).append(r)
    out = []
    for k in order:
        g = sorted(groups[k], key=lambda r: r.get("requests_per_sec", 0))
        m = dict(g[len(g) // 2])
        m["rounds"] = len(g)
        m["spread"] = (g[0].get("requests_per_sec", 0), g[-1].get("requests_per_sec", 0))
        out.append(m)
    return out
rows = median_rows(rows)
def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"
def get(store, label, tool="keyward bench"):
    return next((r for r in rows if r["store"] == store and r["label"] == label and r["tool"] == tool), None)
def ceiling(store):
    h = get(store, "healthz")
    return h["requests_per_sec"] if h else None

lines = []
p = lines.append
p("# keyward benchmarks")
p("")
commit = sh("git rev-parse --short HEAD") or "?"
dirty = " (with uncommitted changes)" if sh("git status --porcelain --untracked-files=no") else ""
now = datetime.datetime.now(datetime.timezone.utc)
p(f"Written by `bench/run.sh` on {now:%Y-%m-%d %H:%M} UTC, commit `{commit}`{dirty}.")
p("")
cpu = sh("lscpu | sed -n 's/^Model name: *//p'") or platform.processor()
ram = sh("free -g | awk '/Mem:/ {print $2}'")
p(f"- machine: {sh('nproc')} CPUs, {cpu}, {ram} GB RAM, Linux {platform.release()}, {sh('rustc -V')}")
p(f"- load average (1, 5, 15 min) before: {load_start}; after: {load_end}. Client and server share the machine.")
p(f"- load: `keyward bench` (hyper HTTP/1 client, one request in flight per connection, {conns} connections, "
  f"{duration} per figure unless noted); `wrk -t2 -c{conns}` for the wrk rows.")
p("- rounds: every store's server runs throughout, and each round measures every figure on every store before the "
  "next round begins (wrk in rounds of its own); each row is the round with the median req/s, and `range` gives "
  "the lowest and highest round.")
p("- ceiling: the same server's `GET /healthz` under the same load (its median); `x healthz` = requests/s / ceiling. "
  "A lease+release is two requests.")
p("- before: the req/s of the same figure in the file this run replaced (another run, another load: compare ratios).")
p("")
p("| store | load | tool | req/s | before | range | op/s | x healthz | p50 ms | p99 ms | p99.9 ms | errors |")
p("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
rss_rows = [r for r in rows if r["tool"] == "VmRSS"]
stat_rows = [r for r in rows if r["tool"] == "commandstats"]
rows = [r for r in rows if r["tool"] not in ("VmRSS", "commandstats")]
for r in rows:
    c = ceiling(r["store"])
    l = r["latency_us"]
    ms = lambda k: f"{l[k] / 1000:.3f}" if k in l else ""
    ops = f"{r['operations_per_sec']:,.0f}" if r.get("operations_per_sec") is not None else ""
    ratio = f"{r['requests_per_sec'] / c:.2f}" if c else ""
    errors = r["status_errors"] + r["transport_errors"] + r["bad_responses"]
    lo, hi = r["spread"]
    spread = f"{lo / 1000:,.1f}k–{hi / 1000:,.1f}k" if r["rounds"] > 1 else ""
    b = before.get((r["store"], r["label"], r["tool"]))
    b = f"{b:,}" if b else ""
    p(f"| {r['store']} | {r['label']} | {r['tool']} | {r['requests_per_sec']:,.0f} | {b} | {spread} | {ops} | {ratio} | "
      f"{ms('p50')} | {ms('p99')} | {ms('p99.9')} | {errors} |")
if rss_rows:
    p("")
    p("Resident memory of a fresh memory-store server as its pool grows (`VmRSS`; keys made by `POST /v1/pools/rss/keys` in batches of 10,000):")
    p("")
    p("| keys | RSS MiB | bytes per key (RSS delta / n) |")
    p("|---:|---:|---:|")
    for r in rss_rows:
        per = (r["rss_kib"] - r["base_kib"]) * 1024 / r["keys"]
        p(f"| {r['keys']:,} | {r['rss_kib'] / 1024:,.0f} | {per:.0f} |")
p("")
p("## Targets (issue 6)")
p("")
p("| target | measured | holds |")
p("|---|---|---|")
def target(name, value, ok, fmt="{:.2f}"):
    if value is None:
        p(f"| {name} | not measured | |")
    else:
        p(f"| {name} | {fmt.format(value)} | {'yes' if ok(value) else '**no**'} |")
stores = sorted({r["store"] for r in rows}, key=["memory", "sqlite", "redis"].index)
for s in stores:
    lr = get(s, f"lease-release {first}")
    c = ceiling(s)
    if s in ("memory", "sqlite") and lr and c:
        need = 0.80 if s == "memory" else 0.50
        target(f"{s}: lease+release >= {need:.0%} of healthz ({conns} connections)", lr["requests_per_sec"] / c, lambda v, n=need: v >= n)
    big = get(s, "lease-release 1000000")
    if lr and big:
        target(f"{s}: 10^6-key pool >= 90 % of a {first}-key pool", big["requests_per_sec"] / lr["requests_per_sec"], lambda v: v >= 0.90)
    a, b = get(s, "issue first 10%"), get(s, "issue last 10%")
    if a and b:
        target(f"{s}: issuing the last 10 % >= 95 % of the first 10 %", b["requests_per_sec"] / a["requests_per_sec"], lambda v: v >= 0.95)
big_rss = next((r for r in rss_rows if r["keys"] == 10_000_000), None)
if big_rss:
    target("memory: <= 128 bytes of RAM per pool key at 10^7 keys", (big_rss["rss_kib"] - big_rss["base_kib"]) * 1024 / big_rss["keys"], lambda v: v <= 128, "{:.0f} B")
r32 = get("memory", f"lease-release {first} c32")
if r32:
    target("memory: p99 <= 2 ms at 32 connections (lease+release)", r32["latency_us"]["p99"] / 1000, lambda v: v <= 2.0, "{:.3f} ms")
p("")
p("## Part 2 in place, 32 connections (issue 18)")
p("")
p("Lease+release on the pool `part2`: 1,000 keys in two label sets, 100 of them cooling throughout. "
  "`x healthz`: against the same server's healthz at 32 connections by the same tool; `x memory`: against "
  "the memory store's figure by the same tool; `idem cost`: 1 - (with an `Idempotency-Key` on every request) / (without).")
p("")
p("| store | tool | healthz c32 | lease+release | x healthz | x memory | with Idempotency-Key | idem cost |")
p("|---|---|---:|---:|---:|---:|---:|---:|")
fig = {}
for tool in ("keyward bench", "wrk"):
    for s in stores:
        h, lr, idem = get(s, "healthz c32", tool), get(s, "lease-release part2 c32", tool), get(s, "lease-release part2 c32 idem", tool)
        m = get("memory", "lease-release part2 c32", tool)
        if not (h and lr):
            continue
        x_h = lr["requests_per_sec"] / h["requests_per_sec"]
        x_m = lr["requests_per_sec"] / m["requests_per_sec"] if m else None
        cost = 1 - idem["requests_per_sec"] / lr["requests_per_sec"] if idem else None
        fig[(s, tool)] = (x_h, x_m, cost)
        p(f"| {s} | {tool} | {h['requests_per_sec']:,.0f} | {lr['requests_per_sec']:,.0f} | {x_h:.2f} | "
          + (f"{x_m:.2f}" if x_m is not None else "") + " | "
          + (f"{idem['requests_per_sec']:,.0f} | {cost:.0%}" if idem else " | ") + " |")
ev = sorted(stat_rows, key=lambda r: r["usec"] / max(r["requests"], 1))
if ev:
    r = ev[len(ev) // 2]
    p("")
    p(f"Redis `INFO commandstats` over a lease+release run on `part2` (the round with the median µs per request): "
      f"{r['calls']:,} `evalsha` calls for {r['requests']:,} requests ({r['requests'] / max(r['calls'], 1):.1f} per call, "
      f"leases and releases are batched), {r['usec'] / max(r['calls'], 1):.1f} µs per call, "
      f"{r['usec'] / max(r['requests'], 1):.1f} µs per request.")
p("")
p("| target (issue 18, wrk where measured) | measured | holds |")
p("|---|---|---|")
def fig_of(s, i):
    v = fig.get((s, "wrk")) or fig.get((s, "keyward bench"))
    return v[i] if v else None
target("redis: lease+release >= 0.6 x memory (32 connections)", fig_of("redis", 1), lambda v: v >= 0.6)
target("sqlite: lease+release >= 0.7 x memory (32 connections)", fig_of("sqlite", 1), lambda v: v >= 0.7)
sq, me = get("sqlite", f"lease-release {first}"), get("memory", f"lease-release {first}")
target(f"sqlite: lease+release >= 0.7 x memory ({conns} connections, keyward bench)",
       sq["requests_per_sec"] / me["requests_per_sec"] if sq and me else None, lambda v: v >= 0.7)
target("memory: lease+release >= 0.85 x healthz (32 connections)", fig_of("memory", 0), lambda v: v >= 0.85)
for s in stores:
    v = fig.get((s, "keyward bench"))
    target(f"{s}: an Idempotency-Key on every request costs <= 15 %", v[2] if v else None, lambda v: v <= 0.15, "{:.0%}")
if ev:
    target("redis: <= 8 µs per evalsha call", ev[len(ev) // 2]["usec"] / max(ev[len(ev) // 2]["calls"], 1), lambda v: v <= 8, "{:.1f} µs")
wh, kh = get("memory", "healthz", "wrk"), get("memory", "healthz")
if wh and kh:
    p("")
    p(f"Client check: `keyward bench` healthz {kh['requests_per_sec']:,.0f} req/s vs wrk {wh['requests_per_sec']:,.0f} req/s "
      f"on the same server ({kh['requests_per_sec'] / wh['requests_per_sec']:.2f}x).")
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
print(text)
print(f"written to {out}", file=sys.stderr)
PY

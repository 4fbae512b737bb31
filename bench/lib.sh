# Shared by the benchmark scripts, sourced after `cd` to the repository
# root: makes "$work" (a temporary directory) and "$pids" (the processes
# started here), and on exit stops those processes, by PID, and removes
# "$work". Loopback only; every wait is bounded.

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# need TOOL... : exits with an install hint unless every TOOL is on PATH.
need() {
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "$tool missing (apt-get install $*)" >&2; exit 1; }
  done
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_keyward STORE_URL -> sets PORT, PID: a release keyward on a free
# port, once it answers /readyz (at most 20 s).
start_keyward() {
  PORT=$(free_port)
  "$BIN" serve --listen "127.0.0.1:$PORT" --store "$1" >"$work/keyward.$PORT.log" 2>&1 &
  PID=$!; pids+=("$PID")
  for _ in $(seq 200); do curl -sf "127.0.0.1:$PORT/readyz" >/dev/null && return; sleep 0.1; done
  echo "keyward on $1 did not get ready" >&2; cat "$work/keyward.$PORT.log" >&2; exit 1
}

# start_redis -> sets RPORT: a private redis-server (no persistence) on a
# free port, once it answers PING (at most 5 s).
start_redis() {
  RPORT=$(free_port)
  redis-server --port "$RPORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
  redis-cli -p "$RPORT" ping >/dev/null || { echo "redis-server did not start" >&2; cat "$work/redis.log" >&2; exit 1; }
}

# cool_keys POOL N: on the keyward at $PORT, leases N keys of POOL and
# reports each rate limited for an hour, so N keys sit in cooling.
cool_keys() {
  local base="127.0.0.1:$PORT/v1/pools/$1" key
  for _ in $(seq "$2"); do
    key=$(curl -fsS -XPOST "$base/lease" | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
    curl -fsS -XPOST "$base/keys/$key/release" -d '{"outcome": "rate_limited", "retry_after_ms": 3600000}' >/dev/null
  done
}

# part2_pool: on the keyward at $PORT, the pool `part2` with the Part 2
# features on: 1,000 keys in two label sets (500 each), of which 100 are
# cooling for an hour (leased, then reported rate limited), so leases
# pick among 900. No keep-alive: a benchmark may outlast the default 5
# minutes, and the reaper purging the keys mid-run would load it.
part2_pool() {
  local base="127.0.0.1:$PORT/v1/pools/part2"
  curl -sf -XPUT "$base" -d '{"cooldown_ms": 60000, "keepalive_ttl_ms": 0}' >/dev/null
  curl -sf -XPOST "$base/keys" -d '{"count": 500, "labels": {"provider": "example", "tier": "paid"}}' >/dev/null
  curl -sf -XPOST "$base/keys" -d '{"count": 500, "labels": {"provider": "example", "tier": "free"}}' >/dev/null
  cool_keys part2 100
}

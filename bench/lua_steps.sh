#!/usr/bin/env bash
# What single steps of a Redis Lua script cost on this machine: each step
# runs 1,000 times inside one EVAL, 20 EVALs per step, and the time per
# step is Redis's own `INFO commandstats` time for `eval` / 1,000 (the
# empty loop included, printed first). The key hash has the fields of a
# free pool key. Explains the floor of the Redis scripts' cost (README,
# "Scale-out on Redis"). Needs redis-server and redis-cli; a private
# redis-server on a free loopback port, stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
need redis-server redis-cli
start_redis
r() { redis-cli -p "$RPORT" "$@"; }
r hset k created_at 1796476498970 alive_until 0 lease_id 0 leased_until 0 n 1 >/dev/null
SCRIPT=$(cat <<'LUA'
local step, x = ARGV[1], nil
local FIELDS = { 'created_at', 'alive_until', 'lease_id', 'leased_until', 'state', 'available_at',
  'reason', 'failures', 'quarantines', 'labels', 'n' }
for i = 1, 1000 do
  if step == 'empty loop' then
  elseif step == 'tonumber' then x = tonumber('12345')
  elseif step == 'two-field table' then x = { a = i, b = i }
  elseif step == 'closure' then x = function() return step, FIELDS end
  elseif step == 'string.format %d' then x = string.format('%d', i)
  elseif step == 'redis.call TIME' then x = redis.call('TIME')
  elseif step == 'HMGET 11 fields' then x = redis.call('HMGET', KEYS[1], unpack(FIELDS))
  elseif step == 'HSET 2 fields' then redis.call('HSET', KEYS[1], 'lease_id', '0', 'leased_until', '0')
  end
end
return 1
LUA
)
SHA=$(r script load "$SCRIPT")
echo "| step (Redis $(r info server | awk -F: '/^redis_version/ {print $2}' | tr -d '\r')) | µs per step |"
echo "|---|---|"
for step in "empty loop" tonumber "two-field table" closure "string.format %d" "redis.call TIME" \
  "HMGET 11 fields" "HSET 2 fields"; do
  r config resetstat >/dev/null
  for _ in $(seq 20); do r evalsha "$SHA" 1 k "$step" >/dev/null; done
  usec=$(r info commandstats | awk -F'usec=' '/^cmdstat_evalsha:/ {split($2, a, ","); print a[1]}')
  python3 -c "print(f'| $step | {$usec / 20 / 1000:.3f} |')"
done

-- wrk script: lease a random key, then release it, over and over.
-- Usage: wrk -s bench/lease_release.lua URL -- POOL
-- Leased keys wait in a per-thread queue; the next request releases one.
local pool = "bench"
local queue = {}
local lease_path

function init(args)
  if args[1] then pool = args[1] end
  lease_path = "/v1/pools/" .. pool .. "/lease"
end

function request()
  local key = table.remove(queue)
  if key then
    return wrk.format("POST", "/v1/pools/" .. pool .. "/keys/" .. key .. "/release")
  end
  return wrk.format("POST", lease_path)
end

function response(status, headers, body)
  if status == 200 then
    local key, state = body:match('"key":"([^"]+)","state":"(%a+)"')
    if key and state == "leased" then
      table.insert(queue, key)
    end
  end
end

function done(summary, latency, requests)
  io.write(string.format("non2xx_or_errors=%d\n", summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end

-- Now in ms: `arg` when the caller passed its clock (tests drive a manual
-- one), else Redis TIME, one clock for every process.
local function clock(arg)
  if arg ~= '' then
    return tonumber(arg)
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

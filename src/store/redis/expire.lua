-- expire_due, one bounded step. ARGV[3]: most entries to handle.
-- Reply: {keys purged, leases ended}.
if redis.call('EXISTS', META) == 0 then
  return { 0, 0 }
end
local keys, leases = expire_some(tonumber(ARGV[3]))
return { keys, leases }

-- delete_key.
local k = ARG.key
local f = live_key(k)
if not f then
  return { KEY_NOT_FOUND }
end
purge(k, f.state)
return { OK }

-- delete_key.
local k = ARG.key
if not live_key(k) then
  return { KEY_NOT_FOUND }
end
purge(k)
return { OK }

-- get_key.
local k = ARG.key
local f = live_key(k)
if not f then
  return { KEY_NOT_FOUND }
end
return key_reply(k, f)

-- activate_token: take a slot. ARG.index, ARG.token (display form),
-- ARG.fingerprint ("" for none: a slot of its own). O(log b + m).
-- Reply: token_reply or {code}.
local c, index, marks = token_marks()
if c ~= OK then
  return { c }
end
if marks.r then
  return { REVOKED }
end
local fp = ARG.fingerprint
if fp ~= '' then
  for _, a in ipairs(marks.a) do
    if a[2] == fp then
      return token_reply(redis.call('HGET', TOK, ARG.token), index)
    end
  end
end
if #marks.a >= max_activations() then
  return { ALREADY_ACTIVATED }
end
local at = string.format('%d', clock(ARG.now))
local slot = { at }
if fp ~= '' then
  slot[2] = fp
end
table.insert(marks.a, slot)
if #marks.a == 1 then
  redis.call('HSET', ACT, ARG.token, at)
  count_batch(index, 'a', 1)
end
return token_reply(write_marks(ARG.token, marks), index)

-- deactivate_token: free the slot ARG.fingerprint holds; a token left
-- with none is issued again. O(log b + m).
-- Reply: token_reply or {code}.
local c, index, marks = token_marks()
if c ~= OK then
  return { c }
end
for i, a in ipairs(marks.a) do
  if a[2] == ARG.fingerprint then
    table.remove(marks.a, i)
    if #marks.a == 0 then
      redis.call('HDEL', ACT, ARG.token)
      count_batch(index, 'a', -1)
    end
    return token_reply(write_marks(ARG.token, marks), index)
  end
end
return { ACTIVATION_NOT_FOUND }

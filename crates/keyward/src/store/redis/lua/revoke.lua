-- revoke_token: for good; a revoked token stays as it is. ARG.reason:
-- "" for none. O(log b + m).
-- Reply: token_reply or {code}.
local c, index, marks = token_marks()
if c ~= OK then
  return { c }
end
if not marks.r then
  marks.r = { string.format('%d', clock(ARG.now)) }
  if ARG.reason ~= '' then
    marks.r[2] = ARG.reason
  end
  redis.call('HINCRBY', DEF, 'revoked', 1)
  count_batch(index, 'r', 1)
  return token_reply(write_marks(ARG.token, marks), index)
end
return token_reply(redis.call('HGET', TOK, ARG.token) or '', index)

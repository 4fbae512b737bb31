-- issue_token (and issue_tokens): the next ARG.count indexes, all or
-- nothing, if they stay below ARG.limit = min(capacity, 2^53) (Lua
-- numbers are doubles: counting stays exact below 2^53), filed under
-- batch ARG.batch unless it is "".
-- Reply: {OK, first index} or {code}.
local c = check_secret(ARG.secret)
if c ~= OK then
  return { c }
end
local count = tonumber(ARG.count)
if issued() + count > tonumber(ARG.limit) then
  return { EXHAUSTED }
end
local first = redis.call('INCRBY', ISSUED, count) - count
if ARG.batch ~= '' then
  file_batch(first, first + count - 1, ARG.batch)
  redis.call('HINCRBY', BATCH, 'i:' .. ARG.batch, count)
end
return { OK, first }

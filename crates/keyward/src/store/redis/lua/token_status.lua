-- token_status. ARG.index: the token's index (decimal).
-- Reply: token_reply or {code}.
local c = check_issued(ARG.secret, ARG.index)
if c ~= OK then
  return { c }
end
local index = tonumber(ARG.index)
local text = redis.call('HGET', TOK, ARG.token)
if not text then
  local marks = read_marks(ARG.token)
  text = #marks.a > 0 and cjson.encode(marks) or ''
end
return token_reply(text, index)

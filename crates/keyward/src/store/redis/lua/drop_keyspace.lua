-- delete_keyspace: O(1) on the request path; UNLINK frees the
-- activation, marks and batch keys, however big, in Redis's background
-- thread.
-- Reply: {OK} or {KEYSPACE_NOT_FOUND}.
if redis.call('EXISTS', DEF) == 0 then
  return { KEYSPACE_NOT_FOUND }
end
redis.call('UNLINK', DEF, ISSUED, ACT, TOK, RANGES, BATCH)
return { OK }

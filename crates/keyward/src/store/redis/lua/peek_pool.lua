-- idempotency peek on a pool: the wrapper answers a recorded reply;
-- otherwise nothing is recorded. Used before changes with steps outside
-- their script (registering a name, deleting one), so a replay does not
-- run them again. Reply: {NO_RECORD}.
return { NO_RECORD }

-- idempotency peek on a keyspace: as peek_pool.lua. Reply: {NO_RECORD}.
return { NO_RECORD }

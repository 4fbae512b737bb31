-- The batch: leases and releases of one pool that were waiting for the
-- pool's previous batch, run in ARGV order in one call (see `batch.rs`).
-- None of them was answered yet, so any order is one they could have run
-- in. The head ran once: one clock, one read of the settings, the
-- generation and `due_at`; index writes are kept and sent once at the end
-- (DEFER), and the leases draw their free keys together (`pick_free`).
-- Each operation is wrapped as a script of its own is: its idempotency
-- record answers in its place, and a success is recorded (expired records
-- are swept once, the records of all keys read with one HMGET, new ones
-- written together at the end). Reply: one reply per operation, in order.
DEFER = true
IDEM_DEFER = true
PICKS_WANTED = 0
local idem_keys = {}
for o = OP_FIRST, #ARGV, OP_WIDTH do
  if op_at(o) == 'lease' then
    PICKS_WANTED = PICKS_WANTED + 1
  end
  local key = idem_key_at(o)
  if key ~= '' then
    idem_keys[#idem_keys + 1] = key
  end
end
IDEM_NOW = NOW
idem_read_ahead(idem_keys)
local replies = {}
for o = OP_FIRST, #ARGV, OP_WIDTH do
  read_op(o)
  IDEM = ARG.idem_key ~= '' and ARG.idem_key or nil
  local reply = idem_replay()
  if not reply then
    reply = idem_record(OPS[ARG.op]())
  end
  if ARG.op == 'lease' then
    PICKS_WANTED = PICKS_WANTED - 1
  end
  replies[#replies + 1] = reply
end
flush()
idem_flush()
return replies

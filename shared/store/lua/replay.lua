-- replay: put a dead letter back in the queue, to be reconciled before anything else.
-- KEYS: record, dead letters, queue, pending index.
-- 0: not a dead letter; -1: no longer failed (MOVES has no move to `queued` from its status:
-- dropped from the dead letters); 1: requeued with a fresh retry budget and `reconcile_first`
-- set.
local a = cjson.decode(ARGV[1])
if not redis.call('ZSCORE', KEYS[2], a.payment_id) then return 0 end
local status = redis.call('HGET', KEYS[1], 'status')
if not may_move(MOVES, status, STATUS.QUEUED) then
  redis.call('ZREM', KEYS[2], a.payment_id)
  return -1
end
redis.call('HSET', KEYS[1], 'status', STATUS.QUEUED, 'updated_at', a.now_iso, 'attempts', 0,
  'reconcile_first', '1', 'enqueued_at', a.now_ms)
redis.call('HDEL', KEYS[1], 'error', 'error_status')
index_move(KEYS[1], status, STATUS.QUEUED)
redis.call('LPUSH', KEYS[3], a.message)
redis.call('ZREM', KEYS[2], a.payment_id)
if redis.call('ZADD', KEYS[4], a.sweep_at, a.payment_id) == 1 then
  local client = redis.call('HGET', KEYS[1], 'client')
  if client then redis.call('INCR', a.backlog_prefix .. client) end
end
return 1

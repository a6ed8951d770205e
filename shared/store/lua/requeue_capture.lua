-- requeue_capture: the recovery sweep's decision for one pending capture or void that is due.
-- KEYS: pending captures, queue, record, capture lease.
-- Gone, or no longer pending (settled, or unknown: the reconciler owns those), or a payment in
-- a status this step's rows lack: leaves the index. Otherwise it is looked at again at
-- a.next_at, and its message is pushed again only when it is provably lost: no worker holds
-- it, and the queue has moved past it (its oldest message is newer than this one's,
-- a.queue_oldest_ms, -1 when empty). 1: pushed.
local a = cjson.decode(ARGV[1])
local p = redis.call('HMGET', KEYS[3], 'status', 'capture_status', 'capture_enqueued_at')
if p[2] ~= CAPTURE_STATUS.PENDING or not may_move(MOVES, p[1], p[1]) then
  redis.call('ZREM', KEYS[1], a.payment_id)
  return 0
end
redis.call('ZADD', KEYS[1], a.next_at, a.payment_id)
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
local enqueued = tonumber(p[3] or '0')
if a.queue_oldest_ms >= 0 and a.queue_oldest_ms <= enqueued + a.clock_skew_ms then return 0 end
redis.call('HSET', KEYS[3], 'capture_enqueued_at', a.now_ms)
redis.call('LPUSH', KEYS[2], a.message)
return 1

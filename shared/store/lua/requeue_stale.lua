-- requeue_stale: the recovery sweep's decision for one pending payment that is due.
-- KEYS: pending index, queue, record, lease.
-- Gone, final or unknown (the reconciler owns those; MOVES lists the statuses the sweep acts
-- on): leaves the index. Otherwise it is looked
-- at again at a.next_at, and its message is pushed again only when it is provably lost: no
-- worker holds it, the queue has moved past it (its oldest message is newer than this
-- payment's, a.queue_oldest_ms, -1 when empty) and no worker has shown life for it since
-- a.stale_before. 1: pushed.
local a = cjson.decode(ARGV[1])
local status = redis.call('HGET', KEYS[3], 'status')
if not may_move(MOVES, status, status) then
  redis.call('ZREM', KEYS[1], a.payment_id)
  return 0
end
redis.call('ZADD', KEYS[1], a.next_at, a.payment_id)
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
local enqueued = tonumber(redis.call('HGET', KEYS[3], 'enqueued_at') or '0')
if a.queue_oldest_ms >= 0 and a.queue_oldest_ms <= enqueued + a.clock_skew_ms then return 0 end
local alive = tonumber(redis.call('HGET', KEYS[3], 'alive_at') or '0')
if alive > a.stale_before then return 0 end
redis.call('HSET', KEYS[3], 'enqueued_at', a.now_ms)
redis.call('LPUSH', KEYS[2], a.message)
return 1

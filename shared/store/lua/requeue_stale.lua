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
local enqueued = tonumber(redis.call('HGET', KEYS[3], 'enqueued_at') or '0')
local function quiet()
  return tonumber(redis.call('HGET', KEYS[3], 'alive_at') or '0') <= a.stale_before
end
return requeue_if_lost(a, a.payment_id, may_move(MOVES, status, status), enqueued,
                       'enqueued_at', quiet)

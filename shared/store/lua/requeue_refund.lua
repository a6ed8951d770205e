-- requeue_refund: the recovery sweep's decision for one pending refund that is due.
-- KEYS: pending refunds, queue, refund record, lease.
-- Gone or no longer pending (final, or unknown: the reconciler owns those; REFUND_MOVES lists
-- the statuses the sweep acts on): leaves the index.
-- Otherwise it is looked at again at a.next_at, and its message is pushed again only when it
-- is provably lost: no worker holds it, and the queue has moved past it (its oldest message is
-- newer than this refund's, a.queue_oldest_ms, -1 when empty). 1: pushed.
local a = cjson.decode(ARGV[1])
local status = redis.call('HGET', KEYS[3], 'status')
local enqueued = tonumber(redis.call('HGET', KEYS[3], 'enqueued_at') or '0')
return requeue_if_lost(a, a.refund_id, may_move(REFUND_MOVES, status, status), enqueued,
                       'enqueued_at', function() return true end)

-- requeue_capture: the recovery sweep's decision for one pending capture or void that is due.
-- KEYS: pending captures, queue, record, capture lease.
-- Gone, or no longer pending (settled, or unknown: the reconciler owns those), or a payment in
-- a status this step's rows lack: leaves the index. Otherwise it is looked at again at
-- a.next_at, and its message is pushed again only when it is provably lost: no worker holds
-- it, and the queue has moved past it (its oldest message is newer than this one's,
-- a.queue_oldest_ms, -1 when empty). 1: pushed.
local a = cjson.decode(ARGV[1])
local p = redis.call('HMGET', KEYS[3], 'status', 'capture_status', 'capture_enqueued_at')
local pending = p[2] == CAPTURE_STATUS.PENDING and may_move(MOVES, p[1], p[1])
return requeue_if_lost(a, a.payment_id, pending, tonumber(p[3] or '0'), 'capture_enqueued_at',
                       function() return true end)

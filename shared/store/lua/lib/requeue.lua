-- requeue_if_lost(a, member, pending, enqueued, enqueued_field, quiet): the recovery sweep's
-- step for one due member. KEYS: the pending index, the queue, the record, the lease. One no
-- longer `pending` leaves the index. Otherwise it is looked at again at a.next_at; its message (a.message) is pushed again, and
-- the record's `enqueued_field` set to a.now_ms, only when the message is provably lost: no
-- worker holds the lease, the queue has moved past it (its oldest message, a.queue_oldest_ms,
-- -1 when empty, is newer than `enqueued`, give or take a.clock_skew_ms), and `quiet` (no
-- worker has shown life for it). 1: pushed.
local function requeue_if_lost(a, member, pending, enqueued, enqueued_field, quiet)
  if not pending then
    redis.call('ZREM', KEYS[1], member)
    return 0
  end
  redis.call('ZADD', KEYS[1], a.next_at, member)
  if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
  if a.queue_oldest_ms >= 0 and a.queue_oldest_ms <= enqueued + a.clock_skew_ms then return 0 end
  if not quiet() then return 0 end
  redis.call('HSET', KEYS[3], enqueued_field, a.now_ms)
  redis.call('LPUSH', KEYS[2], a.message)
  return 1
end


-- requeue_callback: the callbacks' recovery sweep's decision for one filed callback that is due.
-- KEYS: pending callbacks, the callback queue, the event's hash.
-- No longer filed (delivered, skipped, dead-lettered, waiting in the retries set): 0. Filed
-- without a message (its hash expired): it leaves. Otherwise it is looked at again at
-- a.next_at, and its message is pushed again only when it is provably lost: it is still the
-- message the caller read (a.seen) and found in no worker's hands (kombu's unacked), the
-- queue has moved past it (its oldest message is newer than this one's push,
-- a.queue_oldest_ms, -1 when empty) and no attempt began since a.stale_before_ms. Pushed as
-- a.message (the same task, a fresh delivery tag and stamp). 1: pushed.
local a = cjson.decode(ARGV[1])
if not redis.call('ZSCORE', KEYS[1], a.event_id) then return 0 end
local h = redis.call('HMGET', KEYS[3], 'message', 'enqueued_at', 'alive_at')
if not h[1] then
  redis.call('ZREM', KEYS[1], a.event_id)
  return 0
end
redis.call('ZADD', KEYS[1], a.next_at, a.event_id)
if h[1] ~= a.seen then return 0 end
local enqueued = tonumber(h[2] or '0')
if a.queue_oldest_ms >= 0 and a.queue_oldest_ms <= enqueued + a.clock_skew_ms then return 0 end
if tonumber(h[3] or '0') > a.stale_before_ms then return 0 end
redis.call('HSET', KEYS[3], 'message', a.message, 'enqueued_at', a.now_ms)
redis.call('LPUSH', KEYS[2], a.message)
return 1

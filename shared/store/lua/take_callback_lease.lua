-- take_callback_lease: one attempt per event at a time. KEYS: pending callbacks, the event's
-- hash, the event's lease. An attempt starts only for the message filed for it (a.task_id is
-- the filed message's task id: a message of an attempt already done with, or of one not due
-- yet, is a duplicate) and while no other attempt holds the lease (a redelivery beside a live
-- attempt). Taking it marks the callback alive for the recovery sweep (a.now_ms).
-- {1}: taken (or held already by a.token); {0}: a duplicate; {-1, ms}: held by another
-- attempt for ms more at most.
local a = cjson.decode(ARGV[1])
if not redis.call('ZSCORE', KEYS[1], a.event_id) then return {0} end
local message = redis.call('HGET', KEYS[2], 'message')
if not message or cjson.decode(message).headers.id ~= a.task_id then return {0} end
local holder = redis.call('GET', KEYS[3])
if holder and holder ~= a.token then return {-1, redis.call('PTTL', KEYS[3])} end
redis.call('SET', KEYS[3], a.token, 'PX', a.lease_ms)
redis.call('HSET', KEYS[2], 'alive_at', a.now_ms)
return {1}

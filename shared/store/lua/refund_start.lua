-- refund_start: take a refund's lease and count an attempt (unless a.count is false: the
-- reconciler holds it without attempting anything).
-- KEYS: refund record, lease.
-- {-1}: no such refund; {0}: already final; {-2}: another worker holds it; {1, record}: ours.
local a = cjson.decode(ARGV[1])
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {-1} end
if REFUND_FINAL[status] then return {0} end
if not redis.call('SET', KEYS[2], a.token, 'NX', 'PX', a.lease_ms) then return {-2} end
if a.count then redis.call('HINCRBY', KEYS[1], 'attempts', 1) end
return {1, redis.call('HGETALL', KEYS[1])}

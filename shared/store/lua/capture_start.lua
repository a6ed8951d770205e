-- capture_start: take the lease of a payment's capture or void and count an attempt (unless
-- a.count is false: the reconciler holds it without attempting anything).
-- KEYS: record, capture lease.
-- The payment must be in a status this step's rows hold (an authorization; or already
-- captured or released, a webhook having told before the attempt's own answer was recorded:
-- the attempt then only learns it) with a capture or void not settled.
-- {-1}: no record; {0}: nothing to do; {-2}: another worker holds it; {1, record}: ours.
local a = cjson.decode(ARGV[1])
local p = redis.call('HMGET', KEYS[1], 'status', 'capture_status')
if not p[1] then return {-1} end
if not p[2] or CAPTURE_FINAL[p[2]] or not may_move(MOVES, p[1], p[1]) then return {0} end
if not redis.call('SET', KEYS[2], a.token, 'NX', 'PX', a.lease_ms) then return {-2} end
if a.count then redis.call('HINCRBY', KEYS[1], 'capture_attempts', 1) end
return {1, redis.call('HGETALL', KEYS[1])}

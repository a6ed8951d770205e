-- take_lease: hold a payment without starting a charge attempt (the reconciler).
-- KEYS: record, lease. {1, record} when taken; {0} final or gone; {-2} held elsewhere.
local a = cjson.decode(ARGV[1])
local status = redis.call('HGET', KEYS[1], 'status')
if (not status) or FINAL[status] then return {0} end
if not redis.call('SET', KEYS[2], a.token, 'NX', 'PX', a.lease_ms) then return {-2} end
return {1, redis.call('HGETALL', KEYS[1])}

-- postpone_check: the outcome is still unknown; look again at a.check_at.
-- KEYS: lease, record, unknown index.
local a = cjson.decode(ARGV[1])
redis.call('HINCRBY', KEYS[2], 'reconcile_attempts', 1)
redis.call('ZADD', KEYS[3], a.check_at, a.payment_id)
if redis.call('GET', KEYS[1]) == a.token then redis.call('DEL', KEYS[1]) end
return 1

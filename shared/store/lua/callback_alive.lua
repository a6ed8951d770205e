-- callback_alive: an attempt at a filed callback began (a.now_ms): the callbacks' recovery
-- sweep leaves it alone for its stale age. KEYS: pending callbacks, the event's hash.
-- Nothing for a callback not filed (a duplicate delivery of one already done).
local a = cjson.decode(ARGV[1])
if not redis.call('ZSCORE', KEYS[1], a.event_id) then return 0 end
redis.call('HSET', KEYS[2], 'alive_at', a.now_ms)
return 1

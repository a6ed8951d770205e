-- replay_callback: a callback dead letter goes back to its queue, with a fresh retry budget,
-- filed again for the callbacks' recovery sweep (a.filing: see lib/callbacks.lua).
-- KEYS: callback dead letters, the callback's hash, the callback queue.
-- 0: not a dead letter; 1: requeued (and no longer a dead letter).
local a = cjson.decode(ARGV[1])
if not redis.call('ZSCORE', KEYS[1], a.event_id) then return 0 end
push_callback(KEYS[3], a.message, a.filing)
redis.call('ZREM', KEYS[1], a.event_id)
redis.call('HSET', KEYS[2], 'replayed_at', a.now)
return 1

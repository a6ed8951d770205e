-- requeue_callbacks: callback messages whose next attempt is due go back to their queue, each
-- filed again for the callbacks' recovery sweep (a.filing: see lib/callbacks.lua).
-- KEYS: the retries sorted set, the callback queue. At most a.limit; returns how many.
local a = cjson.decode(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', a.now, 'LIMIT', 0, a.limit)
for _, message in ipairs(due) do
  push_callback(KEYS[2], message, a.filing)
  redis.call('ZREM', KEYS[1], message)
end
return #due

-- stripe_event: a verified Stripe webhook event, taken once.
-- KEYS: the event's dedupe key, the queue, webhook counts.
-- A new event id is remembered for a.ttl seconds (Stripe's retry horizon) and its task pushed
-- in the same step: 1. An event seen before pushes nothing: 0. Either way it is counted.
local a = cjson.decode(ARGV[1])
if not redis.call('SET', KEYS[1], a.now, 'NX', 'EX', a.ttl) then
  redis.call('HINCRBY', KEYS[3], a.type_label .. '|duplicate', 1)
  return 0
end
redis.call('LPUSH', KEYS[2], a.message)
redis.call('HINCRBY', KEYS[3], a.type_label .. '|received', 1)
return 1

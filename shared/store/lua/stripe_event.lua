-- stripe_event: a Stripe event (a verified webhook, or one the catch-up round listed), taken once.
-- KEYS: the event's dedupe key, the queue, webhook counts.
-- A new event id is remembered for a.ttl seconds (Stripe's retry horizon) and its task pushed
-- in the same step, counted as a.taken: 1. An event seen before pushes nothing and is counted
-- as a.seen (not at all when a.seen is empty): 0.
local a = cjson.decode(ARGV[1])
if not redis.call('SET', KEYS[1], a.now, 'NX', 'EX', a.ttl) then
  if a.seen ~= '' then redis.call('HINCRBY', KEYS[3], a.type_label .. '|' .. a.seen, 1) end
  return 0
end
redis.call('LPUSH', KEYS[2], a.message)
redis.call('HINCRBY', KEYS[3], a.type_label .. '|' .. a.taken, 1)
return 1

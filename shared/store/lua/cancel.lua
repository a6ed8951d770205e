-- cancel: the client cancels a payment before its charge is sent to Stripe.
-- KEYS: record, lease, deadlines, pending index, outcome counts, callback queue, events
-- channel.
-- A payment that MOVES lets cancel (nothing sent: no attempt has started, and start_attempt
-- moves it out of that status in the same step as it takes the lease) and whose lease no
-- worker holds ends canceled (end_unsent), so the worker that takes its message later finds
-- it final and never charges it. Answers {code, record}: {1, record} canceled now; {0, record}
-- canceled already (nothing written); {-2, record} not cancelable here (the caller tells why
-- from its status); {-1}: no record.
local a = cjson.decode(ARGV[1])
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {-1} end
if status == a.to then return {0, redis.call('HGETALL', KEYS[1])} end
if not may_move(MOVES, status, a.to) or redis.call('EXISTS', KEYS[2]) == 1 then
  return {-2, redis.call('HGETALL', KEYS[1])}
end
end_unsent(a.payment_id, a.to, a, {record = KEYS[1], pending = KEYS[4], deadlines = KEYS[3],
  outcomes = KEYS[5], callbacks = KEYS[6], events = KEYS[7]})
return {1, redis.call('HGETALL', KEYS[1])}

-- capture_accept: a capture or void of an authorization, asked and enqueued, all or nothing.
-- KEYS: record, queue, pending captures (the recovery sweep's, looked at from a.sweep_at).
-- {-1}: no record. A capture or void already asked and not failed ({0, record}) is answered as
-- it stands: the caller replays it for the same request (a.ask), refuses another. Otherwise
-- the payment must be in a status this step's rows of MOVES hold ({-2, status}: nothing to
-- capture or void); then the request is written on the record (pending, no attempt yet, its
-- sequence counted for the Stripe key, an earlier failure's error removed) and its task
-- (a.message) pushed: {1, record}.
local a = cjson.decode(ARGV[1])
local p = redis.call('HMGET', KEYS[1], 'status', 'capture_status')
local status = p[1]
if not status then return {-1} end
if p[2] and p[2] ~= CAPTURE_STATUS.FAILED then
  return {0, redis.call('HGETALL', KEYS[1])}
end
if not may_move(MOVES, status, status) then return {-2, status} end
redis.call('HSET', KEYS[1], 'capture_action', a.action, 'capture_ask', a.ask,
  'capture_status', CAPTURE_STATUS.PENDING, 'capture_attempts', 0,
  'capture_reconcile_attempts', 0, 'capture_enqueued_at', a.now_ms, 'updated_at', a.now_iso)
if a.amount > 0 then
  redis.call('HSET', KEYS[1], 'capture_amount_minor', a.amount)
else
  redis.call('HDEL', KEYS[1], 'capture_amount_minor')
end
redis.call('HDEL', KEYS[1], 'capture_error', 'capture_error_status')
redis.call('HINCRBY', KEYS[1], 'capture_seq', 1)
redis.call('LPUSH', KEYS[2], a.message)
redis.call('ZADD', KEYS[3], a.sweep_at, a.payment_id)
return {1, redis.call('HGETALL', KEYS[1])}

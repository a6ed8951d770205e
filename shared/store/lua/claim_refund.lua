-- claim_refund: one refund request, checked and claimed against its payment, all or nothing.
-- KEYS: refund record, payment record, the payment's refund list, queue, pending refunds.
-- The refund id derives from the client and its Idempotency-Key, so an existing record
-- answers {0, record} (a replay, or a conflict the caller sees in the fingerprint). Otherwise
-- the payment must exist ({-1}) and be in a.refundable ({-2, status}), and the amount (a.amount,
-- or all that is left when it is 0) must fit in what is left: the amount charged (an
-- authorization's captured amount) minus what is
-- refunded (ours, or Stripe's figure, whichever is larger) minus what refunds in flight hold
-- ({-3, left}). Then the refund is written, its amount held on the payment, listed, and its
-- task pushed, and the refund filed for the recovery sweep (a.sweep_at): {1, amount}.
-- Concurrent refunds run one after the other here, so together they
-- never exceed the charge.
local a = cjson.decode(ARGV[1])
local existing = redis.call('HGETALL', KEYS[1])
if #existing > 0 then return {0, existing} end
local p = redis.call('HMGET', KEYS[2], 'status', 'amount_minor', 'refunded_minor',
  'stripe_refunded_minor', 'refund_reserved_minor', 'amount_captured_minor')
if not p[1] then return {-1} end
local refundable = false
for _, s in ipairs(a.refundable) do
  if s == p[1] then refundable = true end
end
if not refundable then return {-2, p[1]} end
local refunded = math.max(tonumber(p[3] or '0'), tonumber(p[4] or '0'))
local left = tonumber(p[6] or p[2]) - refunded - tonumber(p[5] or '0')
local amount = a.amount
if amount == 0 then amount = left end
if amount <= 0 or amount > left then return {-3, math.max(left, 0)} end
hset_map(KEYS[1], {'amount_minor', amount}, a.fields)
redis.call('EXPIRE', KEYS[1], a.ttl)
redis.call('HINCRBY', KEYS[2], 'refund_reserved_minor', amount)
redis.call('RPUSH', KEYS[3], a.refund_id)
redis.call('EXPIRE', KEYS[3], a.ttl)
redis.call('LPUSH', KEYS[4], a.message)
redis.call('ZADD', KEYS[5], a.sweep_at, a.refund_id)
return {1, amount}

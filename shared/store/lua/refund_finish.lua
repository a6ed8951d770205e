-- refund_finish: record where a refund stands, once, and what it does to its payment.
-- KEYS: refund record, lease, payment record, events channel, unknown refunds index,
-- transition counts, callback queue, pending refunds (the recovery sweep's: left here).
-- a.status is final (succeeded, failed) or `unknown` (checked again at a.check_at). A move
-- REFUND_MOVES lacks (from a final refund) writes nothing: 0. A succeeded refund moves its
-- amount from held to refunded on the payment, and the payment becomes a.refunded (if MOVES
-- allows) once refunds reach what it charged (an authorization's captured amount); a
-- failed one gives its hold back. Waiters on the
-- refund and on the payment are told, the lease is released, and the callbacks (a.callbacks:
-- the refund's, then the payment's if it moved) are pushed when the payment has an endpoint
-- (and filed for the callbacks' recovery sweep, a.filing).
-- 1: written; 2: written and the payment is now refunded; -1: no such refund.
local a = cjson.decode(ARGV[1])
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
if not may_move(REFUND_MOVES, status, a.status) then return 0 end
local amount = tonumber(redis.call('HGET', KEYS[1], 'amount_minor'))
hset_map(KEYS[1], {'status', a.status, 'updated_at', a.now_iso}, a.fields)
if #a.clear > 0 then redis.call('HDEL', KEYS[1], unpack(a.clear)) end
local result = 1
if REFUND_FINAL[a.status] then
  redis.call('ZREM', KEYS[5], a.refund_id)
  if redis.call('HINCRBY', KEYS[3], 'refund_reserved_minor', -amount) < 0 then
    redis.call('HSET', KEYS[3], 'refund_reserved_minor', 0)
  end
  if a.succeeded then
    local refunded = redis.call('HINCRBY', KEYS[3], 'refunded_minor', amount)
    local p = redis.call('HMGET', KEYS[3], 'status', 'amount_minor', 'stripe_refunded_minor',
      'amount_captured_minor')
    local total = math.max(refunded, tonumber(p[3] or '0'))
    if p[1] and total >= tonumber(p[4] or p[2]) and may_move(MOVES, p[1], a.refunded) then
      result = 2
    end
    if result == 2 then
      redis.call('HSET', KEYS[3], 'status', a.refunded, 'updated_at', a.now_iso)
      index_move(KEYS[3], p[1], a.refunded)
      redis.call('HINCRBY', KEYS[6], p[1] .. '|' .. a.refunded, 1)
    end
  end
  if redis.call('HEXISTS', KEYS[3], 'callback_url') == 1 then
    push_callback(KEYS[7], a.callbacks[1], a.filing)
    if result == 2 then push_callback(KEYS[7], a.callbacks[2], a.filing) end
  end
else
  redis.call('ZADD', KEYS[5], a.check_at, a.refund_id)
end
redis.call('ZREM', KEYS[8], a.refund_id)
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', KEYS[4], a.refund_id)
redis.call('PUBLISH', KEYS[4], a.payment_id)
return result

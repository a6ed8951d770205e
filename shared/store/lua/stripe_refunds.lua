-- stripe_refunds: what Stripe says the charge's amount_refunded is now (dashboard refunds and
-- ours alike), from a charge.refunded event.
-- KEYS: record, events channel, transition counts, callback queue.
-- The figure only grows (an older event never lowers it). When refunds (ours as recorded, or
-- Stripe's) reach what was charged (an authorization's captured amount), the payment moves to a.to (refunded) if MOVES allows,
-- counted, with its callback pushed (and filed, a.filing) in the same step. -1: no record; 0: nothing new;
-- 1: figure recorded; 2: figure recorded and the payment is now refunded.
local a = cjson.decode(ARGV[1])
local r = redis.call('HMGET', KEYS[1], 'status', 'amount_minor', 'refunded_minor',
  'stripe_refunded_minor', 'amount_captured_minor')
local status = r[1]
if not status then return -1 end
if a.stripe_refunded <= tonumber(r[4] or '0') then return 0 end
redis.call('HSET', KEYS[1], 'stripe_refunded_minor', a.stripe_refunded, 'updated_at', a.now_iso)
local total = math.max(tonumber(r[3] or '0'), a.stripe_refunded)
local moved = 1
if total >= tonumber(r[5] or r[2]) and may_move(MOVES, status, a.to) then moved = 2 end
if moved == 2 then
  redis.call('HSET', KEYS[1], 'status', a.to)
  index_move(KEYS[1], status, a.to)
  redis.call('HINCRBY', KEYS[3], status .. '|' .. a.to, 1)
  if a.callback ~= '' and redis.call('HEXISTS', KEYS[1], 'callback_url') == 1 then
    push_callback(KEYS[4], a.callback, a.filing)
  end
end
redis.call('PUBLISH', KEYS[2], a.payment_id)
return moved

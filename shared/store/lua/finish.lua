-- finish: record where a payment now stands, once.
-- KEYS: record, lease, events channel, dead letters, pending index, outcome counts, unknown
-- index, callback queue, payments awaiting their customer.
-- A final status (succeeded, failed, requires_action) leaves the pending and unknown indexes
-- and is counted; `unknown` moves the payment to the unknown index (checked again at
-- a.check_at). Either way waiting requests are told, the lease is released and, if asked,
-- the payment is filed as a dead letter. A client that asked to be told (the record has a
-- callback_url) gets a.callback pushed in this same step (and filed for the callbacks'
-- recovery sweep, a.filing: see lib/callbacks.lua). A success gives the payment's client the
-- right to list its customer's charges (may_list_customer). -1: no record; 0: a move MOVES
-- lacks, such as from a final status (nothing written).
local a = cjson.decode(ARGV[1])
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
if not may_move(MOVES, status, a.status) then return 0 end
hset_map(KEYS[1], {'status', a.status, 'updated_at', a.now_iso}, a.fields)
if #a.clear > 0 then redis.call('HDEL', KEYS[1], unpack(a.clear)) end
index_move(KEYS[1], status, a.status)
if redis.call('ZREM', KEYS[5], a.payment_id) == 1 then
  -- No longer pending: it leaves its client's share of the backlog.
  local client = redis.call('HGET', KEYS[1], 'client')
  if client and redis.call('DECR', a.backlog_prefix .. client) < 0 then
    redis.call('SET', a.backlog_prefix .. client, 0)
  end
end
if a.status == STATUS.SUCCEEDED then may_list_customer(KEYS[1], a) end
if FINAL[a.status] then
  redis.call('ZREM', KEYS[7], a.payment_id)
  redis.call('HINCRBY', KEYS[6], a.outcome_field, 1)
else
  redis.call('ZADD', KEYS[7], a.check_at, a.payment_id)
end
if a.dead_letter then redis.call('ZADD', KEYS[4], a.now, a.payment_id) end
-- The customer must act (3-D Secure): re-checked at Stripe at a.action_check_at should the
-- webhook that moves it never come (worker.action_recheck).
if a.awaiting_action then redis.call('ZADD', KEYS[9], a.action_check_at, a.payment_id) end
if a.callback and a.callback ~= '' and redis.call('HEXISTS', KEYS[1], 'callback_url') == 1 then
  push_callback(KEYS[8], a.callback, a.filing)
end
redis.call('DEL', KEYS[2])
-- Replicated mode tells waiters only once a replica holds the outcome (PaymentStore.finish).
if not a.quiet then redis.call('PUBLISH', KEYS[3], a.payment_id) end
return 1

-- capture_finish: record where a capture or void stands, once, and where it takes the payment.
-- KEYS: record, capture lease, events channel, unknown captures index, transition counts,
-- callback queue, pending captures (the recovery sweep's: left here).
-- a.capture_status is final (succeeded, failed) or `unknown` (checked again at a.check_at);
-- a capture or void already final is never written again (0). a.fields are written and
-- a.clear removed. The payment moves to a.to (if not '' and MOVES allows), writing
-- a.payment_fields: the move is counted, a move into succeeded gives its client the right to
-- list its customer's charges (may_list_customer), and its callback (a.callback) is pushed
-- when the payment has an endpoint (filed, a.filing). Waiters are told, the lease released.
-- -1: no record; 1: written; 2: written and the payment moved.
local a = cjson.decode(ARGV[1])
local p = redis.call('HMGET', KEYS[1], 'status', 'capture_status')
local status = p[1]
if not status then return -1 end
if not p[2] or CAPTURE_FINAL[p[2]] then
  redis.call('ZREM', KEYS[7], a.payment_id)
  redis.call('DEL', KEYS[2])
  return 0
end
hset_map(KEYS[1], {'capture_status', a.capture_status, 'updated_at', a.now_iso}, a.fields)
if #a.clear > 0 then redis.call('HDEL', KEYS[1], unpack(a.clear)) end
local result = 1
if a.to ~= '' and a.to ~= status and may_move(MOVES, status, a.to) then
  hset_map(KEYS[1], {'status', a.to}, a.payment_fields)
  index_move(KEYS[1], status, a.to)
  redis.call('HINCRBY', KEYS[5], status .. '|' .. a.to, 1)
  if a.to == STATUS.SUCCEEDED then may_list_customer(KEYS[1], a) end
  if a.callback ~= '' and redis.call('HEXISTS', KEYS[1], 'callback_url') == 1 then
    push_callback(KEYS[6], a.callback, a.filing)
  end
  result = 2
end
if CAPTURE_FINAL[a.capture_status] then
  redis.call('ZREM', KEYS[4], a.payment_id)
else
  redis.call('ZADD', KEYS[4], a.check_at, a.payment_id)
end
redis.call('ZREM', KEYS[7], a.payment_id)
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', KEYS[3], a.payment_id)
return result

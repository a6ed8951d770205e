-- transition: a move after the charge path's first answer (a webhook, a re-check, a refund).
-- KEYS: record, events channel, pending index, unknown index, dead letters, transition counts,
-- callback queue.
-- The payment moves to a.to only as MOVES allows (this script's rows of the state machine):
-- a.fields are written and a.clear removed,
-- it leaves the charge path's indexes, the move is counted, waiters are told and, when the
-- payment has a callback endpoint, its callback message (a.callback) is pushed in this same
-- step (filed for the callbacks' recovery sweep, a.filing), so no move goes without its
-- callback and no callback without its move. A move into succeeded gives the payment's client
-- the right to list its customer's charges (may_list_customer).
-- 1: moved; 0: already there (nothing written); -1: no record; -2: a move the table refuses.
local a = cjson.decode(ARGV[1])
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
if status == a.to then return 0 end
if not may_move(MOVES, status, a.to) then return -2 end
hset_map(KEYS[1], {'status', a.to, 'updated_at', a.now_iso}, a.fields)
if #a.clear > 0 then redis.call('HDEL', KEYS[1], unpack(a.clear)) end
index_move(KEYS[1], status, a.to)
redis.call('ZREM', KEYS[3], a.payment_id)
redis.call('ZREM', KEYS[4], a.payment_id)
redis.call('ZREM', KEYS[5], a.payment_id)
redis.call('HINCRBY', KEYS[6], status .. '|' .. a.to, 1)
if a.to == STATUS.SUCCEEDED then may_list_customer(KEYS[1], a) end
if a.callback ~= '' and redis.call('HEXISTS', KEYS[1], 'callback_url') == 1 then
  push_callback(KEYS[7], a.callback, a.filing)
end
redis.call('PUBLISH', KEYS[2], a.payment_id)
return 1

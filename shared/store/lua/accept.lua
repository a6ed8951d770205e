-- claim_and_enqueue: one accept, all or nothing.
-- KEYS: record, the client's queue, pending index, accepted counter, the client's token
-- bucket, the client's pending count, per-client counts, the set of client queues (workers
-- learn of a new client's queue from it), the deadlines (a payment with a.fields.expires_ms
-- is filed there, for the round that expires the ones still queued past it).
-- An accept gives no right to list the customer's charges: only a payment that succeeds does
-- (finish, transition).
-- The payment id is derived from the client and its Idempotency-Key, so the record itself is
-- the claim. Answers {code, tokens left, ...}:
--   {3, tokens, retry_ms}: the client is over its request rate (nothing else looked at);
--   {0, tokens, record}: the key has a record already (a replay, or a conflict: the caller
--     compares fingerprints);
--   {2, tokens} the queue is full, {4, tokens} the client holds its whole share of it;
--   {1, tokens, ahead, seq}: the record is written, the message pushed, the payment indexed
--     as pending; `ahead` messages wait before it in the client's queue, and `seq` (also the
--     record's queue_seq) is its place in the client's accepts (the count `client|accepted`
--     after it), from which its position is estimated later without reading the queue
--     (api.queue_position); the payment is in its client's list (GET /payments: index_new).
local a = cjson.decode(ARGV[1])

local tokens = -1
if a.rate > 0 then
  tokens = take_token(KEYS[5], KEYS[7], a.client, a.rate, a.burst)
  if tokens < 0 then return {3, 0, -tokens} end
end

local existing = redis.call('HGETALL', KEYS[1])
if #existing > 0 then
  return {0, tokens, existing}
end
-- The backlog bound counts every payment not final yet, whichever client's queue it is in.
if redis.call('ZCARD', KEYS[3]) >= a.max_backlog then
  return {2, tokens}
end
if tonumber(redis.call('GET', KEYS[6]) or '0') >= a.client_max_backlog then
  redis.call('HINCRBY', KEYS[7], a.client .. '|backlog_full', 1)
  return {4, tokens}
end
hset_map(KEYS[1], {}, a.fields)
redis.call('EXPIRE', KEYS[1], a.record_ttl)
local waiting = redis.call('LPUSH', KEYS[2], a.message)
redis.call('SADD', KEYS[8], KEYS[2])
redis.call('ZADD', KEYS[3], a.sweep_at, a.payment_id)
redis.call('INCR', KEYS[4])
redis.call('INCR', KEYS[6])
local seq = redis.call('HINCRBY', KEYS[7], a.client .. '|accepted', 1)
redis.call('HSET', KEYS[1], 'queue_seq', seq)
index_new(a.fields, a.created_ms, a.record_ttl, seq)
if a.fields.expires_ms then redis.call('ZADD', KEYS[9], a.fields.expires_ms, a.payment_id) end
return {1, tokens, waiting - 1, seq}

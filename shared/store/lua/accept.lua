-- claim_and_enqueue: one accept, all or nothing.
-- KEYS: record, queue, pending index, accepted counter, legacy claim.
-- The payment id is derived from the client and its Idempotency-Key, so the record itself is
-- the claim: an existing record answers {0, record} (a replay or a conflict, the caller
-- compares fingerprints). A full queue answers {2} and writes nothing. Otherwise the record is
-- written, the charge message pushed, the payment indexed as pending and counted: {1}.
local a = cjson.decode(ARGV[1])
local existing = redis.call('HGETALL', KEYS[1])
if #existing > 0 then
  return {0, existing}
end
-- Before ids were derived from the key, a key was claimed in a slot of its own (kept 24 h):
-- a retry of such a request still finds its payment.
local legacy = redis.call('GET', KEYS[5])
if legacy then
  existing = redis.call('HGETALL', a.record_prefix .. legacy)
  if #existing > 0 then
    return {0, existing}
  end
end
if redis.call('LLEN', KEYS[2]) >= a.max_backlog then
  return {2}
end
local fields = {}
for name, value in pairs(a.fields) do
  fields[#fields + 1] = name
  fields[#fields + 1] = value
end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('EXPIRE', KEYS[1], a.record_ttl)
redis.call('LPUSH', KEYS[2], a.message)
redis.call('ZADD', KEYS[3], a.sweep_at, a.payment_id)
redis.call('INCR', KEYS[4])
return {1}

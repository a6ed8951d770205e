-- start_attempt: take the payment's lease and count an attempt.
-- KEYS: record, lease.
-- {-1}: no such record (expired); {0}: past the charge (MOVES has no move to `processing`
-- from its status); {-2}: another worker holds the lease; {1, record}: the lease is ours,
-- the record says `processing`. A lease already held with
-- a.token is ours: the same delivery starting again after Redis came back.
local a = cjson.decode(ARGV[1])
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {-1} end
if not may_move(MOVES, status, STATUS.PROCESSING) then return {0} end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= a.token then return {-2} end
redis.call('SET', KEYS[2], a.token, 'PX', a.lease_ms)
redis.call('HSET', KEYS[1], 'status', STATUS.PROCESSING, 'updated_at', a.now_iso,
  'alive_at', a.now)
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return {1, redis.call('HGETALL', KEYS[1])}

-- start_attempt: take the payment's lease and count an attempt.
-- KEYS: record, lease.
-- {-1}: no such record (expired); {0}: past the charge (MOVES has no move to `processing`
-- from its status: a final one, canceled and expired included, is never attempted); {-2}:
-- another worker holds the lease; {-3}: nothing was sent for it yet (UNSENT) and its
-- deadline (expires_ms) is past a.now_ms: no attempt may start, the caller expires it
-- (expire.lua); {1, record}: the lease is ours, the record says `processing`. The deadline is
-- looked at here only: once an attempt has started, its answer decides. A lease already held
-- with a.token is ours: the same delivery starting again after Redis came back.
local a = cjson.decode(ARGV[1])
local found = redis.call('HMGET', KEYS[1], 'status', 'expires_ms')
local status, expires_ms = found[1], found[2]
if not status then return {-1} end
if not may_move(MOVES, status, STATUS.PROCESSING) then return {0} end
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= a.token then return {-2} end
if UNSENT[status] and expires_ms and a.now_ms >= tonumber(expires_ms) then return {-3} end
redis.call('SET', KEYS[2], a.token, 'PX', a.lease_ms)
redis.call('HSET', KEYS[1], 'status', STATUS.PROCESSING, 'updated_at', a.now_iso,
  'alive_at', a.now)
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
index_move(KEYS[1], status, STATUS.PROCESSING)
return {1, redis.call('HGETALL', KEYS[1])}

-- reserve_slots: book a.count Stripe calls in the shared budget (GCRA, no burst).
-- KEYS: the budget's next free slot (µs, Redis clock).
-- Returns the microseconds from now until the first booked slot; the caller's calls go at
-- that time plus multiples of a.interval_us. Every caller books once and waits: no polling.
local a = cjson.decode(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local slot = tonumber(redis.call('GET', KEYS[1]) or now)
if slot < now then slot = now end
local next_free = slot + a.count * a.interval_us
redis.call('SET', KEYS[1], next_free, 'PX', math.ceil((next_free - now) / 1000) + 1000)
return slot - now

-- stripe_throttled: Stripe answered 429 to a call of a.name (an endpoint, or "global" when
-- Stripe said the account's limit was passed): its rate in the budget is cut to a.factor of
-- what it is now (not below a.floor), once a.cooldown_us at most: the 429s of calls already
-- on their way when the first came back cut nothing more. It regains a.increase requests/s
-- every second from then on, up to a.limit (book_stripe reads it so).
-- KEYS: the budget (hash), its counters (hash: rate_limited|<name>).
-- Returns the rate now, as a string.
local a = cjson.decode(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('HINCRBY', KEYS[2], 'rate_limited|' .. a.name, 1)
local v = redis.call('HMGET', KEYS[1], 'rate|' .. a.name, 'cut|' .. a.name)
local rate = tonumber(a.limit)
if v[1] and v[2] then
  rate = math.min(rate, tonumber(v[1]) + a.increase * (now - tonumber(v[2])) / 1000000)
  if now - tonumber(v[2]) < a.cooldown_us then return tostring(rate) end
end
rate = math.max(a.floor, rate * a.factor)
redis.call('HSET', KEYS[1], 'rate|' .. a.name, tostring(rate), 'cut|' .. a.name,
           string.format('%.0f', now))
return tostring(rate)

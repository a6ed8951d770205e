-- take_token: one request from a client's token bucket (the same bucket accept.lua uses).
-- KEYS: the client's bucket. {1, tokens left} or {0, 0, ms until a token}.
local a = cjson.decode(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local have = tonumber(bucket[1]) or a.burst
local at = tonumber(bucket[2]) or now
have = math.min(a.burst, have + math.max(0, now - at) * a.rate / 1000)
if have < 1 then
  redis.call('HINCRBY', KEYS[2], a.client .. '|limited', 1)
  return {0, 0, math.ceil((1 - have) * 1000 / a.rate)}
end
have = have - 1
redis.call('HSET', KEYS[1], 'tokens', tostring(have), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(a.burst * 1000 / a.rate) + 1000)
return {1, math.floor(have)}

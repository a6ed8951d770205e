-- take_token(bucket, counts, client, rate, burst): one request from a client's token bucket
-- (a hash: tokens, at ms; Redis's clock). Returns tokens left (0 or more), or -ms until the next
-- token when there is none (and counts `client|limited` in the counts hash).
local function take_token(bucket, counts, client, rate, burst)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local held = redis.call('HMGET', bucket, 'tokens', 'at')
  local have = tonumber(held[1]) or burst
  local at = tonumber(held[2]) or now
  have = math.min(burst, have + math.max(0, now - at) * rate / 1000)
  if have < 1 then
    redis.call('HINCRBY', counts, client .. '|limited', 1)
    return -math.ceil((1 - have) * 1000 / rate)
  end
  have = have - 1
  redis.call('HSET', bucket, 'tokens', tostring(have), 'at', now)
  redis.call('PEXPIRE', bucket, math.ceil(burst * 1000 / rate) + 1000)
  return math.floor(have)
end

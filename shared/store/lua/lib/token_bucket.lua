-- take_tokens(bucket, counts, client, rate, burst, n): n requests from a client's token bucket
-- (a hash: tokens, at ms; Redis's clock), in order and at the same instant, as n calls of
-- take_token would take them: the first `taken` get a token, the rest none. Returns taken,
-- the tokens there were before them (fractional: the i-th taken leaves floor(have - i)), and
-- the ms until the next token for those refused. Each refused one counts `client|limited`
-- in the counts hash.
local function take_tokens(bucket, counts, client, rate, burst, n)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local held = redis.call('HMGET', bucket, 'tokens', 'at')
  local have = tonumber(held[1]) or burst
  local at = tonumber(held[2]) or now
  have = math.min(burst, have + math.max(0, now - at) * rate / 1000)
  local taken = math.min(n, math.max(0, math.floor(have)))
  if taken > 0 then
    redis.call('HSET', bucket, 'tokens', tostring(have - taken), 'at', now)
    redis.call('PEXPIRE', bucket, math.ceil(burst * 1000 / rate) + 1000)
  end
  if taken < n then
    redis.call('HINCRBY', counts, client .. '|limited', n - taken)
  end
  return taken, have, math.ceil((1 - (have - taken)) * 1000 / rate)
end

-- take_token(bucket, counts, client, rate, burst): one request (take_tokens). Returns tokens
-- left (0 or more), or -ms until the next token when there is none.
local function take_token(bucket, counts, client, rate, burst)
  local taken, have, retry_ms = take_tokens(bucket, counts, client, rate, burst, 1)
  if taken == 0 then return -retry_ms end
  return math.floor(have - 1)
end

-- accept_one(K, a): one accept, all or nothing, for accept.lua (one payment) and
-- accept_batch.lua (each item of a batch in turn). K: the keys and a: the named arguments
-- accept.lua describes; its answers.
local function accept_one(K, a)
  local tokens = -1
  if a.rate > 0 then
    tokens = take_token(K[5], K[7], a.client, a.rate, a.burst)
    if tokens < 0 then return {3, 0, -tokens} end
  end

  local existing = redis.call('HGETALL', K[1])
  if #existing > 0 then
    return {0, tokens, existing}
  end
  -- The backlog bound counts every payment not final yet, whichever client's queue it is in.
  if redis.call('ZCARD', K[3]) >= a.max_backlog then
    return {2, tokens}
  end
  if tonumber(redis.call('GET', K[6]) or '0') >= a.client_max_backlog then
    redis.call('HINCRBY', K[7], a.client .. '|backlog_full', 1)
    return {4, tokens}
  end
  hset_map(K[1], {}, a.fields)
  redis.call('EXPIRE', K[1], a.record_ttl)
  local waiting = redis.call('LPUSH', K[2], a.message)
  redis.call('SADD', K[8], K[2])
  redis.call('ZADD', K[3], a.sweep_at, a.payment_id)
  redis.call('INCR', K[4])
  redis.call('INCR', K[6])
  local seq = redis.call('HINCRBY', K[7], a.client .. '|accepted', 1)
  redis.call('HSET', K[1], 'queue_seq', seq)
  index_new(a.fields, a.created_ms, a.record_ttl, seq)
  if a.fields.expires_ms then redis.call('ZADD', K[9], a.fields.expires_ms, a.payment_id) end
  return {1, tokens, waiting - 1, seq}
end

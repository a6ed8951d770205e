-- heartbeat: a worker waiting for the Stripe budget is alive.
-- KEYS: lease, record, kombu's unacked index.
-- Extends the lease if it is still ours (0 when lost), marks the record alive for the sweep,
-- and moves the message's delivery time forward so that the transport does not hand the
-- message to another worker while this one waits its turn.
local a = cjson.decode(ARGV[1])
if redis.call('GET', KEYS[1]) ~= a.token then return 0 end
redis.call('PEXPIRE', KEYS[1], a.lease_ms)
redis.call('HSET', KEYS[2], 'alive_at', a.now)
if a.delivery_tag ~= '' then
  redis.call('ZADD', KEYS[3], 'XX', a.now, a.delivery_tag)
end
return 1

-- release: give the lease back (a retry is scheduled), saving what was learnt; a.uncount:
-- and take back the attempt's count (Stripe refused it unprocessed: a 429).
-- KEYS: lease, record. Fields are written only while the lease is ours.
local a = cjson.decode(ARGV[1])
if redis.call('GET', KEYS[1]) ~= a.token then return 0 end
hset_map(KEYS[2], {}, a.fields)
if a.uncount and tonumber(redis.call('HGET', KEYS[2], 'attempts') or '0') > 0 then
  redis.call('HINCRBY', KEYS[2], 'attempts', -1)
end
redis.call('DEL', KEYS[1])
return 1

-- release: give the lease back (a retry is scheduled), saving what was learnt; a.uncount (the
-- record's field counting attempts): and take back this attempt's count (Stripe refused it
-- unprocessed: a 429).
-- KEYS: lease, record. Fields are written only while the lease is ours.
local a = cjson.decode(ARGV[1])
if redis.call('GET', KEYS[1]) ~= a.token then return 0 end
hset_map(KEYS[2], {}, a.fields)
if a.uncount and a.uncount ~= cjson.null and tonumber(redis.call('HGET', KEYS[2], a.uncount) or '0') > 0 then
  redis.call('HINCRBY', KEYS[2], a.uncount, -1)
end
redis.call('DEL', KEYS[1])
return 1

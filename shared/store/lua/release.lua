-- release: give the lease back (a retry is scheduled), saving what was learnt.
-- KEYS: lease, record. Fields are written only while the lease is ours.
local a = cjson.decode(ARGV[1])
if redis.call('GET', KEYS[1]) ~= a.token then return 0 end
hset_map(KEYS[2], {}, a.fields)
redis.call('DEL', KEYS[1])
return 1

-- release: give the lease back (a retry is scheduled), saving what was learnt.
-- KEYS: lease, record. Fields are written only while the lease is ours.
local a = cjson.decode(ARGV[1])
if redis.call('GET', KEYS[1]) ~= a.token then return 0 end
local fields = {}
for name, value in pairs(a.fields) do
  fields[#fields + 1] = name
  fields[#fields + 1] = value
end
if #fields > 0 then redis.call('HSET', KEYS[2], unpack(fields)) end
redis.call('DEL', KEYS[1])
return 1

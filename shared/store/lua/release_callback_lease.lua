-- release_callback_lease: an attempt at an event is over (its outcome written in the same
-- step). KEYS: the event's lease. Only the attempt holding it (a.token) lets it go.
local a = cjson.decode(ARGV[1])
if redis.call('GET', KEYS[1]) ~= a.token then return 0 end
redis.call('DEL', KEYS[1])
return 1

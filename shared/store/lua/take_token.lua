-- take_token: one request from a client's token bucket (the one accept.lua uses).
-- KEYS: the client's bucket, per-client counts. {1, tokens left} or {0, 0, ms until a token}.
local a = cjson.decode(ARGV[1])
local left = take_token(KEYS[1], KEYS[2], a.client, a.rate, a.burst)
if left < 0 then return {0, 0, -left} end
return {1, left}

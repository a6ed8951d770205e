-- events_catchup_progress: how far the catch-up round of Stripe's events has read, saved only
-- while the round still holds its turn, which it then keeps a.hold_ms longer.
-- KEYS: the round's turn, its cursor.
-- a.cursor: the cursor's fields (an empty value removes the field). 1: saved; 0: the turn was
-- lost (expired, another worker's), nothing saved.
local a = cjson.decode(ARGV[1])
if redis.call('GET', KEYS[1]) ~= a.token then return 0 end
for field, value in pairs(a.cursor) do
  if value == '' then
    redis.call('HDEL', KEYS[2], field)
  else
    redis.call('HSET', KEYS[2], field, value)
  end
end
redis.call('PEXPIRE', KEYS[1], a.hold_ms)
return 1

-- book_stripe: book Stripe calls in the fleet's budget. Each call takes a slot of the
-- account's limit ("global") and one of its endpoint's, each a GCRA with no burst at that
-- limit's current rate (lowered by stripe_throttled after a 429, regaining a.increase
-- requests/s every second since, up to the limit). The calls of one booking go in order.
-- KEYS: the budget (hash: next|<name> the next free slot in µs of Redis' clock, rate|<name>
-- and cut|<name> the rate set by the last 429 and when), its counters (hash: booked|<name>,
-- global's too).
-- a.calls: the endpoints, in the order the calls will be made; a.limits: requests/s by name
-- (global and every endpoint of a.calls); a.max_wait_us (optional): when the first call would
-- wait longer, nothing is booked.
-- Returns the µs from now until each call's slot, or {-1, wait in µs} when nothing was booked.
local a = cjson.decode(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function us(x) return string.format('%.0f', x) end
local state = {}
local function load(name)
  local s = state[name]
  if s then return s end
  local v = redis.call('HMGET', KEYS[1], 'next|' .. name, 'rate|' .. name, 'cut|' .. name)
  local limit = tonumber(a.limits[name])
  local rate = limit
  local recovered = true
  if v[2] and v[3] then
    rate = tonumber(v[2]) + a.increase * (now - tonumber(v[3])) / 1000000
    if rate < limit then recovered = false else rate = limit end
  end
  s = {next = math.max(now, tonumber(v[1] or now)), interval = 1000000 / rate,
       recovered = recovered and v[2] ~= false}
  state[name] = s
  return s
end
local waits = {}
local at, account_at = now, now
local account = load('global')
for i, name in ipairs(a.calls) do
  local own = load(name)
  -- The call goes once both its slots are due. Each limit's slots follow its own: a call
  -- that waits for its endpoint leaves the account's next slots to other endpoints' calls.
  local slot_g = math.max(account_at, account.next)
  local slot_e = own.next
  account.next = slot_g + account.interval
  own.next = slot_e + own.interval
  account_at = slot_g
  at = math.max(at, slot_g, slot_e)
  waits[i] = at - now
  if i == 1 and a.max_wait_us and waits[1] > a.max_wait_us then
    return {-1, waits[1]}
  end
end
local flat = {}
for name, s in pairs(state) do
  flat[#flat + 1] = 'next|' .. name
  flat[#flat + 1] = us(s.next)
  if s.recovered then redis.call('HDEL', KEYS[1], 'rate|' .. name, 'cut|' .. name) end
end
redis.call('HSET', KEYS[1], unpack(flat))
for _, name in ipairs(a.calls) do redis.call('HINCRBY', KEYS[2], 'booked|' .. name, 1) end
redis.call('HINCRBY', KEYS[2], 'booked|global', #a.calls)
return waits

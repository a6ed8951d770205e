-- hset_map(key, flat, map): HSET `key` with the name/value pairs of the list `flat` followed
-- by those of the table `map` (a script's JSON fields); nothing when both are empty.
local function hset_map(key, flat, map)
  for name, value in pairs(map) do
    flat[#flat + 1] = name
    flat[#flat + 1] = value
  end
  if #flat > 0 then redis.call('HSET', key, unpack(flat)) end
end

-- may_move(moves, from, to): whether this script's rows of the state machine (MOVES or
-- REFUND_MOVES) hold the move; `from` may be nil (no record): no.
local function may_move(moves, from, to)
  return from ~= nil and moves[from] ~= nil and moves[from][to] == true
end

-- may_list_customer(record, a): the payment in `record` has just succeeded, which gives its
-- client the right to list its customer's charges (GET /{customer}/payments) for a.record_ttl
-- seconds from now, renewed by every later success; the set is a.customers_prefix .. client.
local function may_list_customer(record, a)
  local found = redis.call('HMGET', record, 'client', 'account_id')
  local client, customer = found[1], found[2]
  if not client or not customer then return end
  local key = a.customers_prefix .. client
  redis.call('SADD', key, customer)
  redis.call('EXPIRE', key, a.record_ttl)
end

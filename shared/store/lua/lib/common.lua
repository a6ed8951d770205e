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

-- The client's list (GET /payments) reads sorted sets of payment ids scored by creation (ms):
-- all of the client's (INDEX.listed .. client), one a status (INDEX.status .. client .. ':' ..
-- status) and one a customer (INDEX.customer .. client .. ':' .. customer); see
-- shared/store/keys.py. A payment with no client (older than client ownership) is not listed.

-- index_new(fields, created_ms, ttl, turn): a new payment, in the status its fields say, for
-- ttl seconds (the record's). The listed and customer sets lose their entries past the
-- retention here; the status sets one at a time (STATUSES[turn], turn being the client's
-- accept count), so an accept trims a bounded number of sets. Every set written lives ttl
-- from this accept, which no record of the client outlives.
local function index_new(fields, created_ms, ttl, turn)
  local client = fields.client
  if not client then return end
  local by_status = INDEX.status .. client .. ':'
  local listed = INDEX.listed .. client
  local customer = INDEX.customer .. client .. ':' .. fields.account_id
  for _, key in ipairs({listed, by_status .. fields.status, customer}) do
    redis.call('ZADD', key, created_ms, fields.id)
    redis.call('EXPIRE', key, ttl)
  end
  local cutoff = '(' .. string.format('%d', created_ms - ttl * 1000)
  redis.call('ZREMRANGEBYSCORE', listed, '-inf', cutoff)
  redis.call('ZREMRANGEBYSCORE', customer, '-inf', cutoff)
  redis.call('ZREMRANGEBYSCORE', by_status .. STATUSES[turn % #STATUSES + 1], '-inf', cutoff)
end

-- index_move(record, from, to): the payment in `record` moved from status `from` to `to`; its
-- entry moves between the client's status sets in the same step, so a status filter always
-- agrees with the record. The entry keeps its score, read from the listed set: an entry
-- already trimmed from it (past the retention) is not written again. The target set lives
-- as long as the listed set, whose TTL only grows.
local function index_move(record, from, to)
  if from == to then return end
  local found = redis.call('HMGET', record, 'id', 'client')
  local id, client = found[1], found[2]
  if not id or not client then return end
  local by_status = INDEX.status .. client .. ':'
  redis.call('ZREM', by_status .. from, id)
  local listed = INDEX.listed .. client
  local score = redis.call('ZSCORE', listed, id)
  if not score then return end
  redis.call('ZADD', by_status .. to, score, id)
  local ttl = redis.call('PTTL', listed)
  if ttl > 0 then redis.call('PEXPIRE', by_status .. to, ttl) end
end

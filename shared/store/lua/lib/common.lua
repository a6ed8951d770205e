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

-- index_new(client, listed, by_status, by_customer, ttl, newest_ms, seq0, accepted): new
-- payments of `client` (accept.lua's items accepted in one call), for ttl seconds (their
-- records'). `listed` holds ZADD's score/member pairs (created ms, id) for all of them, and
-- by_status and by_customer the same pairs by status and by customer. The listed and customer
-- sets lose their entries past the retention here (older than newest_ms - ttl); the status
-- sets one a payment accepted (STATUSES[turn], turn being the client's accept count,
-- seq0 + 1 to seq0 + accepted, so at most every status set once a call): an accept trims a
-- bounded number of sets. Every set written lives ttl from this accept, which no record of
-- the client outlives.
local function index_new(client, listed, by_status, by_customer, ttl, newest_ms, seq0, accepted)
  local cutoff = '(' .. string.format('%d', newest_ms - ttl * 1000)
  local all = INDEX.listed .. client
  redis.call('ZADD', all, unpack(listed))
  redis.call('EXPIRE', all, ttl)
  redis.call('ZREMRANGEBYSCORE', all, '-inf', cutoff)
  local by = INDEX.status .. client .. ':'
  for status, members in pairs(by_status) do
    redis.call('ZADD', by .. status, unpack(members))
    redis.call('EXPIRE', by .. status, ttl)
  end
  for turn = seq0 + 1, seq0 + math.min(accepted, #STATUSES) do
    redis.call('ZREMRANGEBYSCORE', by .. STATUSES[turn % #STATUSES + 1], '-inf', cutoff)
  end
  for customer, members in pairs(by_customer) do
    local key = INDEX.customer .. client .. ':' .. customer
    redis.call('ZADD', key, unpack(members))
    redis.call('EXPIRE', key, ttl)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', cutoff)
  end
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

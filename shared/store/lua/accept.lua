-- claim_and_enqueue: the accepts of one or more payments (POST /payments: one; a batch: its
-- items, in order), each all or nothing on its own: one item refused never undoes or stops
-- another, and each takes its own token of the client's rate, in order.
-- KEYS: the client's queue, the pending index, the accepted counter, the client's token
-- bucket, its pending count, per-client counts, the set of client queues (workers learn of a
-- new client's queue from it), the deadlines (a payment with an expires_ms is filed there, for
-- the round that expires the ones still queued past it); then the record of each item that
-- claims, in order.
-- ARGV[1]: JSON of what every item shares: record_ttl, max_backlog, client_max_backlog,
-- sweep_at (the pending index's score), client, rate and burst (the client's token bucket;
-- rate 0: none), owner (the records' client, whose list indexes them; absent: not listed).
-- Then each item, in order: `0` for an item refused before its claim, which takes its token
-- only; or N (its record's field count), its charge message, created_ms, payment id,
-- account_id, status, expires_ms ('' for none), and its record's N name/value pairs.
-- The payment id is derived from the client and its Idempotency-Key, so the record itself is
-- the claim. An accept gives no right to list the customer's charges: only a payment that
-- succeeds does (finish, transition). Answers one reply an item, in order:
--   an item refused before its claim: {1, tokens left} or {0, 0, ms until a token};
--   {3, tokens, retry_ms}: the client is over its request rate (nothing else looked at);
--   {0, tokens, record}: the key has a record already (a replay, or a conflict: the caller
--     compares fingerprints; an earlier item of the same call may have written it);
--   {2, tokens} the queue is full, {4, tokens} the client holds its whole share of it;
--   {1, tokens, ahead, seq}: the record is written, the message pushed, the payment indexed
--     as pending; `ahead` messages wait before it in the client's queue, and `seq` (also the
--     record's queue_seq) is its place in the client's accepts (the count `client|accepted`
--     after it), from which its position is estimated later without reading the queue
--     (api.queue_position); the payment is in its client's list (GET /payments).
-- Whatever many items share (the queue's push, the counters, the pending index and the list
-- indexes) is written once for all of them, after the items' own records.
local c = cjson.decode(ARGV[1])
local queue, pending, accepted_count, bucket = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local backlog, counts, queues, deadlines = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local HEAD = 7  -- an item's values before its record's pairs

local starts = {}
local p = 2
while p <= #ARGV do
  starts[#starts + 1] = p
  local pairs_ = tonumber(ARGV[p])
  p = p + (pairs_ > 0 and HEAD + 2 * pairs_ or 1)
end

local n = #starts
local taken, have, retry_ms = n, 0, 0
if c.rate > 0 then taken, have, retry_ms = take_tokens(bucket, counts, c.client, c.rate, c.burst, n) end

local out = {}
local records = 8
local loaded = false
local waiting, in_backlog, client_backlog, seq0
local accepted, full = 0, 0
local messages, pend, listed, deadline_args = {}, {}, {}, {}
local by_status, by_customer = {}, {}
local newest_ms = 0
for i, s in ipairs(starts) do
  local pairs_ = tonumber(ARGV[s])
  local tokens = -1
  if c.rate > 0 then tokens = math.floor(have - i) end
  if pairs_ > 0 then records = records + 1 end
  if i > taken then
    out[i] = pairs_ > 0 and {3, 0, retry_ms} or {0, 0, retry_ms}
  elseif pairs_ == 0 then
    out[i] = {1, tokens}
  else
    local record = KEYS[records]
    local existing = redis.call('HGETALL', record)
    if #existing > 0 then
      out[i] = {0, tokens, existing}
    else
      if not loaded then
        loaded = true
        waiting = redis.call('LLEN', queue)
        -- The backlog bound counts every payment not final yet, whichever client's queue.
        in_backlog = redis.call('ZCARD', pending)
        client_backlog = tonumber(redis.call('GET', backlog) or '0')
        seq0 = tonumber(redis.call('HGET', counts, c.client .. '|accepted') or '0')
      end
      if in_backlog + accepted >= c.max_backlog then
        out[i] = {2, tokens}
      elseif client_backlog + accepted >= c.client_max_backlog then
        full = full + 1
        out[i] = {4, tokens}
      else
        accepted = accepted + 1
        local seq = seq0 + accepted
        local id, customer, status = ARGV[s + 3], ARGV[s + 4], ARGV[s + 5]
        local created_ms, expires_ms = ARGV[s + 2], ARGV[s + 6]
        redis.call('HSET', record, 'queue_seq', seq, unpack(ARGV, s + HEAD, s + HEAD - 1 + 2 * pairs_))
        redis.call('EXPIRE', record, c.record_ttl)
        messages[accepted] = ARGV[s + 1]
        pend[#pend + 1] = c.sweep_at
        pend[#pend + 1] = id
        listed[#listed + 1] = created_ms
        listed[#listed + 1] = id
        local st = by_status[status] or {}
        st[#st + 1] = created_ms
        st[#st + 1] = id
        by_status[status] = st
        local cu = by_customer[customer] or {}
        cu[#cu + 1] = created_ms
        cu[#cu + 1] = id
        by_customer[customer] = cu
        newest_ms = math.max(newest_ms, tonumber(created_ms))
        if expires_ms ~= '' then
          deadline_args[#deadline_args + 1] = expires_ms
          deadline_args[#deadline_args + 1] = id
        end
        out[i] = {1, tokens, waiting + accepted - 1, seq}
      end
    end
  end
end

if full > 0 then redis.call('HINCRBY', counts, c.client .. '|backlog_full', full) end
if accepted > 0 then
  redis.call('LPUSH', queue, unpack(messages))
  redis.call('SADD', queues, queue)
  redis.call('ZADD', pending, unpack(pend))
  redis.call('INCRBY', accepted_count, accepted)
  redis.call('INCRBY', backlog, accepted)
  redis.call('HINCRBY', counts, c.client .. '|accepted', accepted)
  if c.owner then
    index_new(c.owner, listed, by_status, by_customer, c.record_ttl, newest_ms, seq0, accepted)
  end
  if #deadline_args > 0 then redis.call('ZADD', deadlines, unpack(deadline_args)) end
end
return out

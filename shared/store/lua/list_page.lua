-- list_page: one page of a client's list (GET /payments), newest first, in one step.
-- KEYS: the client's listed set (where the cursor is looked up), then the sets to read: the
-- listed set, a customer's, or one or more status sets (merged); with both a.statuses and
-- a.customer, the customer's set and then the status sets, of which the smaller side is read
-- and the other filtered on the records.
-- Entries are taken by score (creation, ms) from a.lt (exclusive, optional) down to a.min
-- (inclusive), after a.after (a payment id; same-score entries in Redis's order, member
-- descending); a missing record (expired before its entry was trimmed) is passed over, so a
-- page still holds a.limit payments when there are that many. At most a.scan entries are
-- looked at: a page cut there says so with has_more and a cursor at the last one looked at.
-- Answers {-1}: the cursor is not one of the client's listed payments; else
-- {1, has_more (0/1), next cursor ('' for none), record, record, ...} (HGETALL lists).
local a = cjson.decode(ARGV[1])
local after_score
if a.after then
  local score = redis.call('ZSCORE', KEYS[1], a.after)
  if not score then return {-1} end
  after_score = tonumber(score)
end
local upper = '+inf'
if a.lt then upper = '(' .. string.format('%d', a.lt) end
if after_score and (not a.lt or after_score < a.lt) then
  upper = string.format('%d', after_score)
end

local sources, want_statuses, want_customer = {}, nil, nil
for i = 2, #KEYS do sources[#sources + 1] = KEYS[i] end
if a.statuses and a.customer then
  local in_statuses = 0
  for i = 3, #KEYS do in_statuses = in_statuses + redis.call('ZCARD', KEYS[i]) end
  if redis.call('ZCARD', KEYS[2]) <= in_statuses then
    sources, want_statuses = {KEYS[2]}, {}
    for _, s in ipairs(a.statuses) do want_statuses[s] = true end
  else
    table.remove(sources, 1)
    want_customer = a.customer
  end
end

local batch = a.limit + 1
local streams = {}
for i, key in ipairs(sources) do
  streams[i] = {key = key, buf = {}, pos = 1, offset = 0, done = false}
end
-- The stream's next entry {id, score} not yet taken, past the cursor; nil at its end.
local function head(s)
  while true do
    if s.pos > #s.buf then
      if s.done then return nil end
      local r = redis.call('ZREVRANGEBYSCORE', s.key, upper, a.min, 'WITHSCORES', 'LIMIT',
        s.offset, batch)
      s.buf, s.pos = {}, 1
      for j = 1, #r, 2 do s.buf[#s.buf + 1] = {r[j], tonumber(r[j + 1])} end
      s.offset = s.offset + #s.buf
      if #s.buf < batch then s.done = true end
      if #s.buf == 0 then return nil end
    end
    local e = s.buf[s.pos]
    if after_score and e[2] == after_score and e[1] >= a.after then
      s.pos = s.pos + 1
    else
      return e
    end
  end
end
local function newer(x, y)
  return x[2] > y[2] or (x[2] == y[2] and x[1] > y[1])
end
local function wanted(record_key)
  if not want_statuses and not want_customer then return true end
  local f = redis.call('HMGET', record_key, 'status', 'account_id')
  if not f[1] then return false end
  if want_statuses then return want_statuses[f[1]] == true end
  return f[2] == want_customer
end

local page, ids, examined, last, cut = {}, {}, 0, nil, false
while #page <= a.limit do
  local best, from
  for _, s in ipairs(streams) do
    local e = head(s)
    if e and (not best or newer(e, best)) then best, from = e, s end
  end
  if not best then break end
  if examined >= a.scan then
    cut = true
    break
  end
  from.pos = from.pos + 1
  examined = examined + 1
  last = best[1]
  local key = a.record_prefix .. best[1]
  if wanted(key) then
    local record = redis.call('HGETALL', key)
    if #record > 0 then
      page[#page + 1] = record
      ids[#ids + 1] = best[1]
    end
  end
end

local answer = {1, 0, ''}
if #page > a.limit then
  page[#page] = nil
  answer[2], answer[3] = 1, ids[a.limit]
elseif cut then
  answer[2], answer[3] = 1, last
end
for _, record in ipairs(page) do answer[#answer + 1] = record end
return answer

-- claim_many: the accepts of a batch's items in one call, in their order, each all or nothing
-- on its own as accept.lua's (accept_one, lib/accept.lua): one item refused never undoes or
-- stops another, and each takes its own token of the client's rate.
-- KEYS: accept.lua's second to ninth (the client's queue, pending index, accepted counter, the
-- client's token bucket, its pending count, per-client counts, the set of client queues, the
-- deadlines), then the record of each item that claims, in order.
-- ARGV[1]: {items = [...], common = {...}}: each item is accept.lua's arguments that differ by
-- payment (payment_id, fields, message, created_ms), or {token = true} for an item refused
-- before its claim, which takes its token only (take_token.lua's answer); `common` the rest of
-- accept.lua's arguments. Answers one reply an item, in order: accept.lua's, or take_token's.
local b = cjson.decode(ARGV[1])
local c = b.common
local K = {false, KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]}
local records = 8
local out = {}
for i, item in ipairs(b.items) do
  if item.token then
    if c.rate > 0 then
      local left = take_token(KEYS[4], KEYS[6], c.client, c.rate, c.burst)
      if left < 0 then out[i] = {0, 0, -left} else out[i] = {1, left} end
    else
      out[i] = {1, -1}  -- no rate: nothing to take
    end
  else
    records = records + 1
    K[1] = KEYS[records]
    for name, value in pairs(c) do item[name] = value end
    out[i] = accept_one(K, item)
  end
end
return out

-- index_existing: files in their clients' lists (GET /payments) payments whose records were
-- written before the accept script kept those lists (an upgrade), as index_new would have
-- filed them at their accept. KEYS: payment records; ARGV[1]: JSON {created: [ms of each
-- record's created_at, in KEYS' order; 0 when it could not be read]}. A record gone, without a
-- client (older than client ownership), unreadable, or whose payment is already listed is left
-- as it is: the status and customer come from the record as it is now, inside this step, so a
-- status move before or after it leaves the entry where the record says. Each set written
-- lives at least as long as the record filed in it. Answers how many were filed.
local a = cjson.decode(ARGV[1])
local filed = 0
for i, record in ipairs(KEYS) do
  local ms = tonumber(a.created[i]) or 0
  local found = redis.call('HMGET', record, 'id', 'client', 'status', 'account_id')
  local id, client, status, customer = found[1], found[2], found[3], found[4]
  if ms > 0 and id and client and status then
    local listed = INDEX.listed .. client
    if not redis.call('ZSCORE', listed, id) then
      local ttl = redis.call('PTTL', record)
      local sets = {listed, INDEX.status .. client .. ':' .. status}
      if customer then sets[#sets + 1] = INDEX.customer .. client .. ':' .. customer end
      for _, key in ipairs(sets) do
        redis.call('ZADD', key, ms, id)
        -- A set made here (no TTL yet), or one that would go before the record, lives as
        -- long as the record; a longer one keeps its own.
        local left = redis.call('PTTL', key)
        if ttl > 0 and (left == -1 or left < ttl) then redis.call('PEXPIRE', key, ttl) end
      end
      filed = filed + 1
    end
  end
end
return filed

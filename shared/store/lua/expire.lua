-- expire: payments whose deadline passed while they were queued end `expired`, never sent.
-- KEYS: deadlines, pending index, outcome counts, callback queue, events channel.
-- For each of a.ids (a.callbacks[id]: its payment.expired message): a payment that MOVES lets
-- expire (nothing sent yet), whose deadline (expires_ms) is at or before a.now_ms and whose
-- lease no worker holds, ends expired (end_unsent); one that has left that status (an attempt
-- started, or it is final) or is gone leaves the deadlines; any other stays for a later look.
-- start_attempt refuses an attempt past the deadline, so expiring here and starting there
-- exclude each other. Answers the ids expired.
local a = cjson.decode(ARGV[1])
local expired = {}
for _, payment_id in ipairs(a.ids) do
  local record = a.record_prefix .. payment_id
  local found = redis.call('HMGET', record, 'status', 'expires_ms')
  local status, expires_ms = found[1], found[2]
  if not status or not may_move(MOVES, status, STATUS.EXPIRED) then
    redis.call('ZREM', KEYS[1], payment_id)
  elseif expires_ms and a.now_ms >= tonumber(expires_ms)
      and redis.call('EXISTS', a.lock_prefix .. payment_id) == 0 then
    local e = {now_iso = a.now_iso, error = a.error, error_after_attempts = a.error_after_attempts,
      error_status = a.error_status,
      outcome_field = a.outcome_field, backlog_prefix = a.backlog_prefix,
      callback = a.callbacks[payment_id] or '', filing = a.filing}
    end_unsent(payment_id, STATUS.EXPIRED, e, {record = record, pending = KEYS[2],
      deadlines = KEYS[1], outcomes = KEYS[3], callbacks = KEYS[4], events = KEYS[5]})
    expired[#expired + 1] = payment_id
  end
end
return expired

-- expire: payments whose deadline passed before anything was sent to Stripe end `expired`.
-- KEYS: deadlines, pending index, outcome counts, callback queue, events channel.
-- For each of a.ids (a.callbacks[id]: its payment.expired message): a queued payment (one
-- that MOVES lets expire, but for processing) whose deadline (expires_ms) is at or before
-- a.now_ms and whose lease no worker holds ends expired (end_unsent); one that has left
-- that status (an attempt started, or it is final) or is gone leaves the deadlines; any other
-- stays for a later look. start_attempt refuses an attempt past the deadline, so expiring here
-- and starting there exclude each other.
-- With a.token: the ids are payments the worker with that lease holds in their first attempt
-- (attempts 1, no PaymentIntent, not a replayed dead letter), whose create waited for its
-- Stripe slot past the deadline and was not sent; such a payment ends expired too, its
-- attempt not counted and its lease given back. Any other is left as it is.
-- Answers the ids expired.
local a = cjson.decode(ARGV[1])
local expired = {}
for _, payment_id in ipairs(a.ids) do
  local record = a.record_prefix .. payment_id
  local found = redis.call('HMGET', record, 'status', 'expires_ms', 'attempts', 'payment_intent',
    'reconcile_first')
  local status, expires_ms = found[1], found[2]
  local lock = a.lock_prefix .. payment_id
  local due = expires_ms and a.now_ms >= tonumber(expires_ms)
  local ending = false
  if a.token then
    if status == STATUS.PROCESSING and due and may_move(MOVES, status, STATUS.EXPIRED)
        and found[3] == '1' and not found[4] and found[5] ~= '1'
        and redis.call('GET', lock) == a.token then
      redis.call('HSET', record, 'attempts', 0)
      redis.call('DEL', lock)
      ending = true
    end
  elseif not status or status == STATUS.PROCESSING
      or not may_move(MOVES, status, STATUS.EXPIRED) then
    redis.call('ZREM', KEYS[1], payment_id)
  elseif due and redis.call('EXISTS', lock) == 0 then
    ending = true
  end
  if ending then
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

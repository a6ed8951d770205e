-- end_unsent(payment_id, to, e, k): a payment never sent to Stripe ends in `to` (expired,
-- canceled): its status and the error that says it was not charged (e.error, e.error_status)
-- are written, it leaves the pending index (and its client's share of the backlog) and the
-- deadlines, the outcome is counted (e.outcome_field), its callback message (e.callback) is
-- pushed when the payment has an endpoint, filed for the callbacks' sweep (e.filing), and
-- waiters are told; its entry in the client's status sets moves with it (index_move). Keys come in k: record, pending, deadlines, outcomes, callbacks, events.
local function end_unsent(payment_id, to, e, k)
  local found = redis.call('HMGET', k.record, 'status', 'attempts')
  local from = found[1]
  -- A payment queued again after attempts (a replayed dead letter) was sent before: its error
  -- says so (e.error_after_attempts) rather than "never sent".
  local err = e.error
  if tonumber(found[2] or '0') > 0 then err = e.error_after_attempts end
  redis.call('HSET', k.record, 'status', to, 'updated_at', e.now_iso, 'error', err,
    'error_status', e.error_status)
  index_move(k.record, from, to)
  if redis.call('ZREM', k.pending, payment_id) == 1 then
    local client = redis.call('HGET', k.record, 'client')
    if client and redis.call('DECR', e.backlog_prefix .. client) < 0 then
      redis.call('SET', e.backlog_prefix .. client, 0)
    end
  end
  redis.call('ZREM', k.deadlines, payment_id)
  redis.call('HINCRBY', k.outcomes, e.outcome_field, 1)
  if e.callback ~= '' and redis.call('HEXISTS', k.record, 'callback_url') == 1 then
    push_callback(k.callbacks, e.callback, e.filing)
  end
  redis.call('PUBLISH', k.events, payment_id)
end

-- push_callback(queue, message, f): LPUSH a callback's task message onto its queue and, in the
-- same step, file it for the callbacks' recovery sweep: its event id (the message's task id
-- without its `:attempt`) in the pending set f.pending, scored by the sweep's first look
-- (f.sweep_at), and in the event's hash (f.prefix .. id, kept f.ttl s) the message and when it
-- was pushed (f.now_ms). An empty message pushes nothing.
local function push_callback(queue, message, f)
  if not message or message == '' then return end
  redis.call('LPUSH', queue, message)
  local task_id = cjson.decode(message).headers.id
  local event_id = string.match(task_id, '^(.*):%d+$') or task_id
  local key = f.prefix .. event_id
  redis.call('HSET', key, 'message', message, 'enqueued_at', f.now_ms)
  redis.call('HDEL', key, 'alive_at')
  redis.call('EXPIRE', key, f.ttl)
  redis.call('ZADD', f.pending, f.sweep_at, event_id)
end

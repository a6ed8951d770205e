-- reserved: kombu's unacked hash (KEYS[1]: the messages workers hold, delivered and not yet
-- acknowledged) counted in two parts by the queue each message came from, the last string of
-- its value ([message, exchange, routing_key]): those of the callback queue (ARGV[1]), and the
-- rest (charges, and the refunds, captures and Stripe events that share QUEUE_NAME).
-- Answers {rest, callbacks}.
local suffix = '"' .. ARGV[1] .. '"]'
local callbacks, rest = 0, 0
for _, value in ipairs(redis.call('HVALS', KEYS[1])) do
  if string.sub(value, -#suffix) == suffix then
    callbacks = callbacks + 1
  else
    rest = rest + 1
  end
end
return {rest, callbacks}

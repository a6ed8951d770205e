-- reserved: kombu's unacked hash (KEYS[1]: the messages workers hold, delivered and not yet
-- acknowledged) counted in two parts by the queue each message came from, the last string of
-- its value ([message, exchange, routing_key]): those of the callback queue (ARGV[1]), and the
-- rest (charges, and the refunds, captures and Stripe events that share QUEUE_NAME).
-- Up to ARGV[2] messages are each looked at; past that, as many distinct ones at random
-- (HRANDFIELD) and the callbacks' share of them is scaled to the whole, so that a large hash
-- (a fleet holding thousands of retries) never holds Redis for long. Answers {rest, callbacks}.
local total = redis.call('HLEN', KEYS[1])
local most = tonumber(ARGV[2])
local values
if total <= most then
  values = redis.call('HVALS', KEYS[1])
else
  local drawn = redis.call('HRANDFIELD', KEYS[1], most, 'WITHVALUES')
  values = {}
  for i = 2, #drawn, 2 do values[#values + 1] = drawn[i] end
end
local suffix = '"' .. ARGV[1] .. '"]'
local callbacks = 0
for _, value in ipairs(values) do
  if string.sub(value, -#suffix) == suffix then callbacks = callbacks + 1 end
end
if #values > 0 and #values < total then
  callbacks = math.floor(callbacks * total / #values + 0.5)
end
return {total - callbacks, callbacks}

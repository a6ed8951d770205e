-- wrk script of the batch benchmark: POST /payments/batch with SIZE payments a request, each
-- with its own idempotency_key (run prefix, thread number, request counter, item number);
-- prints one JSON summary line as bench/wrk.lua does.
--   wrk -t1 -c8 -d10s -s bench/wrk_batch.lua http://127.0.0.1:PORT/payments/batch -- RUNID SIZE KEY
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

local prefix = "batch"
local size = 100
local counter = 0
local headers = { ["Content-Type"] = "application/json" }

function init(args)
  prefix = args[1] or prefix
  size = tonumber(args[2] or "100")
  if args[3] and args[3] ~= "" then headers["Authorization"] = "Bearer " .. args[3] end
end

function request()
  counter = counter + 1
  local items = {}
  local stem = '{"idempotency_key":"' .. prefix .. "-" .. tid .. "-" .. counter .. "-"
  for j = 1, size do
    items[j] = stem .. j .. '","account_id":"cus_bench1","amount":"42.99"}'
  end
  return wrk.format("POST", nil, headers, '{"payments":[' .. table.concat(items, ",") .. "]}")
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,'
      .. '"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,'
      .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end

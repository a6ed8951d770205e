-- wrk script of the benchmarks: POST /payments with a unique Idempotency-Key per request
-- (run prefix, thread number, counter), or a plain GET; prints one JSON summary line.
--   wrk -t1 -c32 -d10s -s bench/wrk.lua http://127.0.0.1:PORT/payments -- post RUNID BODY KEY
--   wrk -t1 -c1  -d5s  -s bench/wrk.lua 'http://127.0.0.1:PORT/cus_x/payments' -- get KEY
-- KEY, when given, is sent as "Authorization: Bearer KEY".
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

local mode = "post"
local prefix = "bench"
local counter = 0
local body = '{"account_id":"cus_bench1","amount":"42.99"}'
local post_headers = { ["Content-Type"] = "application/json" }
local get_headers = {}

function init(args)
  mode = args[1] or "post"
  local key
  if mode == "get" then
    key = args[2]
  else
    prefix = args[2] or "bench"
    if args[3] and args[3] ~= "" then body = args[3] end
    key = args[4]
  end
  if key and key ~= "" then
    post_headers["Authorization"] = "Bearer " .. key
    get_headers["Authorization"] = "Bearer " .. key
  end
end

function request()
  if mode == "get" then
    return wrk.format("GET", nil, get_headers)
  end
  counter = counter + 1
  post_headers["Idempotency-Key"] = prefix .. "-" .. tid .. "-" .. counter
  return wrk.format("POST", nil, post_headers, body)
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

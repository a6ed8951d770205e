-- wrk script of the list load: GET with a bearer key, as a polite client would read: after a
-- 503 it waits what Retry-After says before its next request (wrk's delay() hook), instead of
-- hammering a server that asked it to wait. Prints the same one-line JSON summary as wrk.lua,
-- plus how many answers were 2xx and how many were 503.
--   wrk -t1 -c32 -d10s -s bench/wrk_list.lua 'http://127.0.0.1:PORT/cus_x/payments' -- KEY
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local headers = {}
ok = 0
busy = 0
local pause_ms = 0

function init(args)
  if args[1] and args[1] ~= "" then
    headers["Authorization"] = "Bearer " .. args[1]
  end
end

function request()
  return wrk.format("GET", nil, headers)
end

function response(status, hdrs, body)
  if status == 503 then
    busy = busy + 1
    local after = tonumber(hdrs["retry-after"] or hdrs["Retry-After"] or "1") or 1
    pause_ms = after * 1000
  elseif status < 300 then
    ok = ok + 1
  end
end

function delay()
  local d = pause_ms
  pause_ms = 0
  return d
end

function done(summary, latency, requests)
  local e = summary.errors
  local n_ok, n_busy = 0, 0
  for _, t in ipairs(threads) do
    n_ok = n_ok + (t:get("ok") or 0)
    n_busy = n_busy + (t:get("busy") or 0)
  end
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,'
      .. '"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,'
      .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,'
      .. '"ok":%d,"busy":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, n_ok, n_busy))
end

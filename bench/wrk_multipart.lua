-- wrk script: POST one file as multipart/form-data field `file`, count non-2xx answers, and
-- print one machine-readable line at the end for bench/serve.py.
--
--   wrk -c 32 -d 10s -s bench/wrk_multipart.lua http://127.0.0.1:8000/predict -- image.png
--
-- The request is built once in init() (wrk then replays the same bytes), so the Lua side costs
-- nothing per request except the status check in response().

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   local path = args[1]
   if path == nil then
      error("usage: wrk ... -s wrk_multipart.lua URL -- FILE")
   end
   local f = assert(io.open(path, "rb"))
   local data = f:read("*a")
   f:close()
   local name = path:match("([^/]+)$")
   local boundary = "----wrkbench7d1f0c2a9b3e4d5f"
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
   wrk.body = "--" .. boundary .. "\r\n"
      .. 'Content-Disposition: form-data; name="file"; filename="' .. name .. '"\r\n'
      .. "Content-Type: application/octet-stream\r\n\r\n"
      .. data .. "\r\n--" .. boundary .. "--\r\n"
   non2xx = 0
   statuses = {}
end

function response(status, headers, body)
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
      statuses[status] = (statuses[status] or 0) + 1
   end
end

function done(summary, latency, requests)
   local bad = 0
   local codes = {}
   for _, thread in ipairs(threads) do
      bad = bad + thread:get("non2xx")
      for code, n in pairs(thread:get("statuses")) do
         codes[code] = (codes[code] or 0) + n
      end
   end
   local seen = {}
   for code, n in pairs(codes) do
      table.insert(seen, string.format('"%d": %d', code, n))
   end
   local e = summary.errors
   io.write(string.format(
      'WRK_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, '
      .. '"connect_errors": %d, "read_errors": %d, "write_errors": %d, '
      .. '"timeouts": %d, "status_errors": %d, "non2xx": %d, "non2xx_by_status": {%s}, '
      .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.timeout, e.status, bad, table.concat(seen, ", "),
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean))
end

-- wrk script: POST a mix of files as multipart/form-data field `file`, one after another in
-- turn (list a file twice to send it twice as often), count answers by status and the 503s
-- that carry Retry-After, and print one machine-readable line for bench/soak.py.
--
--   wrk -c 64 -d 30s -s bench/wrk_mixed.lua http://127.0.0.1:8000/predict -- a.png a.png b.jpg
--
-- Requests are built once in init(); request() only picks the next one.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   if #args == 0 then
      error("usage: wrk ... -s wrk_mixed.lua URL -- FILE [FILE ...]")
   end
   local boundary = "----wrkmixed5e0b9c1d2a3f4e6b"
   requests = {}
   for i, path in ipairs(args) do
      local f = assert(io.open(path, "rb"))
      local data = f:read("*a")
      f:close()
      local name = path:match("([^/]+)$")
      local body = "--" .. boundary .. "\r\n"
         .. 'Content-Disposition: form-data; name="file"; filename="' .. name .. '"\r\n'
         .. "Content-Type: application/octet-stream\r\n\r\n"
         .. data .. "\r\n--" .. boundary .. "--\r\n"
      requests[i] = wrk.format("POST", nil,
         {["Content-Type"] = "multipart/form-data; boundary=" .. boundary}, body)
   end
   sent = 0
   non2xx = 0
   retry_after = 0
   statuses = {}
end

function request()
   sent = sent + 1
   return requests[(sent - 1) % #requests + 1]
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
   if status < 200 or status > 299 then
      non2xx = non2xx + 1
      if status == 503 and (headers["retry-after"] or headers["Retry-After"]) then
         retry_after = retry_after + 1
      end
   end
end

function done(summary, latency, requests)
   local bad, with_retry = 0, 0
   local codes = {}
   for _, thread in ipairs(threads) do
      bad = bad + thread:get("non2xx")
      with_retry = with_retry + thread:get("retry_after")
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
      .. '"timeouts": %d, "non2xx": %d, "retry_after_503": %d, "by_status": {%s}, '
      .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.timeout, bad, with_retry, table.concat(seen, ", "),
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean))
end

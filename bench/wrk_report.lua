-- The bench's wrk script: counts answers by status and prints one JSON summary line.
--
-- Without script arguments each request is wrk's own (the URL, the -H headers). With
-- arguments `BODIES_FILE THREADS`, each request POSTs the next line of BODIES_FILE to the
-- URL's path, every line once: thread n sends lines n+1, n+1+THREADS, ... A thread that has
-- sent all its lines stops, and counts the requests it could not make in "exhausted".

local threads = {}

function setup(thread)
   thread:set("number", #threads)
   table.insert(threads, thread)
end

function init(args)
   statuses = {}
   exhausted = 0
   if args[1] then
      local stride = tonumber(args[2])
      bodies = {}
      local line_number = 0
      for line in io.lines(args[1]) do
         if line_number % stride == number then
            table.insert(bodies, line)
         end
         line_number = line_number + 1
      end
      sent = 0
   end
end

function request()
   if not bodies then
      return wrk.request()
   end
   sent = sent + 1
   if sent > #bodies then
      exhausted = exhausted + 1
      wrk.thread:stop()
      -- wrk needs a request here; this thread stops before it is answered.
      return wrk.format("GET", "/healthz")
   end
   return wrk.format("POST", wrk.path, nil, bodies[sent])
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local by_status, exhausted_total = {}, 0
   for _, thread in ipairs(threads) do
      for status, count in pairs(thread:get("statuses")) do
         by_status[status] = (by_status[status] or 0) + count
      end
      exhausted_total = exhausted_total + thread:get("exhausted")
   end
   local counts = {}
   for status, count in pairs(by_status) do
      table.insert(counts, string.format('"%d": %d', status, count))
   end
   local errors = summary.errors
   io.write(string.format(
      'BENCH-JSON {"requests": %d, "duration_us": %d, "bytes": %d, '
         .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f, '
         .. '"socket_errors": %d, "timeouts": %d, "exhausted": %d, "statuses": {%s}}\n',
      summary.requests, summary.duration, summary.bytes,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean,
      errors.connect + errors.read + errors.write, errors.timeout, exhausted_total,
      table.concat(counts, ", ")
   ))
end

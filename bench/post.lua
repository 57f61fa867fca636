-- wrk script for `python -m bench`: POST one JSON body, print the summary as JSON.
--
-- Environment (set by bench/__main__.py):
--   BENCH_BODY  the request body (a chat completions request)
--   BENCH_KEY   an lg_ key, sent as "Authorization: Bearer ..." (optional)
-- The `done` hook prints one line "BENCH_JSON {...}" with the request count,
-- errors and the latency percentiles in microseconds.

wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["User-Agent"] = "localgate-bench (wrk)"
local key = os.getenv("BENCH_KEY")
if key and key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end

-- No response() hook: it would make wrk copy every body into Lua.

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, '
      .. '"connect_errors": %d, "read_errors": %d, "write_errors": %d, '
      .. '"status_errors": %d, "timeouts": %d, '
      .. '"p50_us": %d, "p90_us": %d, "p95_us": %d, "p99_us": %d, '
      .. '"mean_us": %.1f, "max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency.mean, latency.max))
end

-- wrk script: POST the body in $BODY_FILE with $CONTENT_TYPE and, for binary bodies, $IHCL.
local file = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.body = file:read("*a")
file:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE") or "application/json"
local ihcl = os.getenv("IHCL")
if ihcl ~= nil and ihcl ~= "" then
  wrk.headers["Inference-Header-Content-Length"] = ihcl
end

function done(summary, latency, requests)
  io.write(string.format("V2BENCH %d %d %.1f %.1f %.1f %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.mean, summary.errors.status + summary.errors.connect
    + summary.errors.read + summary.errors.write + summary.errors.timeout))
end

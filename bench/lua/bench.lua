-- wrk script for the devinit bench: GET or save (POST) requests, optionally at a fixed rate,
-- and one machine-readable summary line at the end.
--
-- Arguments (after `--`), all key=value:
--   mode=get                 GET the URL as given (default)
--   mode=save                POST a 1 KB save to the URL, cycling over `keys` keys
--   consistency=strong       add options.consistency to each saved item (mode=save)
--   keys=N                   distinct keys a save cycles over (default 1000)
-- Environment (read when the script loads, because wrk decides once whether delay() exists):
--   BENCH_RATE=R BENCH_THREADS=T   pace to R requests/s in total over T wrk threads (wrk2-style:
--                            each thread keeps a fixed schedule of send slots; a request whose
--                            slot is in the future is delayed until then). wrk's delay() has
--                            1 ms granularity, so single sends jitter by up to 1 ms but the
--                            schedule (and so the average rate) does not drift. Latency is
--                            measured by wrk from the moment the request is written.
--
-- The last line printed is `BENCH_JSON {...}` with counts and latency percentiles in µs.

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local mode = "get"
local consistency = nil
local nkeys = 1000
local rate = tonumber(os.getenv("BENCH_RATE") or "0") or 0
local threads = tonumber(os.getenv("BENCH_THREADS") or "1") or 1
local interval = 0 -- ms between send slots in this thread; 0 = as fast as possible
if rate > 0 then interval = 1000.0 * threads / rate end
local next_slot = nil
local requests = {}
local counter = 0

local function value_1k()
  -- a JSON string whose compact JSON text (quotes included) is exactly 1024 bytes
  return '"' .. string.rep("v", 1022) .. '"'
end

function init(args)
  for _, a in ipairs(args) do
    local k, v = a:match("^([%w_]+)=(.*)$")
    if k == "mode" then mode = v
    elseif k == "consistency" then consistency = v
    elseif k == "keys" then nkeys = tonumber(v)
    end
  end
  if mode == "save" then
    local opts = ""
    if consistency then opts = ',"options":{"consistency":"' .. consistency .. '"}' end
    local v = value_1k()
    for i = 1, nkeys do
      local body = '[{"key":"bench-save-' .. i .. '","value":' .. v .. opts .. '}]'
      requests[i] = wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, body)
    end
  else
    requests[1] = wrk.format("GET", nil, nil, nil)
  end
end

function request()
  counter = counter + 1
  return requests[(counter - 1) % #requests + 1]
end

local function paced_delay()
  local now = now_ms()
  if next_slot == nil then next_slot = now end
  local slot = next_slot
  next_slot = next_slot + interval
  local d = slot - now
  if d <= 0 then return 0 end
  return math.floor(d + 0.5)
end
-- defined only when pacing: wrk then asks for a delay before every request
if interval > 0 then delay = paced_delay end

function done(summary, latency, requests_)
  local e = summary.errors
  local p = function(q) return latency:percentile(q) end
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"stdev":%.1f,"min":%d,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p99_9":%d}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.min, latency.max, p(50), p(90), p(99), p(99.9)))
end

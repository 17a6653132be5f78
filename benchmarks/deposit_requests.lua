-- wrk script: POST /xds/repository, each request a different ITI-41 deposit built beforehand
-- (files NNNNNN.body and NNNNNN.type of DEPOSITS_DIR, DEPOSITS_COUNT of them), none sent
-- twice: thread k of DEPOSITS_THREADS sends files k, k + DEPOSITS_THREADS, ... and stops
-- when it has sent its share. A deposit answered without ResponseStatusType:Success is
-- counted as a failure (the answer of a refused deposit is an HTTP 200 RegistryResponse);
-- done() prints "deposit failures: N".
-- Usage: DEPOSITS_DIR=... DEPOSITS_COUNT=... DEPOSITS_THREADS=2 wrk -t2 -s deposit_requests.lua URL

local threads = {}
local counter = 0

function setup(thread)
  thread:set("first", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local function read(path)
  local file = assert(io.open(path, "rb"))
  local data = file:read("*a")
  file:close()
  return data
end

function init(args)
  local dir = os.getenv("DEPOSITS_DIR")
  local count = tonumber(os.getenv("DEPOSITS_COUNT"))
  local stride = tonumber(os.getenv("DEPOSITS_THREADS"))
  requests = {}
  local i = first
  while i < count do
    local name = string.format("%s/%06d", dir, i)
    local headers = { ["Content-Type"] = read(name .. ".type") }
    requests[#requests + 1] = wrk.format("POST", nil, headers, read(name .. ".body"))
    i = i + stride
  end
  sent = 0
  failures = 0
end

function request()
  sent = sent + 1
  if sent > #requests then
    wrk.thread:stop()
    return requests[#requests]
  end
  return requests[sent]
end

function response(status, headers, body)
  if status ~= 200 or not string.find(body, "ResponseStatusType:Success", 1, true) then
    failures = failures + 1
  end
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("failures")
  end
  io.write(string.format("deposit failures: %d\n", total))
end

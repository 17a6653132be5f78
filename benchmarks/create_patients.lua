-- wrk script: POST /fhir/Patient, a different valid Patient (INS-NIR with its key) each time.
-- The Patients of benchmarks/datagen.py make_patient(n), n from 300,000 * (thread number) + 1:
-- unique across wrk threads and apart from the Patients the benchmark creates otherwise.
-- Usage: wrk -s benchmarks/create_patients.lua -H "Authorization: Bearer ..." URL

local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("offset", counter * 300000)
  table.insert(threads, thread)
end

function init(args)
  n = offset
  -- wrk.format uses the headers it is given instead of wrk.headers (the -H ones): merge.
  headers = {}
  for name, value in pairs(wrk.headers) do headers[name] = value end
  headers["Content-Type"] = "application/fhir+json"
  headers["Prefer"] = "return=minimal"
end

local function nir(k)
  local sex = 1 + k % 2
  local year = 40 + k % 60
  local month = 1 + k % 12
  local body = string.format("%d%02d%02d75%03d%03d", sex, year, month, math.floor(k / 1000) % 1000, k % 1000)
  local key = 97 - math.fmod(tonumber(body), 97)
  return body .. string.format("%02d", key)
end

function request()
  n = n + 1
  local gender = (n % 2 == 1) and "female" or "male"
  local body = string.format(
    '{"resourceType":"Patient","identifier":[{"system":"urn:oid:1.2.250.1.213.1.4.8","value":"%s"}],'
      .. '"name":[{"family":"Famille%d","given":["Pr\\u00e9nom"]}],"gender":"%s","birthDate":"%d-%02d-%02d"}',
    nir(n), n, gender, 1940 + n % 60, 1 + n % 12, 1 + n % 28)
  return wrk.format("POST", nil, headers, body)
end

-- Tollgate token buckets: check every bucket of one decision, then take the cost from all of
-- them or from none. One call per decision (or per JSON-RPC batch).
--
-- KEYS[i]   a bucket's key (distinct keys; all in one Cluster slot)
-- ARGV[1]   three integers per key, as 24 bytes (FORMAT): maxTokens, refill period in
--           microseconds, cost in tokens
--
-- A bucket is its level in token-microseconds (tokens × period), the Redis time it was
-- computed at (µs), and the period it is scaled by. Counting token-microseconds makes refill
-- an integer product, elapsed µs × maxTokens. Lua numbers are doubles, exact below 2^53; the
-- caller keeps maxTokens × period below that bound. A missing key is a full bucket. One MGET
-- reads every bucket and one SET (with its TTL) writes each: the fewest commands per decision.
--
-- Numbers cross into and out of the script as big-endian 8-byte integers: the arguments and
-- each stored bucket, three to a key, and the reply. Redis's struct library reads and writes
-- them with none of the work that decimal text costs here (a string per argument for Redis to
-- make and Lua to parse, string.match and string.format per bucket, a reply array of integers
-- for Redis to build and the client to box one by one): a fifth of the script's CPU
-- (docs/benchmarks.md). A server without struct (miniredis, where the simulator replays) gets
-- the same bytes from the plain-Lua pack below.
--
-- Returns one string of 8-byte integers: allowed (1/0), now (µs since the epoch, Redis TIME),
-- level_1, ..., level_n: the levels after the decision (after taking the cost when allowed).

local call, tonumber = redis.call, tonumber
local FORMAT, SIZE = '>i8i8i8', 24
local pack, read
if rawget(_G, 'struct') then
  pack, read = struct.pack, struct.unpack
else
  -- Integers in [0, 2^53) only, the script's domain: doubles divide exactly by powers of two.
  local char, byte, floor = string.char, string.byte, math.floor
  local function be8(x)
    local hi, lo = floor(x / 4294967296), x % 4294967296
    return char(floor(hi / 16777216), floor(hi / 65536) % 256, floor(hi / 256) % 256, hi % 256,
      floor(lo / 16777216), floor(lo / 65536) % 256, floor(lo / 256) % 256, lo % 256)
  end
  pack = function(_, ...)
    local s = {...}
    for i = 1, #s do s[i] = be8(s[i]) end
    return table.concat(s)
  end
  read = function(_, s, pos)
    pos = pos or 1
    local v = {byte(s, pos, pos + SIZE - 1)}
    local function int(o)
      local x = 0
      for j = o + 1, o + 8 do x = x * 256 + v[j] end
      return x
    end
    return int(0), int(8), int(16)
  end
end

local args = ARGV[1] or ''
if #args ~= SIZE * #KEYS then
  return redis.error_reply(string.format(
    "ERR the limiter's script takes one argument of %d bytes per key: %d bytes for %d keys", SIZE, #args, #KEYS))
end

local t = call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local stored = call('MGET', unpack(KEYS))
-- out holds the levels as they are computed: no table per bucket field.
local out = {1, now}

for i = 1, #KEYS do
  local max, period, cost = read(FORMAT, args, SIZE * i - SIZE + 1)
  local cap = max * period
  local level = cap
  local v = stored[i]
  if v and #v == SIZE then -- any other value is one this script did not write: a full bucket
    local l, ts, p = read(FORMAT, v)
    level = l
    if p ~= period then
      -- The refill period changed since the level was stored: keep the same fraction of a
      -- token, rounded down.
      level = math.floor(level / p * period)
    end
    if level > cap then level = cap end -- capacity lowered since
    local elapsed = now - ts
    if elapsed < 0 then elapsed = 0 end -- the clock stepped back (failover): no refill
    if elapsed > period then elapsed = period end -- a whole period refills any level
    local refill = elapsed * max
    if refill >= cap - level then level = cap else level = level + refill end
  end
  out[i + 2] = level
  if level < cost * period then out[1] = 0 end
end

if out[1] == 1 then
  for i = 1, #KEYS do
    local max, period, cost = read(FORMAT, args, SIZE * i - SIZE + 1)
    local level = out[i + 2] - cost * period
    out[i + 2] = level
    -- Expire when the bucket would be full again, so an expired key (read as full) never
    -- changes a decision. (capacity - level) / max is that time in µs; round up to whole ms.
    call('SET', KEYS[i], pack(FORMAT, level, now, period),
      'PX', math.floor((max * period - level) / max / 1000) + 1)
  end
end

return pack('>' .. string.rep('i8', #out), unpack(out))

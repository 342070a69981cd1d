-- Tollgate token buckets: check every bucket of one decision, then take the cost from all of
-- them or from none. One call per decision (or per JSON-RPC batch).
--
-- KEYS[i]   a bucket's key (distinct keys; all in one Cluster slot)
-- ARGV      three integers per key: maxTokens, refill period in microseconds, cost in tokens
--
-- A bucket is a string "<level> <time> <period>": the level in token-microseconds (tokens ×
-- period), the Redis time it was computed at (µs), and the period it is scaled by. Counting
-- token-microseconds makes refill an integer product, elapsed µs × maxTokens. Lua numbers
-- are doubles, exact below 2^53; the caller keeps maxTokens × period below that bound. A
-- missing key is a full bucket. One MGET reads every bucket and one SET (with its TTL)
-- writes each: the fewest commands per decision.
--
-- Returns {allowed (1/0), now (µs since the epoch, Redis TIME), level_1, ..., level_n}: the
-- levels after the decision (after taking the cost when allowed).

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = #KEYS
local stored = redis.call('MGET', unpack(KEYS))
local maxs, periods, costs, caps, levels = {}, {}, {}, {}, {}
local allowed = 1

for i = 1, n do
  local max = tonumber(ARGV[3 * i - 2])
  local period = tonumber(ARGV[3 * i - 1])
  local cap = max * period
  local level = cap
  local l, ts, p
  if stored[i] then
    l, ts, p = string.match(stored[i], '^(%d+) (%d+) (%d+)$')
  end
  if p then
    level, ts, p = tonumber(l), tonumber(ts), tonumber(p)
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
  maxs[i], periods[i], caps[i], levels[i] = max, period, cap, level
  costs[i] = tonumber(ARGV[3 * i]) * period
  if level < costs[i] then allowed = 0 end
end

if allowed == 1 then
  for i = 1, n do
    local level = levels[i] - costs[i]
    levels[i] = level
    -- Expire when the bucket would be full again, so an expired key (read as full) never
    -- changes a decision. (cap - level) / max is that time in µs; round up to whole ms.
    redis.call('SET', KEYS[i], string.format('%d %d %d', level, now, periods[i]),
      'PX', math.floor((caps[i] - level) / maxs[i] / 1000) + 1)
  end
end

local out = {allowed, now}
for i = 1, n do out[i + 2] = levels[i] end
return out

-- Tollgate token buckets: check every bucket of one decision, then take the cost from all of
-- them or from none. One call per decision (or per JSON-RPC batch).
--
-- KEYS[i]   a bucket's key (distinct keys; all in one Cluster slot)
-- ARGV      three integers per key: maxTokens, refill period in microseconds, cost in tokens
--
-- A bucket is a hash {l = level, t = time of the level, p = period the level is scaled by}.
-- The level counts token-microseconds (tokens × period), so refill is an integer product:
-- elapsed µs × maxTokens. Lua numbers are doubles, exact below 2^53; the caller keeps
-- maxTokens × period below that bound. A missing key is a full bucket.
--
-- Returns {allowed (1/0), now (µs since the epoch, Redis TIME), level_1, ..., level_n}: the
-- levels after the decision (after taking the cost when allowed).

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = #KEYS
local maxs, periods, costs, caps, levels = {}, {}, {}, {}, {}
local allowed = 1

for i = 1, n do
  local max = tonumber(ARGV[3 * i - 2])
  local period = tonumber(ARGV[3 * i - 1])
  local cap = max * period
  local level = cap
  local v = redis.call('HMGET', KEYS[i], 'l', 't', 'p')
  if v[1] and v[2] and v[3] then
    level = tonumber(v[1])
    local p = tonumber(v[3])
    if p ~= period then
      -- The refill period changed since the level was stored: keep the same fraction of a
      -- token, rounded down.
      level = math.floor(level / p * period)
    end
    if level > cap then level = cap end -- capacity lowered since
    if level < 0 then level = 0 end
    local elapsed = now - tonumber(v[2])
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
    redis.call('HSET', KEYS[i], 'l', string.format('%d', level), 't', string.format('%d', now),
      'p', string.format('%d', periods[i]))
    -- Expire when the bucket would be full again, so an expired key (read as full) never
    -- changes a decision. (cap - level) / max is that time in µs; round up to whole ms.
    redis.call('PEXPIRE', KEYS[i], math.floor((caps[i] - level) / maxs[i] / 1000) + 1)
  end
end

local out = {allowed, now}
for i = 1, n do out[i + 2] = levels[i] end
return out

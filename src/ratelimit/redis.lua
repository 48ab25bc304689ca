-- keel rate limiting on Redis: the transitions of src/ratelimit/algo.rs, run server-side so that
-- one decision is one round trip and atomic across every client of this Redis.
--
-- Numbers are Lua doubles (exact integers below 2^53), so time is kept as a pair: whole
-- microseconds since the Unix epoch (`us`, ~1.8e15 today) and the nanoseconds within the
-- microsecond (`sub`, 0..999). Durations (backlogs, windows, intervals) are nanoseconds below
-- 2^52 (windows are at most 30 days and whole microseconds, checked by the client). Products
-- that can exceed 2^53 (the sliding window's weights) are compared exactly on 24-bit limbs.
--
-- KEYS[i]: one state key per limiter.
-- ARGV[1]: "check" or "refund"; ARGV[2], ARGV[3]: now (us, sub), or "" for the server's TIME;
-- ARGV[4]: cost; then per key i, from ARGV[5 + 3 * (i - 1)]: algorithm (1 = GCRA, 2 = sliding
-- window), limit, window in microseconds.
-- "check" is all-or-nothing: the states are written only if every key allows. It returns
-- {denier (0 when all allowed), n, then for each evaluated key: allowed (0/1), remaining,
-- reset ns, retry-after ns (-1 when none)}; evaluation stops at the first denial.
-- "refund" gives `cost` back to every key and returns {}.

local B = 16777216 -- 2^24

local function limbs(a)
  local a0 = a % B
  local t = (a - a0) / B
  local a1 = t % B
  return a0, a1, (t - a1) / B
end

-- a * b exactly, as six base-2^24 limbs (least significant first); a, b < 2^72.
local function mul(a, b)
  local a0, a1, a2 = limbs(a)
  local b0, b1, b2 = limbs(b)
  local r = { a0 * b0, a0 * b1 + a1 * b0, a0 * b2 + a1 * b1 + a2 * b0, a1 * b2 + a2 * b1, a2 * b2, 0 }
  for i = 1, 5 do
    local c = math.floor(r[i] / B)
    r[i] = r[i] - c * B
    r[i + 1] = r[i + 1] + c
  end
  return r
end

local function cmp(x, y)
  for i = 6, 1, -1 do
    if x[i] ~= y[i] then
      if x[i] < y[i] then return -1 end
      return 1
    end
  end
  return 0
end

-- floor(a * b / c) and whether it is exact, for a result below 2^53.
local function muldiv(a, b, c)
  local p = mul(a, b)
  local q = math.floor(a * b / c)
  while q > 0 and cmp(mul(q, c), p) > 0 do q = q - 1 end
  while cmp(mul(q + 1, c), p) <= 0 do q = q + 1 end
  return q, cmp(mul(q, c), p) == 0
end

-- floor(a / b) for integers 0 <= a < 2^52, 0 < b.
local function fdiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 elseif (q + 1) * b <= a then q = q + 1 end
  return q
end

local function fmt(x)
  return string.format('%.0f', x)
end

local mode = ARGV[1]
local now_us, now_sub
if ARGV[2] == '' then
  local t = redis.call('TIME')
  now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  now_sub = 0
else
  now_us = tonumber(ARGV[2])
  now_sub = tonumber(ARGV[3])
end
local cost = tonumber(ARGV[4])

-- Reads key i's state for algorithm `alg`: a fresh state when absent or of the other algorithm.
local function load(key, alg)
  local v = redis.call('GET', key)
  if v then
    if alg == 1 then
      local us, sub = string.match(v, '^G(%d+):(%d+)$')
      if us then return { tonumber(us), tonumber(sub) } end
    else
      local idx, curr, prev = string.match(v, '^W(%d+):(%d+):(%d+)$')
      if idx then return { tonumber(idx), tonumber(curr), tonumber(prev) } end
    end
  end
  if alg == 1 then return { 0, 0 } end
  return { 0, 0, 0 }
end

local n = #KEYS
local writes = {}
local out = {}
local denier = 0

for i = 1, n do
  local base = 5 + 3 * (i - 1)
  local alg = tonumber(ARGV[base])
  local limit = tonumber(ARGV[base + 1])
  local w_us = tonumber(ARGV[base + 2])
  local w = w_us * 1000
  local s = load(KEYS[i], alg)
  if alg == 1 then
    -- GCRA (algo.rs `gcra`).
    local interval = fdiv(w, limit)
    local capacity = limit * interval
    local backlog = (s[1] - now_us) * 1000 + (s[2] - now_sub)
    if backlog < 0 then backlog = 0 end
    if mode == 'refund' then
      if s[1] > 0 then
        local back = cost * interval
        local back_sub = back % 1000
        local back_us = (back - back_sub) / 1000
        local us, sub = s[1] - back_us, s[2] - back_sub
        if sub < 0 then
          sub = sub + 1000
          us = us - 1
        end
        if us < 0 then us, sub = 0, 0 end
        redis.call('SET', KEYS[i], 'G' .. fmt(us) .. ':' .. fmt(sub), 'KEEPTTL')
      end
    else
      local after = backlog + cost * interval
      if after <= capacity then
        local t = now_sub + after
        local t_sub = t % 1000
        writes[i] = { 'G' .. fmt(now_us + (t - t_sub) / 1000) .. ':' .. fmt(t_sub), math.max(1, math.ceil(after / 1000000)) }
        local rem = capacity - after
        local r = fdiv(rem, interval)
        out[#out + 1] = 1
        out[#out + 1] = r
        out[#out + 1] = after
        out[#out + 1] = -1
      else
        local rem = capacity - backlog
        if rem < 0 then rem = 0 end
        local r = fdiv(rem, interval)
        out[#out + 1] = 0
        out[#out + 1] = r
        out[#out + 1] = backlog
        out[#out + 1] = after - capacity
        denier = i
      end
    end
  else
    -- Sliding window (algo.rs `window` and `window_retry_after`).
    local idx, curr, prev = s[1], s[2], s[3]
    local now_idx = math.floor(now_us / w_us)
    local elapsed = (now_us - now_idx * w_us) * 1000 + now_sub
    if mode == 'refund' then
      if idx == now_idx then
        curr = math.max(0, curr - cost)
      elseif idx + 1 == now_idx then
        prev = math.max(0, prev - cost)
      end
      if redis.call('EXISTS', KEYS[i]) == 1 then
        redis.call('SET', KEYS[i], 'W' .. fmt(idx) .. ':' .. fmt(curr) .. ':' .. fmt(prev), 'KEEPTTL')
      end
    else
      if idx > now_idx then
        now_idx = idx
        elapsed = 0
      end
      if idx ~= now_idx then
        if idx + 1 == now_idx then prev = curr else prev = 0 end
        curr = 0
        idx = now_idx
      end
      -- estimate * w = prev * (w - elapsed) + curr * w; allowed iff it stays <= limit * w.
      local left = w - elapsed
      local weighted, weighted_exact = muldiv(prev, left, w)
      local prev_units = weighted
      if not weighted_exact then prev_units = weighted + 1 end -- ceil(prev * left / w)
      local allowed = curr + cost <= limit
        and cmp(mul(prev, left), mul(limit - curr - cost, w)) <= 0
      if allowed then
        curr = curr + cost
        writes[i] = { 'W' .. fmt(idx) .. ':' .. fmt(curr) .. ':' .. fmt(prev), math.ceil((w + left) / 1000000) }
        out[#out + 1] = 1
        out[#out + 1] = limit - curr - prev_units
        out[#out + 1] = left
        out[#out + 1] = -1
      else
        local r = 0
        if limit >= curr then r = math.max(0, limit - curr - prev_units) end
        -- Retry-after: the smallest wait after which the same request would be allowed.
        local retry = nil
        if curr + cost <= limit and prev > 0 then
          local q, exact = muldiv(limit - curr - cost, w, prev)
          local e_needed = w - q
          if not exact then e_needed = e_needed + 1 end
          if e_needed > w then e_needed = w end
          if e_needed < w then retry = math.max(0, e_needed - elapsed) end
        end
        if not retry then
          local e2 = 0
          if curr > limit - cost then
            local q, exact = muldiv(limit - cost, w, curr)
            e2 = w - q
            if not exact and e2 ~= 0 then e2 = e2 + 1 end
          end
          retry = left + e2
        end
        out[#out + 1] = 0
        out[#out + 1] = r
        out[#out + 1] = left
        out[#out + 1] = retry
        denier = i
      end
    end
  end
  if denier ~= 0 then break end
end

if mode == 'refund' then return {} end
if denier == 0 then
  for i = 1, n do
    if ARGV[2] == '' then
      redis.call('SET', KEYS[i], writes[i][1], 'PX', writes[i][2])
    else
      -- A caller's clock (tests): expiring on the server's clock would drop live states.
      redis.call('SET', KEYS[i], writes[i][1])
    end
  end
end
local reply = { denier, #out / 4 }
for j = 1, #out do reply[#reply + 1] = out[j] end
return reply

-- The stats projection. A campaign's contribution to the counters follows from its state
-- (status, channel, budget, deleted); an event subtracts the old contribution, updates the
-- state and adds the new one. Budget amounts stay integer strings end to end: Lua numbers are
-- doubles and would lose cents on large sums.
-- Its own keys (after the guard's three): KEYS[4] counts, KEYS[5] budget, KEYS[6] events per minute.
local counts_key, budget_key, per_minute_key = KEYS[4], KEYS[5], KEYS[6]
local function negate(n)
  if n == '0' then return '0' end
  if string.sub(n, 1, 1) == '-' then return string.sub(n, 2) end
  return '-' .. n
end

local function contribute(state, sign)
  if not state['status'] then return end
  local counts = counts_key
  if state['deleted'] == '1' then
    redis.call('HINCRBY', counts, 'campaigns.deleted', sign)
    return
  end
  redis.call('HINCRBY', counts, 'campaigns.total', sign)
  redis.call('HINCRBY', counts, 'status:' .. state['status'], sign)
  redis.call('HINCRBY', counts, 'channel:' .. state['channel'], sign)
  local budget = budget_key
  local units, frac = state['units'], state['frac']
  if sign < 0 then units, frac = negate(units), negate(frac) end
  redis.call('HINCRBY', budget, state['currency'] .. ':units', units)
  redis.call('HINCRBY', budget, state['currency'] .. ':frac', frac)
end

local function apply_change(key, vtext, change)
  local kind, minute = change[1], change[2]
  if kind == 'campaign' then
    local state = hgetall(key)
    local new = {}
    for name, value in pairs(state) do new[name] = value end
    local updates = {}
    for i = 3, #change, 2 do
      new[change[i]] = change[i + 1]
      updates[#updates + 1] = change[i]
      updates[#updates + 1] = change[i + 1]
    end
    if not (new['status'] and new['channel'] and new['currency']) then
      return 'campaign ' .. key .. ' has no creation event before version ' .. vtext
    end
    contribute(state, -1)
    contribute(new, 1)
    if #updates > 0 then redis.call('HSET', key, unpack(updates)) end
  elseif change[3] == '1' then
    redis.call('HINCRBY', counts_key, 'users.total', 1)
  end
  redis.call('HINCRBY', per_minute_key, minute, 1)
  return nil
end

-- The stats projection's counters. A campaign's contribution to the counters follows from its
-- state (status, channel, budget, deleted); an event subtracts the old contribution, updates the
-- state and adds the new one. Budget amounts stay integer strings end to end: Lua numbers are
-- doubles and would lose cents on large sums. Where the states are kept is the key layout's
-- (lua/stats.lua, lua/stats_layout1.lua: each defines `applied_version` and `apply_change`).
-- Its own keys (after the guard's three): KEYS[4] counts, KEYS[5] budget, KEYS[6] events per minute.
local counts_key, budget_key, per_minute_key = KEYS[4], KEYS[5], KEYS[6]
local function negate(n)
  if n == '0' then return '0' end
  if string.sub(n, 1, 1) == '-' then return string.sub(n, 2) end
  return '-' .. n
end

-- What a state adds to the counters: count fields, and its budget (currency, units, frac).
local function contribution(state)
  if not state['status'] then return nil, nil end
  if state['deleted'] == '1' then return {'campaigns.deleted'}, nil end
  return {'campaigns.total', 'status:' .. state['status'], 'channel:' .. state['channel']},
    {state['currency'], state['units'], state['frac']}
end

-- The counters move by the difference of the old and new contributions, one HINCRBY per field
-- that changes: most events (a status change, a rename) leave most of them as they were, and on
-- a replicated server each command is also appended to the AOF and replayed by the replica
-- (11 increments an event before, 3 for an activation now).
local function move_counters(old, new)
  local old_counts, old_budget = contribution(old)
  local new_counts, new_budget = contribution(new)
  local deltas, order = {}, {}
  local function add(fields, sign)
    for _, field in ipairs(fields or {}) do
      if deltas[field] == nil then order[#order + 1] = field; deltas[field] = 0 end
      deltas[field] = deltas[field] + sign
    end
  end
  add(old_counts, -1)
  add(new_counts, 1)
  for _, field in ipairs(order) do
    if deltas[field] ~= 0 then redis.call('HINCRBY', counts_key, field, deltas[field]) end
  end
  -- Budgets stay integer strings (never summed in Lua): an unchanged budget is not written.
  if old_budget and new_budget and old_budget[1] == new_budget[1]
      and old_budget[2] == new_budget[2] and old_budget[3] == new_budget[3] then
    return
  end
  if old_budget then
    redis.call('HINCRBY', budget_key, old_budget[1] .. ':units', negate(old_budget[2]))
    redis.call('HINCRBY', budget_key, old_budget[1] .. ':frac', negate(old_budget[3]))
  end
  if new_budget then
    redis.call('HINCRBY', budget_key, new_budget[1] .. ':units', new_budget[2])
    redis.call('HINCRBY', budget_key, new_budget[1] .. ':frac', new_budget[3])
  end
end


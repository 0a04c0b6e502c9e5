-- The stats projection's counters, one event a call (after lua/stats_state.lua). A campaign's
-- contribution to the counters follows from its state (status, channel, budget, deleted); an
-- event subtracts the old contribution, updates the state and adds the new one. Where the states
-- are kept is the key layout's (lua/stats.lua, lua/stats_layout1.lua: each defines
-- `applied_version` and `apply_change`).
-- Its own keys (after the guard's three): KEYS[4] counts, KEYS[5] budget, KEYS[6] events per minute.
local counts_key, budget_key, per_minute_key = KEYS[4], KEYS[5], KEYS[6]

-- The counters move by the difference of the old and new contributions, one HINCRBY per field
-- that changes: most events (a status change, a rename) leave most of them as they were, and on
-- a replicated server each command is also appended to the AOF and replayed by the replica
-- (11 increments an event before, 3 for an activation now).
local function move_counters(old, new)
  local moved, old_budget, new_budget = count_moves(old, new)
  for _, move in ipairs(moved) do redis.call('HINCRBY', counts_key, move[1], move[2]) end
  -- Budgets stay integer strings (never summed in Lua): an unchanged budget is not written.
  if old_budget then
    redis.call('HINCRBY', budget_key, old_budget[1] .. ':units', negate(old_budget[2]))
    redis.call('HINCRBY', budget_key, old_budget[1] .. ':frac', negate(old_budget[3]))
  end
  if new_budget then
    redis.call('HINCRBY', budget_key, new_budget[1] .. ':units', new_budget[2])
    redis.call('HINCRBY', budget_key, new_budget[1] .. ':frac', new_budget[3])
  end
end

-- The stats projection's pure parts, shared by its scripts (lua/stats_counters.lua with
-- lua/stats.lua or lua/stats_layout1.lua one event a call, lua/stats_batch.lua a bucket's run
-- of a batch): what a campaign's state adds to the counters, and a state's text in key layout 2.
-- Budget amounts stay integer strings end to end: Lua numbers are doubles and would lose cents
-- on large sums.
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

-- The count fields whose delta is not 0, in first-moved order, and the budgets moved (nil, nil:
-- the budget is unchanged), from the old and new contributions.
local function count_moves(old, new)
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
  local moved = {}
  for _, field in ipairs(order) do
    if deltas[field] ~= 0 then moved[#moved + 1] = {field, deltas[field]} end
  end
  if old_budget and new_budget and old_budget[1] == new_budget[1]
      and old_budget[2] == new_budget[2] and old_budget[3] == new_budget[3] then
    return moved, nil, nil
  end
  return moved, old_budget, new_budget
end

-- Key layout 2: a campaign's state is one field of its bucket's hash,
-- `v|status|channel|currency|units|frac|deleted` (absent values empty, trailing empties
-- dropped); a user's is its version alone. One field a campaign rather than a hash key of its
-- own: a key costs ~100 B of overhead beside its ~30 B of state.
local STATE_FIELDS = {'status', 'channel', 'currency', 'units', 'frac', 'deleted'}

-- The state a field holds, and its version (nil, 0: none).
local function decode_state(raw)
  local state = {}
  if not raw then return state, 0 end
  local parts, start = {}, 1
  while true do
    local stop = string.find(raw, '|', start, true)
    if not stop then parts[#parts + 1] = string.sub(raw, start); break end
    parts[#parts + 1] = string.sub(raw, start, stop - 1)
    start = stop + 1
  end
  for i, name in ipairs(STATE_FIELDS) do
    local value = parts[i + 1]
    if value and value ~= '' then state[name] = value end
  end
  return state, tonumber(parts[1])
end

local function encode_state(vtext, state)
  local parts = {vtext}
  for i, name in ipairs(STATE_FIELDS) do parts[i + 1] = state[name] or '' end
  local text = table.concat(parts, '|')
  return (string.gsub(text, '|+$', ''))
end

-- The stats projection's states (key layout 2), after lua/stats_counters.lua.
-- KEYS[1] is the bucket's hash of campaign or user states; the change is {field, kind, minute,
-- name, value...}: the aggregate's field in it (its packed id), then what the event sets.
-- A campaign's state is one field, `v|status|channel|currency|units|frac|deleted` (absent values
-- empty, trailing empties dropped); a user's is its version alone. One field a campaign rather
-- than a hash key of its own: a key costs ~100 B of overhead beside its ~30 B of state.
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

-- The field last read or written, so the guard's read serves the apply's too.
local known_field, known_raw = nil, nil
local function read_state(key, field)
  if field ~= known_field then
    known_field, known_raw = field, redis.call('HGET', key, field)
  end
  return known_raw
end

local function applied_version(key, change)
  local raw = read_state(key, change[1])
  if not raw then return 0 end
  local stop = string.find(raw, '|', 1, true)
  return tonumber(stop and string.sub(raw, 1, stop - 1) or raw)
end

local function apply_change(key, vtext, change)
  local field, kind, minute = change[1], change[2], change[3]
  if kind == 'campaign' then
    local state = decode_state(read_state(key, field))
    local new = {}
    for name, value in pairs(state) do new[name] = value end
    for i = 4, #change, 2 do new[change[i]] = change[i + 1] end
    if not (new['status'] and new['channel'] and new['currency']) then
      return ARGV[3] .. ' has no creation event before version ' .. vtext
    end
    move_counters(state, new)
    known_raw = encode_state(vtext, new)
  else
    if change[4] == '1' then redis.call('HINCRBY', counts_key, 'users.total', 1) end
    known_raw = vtext
  end
  redis.call('HSET', key, field, known_raw)
  redis.call('HINCRBY', per_minute_key, minute, 1)
  return nil
end
